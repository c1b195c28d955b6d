"""serve's view of the open commands (``headend.serve.commands._OpenCommands``): views
of a command come from several threads, so an older one never replaces a newer one and
an ended command is never opened again by a late view; a poll plans on its collector's
commands only, and on none when none is queued."""

from __future__ import annotations

from dataclasses import replace

from headend.commands import Command
from headend.serve.commands import _OpenCommands


def _cmd(cid: str, state: str, at: int, collector: str = "C1") -> Command:
    return Command(cid, "ping", "E1", state, None, None, "t", 0, at, 10**12, collector,
                   "3.26.0.46")


def test_an_older_view_never_replaces_a_newer_one() -> None:
    v = _OpenCommands([_cmd("a", "queued", 1), _cmd("b", "queued", 1, "C2")])
    assert v.queued == {"C1": 1, "C2": 1}
    v.put(_cmd("a", "sent", 5))
    v.put(_cmd("a", "queued", 1))  # a late publish of its creation
    assert v.by_id["a"].state == "sent" and v.queued["C1"] == 0
    assert v.of("C1") == [] and [c.command_id for c in v.of("C2")] == ["b"]
    v.put(_cmd("a", "queued", 9))  # sent again later (no answer): a newer view
    assert v.by_id["a"].state == "queued" and [c.command_id for c in v.of("C1")] == ["a"]
    same_ms = _cmd("b", "sent", 1, "C2")
    v.put(same_ms)
    v.put(replace(same_ms, state="queued"))  # same instant: lifecycle order decides
    assert v.by_id["b"].state == "sent"


def test_an_ended_command_is_not_opened_again() -> None:
    v = _OpenCommands([_cmd("a", "sent", 1)])
    v.end("a")
    v.put(_cmd("a", "sent", 2))  # a late publish of its hand-over
    assert "a" not in v.by_id and v.of("C1") == []
    fresh = v.reset([_cmd("c", "queued", 3)])
    fresh.put(_cmd("a", "sent", 2))
    assert list(fresh.by_id) == ["c"] and "a" in fresh.ended
