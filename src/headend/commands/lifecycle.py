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
from typing import Any, Final

from headend.errors import ValidationError
from headend.model import commands as C

__all__ = [
    "NO_READS",
    "TAKING_READS",
    "Command",
    "HistoryEntry",
    "ReadsBrought",
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
class ReadsBrought:
    """The reads an on-demand ``read`` command brought: the new reads of its meter
    stored while it was ``sent`` or ``delivered`` (docs/commands.md, "On-demand reads").

    Attributes
    ----------
    interval_reads, register_reads : int
        How many interval reads and register reads.
    first_interval_end, last_interval_end : int or None
        The interval ends they cover [s, Unix UTC]; None without interval reads.
    first_read_time, last_read_time : int or None
        The register reads' times [s, Unix UTC]; None without register reads.
    uploads : int
        How many stored batches brought them (an upload is one batch or more).
    sources : tuple of str
        The uploads' sources, each once, in arrival order (``http:<address>``,
        ``mqtt:<collector_id>``, a file path).
    """

    interval_reads: int = 0
    register_reads: int = 0
    first_interval_end: int | None = None
    last_interval_end: int | None = None
    first_read_time: int | None = None
    last_read_time: int | None = None
    uploads: int = 0
    sources: tuple[str, ...] = ()

    def __add__(self, other: ReadsBrought) -> ReadsBrought:
        """Both together (counts summed, ranges joined, sources each once)."""
        return ReadsBrought(
            self.interval_reads + other.interval_reads,
            self.register_reads + other.register_reads,
            _lo(self.first_interval_end, other.first_interval_end),
            _hi(self.last_interval_end, other.last_interval_end),
            _lo(self.first_read_time, other.first_read_time),
            _hi(self.last_read_time, other.last_read_time),
            self.uploads + other.uploads,
            tuple(dict.fromkeys((*self.sources, *other.sources))))

    @property
    def total(self) -> int:
        """Interval and register reads together."""
        return self.interval_reads + self.register_reads

    def to_json(self) -> dict[str, Any]:
        """The ``reads`` object of a read command's JSON (times ISO 8601 UTC)."""
        return {"interval_reads": self.interval_reads, "register_reads": self.register_reads,
                "first_interval_end": _iso_s(self.first_interval_end),
                "last_interval_end": _iso_s(self.last_interval_end),
                "first_read_time": _iso_s(self.first_read_time),
                "last_read_time": _iso_s(self.last_read_time),
                "uploads": self.uploads, "sources": list(self.sources)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ReadsBrought:
        """The inverse of :meth:`to_json`."""
        return cls(int(obj["interval_reads"]), int(obj["register_reads"]),
                   _from_iso(obj["first_interval_end"]), _from_iso(obj["last_interval_end"]),
                   _from_iso(obj["first_read_time"]), _from_iso(obj["last_read_time"]),
                   int(obj["uploads"]), tuple(obj["sources"]))


def _lo(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _hi(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _iso_s(s: int | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2026-01-05T00:15:00Z``); None stays None."""
    if s is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_iso(text: str | None) -> int | None:
    if text is None:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(text).timestamp())


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
    reads : ReadsBrought or None
        For a ``read`` command, the reads it brought (:class:`ReadsBrought`, zero until
        some came); None for the other kinds.
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
    reads: ReadsBrought | None = None

    def __post_init__(self) -> None:
        if self.kind == "read" and self.reads is None:  # a read has brought nothing yet
            object.__setattr__(self, "reads", NO_READS)

    def to_json(self) -> dict[str, Any]:
        """The command's JSON object (a contract, docs/commands.md): ``command_id,
        kind, meter_id, state, reason, created_at, updated_at, detail, reads`` (``reads``:
        :meth:`ReadsBrought.to_json` for a read command, null for the other kinds)."""
        return {"command_id": self.command_id, "kind": self.kind, "meter_id": self.meter_id,
                "state": self.state, "reason": self.reason,
                "created_at": iso_ms(self.created_ms), "updated_at": iso_ms(self.updated_ms),
                "detail": self.detail,
                "reads": None if self.reads is None else self.reads.to_json()}


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


#: what a read command has brought before any read came
NO_READS: Final = ReadsBrought()
#: the states in which a read command takes the new reads of its meter
TAKING_READS: Final = frozenset({"sent", "delivered"})

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
