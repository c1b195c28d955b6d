"""The downlink scheduler: in-flight limit, rate, priorities, back-off, expiry (pure)."""

from __future__ import annotations

import pytest

from headend.commands import Command
from headend.commands.scheduler import (
    Bucket,
    Candidate,
    SchedulerConfig,
    expiring,
    handover_backoff_ms,
    plan,
    resend_delay_ms,
    resend_due,
)
from headend.errors import ValidationError

FAR = 10**12
CFG = SchedulerConfig(max_in_flight=4, rate_per_s=2.0, burst=3, resend_after_s=10,
                      backoff_max_s=35, max_sends=3, handover_retry_s=1)


def cand(cid: str, kind: str = "read", coll: str = "C1", created: int = 0, expires: int = FAR,
         not_before: int = 0) -> Candidate:
    return Candidate(cid, coll, kind, created, expires, not_before)


def cmd(cid: str, state: str, expires: int = FAR) -> Command:
    return Command(cid, "read", "M1", state, None, None, "t", 0, 0, expires, "C1", "3.21.0.46")


def test_priority_then_creation_then_id() -> None:
    q = [cand("r1", created=1), cand("p1", "ping", created=5), cand("r0", created=1),
         cand("c1", "connect", created=9), cand("d1", "disconnect", created=8)]
    cfg = SchedulerConfig(max_in_flight=10, burst=10)
    assert plan(q, {}, {}, 0, cfg).send == {"C1": ["d1", "c1", "p1", "r0", "r1"]}


def test_a_disconnect_is_not_stuck_behind_reads() -> None:
    reads = [cand(f"r{i:05d}", created=i) for i in range(10_000)]
    p = plan([*reads, cand("d", "disconnect", created=10_001)], {"C1": 3}, {}, 0, CFG)
    assert p.send == {"C1": ["d"]}  # one room left (4 - 3), and it goes to the disconnect


def test_in_flight_limit_per_collector() -> None:
    q = [cand(f"a{i}", coll="A") for i in range(5)] + [cand(f"b{i}", coll="B") for i in range(5)]
    p = plan(q, {"A": 4, "B": 2}, {}, 0, CFG)
    assert p.send == {"B": ["b0", "b1"]}
    assert p.buckets == {"A": Bucket(3.0, 0), "B": Bucket(1.0, 0)}


def test_rate_token_bucket() -> None:
    q = [cand(f"r{i}") for i in range(10)]
    cfg = SchedulerConfig(max_in_flight=100, rate_per_s=2.0, burst=3)
    p1 = plan(q, {}, {}, 1_000, cfg)
    assert p1.send == {"C1": ["r0", "r1", "r2"]}  # the burst
    left = q[3:]
    p2 = plan(left, {}, p1.buckets, 1_400, cfg)  # 0.8 token gained: none whole
    assert p2.send == {} and p2.buckets["C1"] == Bucket(0.8, 1_400)
    p3 = plan(left, {}, p2.buckets, 2_000, cfg)  # 2.0 tokens
    assert p3.send == {"C1": ["r3", "r4"]}
    p4 = plan(left[2:], {}, p3.buckets, 100_000, cfg)  # never more than the burst
    assert p4.send == {"C1": ["r5", "r6", "r7"]}


def test_expired_and_backed_off_are_left_out_and_collectors_filter() -> None:
    q = [cand("gone", expires=500), cand("later", not_before=2_000), cand("ok"),
         cand("other", coll="C2")]
    assert plan(q, {}, {}, 1_000, CFG).send == {"C1": ["ok"], "C2": ["other"]}
    p = plan(q, {}, {}, 1_000, CFG, collectors=frozenset({"C2"}))
    assert p.send == {"C2": ["other"]} and set(p.buckets) == {"C2"}
    assert plan(q, {}, {}, 2_000, CFG).send["C1"] == ["later", "ok"]


def test_expiring() -> None:
    cmds = [cmd("q", "queued", 100), cmd("s", "sent", 100), cmd("d", "delivered", 100),
            cmd("c", "completed", 100), cmd("f", "queued", 101)]
    assert expiring(cmds, 100) == ["q", "s", "d"]


def test_resend_backoff_and_limit() -> None:
    assert [resend_delay_ms(k, CFG) for k in (1, 2, 3)] == [10_000, 20_000, 35_000]
    sent = [(cmd("a", "sent"), 1, 0), (cmd("b", "sent"), 2, 0), (cmd("c", "sent"), 3, 0),
            (cmd("x", "sent", expires=5_000), 1, 0), (cmd("d", "delivered"), 1, 0)]
    assert resend_due(sent, 9_999, CFG) == []
    assert resend_due(sent, 10_000, CFG) == ["a"]
    assert resend_due(sent, 20_000, CFG) == ["a", "b"]  # c was sent max_sends times


def test_handover_backoff() -> None:
    assert [handover_backoff_ms(k, CFG) for k in (1, 2, 3, 9)] == [1_000, 2_000, 4_000, 35_000]


@pytest.mark.parametrize("bad", [{"max_in_flight": 0}, {"rate_per_s": 0}, {"burst": 0},
                                 {"max_sends": 0}, {"resend_after_s": -1}])
def test_config_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        SchedulerConfig(**bad)  # type: ignore[arg-type]


def test_candidate_needs_a_collector() -> None:
    c = Command("n", "ping", "M1", "queued", None, None, "t", 0, 0, 1, None, "3.26.0.46")
    with pytest.raises(ValidationError):
        Candidate.of(c)
