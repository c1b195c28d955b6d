"""Outage evidence that must not be lost or reused (issue 12, outage verification
without pings): a restoration whose gasp was lost, flags and gaps an earlier outage
explains, one meter's gasp amid a storm, a feeder located from one meter's clock."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headend.model.codes import EVENT
from headend.rules import MemorySink, RuleEngine, parse_ruleset
from headend.rules.testing import Fault, grid_meters, simulate

from ._kit import T0

GRID = (1, 2, 5, 4)  # 1 substation, 2 feeders, 5 transformers each, 4 meters each
FAIL = int(EVENT.power_fail)


def _run(meters: pa.Table, faults: list[Fault], *, drop: set[tuple[int, int]] = frozenset(),
         hours: int = 8, **params: object) -> list[tuple[object, ...]]:
    """Outages found; ``drop``: (meter_idx, event code) events lost on the way."""
    reads, evs = simulate(meters, T0, T0 + hours * 3600, faults)
    m = evs.column("meter_idx").to_numpy()
    c = evs.column("event_code").to_numpy()
    keep = np.ones(len(m), np.bool_)
    for mi, code in drop:
        keep &= ~((m == mi) & (c == code))
    cfg = parse_ruleset({"rules": [{"name": "outages", "kind": "outage", "params": params}]})
    eng = RuleEngine(None, meters, config=cfg, sink=MemorySink())  # type: ignore[arg-type]
    eng.process(reads, evs.filter(pa.array(keep)))
    return sorted((o.level, o.device_id, o.start, o.end, o.parent_id) for o in eng.outages)


def test_a_meter_whose_gasp_was_lost_is_found_from_its_restoration() -> None:
    g = grid_meters(*GRID)
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 2700
    mid = str(g.column("meter_id")[5].as_py())
    found = _run(g, [Fault("meter", mid, a, b)], drop={(5, FAIL)})
    # start: the meter's last sign of power before the gap (its last read), end: the
    # restoration; no other meter is touched
    last_read = (a // 900) * 900
    assert found == [("meter", mid, last_read, b, None)]


def test_without_the_restoration_either_nothing_is_invented() -> None:
    g = grid_meters(*GRID)
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 60
    mid = str(g.column("meter_id")[5].as_py())
    # gasp and restoration lost, out for a minute inside one interval: no evidence at all
    found = _run(g, [Fault("meter", mid, a, b)], drop={(5, FAIL), (5, int(EVENT.power_restored))})
    assert [f for f in found if f[0] != "meter" or f[1] != mid] == []


def test_a_restoration_of_a_device_outage_is_not_a_meter_outage_of_its_own() -> None:
    g = grid_meters(*GRID)
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 1800
    # transformer S0F0T1 (meters 4-7): meter 5's gasp lost, the others' arrive
    found = _run(g, [Fault("transformer", "S0F0T1", a, b)], drop={(5, FAIL)})
    assert found == [("transformer", "S0F0T1", a, b, None)]


def test_flags_an_outage_explains_do_not_make_the_next_gasp_a_device_outage() -> None:
    g = grid_meters(*GRID)
    # a feeder momentary, then one meter alone fails 400 s later in the same interval
    # (beyond clock_tolerance_s): its mates' reads of that interval are flagged by the
    # momentary, not by its failure
    a = T0 + 3600 + 100
    mid = str(g.column("meter_id")[6].as_py())
    found = _run(g, [Fault("feeder", "S0F0", a, a + 20), Fault("meter", mid, a + 400, a + 3000)])
    assert ("feeder", "S0F0", a, a + 20, None) in found
    assert ("meter", mid, a + 400, a + 3000, None) in found
    assert len(found) == 2, found


def test_one_gasp_amid_a_storm_does_not_take_the_substation_down() -> None:
    g = grid_meters(*GRID)
    a = T0 + 3600 + 400
    # feeder S0F1 and three transformers of S0F0 are out (32 of the substation's 40
    # meters dark); an hour later one meter of S0F0's last transformers fails alone: the
    # substation's meters are mostly out, and each feeder's, but not by this failure
    mid = str(g.column("meter_id")[12].as_py())  # S0F0T3M0
    long = a + 4 * 3600
    storm = [Fault("feeder", "S0F1", a, long)] + [
        Fault("transformer", f"S0F0T{k}", a + 600 * (k + 1), long) for k in (0, 1, 4)]
    found = _run(g, [*storm, Fault("meter", mid, a + 3600, a + 5400)])
    assert ("meter", mid, a + 3600, a + 5400, None) in found
    assert not [f for f in found if f[0] == "substation"], found


def test_a_feeder_needs_the_gasps_of_more_than_one_meter() -> None:
    g = grid_meters(*GRID)
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 1800
    # every gasp of the feeder lost but one: one meter's gasp locates its transformer at
    # most (the others' silence dates the failure to an interval, not to the gasp)
    lost = {(m, FAIL) for m in range(20) if m != 4}
    found = _run(g, [Fault("feeder", "S0F0", a, b)], drop=lost)
    assert not [f for f in found if f[0] in ("feeder", "substation") and f[2] == a]
    with_share = _run(g, [Fault("feeder", "S0F0", a, b)], drop=lost, feeder_min_gasp_share=0.0)
    assert with_share == found  # two meters at least, whatever the share


def test_checkpoint_keeps_the_restorations_waiting() -> None:
    from headend.rules.config import OutageConfig
    from headend.rules.outage import OutageRule

    r = OutageRule("o", OutageConfig())
    r.grow(3)
    r.q_meter = np.array([1], np.int32)
    r.q_from, r.q_time = np.array([T0], np.int64), np.array([T0 + 600], np.int64)
    back = OutageRule("o", OutageConfig())
    back.restore(r.snapshot())
    assert back.q_meter.tolist() == [1] and back.q_time.tolist() == [T0 + 600]
    old = {k: v for k, v in r.snapshot().items() if not k.startswith("q_")}
    older = OutageRule("o", OutageConfig())
    older.restore(old)  # a checkpoint from before: nothing waiting
    assert len(older.q_meter) == 0



def test_a_substation_with_one_feeder_fails_as_its_feeder() -> None:
    g = grid_meters(1, 1, 5, 4)  # S0 feeds only S0F0: the same 20 meters
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 20
    for level, dev in (("feeder", "S0F0"), ("substation", "S0")):
        # either fault looks the same to AMI: reported as the feeder
        assert _run(g, [Fault(level, dev, a, b)]) == [("feeder", "S0F0", a, b, None)]

