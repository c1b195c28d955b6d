"""Overlapping outages: each meter's events and reads follow the union of its outages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from headend.model.codes import EVENT, QUALITY_BY_NAME, READING_TYPE_BY_NAME
from headend.sim import Faults, Incident, Scenario, Storm, build_utility, iter_uploads
from headend.sim.faults import PowerOff
from headend.sim.scenarios import _Ctx

from .conftest import Run

D = 900
Q_POWER_FAIL = 1 << QUALITY_BY_NAME["power_fail"].bit
KWH_DEL = READING_TYPE_BY_NAME["kwh_del"].code
LOSS = {"gasp_loss": 0.0, "restore_loss": 0.0}


@dataclass(frozen=True)
class Fixed(Scenario):
    """Outages given as ``(level, device_id, first_meter, n_meters, start, end)``."""

    spans: tuple[tuple[str, str, int, int, int, int], ...] = ()
    name = "fixed"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        return [Incident("outage", lvl, dev, np.arange(f, f + n, dtype=np.int32), s, e,
                         dict(LOSS)) for lvl, dev, f, n, s, e in self.spans]


def _cols(t: pa.Table) -> dict[str, np.ndarray]:
    return {n: (c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_numpy()
            for n, c in zip(t.column_names, t.columns, strict=True)}


@pytest.fixture(scope="module")
def nested() -> tuple[Run, dict[str, tuple[int, int, int, int]]]:
    """Feeder F00002 out 01:00:07-03:00:07; inside it transformer A (01:10-02:00) and a
    meter of A (01:20-01:30), transformer B out 02:05 to 04:02:03 (past the feeder's
    end), and a meter of a third transformer out from 00:50 (before the feeder) to
    01:01:40."""
    u = build_utility(6000, seed=3, days=1)
    t0 = u.start_s
    fd = u.feeders.to_pylist()[1]
    txs = [t for t in u.transformers.to_pylist() if t["feeder_id"] == fd["feeder_id"]]
    a, b, c = txs[0], txs[1], txs[2]
    dev = {
        "feeder": (fd["first_meter"], fd["n_meters"], t0 + 3600 + 7, t0 + 3 * 3600 + 7),
        "tx_a": (a["first_meter"], a["n_meters"], t0 + 3600 + 600, t0 + 2 * 3600),
        "meter_a": (a["first_meter"] + 1, 1, t0 + 3600 + 1200, t0 + 3600 + 1800),
        "tx_b": (b["first_meter"], b["n_meters"], t0 + 2 * 3600 + 300, t0 + 4 * 3600 + 123),
        "meter_c": (c["first_meter"], 1, t0 + 3000, t0 + 3600 + 100),
    }
    levels = {"feeder": ("feeder", fd["feeder_id"]), "tx_a": ("transformer", a["transformer_id"]),
              "meter_a": ("meter", "ma"), "tx_b": ("transformer", b["transformer_id"]),
              "meter_c": ("meter", "mc")}
    spans = tuple((*levels[k], *v) for k, v in dev.items())
    plan = Faults((Fixed(spans),)).resolve(u)
    return Run(u, plan, list(iter_uploads(u, plan))), dev


def _expected(dev: dict[str, tuple[int, int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Each meter's dark spans, by hand: feeder span, B's meters to B's end, meter c
    from its own start."""
    f0, fn, fs, fe = dev["feeder"]
    b0, bn, _, be = dev["tx_b"]
    mc, _, cs, _ = dev["meter_c"]
    out = {m: [(fs, fe)] for m in range(f0, f0 + fn)}
    for m in range(b0, b0 + bn):
        out[m] = [(fs, be)]
    out[mc] = [(cs, fe)]
    return out


def test_ground_truth_keeps_every_outage(nested):
    r, dev = nested
    gt = r.plan.ground_truth().to_pylist()
    assert [x["level"] for x in gt] == ["feeder", "transformer", "meter", "transformer", "meter"]
    for x, (f, n, s, e) in zip(gt, dev.values(), strict=True):
        assert (int(x["start"].timestamp()), int(x["end"].timestamp())) == (s, e)
        assert x["meter_idx"] == list(range(f, f + n))


def test_power_off_spans_are_the_union(nested):
    r, dev = nested
    po = r.plan.power_off
    want = _expected(dev)
    ms = np.array(sorted(want), np.int32)
    np.testing.assert_array_equal(po.meter, ms)  # one dark span per meter
    np.testing.assert_array_equal(po.start, [want[m][0][0] for m in ms])
    np.testing.assert_array_equal(po.end, [want[m][0][1] for m in ms])
    mc, b0, bn = dev["meter_c"][0], dev["tx_b"][0], dev["tx_b"][1]
    np.testing.assert_array_equal(po.first, np.where(ms == mc, 4, 0))
    np.testing.assert_array_equal(po.last, np.where((ms >= b0) & (ms < b0 + bn), 3, 0))


def test_one_gasp_and_one_restoration_per_meter(nested):
    r, dev = nested
    e = _cols(r.plan.event_table())
    want = _expected(dev)
    for code, pick, jitter in ((EVENT.power_fail, 0, 3), (EVENT.power_restored, 1, 30)):
        sel = e["event_code"] == code
        m, t = e["meter_idx"][sel], e["event_time"][sel]
        o = np.argsort(m, kind="stable")
        m, t = m[o], t[o]
        np.testing.assert_array_equal(m, sorted(want))  # exactly one per meter, none else
        exp = np.array([want[x][0][pick] for x in m])
        assert ((t >= exp) & (t < exp + jitter)).all()
    sent = [x["events_sent"] for x in r.plan.ground_truth().to_pylist()]
    fn, bn = dev["feeder"][1], dev["tx_b"][1]
    assert sent == [(fn - 1) + (fn - bn), 0, 0, bn, 1]  # inner outages send nothing
    # the delivered events are those sent within the simulated day
    d = _cols(r.events)
    assert len(d["meter_idx"]) == int((e["event_time"] <= r.u.end_s).sum())


def test_no_reads_inside_the_union(nested):
    r, dev = nested
    u = r.u
    rd = _cols(r.reads)
    sel = rd["reading_type"] == KWH_DEL
    m, end, q = rd["meter_idx"][sel], rd["interval_end"][sel], rd["quality"][sel]
    grid = u.start_s + D * np.arange(1, u.n_cycles + 1)
    dark = np.zeros((u.n_electric, len(grid)), np.int64)  # seconds dark per interval
    for x, spans in _expected(dev).items():
        for s, e_ in spans:
            dark[x] += np.clip(np.minimum(grid, e_) - np.maximum(grid - D, s), 0, None)
    have = np.zeros_like(dark, np.bool_)
    flag = np.zeros_like(dark, np.bool_)
    col = (end - u.start_s) // D - 1
    have[m, col] = True
    flag[m, col] = (q & Q_POWER_FAIL) != 0
    np.testing.assert_array_equal(have, dark < D)  # no read for intervals wholly dark
    np.testing.assert_array_equal(flag, (dark > 0) & (dark < D))  # 1.2.32 on partial ones
    # meter a's own outage (inside A, inside the feeder) changes nothing: dark throughout
    assert not have[dev["meter_a"][0], (dev["feeder"][2] - u.start_s) // D + 1:][:7].any()


def test_power_off_merges_touching_and_ties():
    def inc(s: int, e: int, *ms: int) -> Incident:
        return Incident("outage", "meter", "x", np.array(ms, np.int32), s, e, dict(LOSS))

    po = PowerOff.of([inc(10, 20, 1, 2), inc(20, 30, 1), inc(10, 30, 2), inc(5, 5, 3),
                      inc(40, 50, 1), Incident("gap", "meter", "x", np.array([3], np.int32),
                                               0, 100)])
    np.testing.assert_array_equal(po.meter, [1, 1, 2])
    np.testing.assert_array_equal(po.start, [10, 40, 10])
    np.testing.assert_array_equal(po.end, [30, 50, 30])
    np.testing.assert_array_equal(po.first, [0, 4, 0])  # ties: first injected
    np.testing.assert_array_equal(po.last, [1, 4, 2])
    assert len(PowerOff.of([]).meter) == 0


def test_storm_meters_alternate_gasp_and_restoration():
    u = build_utility(20000, seed=7)  # 300 transformers and a feeder, overlapping
    plan = Faults((Storm(gasp_loss=0.0, restore_loss=0.0),)).resolve(u)
    po = plan.power_off
    assert len(po.meter) < sum(len(i.meters) for i in plan.incidents)  # they overlap
    e = _cols(plan.events)
    o = np.lexsort((e["true_time"], e["meter_idx"]))
    m, code = e["meter_idx"][o], e["event_code"][o]
    first = np.r_[True, m[1:] != m[:-1]]
    gasp = code == EVENT.power_fail
    assert gasp[first].all()  # each meter's first event is a gasp
    assert (gasp[1:] != gasp[:-1])[~first[1:]].all()  # then alternate
    assert gasp.sum() == (~gasp).sum() == len(po.meter)


def test_deterministic_bytes():
    u = build_utility(20000, seed=7)
    f = Faults((Storm(),))
    a, b = f.resolve(u), f.resolve(u)
    assert a.events.equals(b.events)
    assert a.ground_truth().equals(b.ground_truth())
