"""The pure lifecycle: every allowed move, every refused one, without a store."""

from __future__ import annotations

import itertools

import pytest

from headend.commands import Command, RepeatedTransition, TransitionError, advance
from headend.model import commands as C

T0 = 1_767_225_600_000


def _in(state: str) -> Command:
    reason = {"rejected": "meter_unknown", "failed": "collector_error",
              "expired": "expired"}.get(state)
    return Command("c", "read", "M", state, reason, "why", "a", T0, T0 + 10, T0 + 99,
                   "1", "3.21.0.46")


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(C.COMMAND_STATES,
                                                                C.COMMAND_STATES)))
def test_the_table_decides(src: str, dst: str) -> None:
    reason = "meter_refused" if dst == "failed" else None
    if src == dst:
        with pytest.raises(RepeatedTransition):
            advance(_in(src), dst, at_ms=T0 + 20, reason=reason)
    elif dst in C.TRANSITIONS[src]:
        got = advance(_in(src), dst, at_ms=T0 + 20, reason=reason)
        assert (got.state, got.updated_ms) == (dst, T0 + 20)
        assert got.reason == {"failed": "meter_refused", "expired": "expired"}.get(dst)
        assert got.detail == "why" and got.created_ms == T0
    else:
        with pytest.raises(TransitionError) as exc:
            advance(_in(src), dst, at_ms=T0 + 20, reason=reason)
        assert (exc.value.state, exc.value.to_state) == (src, dst)


def test_time_never_goes_back_and_detail_replaces() -> None:
    got = advance(_in("sent"), "delivered", at_ms=T0, detail="via relay 4")
    assert got.updated_ms == T0 + 10 and got.detail == "via relay 4"


def test_json_of_a_command() -> None:
    assert _in("queued").to_json() == {
        "command_id": "c", "kind": "read", "meter_id": "M", "state": "queued",
        "reason": None, "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.010Z", "detail": "why",
        "reads": {"interval_reads": 0, "register_reads": 0, "first_interval_end": None,
                  "last_interval_end": None, "first_read_time": None,
                  "last_read_time": None, "uploads": 0, "sources": []}}
