"""A command and its lifecycle: the pure state machine, apart from any store.

:func:`advance` takes a :class:`Command` and an event (the state it moves to, when, who,
why) and returns the command after it, or raises :class:`TransitionError`; a store
adapter only persists what it returns (:mod:`headend.commands.base`). The allowed moves
and the reasons are :mod:`headend.model.commands`.

Times are Unix milliseconds (UTC) [ms].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from headend.errors import ValidationError
from headend.model import commands as C

__all__ = [
    "Command",
    "HistoryEntry",
    "RepeatedTransition",
    "TransitionError",
    "advance",
    "history_entry",
]


class TransitionError(ValidationError):
    """A state change the lifecycle does not allow (or without the reason it needs).

    ``command_id``, ``state`` (now) and ``to_state`` say which.
    """

    def __init__(self, message: str, *, command_id: str, state: str, to_state: str) -> None:
        super().__init__(message)
        self.command_id, self.state, self.to_state = command_id, state, to_state


class RepeatedTransition(TransitionError):
    """The command is already in the state asked for (a collector that answers twice):
    nothing changes; callers may ignore it."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command to one meter.

    Attributes
    ----------
    command_id : str
        Idempotency key: a second command with the same id is the first one.
    kind : str
        :data:`headend.model.commands.KIND_BY_NAME` key.
    meter_id : str
        The meter.
    state : str
        :data:`headend.model.commands.COMMAND_STATES` key.
    reason : str or None
        :data:`headend.model.commands.ALL_REASONS` key when rejected, failed or
        expired; None otherwise.
    detail : str or None
        Free text: why it was sent, who forced it, what a collector said.
    actor : str
        Who created it (user name, token name or ``headend``).
    created_ms, updated_ms, expires_ms : int
        Creation, last state change and expiry times [ms].
    collector_id : str or None
        The meter's collector when it was created (its downlink).
    control_code : str or None
        IEC 61968-9 EndDeviceControlType for the meter's commodity (None when the meter
        is unknown or the kind does not fit it).
    """

    command_id: str
    kind: str
    meter_id: str
    state: str
    reason: str | None
    detail: str | None
    actor: str
    created_ms: int
    updated_ms: int
    expires_ms: int
    collector_id: str | None = None
    control_code: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The command's JSON object (a contract, docs/commands.md): ``command_id,
        kind, meter_id, state, reason, created_at, updated_at, detail``."""
        return {"command_id": self.command_id, "kind": self.kind, "meter_id": self.meter_id,
                "state": self.state, "reason": self.reason,
                "created_at": iso_ms(self.created_ms), "updated_at": iso_ms(self.updated_ms),
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One state change of a command (the audit record): the creation is the first."""

    command_id: str
    seq: int  # 0 for the creation, then 1, 2, ...
    at_ms: int
    state: str
    reason: str | None
    actor: str
    detail: str | None


#: reason a move to each state needs: the fixed lists, or none at all
_REASONS_FOR: Final[dict[str, frozenset[str]]] = {
    "rejected": frozenset(C.REJECTIONS),
    "failed": frozenset(C.FAILURES),
    "expired": frozenset(C.EXPIRY),
}


def check_reason(state: str, reason: str | None) -> None:
    """Raise ``ValidationError`` unless ``reason`` fits ``state`` (one of its fixed list
    for rejected, failed and expired; None for every other state)."""
    allowed = _REASONS_FOR.get(state)
    if allowed is None:
        if reason is not None:
            raise ValidationError(f"a {state} command carries no reason (got {reason!r})")
    elif reason not in allowed:
        raise ValidationError(f"a {state} command needs a reason among "
                              f"{', '.join(sorted(allowed))} (got {reason!r})")


def advance(cmd: Command, to_state: str, *, at_ms: int, reason: str | None = None,
            detail: str | None = None) -> Command:
    """The command after moving to ``to_state`` at ``at_ms``.

    ``reason`` is required for ``failed`` (:data:`~headend.model.commands.FAILURES`),
    defaults to ``expired`` for ``expired``, and must be None otherwise. ``detail``
    replaces the command's detail when given. ``updated_ms`` never goes back in time.

    Raises
    ------
    RepeatedTransition
        If the command is already in ``to_state``.
    TransitionError
        If :data:`~headend.model.commands.TRANSITIONS` does not allow the move, or the
        reason does not fit.
    """
    if to_state not in C.COMMAND_STATES:
        raise TransitionError(f"{cmd.command_id}: unknown state {to_state!r}",
                              command_id=cmd.command_id, state=cmd.state, to_state=to_state)
    if to_state == cmd.state:
        raise RepeatedTransition(f"{cmd.command_id} is {cmd.state} already",
                                 command_id=cmd.command_id, state=cmd.state,
                                 to_state=to_state)
    if to_state not in C.TRANSITIONS[cmd.state]:
        raise TransitionError(f"{cmd.command_id}: {cmd.state} cannot become {to_state}",
                              command_id=cmd.command_id, state=cmd.state, to_state=to_state)
    if to_state == "expired" and reason is None:
        reason = "expired"
    try:
        check_reason(to_state, reason)
    except ValidationError as exc:
        raise TransitionError(f"{cmd.command_id}: {exc}", command_id=cmd.command_id,
                              state=cmd.state, to_state=to_state) from exc
    return dataclasses.replace(cmd, state=to_state, reason=reason,
                               detail=cmd.detail if detail is None else detail,
                               updated_ms=max(int(at_ms), cmd.updated_ms))


def history_entry(cmd: Command, seq: int, actor: str, detail: str | None) -> HistoryEntry:
    """The audit record of ``cmd`` having just reached its state (``seq`` 0: created,
    with the command's own detail; later, the detail given with the change)."""
    return HistoryEntry(cmd.command_id, seq, cmd.updated_ms, cmd.state, cmd.reason, actor,
                        detail)


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC with milliseconds (``2026-01-05T00:15:00.250Z``)."""
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt.strftime('%Y-%m-%dT%H:%M:%S')}.{ms % 1000:03d}Z"
