"""Outage verification by ping (issue 12, point 4) in the rule: the asynchronous
``Pinger`` port, silence confirmed, refined or dropped from the answers, the bounded
wait, one-way meters, and a restart while pings are pending."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.rules import MemorySink, RuleEngine, parse_ruleset
from headend.rules.pinger import CANNOT_PING, NO_ANSWER, PENDING, POWERED
from headend.rules.testing import Fault, grid_meters, simulate

from ._kit import T0

ONLY_OUTAGES = parse_ruleset({"rules": [{"name": "outages", "kind": "outage"}]})
GRID = (1, 2, 5, 4)  # S0F0T1 holds meters 4-7, S0F0T1M2 is meter 6
START, END = T0 + 3600 + 300, T0 + 4 * 3600
#: the last read before the fault (an interval end), + 1 s: where silence starts
SILENT_FROM = T0 + 3600 + 1


class DelayedPinger:
    """A network pinger for tests: a ping asked at ``at_s`` is answered ``delay_s`` of
    event time later, ``NO_ANSWER`` for the meters in ``dark``, ``POWERED`` for the
    others (``delay_s`` None: never answered); one-way meters cannot be pinged."""

    verifies = True

    def __init__(self, dark: set[int], two_way: np.ndarray, delay_s: int | None = 120) -> None:
        self.dark, self.two_way, self.delay_s = dark, two_way, delay_s
        self.asked: dict[int, int] = {}  # meter -> at_s of its latest ping

    def request(self, meters: np.ndarray, at_s: int) -> None:
        for m in meters.tolist():
            if self.asked.get(m) != at_s:
                self.asked[m] = at_s

    def answers(self, meters: np.ndarray, at_s: int) -> np.ndarray:
        out = []
        for m in meters.tolist():
            if not self.two_way[m]:
                out.append(CANNOT_PING)
            elif m not in self.asked or self.delay_s is None or at_s < self.asked[m] + self.delay_s:
                out.append(PENDING)
            else:
                out.append(NO_ANSWER if m in self.dark else POWERED)
        return np.array(out, np.int8)


def _live(eng: RuleEngine, reads: pa.Table, evs: pa.Table, t_from: int, t_to: int) -> None:
    """Feed the rows with event time in ``(t_from, t_to]`` one 15-minute cycle at a time,
    each followed by its watermark (as uploads arrive)."""
    rt, et = pc.cast(reads["interval_end"], pa.int64()), pc.cast(evs["event_time"], pa.int64())
    for t in range(t_from + 900, t_to + 1, 900):
        r = reads.filter(pc.and_(pc.greater(rt, t - 900), pc.less_equal(rt, t)))
        e = evs.filter(pc.and_(pc.greater(et, t - 900), pc.less_equal(et, t)))
        eng.on_stored(SimpleNamespace(reads=r, events=e))
        eng.on_watermark(t)


def _dark_transformer(meters: pa.Table) -> tuple[pa.Table, pa.Table]:
    """S0F0T1 without power from START to END, every gasp and restoration lost."""
    return simulate(meters, T0, T0 + 8 * 3600, [Fault("transformer", "S0F0T1", START, END)],
                    gasp_loss=1.0, restore_loss=1.0, seed=1)


def _found(eng: RuleEngine) -> list[tuple[str, str, int, int]]:
    return [(o.level, o.device_id, o.start, o.meters_affected) for o in eng.outages]


def test_a_transformer_whose_gasps_were_all_lost_is_found_by_ping() -> None:
    meters = grid_meters(*GRID)
    reads, evs = _dark_transformer(meters)
    pinger = DelayedPinger({4, 5, 6, 7}, meters["two_way"].to_numpy())
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink(), pinger=pinger)
    _live(eng, reads, evs, T0, T0 + 8 * 3600)
    assert _found(eng) == [("transformer", "S0F0T1", SILENT_FROM, 4)]
    assert next(iter(eng.outages)).inputs[-1] == "ping"
    # a few meters: ping_meters (3) of the transformer, asked once, when silence began
    assert sorted(pinger.asked) == [4, 5, 6] and len(set(pinger.asked.values())) == 1


def test_silence_answering_pings_is_dropped() -> None:
    """The same silence (reads lost, e.g. a radio fault) while the meters answer: no
    outage; without pings the evidence makes it a transformer outage."""
    meters = grid_meters(*GRID)
    reads, evs = _dark_transformer(meters)
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink(),
                     pinger=DelayedPinger(set(), meters["two_way"].to_numpy()))
    _live(eng, reads, evs, T0, T0 + 8 * 3600)
    assert _found(eng) == []
    evidence = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink())
    _live(evidence, reads, evs, T0, T0 + 8 * 3600)
    assert _found(evidence) == [("transformer", "S0F0T1", SILENT_FROM, 4)]


def test_some_pinged_meters_answering_refine_the_outage() -> None:
    meters = grid_meters(*GRID)
    reads, evs = _dark_transformer(meters)
    # meter 6 answers (its silence is of its radio): the outage is the other three's
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink(),
                     pinger=DelayedPinger({4, 5, 7}, meters["two_way"].to_numpy()))
    _live(eng, reads, evs, T0, T0 + 8 * 3600)
    assert _found(eng) == [("transformer", "S0F0T1", SILENT_FROM, 3)]


def test_pings_unanswered_within_ping_wait_s_count_as_no_answer() -> None:
    meters = grid_meters(*GRID)
    reads, evs = _dark_transformer(meters)
    pinger = DelayedPinger(set(), meters["two_way"].to_numpy(), delay_s=None)
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink(), pinger=pinger)
    _live(eng, reads, evs, T0, T0 + 6 * 900)  # silence found at 90 min: pings asked
    assert _found(eng) == []  # asked, still waiting
    assert sorted(pinger.asked) == [4, 5, 6]
    _live(eng, reads, evs, T0 + 6 * 900, T0 + 8 * 3600)
    assert _found(eng) == [("transformer", "S0F0T1", SILENT_FROM, 4)]


def test_a_single_meter_whose_every_event_was_lost_is_found_by_ping_only() -> None:
    meters = grid_meters(*GRID)
    f = Fault("meter", "S0F0T1M2", START, END)
    reads, evs = simulate(meters, T0, T0 + 8 * 3600, [f], gasp_loss=1.0, restore_loss=1.0)
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink(),
                     pinger=DelayedPinger({6}, meters["two_way"].to_numpy()))
    _live(eng, reads, evs, T0, T0 + 8 * 3600)
    assert _found(eng) == [("meter", "S0F0T1M2", SILENT_FROM, 1)]
    # from the evidence alone, a silent meter is no outage (radio or power?)
    evidence = RuleEngine(None, meters, config=ONLY_OUTAGES, sink=MemorySink())
    _live(evidence, reads, evs, T0, T0 + 8 * 3600)
    assert _found(evidence) == []
    # a one-way meter cannot be pinged: evidence only, and no ping asked
    one_way = grid_meters(*GRID, two_way=False)
    pinger = DelayedPinger({6}, one_way["two_way"].to_numpy())
    eng1 = RuleEngine(None, one_way, config=ONLY_OUTAGES, sink=MemorySink(), pinger=pinger)
    _live(eng1, reads, evs, T0, T0 + 8 * 3600)
    assert _found(eng1) == [] and pinger.asked == {}


def test_pending_verification_survives_a_restart(tmp_path: Path) -> None:
    meters = grid_meters(*GRID)
    reads, evs = _dark_transformer(meters)
    two_way = meters["two_way"].to_numpy()
    first = DelayedPinger({4, 5, 6, 7}, two_way, delay_s=None)  # its answers are lost
    e1 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES, sink=MemorySink(), pinger=first)
    _live(e1, reads, evs, T0, T0 + 6 * 900)  # silence found at 90 min: pings asked
    asked_at = set(first.asked.values())
    assert sorted(first.asked) == [4, 5, 6] and _found(e1) == []
    e1.close()  # checkpoint
    # a new process: a new adapter, asked again with the pings' original time (the
    # command ids are deterministic), and their answers decide
    again = DelayedPinger({4, 5, 6, 7}, two_way)
    e2 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES, sink=MemorySink(), pinger=again)
    _live(e2, reads, evs, T0 + 6 * 900, T0 + 8 * 3600)
    assert set(again.asked.values()) == asked_at
    assert _found(e2) == [("transformer", "S0F0T1", SILENT_FROM, 4)]
