"""Apply collectors' ``command_responses`` to the command store.

:func:`apply_responses` takes the good rows of :func:`~headend.commands.responses.
decode_command_responses` in upload order and moves each command to the state its
status reports (``delivered``, ``completed``, ``failed`` with the status as reason).
What it cannot apply goes to the quarantine, never dropped:

==============================  =========================================================
response                        outcome
==============================  =========================================================
the state the command is in     ``duplicate`` (a collector that answers twice): nothing
                                changes
``delivered`` after completed   ``duplicate`` (the later answer came first)
or failed
to a ``queued`` command         the command is marked ``sent`` first (it was handed over
                                and the head end stopped before it recorded that)
``completed`` of a ``read``     the command is ``failed``, reason ``no_reads`` (the
that brought no read            reads come before the completion: docs/commands.md);
                                a repeat of it is a ``duplicate``
unknown ``command_id``          quarantined, ``unknown_command``
``meter_id`` of another meter   quarantined, ``bad_command_response``
a move the lifecycle refuses    quarantined, ``command_response_conflict`` (completed
                                after expired, a response to a rejected command, ...)
==============================  =========================================================

:func:`responses_handler` wraps it as the ingest pipeline's hook for this CSV kind
(``headend ingest`` files); ``headend serve`` applies them through its command
service, which also publishes the new states.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from headend.commands.base import CommandStore
from headend.commands.lifecycle import (
    Command,
    RepeatedTransition,
    TransitionError,
    advance,
    iso_ms,
)
from headend.commands.responses import KIND, decode_command_responses
from headend.model import codes, reasons, schema
from headend.model import commands as C
from headend.wire.csvfmt.rejects import make_rejects

if TYPE_CHECKING:
    from headend.store.registry import MeterRegistry

__all__ = ["ACTOR", "Applied", "apply_responses", "apply_switch", "responses_handler",
           "switch_effects"]

#: the actor of state changes a collector reported, in the audit log
ACTOR = "collector"


@dataclass(slots=True)
class Applied:
    """What :func:`apply_responses` did: the commands after each change, in order (a
    command may appear more than once), the responses that changed nothing, and the
    quarantine rows."""

    changed: list[Command] = field(default_factory=list)
    duplicate: int = 0
    rejects: list[pa.Table] = field(default_factory=list)

    @property
    def quarantine(self) -> pa.Table:
        return pa.concat_tables(self.rejects) if self.rejects \
            else schema.QUARANTINE.empty_table()


def apply_responses(store: CommandStore, responses: pa.Table, *, source: str, now_ms: int,
                    received_at: int | None = None) -> Applied:
    """Apply decoded responses (:data:`~headend.commands.responses.RESPONSES`) in order.

    Each change is a transition by actor :data:`ACTOR` at ``now_ms`` [ms], all of them in
    one :meth:`~headend.commands.base.CommandStore.transition_many` (checked first
    against the stored commands with :func:`~headend.commands.lifecycle.advance`; tried
    again if another process changed one of them meanwhile). Its audit detail says the
    collector's status, time and text. See the module docstring for what is a duplicate
    and what is quarantined (kind ``command_responses``, the row as a CSV line in
    ``payload``).
    """
    for _attempt in range(_ATTEMPTS - 1):
        try:
            return _apply(store, responses, source, now_ms, received_at)
        except TransitionError:  # a command changed between the check and the write
            continue
    return _apply(store, responses, source, now_ms, received_at)


#: tries of :func:`apply_responses` when commands change under it
_ATTEMPTS = 3


def _apply(store: CommandStore, responses: pa.Table, source: str, now_ms: int,
           received_at: int | None) -> Applied:
    out = Applied()
    cols = {n: responses.column(n).to_pylist() for n in ("command_id", "meter_id", "status",
                                                       "state", "reason", "detail")}
    times = responses.column("time").cast(pa.int64()).to_pylist()

    def reject(i: int, reason: str, why: str) -> None:
        buf = io.StringIO()  # the row as the collector could have sent it (quoted)
        csv.writer(buf, lineterminator="").writerow(
            [cols["command_id"][i], cols["meter_id"][i], cols["status"][i], iso_ms(times[i]),
             cols["detail"][i] or ""])
        line = buf.getvalue()
        out.rejects.append(make_rejects(
            source, KIND, reason, why, payload=[line.encode()], meter_id=[cols["meter_id"][i]],
            type=[cols["status"][i]], time=[iso_ms(times[i])], received_at=received_at))

    view: dict[str, Command | None] = {}  # each command as the moves so far leave it
    moves: list[tuple[str, str, str, int, str | None, str | None]] = []
    for i in range(responses.num_rows):
        cid, state = cols["command_id"][i], cols["state"][i]
        cmd = view[cid] if cid in view else store.get(cid)
        view[cid] = cmd
        if cmd is None:
            reject(i, reasons.UNKNOWN_COMMAND, f"no command {cid!r}")
            continue
        if cmd.meter_id != cols["meter_id"][i]:
            reject(i, reasons.BAD_COMMAND_RESPONSE,
                   f"meter_id {cols['meter_id'][i]!r} is not the meter of {cid} "
                   f"({cmd.meter_id!r})")
            continue
        if cmd.state == state or (state == "delivered" and cmd.state in ("completed",
                                                                          "failed")) \
                or (state == "completed" and cmd.reason == NO_READS):
            out.duplicate += 1
            continue
        text = cols["detail"][i]
        audit = f"{cols['status'][i]} at {iso_ms(times[i])}" + (f": {text}" if text else "")
        reason = cols["reason"][i]
        if state == "completed" and cmd.reads is not None and cmd.reads.total == 0:
            state, reason = "failed", NO_READS
            audit += f" ({_NONE_BROUGHT})"
        step: list[tuple[str, str, str, int, str | None, str | None]] = []
        try:
            new = cmd
            if new.state == "queued":
                step.append((cid, "sent", ACTOR, now_ms, None, _UNRECORDED))
                new = advance(new, "sent", at_ms=now_ms, detail=_UNRECORDED)
            step.append((cid, state, ACTOR, now_ms, reason, audit))
            new = advance(new, state, at_ms=now_ms, reason=reason, detail=audit)
        except RepeatedTransition:
            out.duplicate += 1
            continue
        except TransitionError as exc:
            reject(i, reasons.COMMAND_RESPONSE_CONFLICT,
                   f"{cid} is {exc.state}: a {cols['status'][i]} response cannot apply")
            continue
        moves += step
        view[cid] = new
    out.changed = store.transition_many(moves) if moves else []
    return out


_UNRECORDED = "answered before it was recorded as sent"
#: the reason of a read completed with no read brought, and what its audit says
NO_READS = "no_reads"
_NONE_BROUGHT = "no new read of the meter was stored while it was sent or delivered"
assert NO_READS in C.HEAD_END_FAILURES


#: a completed command of these kinds leaves the meter's switch in this state
_SWITCH_AFTER = {"disconnect": C.SWITCH_STATES.index("disconnected"),
                 "connect": C.SWITCH_STATES.index("connected")}
#: ... and is announced by this EndDeviceEvent
_SWITCH_EVENT = {"disconnect": codes.EVENT.switch_disconnected,
                 "connect": codes.EVENT.switch_connected}


def switch_effects(changed: Sequence[Command]) -> list[tuple[str, int, int, str, int]]:
    """The service switch changes the commands in ``changed`` made: for each completed
    disconnect or connect, ``(meter_id, switch state code, time [ms], command_id, packed
    EndDeviceEvent code)``; the time is the head end's (the completion's ``updated``)."""
    return [(c.meter_id, _SWITCH_AFTER[c.kind], c.updated_ms, c.command_id,
             _SWITCH_EVENT[c.kind])
            for c in changed if c.state == "completed" and c.kind in _SWITCH_AFTER]


def apply_switch(registry: MeterRegistry, changed: Sequence[Command]) -> pa.Table:
    """Record the switch changes of ``changed`` in ``registry`` (with their history) and
    return their EndDeviceEvents (:data:`~headend.model.schema.EVENTS`) for the caller to
    store and publish like any event; meters the registry does not know are skipped."""
    eff = switch_effects(changed)
    if not eff:
        return schema.EVENTS.empty_table()
    idx = registry.idx_for_id(pa.array([e[0] for e in eff], pa.string()))
    ok = idx >= 0
    at_s = np.array([e[2] // 1000 for e in eff], np.int64)
    registry.set_switch_states(idx[ok], np.array([e[1] for e in eff], np.uint8)[ok], at_s[ok],
                               [e[3] for e, k in zip(eff, ok, strict=True) if k])
    return pa.table({"meter_idx": pa.array(idx[ok], pa.int32()),
                     "event_time": pa.array(at_s[ok]).cast(schema.TS),
                     "event_code": pa.array(np.array([e[4] for e in eff], np.uint32)[ok])},
                    schema=schema.EVENTS)


def responses_handler(root: Path | str, *, clock: Callable[[], float] = time.time
                      ) -> Callable[[bytes, str], tuple[int, int, pa.Table, pa.Table]]:
    """The ingest pipeline's hook for ``command_responses`` (``headend ingest``): decode,
    apply to the command store of the data directory ``root`` (opened for the call);
    answers (responses that changed a command, duplicates, quarantine rows)."""

    def handle(data: bytes, source: str) -> tuple[int, int, pa.Table, pa.Table]:
        from headend.commands.sqlite import SqliteCommandStore, command_store_path
        from headend.store.registry import MeterRegistry

        now_ms = int(clock() * 1000)
        good, rej = decode_command_responses(data, source=source, received_at=now_ms // 1000)
        store = SqliteCommandStore(command_store_path(root))
        try:
            applied = apply_responses(store, good, source=source, now_ms=now_ms,
                                      received_at=now_ms // 1000)
        finally:
            store.close()
        n_changed = good.num_rows - applied.duplicate - len(applied.rejects)
        events = apply_switch(MeterRegistry(Path(root)), applied.changed)
        return (n_changed, applied.duplicate, pa.concat_tables([rej, applied.quarantine]),
                events)

    return handle


assert set(C.RESPONSE_STATUSES.values()) <= set(C.COMMAND_STATES)
