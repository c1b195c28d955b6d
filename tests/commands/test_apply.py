"""Applying command responses to a store (every adapter): states, duplicates, quarantine."""

from __future__ import annotations

import pyarrow as pa

from headend.commands import Command, CommandStore, decode_command_responses
from headend.commands.apply import apply_responses

T0 = 1_767_225_600_000


def _cmd(cid: str, meter: str, state: str = "queued", reason: str | None = None) -> Command:
    return Command(cid, "disconnect", meter, state, reason, "why", "ops", T0, T0,
                   T0 + 86_400_000, "C1", "3.31.0.23")


def _responses(*rows: str) -> pa.Table:
    body = "command_id,meter_id,status,time,detail\n" + "".join(r + "\n" for r in rows)
    good, rej = decode_command_responses(body.encode(), source="t")
    assert rej.num_rows == 0
    return good


def test_apply(store: CommandStore) -> None:
    store.put([_cmd("q", "M1"), _cmd("s", "M2"), _cmd("r", "M3", "rejected", "critical_care"),
               _cmd("x", "M4")])
    store.transition("s", "sent", actor="headend", at_ms=T0 + 1)
    store.transition("x", "expired", actor="headend", at_ms=T0 + 1)
    got = apply_responses(store, _responses(
        "q,M1,completed,2026-01-01T00:00:05Z,open",  # queued: marked sent first
        "s,M2,delivered,2026-01-01T00:00:01Z,",
        "s,M2,switch_failed,2026-01-01T00:00:02Z,stuck",
        "s,M2,delivered,2026-01-01T00:00:03Z,",  # after failed: a duplicate
        "q,M1,completed,2026-01-01T00:00:06Z,",  # answered twice
        "r,M3,completed,2026-01-01T00:00:00Z,",  # rejected: conflict
        "x,M4,completed,2026-01-01T00:00:00Z,",  # expired: conflict
        "q,M9,completed,2026-01-01T00:00:00Z,",  # another meter
        "nobody,M1,completed,2026-01-01T00:00:00Z,\"a, b\""), source="up", now_ms=T0 + 10)
    assert [(c.command_id, c.state) for c in got.changed] == [
        ("q", "sent"), ("q", "completed"), ("s", "delivered"), ("s", "failed")]
    assert got.duplicate == 2
    q = got.quarantine
    assert list(zip(q.column("reason").to_pylist(), q.column("payload").to_pylist(),
                    strict=True)) == [
        ("command_response_conflict", b"r,M3,completed,2026-01-01T00:00:00.000Z,"),
        ("command_response_conflict", b"x,M4,completed,2026-01-01T00:00:00.000Z,"),
        ("bad_command_response", b"q,M9,completed,2026-01-01T00:00:00.000Z,"),
        ("unknown_command", b'nobody,M1,completed,2026-01-01T00:00:00.000Z,"a, b"')]
    assert set(q.column("kind").to_pylist()) == {"command_responses"}
    assert [(h.state, h.actor, h.detail) for h in store.history("q")] == [
        ("queued", "ops", "why"),
        ("sent", "collector", "answered before it was recorded as sent"),
        ("completed", "collector", "completed at 2026-01-01T00:00:05.000Z: open")]
    s = store.get("s")
    assert s is not None and (s.state, s.reason) == ("failed", "switch_failed")
    assert (s.updated_ms, s.detail) == (T0 + 10, "switch_failed at 2026-01-01T00:00:02.000Z: stuck")
