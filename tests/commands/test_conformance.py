"""Conformance suite of the command store port, run over every adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.commands import (
    Command,
    CommandStore,
    ReadsBrought,
    RepeatedTransition,
    SqliteCommandStore,
    TransitionError,
    UnknownCommand,
)
from headend.errors import StorageError, ValidationError

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]


def cmd(cid: str, meter: str = "M1", *, kind: str = "read", state: str = "queued",
        reason: str | None = None, at: int = T0, detail: str | None = None) -> Command:
    return Command(cid, kind, meter, state, reason, detail, "alice", at, at, at + 3_600_000,
                   "1001", "3.21.0.46")


def test_put_get_round_trip(store: CommandStore) -> None:
    c = cmd("c1", detail="customer called")
    assert store.put([c]) == [c]
    assert store.get("c1") == c
    assert store.get("nope") is None


def test_same_id_twice_is_one_command(store: CommandStore) -> None:
    first = cmd("c1", "M1")
    again = cmd("c1", "M2", kind="ping", at=T0 + 5)
    assert store.put([first]) == [first]
    assert store.put([again]) == [first]  # the stored one answers
    assert store.put([cmd("c2"), cmd("c2", "M9")]) == [cmd("c2"), cmd("c2")]
    assert [c.command_id for c in store.list()] == ["c1", "c2"]
    assert len(store.history("c1")) == 1 and len(store.history("c2")) == 1


def test_every_transition_of_the_lifecycle(store: CommandStore) -> None:
    paths = {
        "a": ["sent", "delivered", "completed"],
        "b": ["sent", "completed"],
        "c": ["sent", "queued", "sent", "delivered", "failed"],
        "d": ["expired"],
        "e": ["sent", "expired"],
        "f": ["sent", "delivered", "expired"],
        "g": ["failed"],
        "h": ["sent", "failed"],
    }
    store.put([cmd(k) for k in paths])
    for k, states in paths.items():
        for i, s in enumerate(states):
            reason = "meter_unreachable" if s == "failed" else None
            got = store.transition(k, s, actor="collector-1001", at_ms=T0 + i + 1,
                                   reason=reason, detail=f"step {i}")
            assert got.state == s and got.updated_ms == T0 + i + 1
            assert got.reason == {"failed": "meter_unreachable", "expired": "expired"}.get(s)
        assert store.get(k).state == states[-1]  # type: ignore[union-attr]
        assert [h.state for h in store.history(k)] == ["queued", *states]
        assert [h.seq for h in store.history(k)] == list(range(len(states) + 1))


@pytest.mark.parametrize(("path", "bad"), [
    ([], "delivered"), ([], "completed"), ([], "queued-not"), ([], "rejected"),
    (["sent", "delivered"], "sent"), (["sent", "delivered"], "queued"),
    (["sent", "completed"], "failed"), (["expired"], "sent"), (["failed"], "completed"),
])
def test_moves_the_lifecycle_refuses_change_nothing(store: CommandStore, path: list[str],
                                                    bad: str) -> None:
    store.put([cmd("c1")])
    for s in path:
        store.transition("c1", s, actor="x", at_ms=T0 + 1,
                         reason="collector_error" if s == "failed" else None)
    before, hist = store.get("c1"), store.history("c1")
    with pytest.raises(TransitionError) as exc:
        store.transition("c1", bad, actor="x", at_ms=T0 + 9,
                         reason="collector_error" if bad == "failed" else None)
    assert not isinstance(exc.value, RepeatedTransition)
    assert store.get("c1") == before and store.history("c1") == hist


def test_a_repeated_answer_is_a_repeat_and_changes_nothing(store: CommandStore) -> None:
    store.put([cmd("c1")])
    store.transition("c1", "sent", actor="headend", at_ms=T0 + 1)
    done = store.transition("c1", "completed", actor="collector-1", at_ms=T0 + 2)
    with pytest.raises(RepeatedTransition):
        store.transition("c1", "completed", actor="collector-1", at_ms=T0 + 3)
    assert store.get("c1") == done and len(store.history("c1")) == 3


def test_failed_needs_a_failure_reason(store: CommandStore) -> None:
    store.put([cmd("c1")])
    for reason in (None, "meter_unknown", "whatever"):
        with pytest.raises(TransitionError):
            store.transition("c1", "failed", actor="x", at_ms=T0 + 1, reason=reason)
    with pytest.raises(TransitionError):
        store.transition("c1", "sent", actor="x", at_ms=T0 + 1, reason="expired")
    assert store.get("c1").state == "queued"  # type: ignore[union-attr]


def test_put_checks_reasons_of_the_initial_state(store: CommandStore) -> None:
    with pytest.raises(ValidationError):
        store.put([cmd("r1", state="rejected")])
    with pytest.raises(ValidationError):
        store.put([cmd("r2", state="rejected", reason="meter_unreachable")])
    assert store.list() == []
    r = cmd("r3", state="rejected", reason="meter_one_way")
    assert store.put([r]) == [r]
    with pytest.raises(TransitionError):
        store.transition("r3", "sent", actor="x", at_ms=T0 + 1)


def test_unknown_command(store: CommandStore) -> None:
    with pytest.raises(UnknownCommand) as exc:
        store.transition("ghost", "sent", actor="x", at_ms=T0)
    assert isinstance(exc.value, KeyError) and exc.value.command_id == "ghost"


def test_list_filters_and_order(store: CommandStore) -> None:
    store.put([cmd("a", "M1", at=T0), cmd("b", "M2", at=T0 + 10), cmd("c", "M1", at=T0 + 20),
               cmd("d", "M3", state="rejected", reason="meter_unknown", at=T0 + 30)])
    store.transition("a", "sent", actor="x", at_ms=T0 + 40)
    ids = lambda cs: [c.command_id for c in cs]
    assert ids(store.list()) == ["a", "b", "c", "d"]
    assert ids(store.list(state="queued")) == ["b", "c"]
    assert ids(store.list(state="sent")) == ["a"]
    assert ids(store.list(meter_id="M1")) == ["a", "c"]
    assert ids(store.list(meter_id="M1", state="queued")) == ["c"]
    assert ids(store.list(since_ms=T0 + 20)) == ["a", "c", "d"]  # changed at or after
    assert ids(store.list(limit=2)) == ["a", "b"]
    assert store.list(state="nonsense") == []


def test_history_of_all_in_creation_order(store: CommandStore) -> None:
    store.put([cmd("a", detail="move-out"), cmd("b")])
    store.transition("b", "sent", actor="headend", at_ms=T0 + 1)
    store.transition("a", "failed", actor="collector-7", at_ms=T0 + 2,
                     reason="meter_refused", detail="switch locked")
    rows = [(h.command_id, h.seq, h.state, h.reason, h.actor, h.detail, h.at_ms)
            for h in store.history()]
    assert rows == [("a", 0, "queued", None, "alice", "move-out", T0),
                    ("a", 1, "failed", "meter_refused", "collector-7", "switch locked",
                     T0 + 2),
                    ("b", 0, "queued", None, "alice", None, T0),
                    ("b", 1, "sent", None, "headend", None, T0 + 1)]
    assert store.get("a").detail == "switch locked"  # type: ignore[union-attr]


def test_closed_store_refuses(store: CommandStore) -> None:
    store.close()
    with pytest.raises(StorageError):
        store.get("c1")


def test_sqlite_restart_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    s = SqliteCommandStore(path)
    s.put([cmd(f"c{i}", f"M{i % 3}") for i in range(50)])
    for i in range(0, 50, 2):
        s.transition(f"c{i}", "sent", actor="headend", at_ms=T0 + i)
    before, hist = s.list(), s.history()
    s.close()
    again = SqliteCommandStore(path)
    assert again.list() == before and again.history() == hist
    assert [c.command_id for c in again.list(state="sent")] == [f"c{i}" for i in range(0, 50, 2)]
    assert again.put([cmd("c3", "other")]) == [before[3]]  # still idempotent
    again.close()


def test_sqlite_two_handles_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    a, b = SqliteCommandStore(path), SqliteCommandStore(path)
    a.put([cmd("c1")])
    assert b.put([cmd("c1", "M2")]) == [cmd("c1")]
    b.transition("c1", "sent", actor="b", at_ms=T0 + 1)
    assert a.get("c1").state == "sent"  # type: ignore[union-attr]
    a.close()
    b.close()


def test_transition_many_is_all_or_nothing(store: CommandStore) -> None:
    s = store
    s.put([cmd("a"), cmd("b")])
    got = s.transition_many([("a", "sent", "headend", T0 + 1, None, None),
                             ("b", "sent", "headend", T0 + 1, None, None),
                             ("a", "completed", "collector-9", T0 + 2, None, "ok")])
    assert [(c.command_id, c.state) for c in got] == [("a", "sent"), ("b", "sent"),
                                                      ("a", "completed")]
    with pytest.raises(TransitionError):
        s.transition_many([("b", "delivered", "new-actor", T0 + 3, None, None),
                           ("a", "sent", "new-actor", T0 + 3, None, None)])
    assert s.get("b").state == "sent"  # type: ignore[union-attr]
    s.transition("b", "failed", actor="new-actor", at_ms=T0 + 4, reason="collector_error")
    assert [(h.state, h.actor) for h in s.history("b")] == [
        ("queued", "alice"), ("sent", "headend"), ("failed", "new-actor")]
    assert [(h.state, h.actor, h.detail) for h in s.history("a")][-1] == (
        "completed", "collector-9", "ok")
    assert [h.seq for h in s.history("a")] == [0, 1, 2]


# --------------------------------------------------------------- reads of on-demand reads

def _reads(ni: int, nr: int, t0: int, source: str) -> ReadsBrought:
    return ReadsBrought(ni, nr, t0 if ni else None, t0 + 900 * (ni - 1) if ni else None,
                        t0 if nr else None, t0 if nr else None, 1, (source,))


def test_open_reads_are_the_read_commands_sent_or_delivered(store: CommandStore) -> None:
    s = store
    assert dict(s.open_reads()) == {}
    s.put([cmd("q", "M1"), cmd("s", "M1"), cmd("d", "M2"), cmd("done", "M3"),
           cmd("p", "M4", kind="ping"), cmd("s2", "M1")])
    assert dict(s.open_reads()) == {}  # queued ones take no reads yet
    for cid in ("s", "d", "done", "p", "s2"):
        s.transition(cid, "sent", actor="headend", at_ms=T0 + 1)
    s.transition("d", "delivered", actor="collector", at_ms=T0 + 2)
    s.transition("done", "failed", actor="collector", at_ms=T0 + 2, reason="meter_unreachable")
    assert dict(s.open_reads()) == {"M1": ("s", "s2"), "M2": ("d",)}
    s.transition("s", "queued", actor="headend", at_ms=T0 + 3)  # to be sent again
    assert dict(s.open_reads()) == {"M1": ("s2",), "M2": ("d",)}


def test_record_reads_adds_up_and_survives(store: CommandStore) -> None:
    s = store
    s.put([cmd("r", "M1"), cmd("q", "M2"), cmd("p", "M3", kind="ping")])
    s.transition("r", "sent", actor="headend", at_ms=T0 + 1)
    s.transition("p", "sent", actor="headend", at_ms=T0 + 1)
    assert s.get("r").reads == ReadsBrought()  # type: ignore[union-attr]
    assert s.get("p").reads is None  # type: ignore[union-attr]
    got = s.record_reads([("r", _reads(4, 0, 1_000_000, "http:10.0.0.1")),
                          ("q", _reads(1, 1, 5, "x")),  # queued: skipped
                          ("p", _reads(1, 1, 5, "x")),  # not a read: skipped
                          ("nope", _reads(1, 1, 5, "x")),  # unknown: skipped
                          ("r", _reads(2, 3, 999_100, "mqtt:1001"))])
    assert got == ["r", "r"]
    want = ReadsBrought(6, 3, 999_100, 1_002_700, 999_100, 999_100, 2,
                        ("http:10.0.0.1", "mqtt:1001"))
    assert s.get("r").reads == want  # type: ignore[union-attr]
    assert s.get("q").reads == ReadsBrought()  # type: ignore[union-attr]
    # a state change keeps them; the history records no change for them
    s.transition("r", "completed", actor="collector", at_ms=T0 + 5)
    done = s.get("r")
    assert done is not None and done.reads == want and done.to_json()["reads"]["uploads"] == 2
    assert [h.state for h in s.history("r")] == ["queued", "sent", "completed"]
    assert [c.reads for c in s.list() if c.command_id == "r"] == [want]
    # a completed command takes no more
    assert s.record_reads([("r", _reads(1, 0, 7, "late"))]) == []
    assert s.get("r").reads == want  # type: ignore[union-attr]


def test_sqlite_reads_survive_a_restart_and_are_seen_by_another_handle(
        tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite"
    a = SqliteCommandStore(path)
    b = SqliteCommandStore(path)
    a.put([cmd("r", "M1")])
    assert dict(b.open_reads()) == {}
    a.transition("r", "sent", actor="headend", at_ms=T0 + 1)
    assert dict(b.open_reads()) == {"M1": ("r",)}  # another connection's change is seen
    b.record_reads([("r", _reads(3, 1, 1_000_000, "f.hef"))])
    assert dict(a.open_reads()) == {"M1": ("r",)}
    a.close()
    b.close()
    again = SqliteCommandStore(path)
    got = again.get("r")
    assert got is not None and got.reads == _reads(3, 1, 1_000_000, "f.hef")
    again.close()


def test_sqlite_version_1_file_gains_the_reads_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "commands.sqlite"
    s = SqliteCommandStore(path)
    s.put([cmd("old", "M1")])
    s.transition("old", "expired", actor="headend", at_ms=T0 + 1)
    s.close()
    db = sqlite3.connect(path)  # as version 1 left it: no reads column, no index
    db.execute("DROP INDEX commands_taking_reads")
    db.execute("ALTER TABLE commands DROP COLUMN reads")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    again = SqliteCommandStore(path)
    got = again.get("old")
    assert got is not None and got.reads == ReadsBrought()
    # reason codes of version 1 files are read as they were written
    assert (got.state, got.reason) == ("expired", "expired")
    assert [h.reason for h in again.history("old")] == [None, "expired"]
    again.close()
