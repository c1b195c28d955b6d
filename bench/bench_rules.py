"""Benchmark of the real-time rule engine (``headend.rules``); not a test.

Measures, with every built-in rule enabled:

* **throughput** [items/s on one core]: 15-minute interval reads (``kwh_del`` and
  ``volts``) plus power events of ``--meters`` meters for one day, fed as the live
  stream is (one ``on_stored`` + ``on_watermark`` per upload cycle), no I/O;
* **state** [bytes] of the engine for ``--state-meters`` meters (default 4 M): every
  dense rule array and the topology, after one batch touched them;
* **latency** [ms]: p50/p99/max processing time of 100 ms batches at 30,000 items/s on
  the ``--state-meters`` engine, fed as collectors deliver (interval E's reads spread
  over the next interval; ``allowed_lateness_s`` = 900, so each interval is processed in
  one flush when the next starts: that flush is the max), and the utilisation (busy
  time / wall time at that rate; < 1 keeps up);
* **outage location** precision/recall on storms: the package test kit (hundreds of
  simultaneous transformer outages and a few feeders, 30 % of gasps and restorations
  lost, several seeds) and, if available, the project simulator's ``Storm`` scenario
  (``headend.sim``; 300 transformers + 20 feeders, 30 % of gasps and restorations
  lost), scored against the observable truth (``testing.observable_truth``); and its
  held-out variant (``sim_storm(held_out=True)``) per ``--seeds``, with the evidence
  alone and with verification by ping (:class:`TruthPinger`: answers from the ground
  truth after 5-240 s), with the false positives and misses listed, and the outages
  whose every gasp was lost scored apart.

Run::

    python bench/bench_rules.py                       # ~2-4 min on 2 cores
    python bench/bench_rules.py --meters 20000 --state-meters 400000 --quick
    python bench/bench_rules.py --storm-only --seeds 1,2,3,4,5   # ~1 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mb, report

from headend.model import codes, schema
from headend.rules import EngineConfig, MemorySink, RuleEngine, default_ruleset
from headend.rules.testing import Fault, grid_meters, score_outages, simulate

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
TS = pa.timestamp("s", tz="UTC")


def _meters(n: int) -> pa.Table:
    """``n`` meters (rounded) on transformers of 8, feeders of 50 transformers."""
    n_tx = max(1, n // 8)
    n_feeder = max(1, n_tx // 50)
    return grid_meters(max(1, n_feeder // 10), min(10, n_feeder), 50, 8) if n >= 4000 else \
        grid_meters(1, 1, n_tx, 8)


def _cycle(n: int, t: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    m = np.arange(n, dtype=np.int32)
    kwh = rng.integers(50, 600, n).astype(np.int32)
    volts = rng.normal(2400, 20, n).round().astype(np.int32)
    reads = pa.table({
        "meter_idx": pa.array(np.concatenate([m, m])),
        "reading_type": pa.array(np.r_[np.zeros(n, np.uint8), np.full(n, 2, np.uint8)]),
        "interval_end": pa.array(np.full(2 * n, t, np.int64)).cast(TS),
        "value": pa.array(np.concatenate([kwh, volts])),
        "quality": pa.array(np.zeros(2 * n, np.uint32)),
    }, schema=schema.READS)
    k = max(1, n // 2000)  # a few events per cycle
    em = rng.choice(n, k, replace=False).astype(np.int32)
    ev = pa.table({
        "meter_idx": pa.array(em),
        "event_time": pa.array(t - rng.integers(1, 800, k)).cast(TS),
        "event_code": pa.array(rng.choice([codes.EVENT.low_battery, codes.EVENT.cover_removed],
                                          k).astype(np.uint32)),
    }, schema=schema.EVENTS)
    return reads, ev


def throughput(n: int) -> dict[str, Any]:
    meters = _meters(n)
    n = len(meters)
    rng = np.random.default_rng(0)
    cycles = [_cycle(n, T0 + 900 * (c + 1), rng) for c in range(96)]
    eng = RuleEngine(None, meters, config=default_ruleset(), sink=MemorySink())
    items = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for r, e in cycles:
        eng.on_stored(SimpleNamespace(source="bench", reads=r, events=e))
        eng.on_watermark(int(r.column("interval_end")[0].value))
        items += len(r) + len(e)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"throughput_meters": n, "throughput_items": items,
            "throughput_wall_s": wall, "throughput_cpu_s": cpu,
            "items_per_s_per_core": items / cpu, "items_per_s_wall": items / wall,
            "alarms": len(eng.alarms)}


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(x) for x in obj) + 8 * len(obj)
    if isinstance(obj, str):
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    return 0


def state_and_latency(n: int, rate: int = 30_000, batch_s: float = 0.1) -> dict[str, Any]:
    t_build = time.perf_counter()
    meters = _meters(n)
    n = len(meters)
    eng = RuleEngine(None, meters, config=default_ruleset(), sink=MemorySink())
    rng = np.random.default_rng(1)
    r, e = _cycle(n, T0 + 900, rng)
    eng.on_stored(SimpleNamespace(source="bench", reads=r, events=e))
    eng.on_watermark(T0 + 900)
    build_s = time.perf_counter() - t_build
    rules_bytes = sum(_nbytes(rule.snapshot()) for rule in eng.rules)
    topo = eng.topology()
    topo_arrays = sum(_nbytes(x) for x in (topo.device, topo.two_way, topo.commodity,
                                          topo.interval_s, topo.registered,
                                          [a for pair in topo.members for a in pair]))
    topo_names = sum(_nbytes(x) for x in topo.names)
    # latency: the live pattern. Collectors deliver the reads of interval E over the next
    # interval, in 100 ms batches of rate * batch_s items; the ingestor calls
    # on_watermark(max event time seen) after each; allowed_lateness_s = one interval,
    # so interval E is processed (one flush) when reads of E + 900 start to arrive.
    live = default_ruleset().model_copy(
        update={"engine": EngineConfig(allowed_lateness_s=900, tick_s=300,
                                       checkpoint_interval_s=0, max_buffer_rows=20_000_000)})
    eng = RuleEngine(None, meters, config=live, sink=MemorySink())
    per = int(rate * batch_s)
    n_batches = int(np.ceil(2.3 * n / per))
    lat = []
    for b in range(n_batches):
        pos = (b * per + np.arange(per)) % (2**62)
        k, m = pos // n, (pos % n).astype(np.int32)
        t_end = T0 + 900 * (k + 1)
        reads = pa.table({
            "meter_idx": pa.array(m), "reading_type": pa.array(np.zeros(per, np.uint8)),
            "interval_end": pa.array(t_end.astype(np.int64)).cast(TS),
            "value": pa.array(rng.integers(50, 600, per).astype(np.int32)),
            "quality": pa.array(np.zeros(per, np.uint32))}, schema=schema.READS)
        w0 = time.perf_counter()
        eng.on_stored(SimpleNamespace(source="bench", reads=reads,
                                      events=schema.EVENTS.empty_table()))
        eng.on_watermark(eng.max_seen)
        lat.append(time.perf_counter() - w0)
    lat_ms = np.array(lat) * 1000
    busy = lat_ms.sum() / 1000
    return {"state_meters": n, "state_build_s": build_s,
            "state_rule_bytes": rules_bytes, "state_topology_array_bytes": topo_arrays,
            "state_topology_name_bytes": topo_names,
            "state_total_bytes": rules_bytes + topo_arrays + topo_names,
            "latency_rate_items_per_s": rate, "latency_batch_ms": batch_s * 1000,
            "latency_batches": n_batches, "latency_late_rows": eng.late_rows,
            "latency_p50_ms": float(np.percentile(lat_ms, 50)),
            "latency_p99_ms": float(np.percentile(lat_ms, 99)),
            "latency_max_ms_interval_flush": float(lat_ms.max()),
            "latency_utilisation": busy / (n_batches * batch_s),
            "latency_keeps_up": bool(busy < n_batches * batch_s)}


def kit_storms(seeds: int = 5) -> dict[str, Any]:
    tp = n_found = n_truth = 0
    worst_end = 0.0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        meters = grid_meters(4, 10, 20, 5)
        feeders = [(s, f) for s in range(4) for f in range(10)]
        pick = rng.permutation(len(feeders))
        bad = [feeders[i] for i in pick[:3]]
        faults = [Fault("feeder", f"S{s}F{f}", T0 + 3600 + int(rng.integers(0, 900)),
                        T0 + 3600 + int(rng.integers(2400, 9000))) for s, f in bad]
        txs = [(s, f, t) for s in range(4) for f in range(10) for t in range(20)
               if (s, f) not in bad]
        for i in rng.choice(len(txs), 300, replace=False):
            s, f, t = txs[i]
            st = T0 + 3600 + int(rng.integers(0, 1800))
            faults.append(Fault("transformer", f"S{s}F{f}T{t}", st,
                                st + int(rng.choice([120, 1800, 5400, 20_000]))))
        reads, evs = simulate(meters, T0, T0 + 12 * 3600, faults, gasp_loss=0.3,
                              restore_loss=0.3, seed=seed)
        eng = RuleEngine(None, meters, config=default_ruleset(), sink=MemorySink())
        eng.process(reads, evs)
        found = list(eng.outages)
        sc = score_outages(found, faults, tol_s=900)
        tp += round(sc["recall"] * len(faults))
        n_found += len(found)
        n_truth += len(faults)
        worst_end = max(worst_end, sc["max_end_error_s"])
    return {"kit_storms": seeds, "kit_outages_true": n_truth, "kit_outages_found": n_found,
            "kit_precision": tp / n_found, "kit_recall": tp / n_truth,
            "kit_max_end_error_s": worst_end}


class TruthPinger:
    """A network pinger for the bench (the rules' ``Pinger`` port, verifying): a
    two-way meter answers a ping asked at ``at_s`` after a latency drawn from
    ``latency_s`` [s] (RF mesh: seconds to minutes), powered or not as the simulator's
    ground truth says at that time (``plan.power_off``); a powered meter's answer is
    lost with probability ``loss``; a one-way meter cannot be pinged."""

    verifies = True

    def __init__(self, plan: Any, two_way: np.ndarray, latency_s: tuple[int, int] = (5, 240),
                 loss: float = 0.0, seed: int = 0) -> None:
        off = plan.power_off
        self._key = (off.meter.astype(np.int64) << 32) | off.start
        self._meter, self._end = off.meter, off.end
        self.two_way, self.latency_s, self.loss = two_way, latency_s, loss
        self.rng = np.random.default_rng(seed)
        n = len(two_way)
        self.ready_at = np.full(n, np.iinfo(np.int64).max, np.int64)  # never asked
        self.answer = np.zeros(n, np.int8)
        self.asked = 0

    def _dark(self, m: np.ndarray, t: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self._key, (m.astype(np.int64) << 32) | t, "right") - 1
        jj = np.maximum(j, 0)
        return (j >= 0) & (self._meter[jj] == m) & (self._end[jj] > t)

    def request(self, meters: np.ndarray, at_s: int) -> None:
        m = np.unique(meters)
        m = m[~((self.ready_at[m] > at_s) & (self.ready_at[m] < np.iinfo(np.int64).max))]
        self.asked += len(m)
        t = at_s + self.rng.integers(self.latency_s[0], self.latency_s[1] + 1, len(m))
        up = ~self._dark(m, t) & (self.rng.random(len(m)) >= self.loss)
        self.ready_at[m] = t
        self.answer[m] = np.where(up, 1, 0)

    def answers(self, meters: np.ndarray, at_s: int) -> np.ndarray:
        out = np.where(self.ready_at[meters] <= at_s, self.answer[meters], 2).astype(np.int8)
        out[~self.two_way[meters]] = -1
        return out


def sim_storm(n: int, seed: int = 1, detail: bool = False, held_out: bool = False,
              pings: bool = False, ping_loss: float = 0.0) -> dict[str, Any]:
    """Outage location on the simulator's ``Storm`` (300 transformers + 20 feeders, 30 %
    of gasps and of restorations lost), scored against what AMI can observe
    (:func:`headend.rules.testing.observable_truth`).

    ``held_out``: the storm plus what the rules were not tuned on: 40 single-meter
    outages (30 % of their gasps lost: a restoration alone tells of them), a substation
    outage, two feeder momentaries and 20 meters whose clocks are off by 1 to 15 minutes;
    figures prefixed ``held_out_``, with the outages whose every gasp was lost scored
    apart. ``pings``: the rules verify by ping through :class:`TruthPinger` (figures
    prefixed ``pings_``; ``ping_loss``: share of powered meters' answers lost)."""
    try:
        from headend.sim import Faults, Storm, build_utility, iter_uploads
        from headend.sim.scenarios import ClockSkew, Momentary, Outage
    except ImportError as exc:  # the simulator is optional here
        return {"sim_storm": f"skipped: {exc}"}
    from headend.rules.testing import match_outages, observable_truth

    u = build_utility(n, seed=seed, days=1)
    storm = Storm(n_transformers=300, n_feeders=20, gasp_loss=0.3, restore_loss=0.3)
    # one scenario per meter: each draws its own start and duration
    extra = (*(Outage(level="meter", count=1, duration_s=int(d), gasp_loss=0.3,
                      restore_loss=0.05) for d in np.geomspace(60, 14_400, 40)),
             Outage(level="substation", count=1, gasp_loss=0.3, restore_loss=0.05),
             Momentary(level="feeder", count=2, gasp_loss=0.3),
             ClockSkew(count=20, max_skew_s=900)) if held_out else ()
    faults = Faults((storm, *extra))
    plan = faults.resolve(u)
    pinger = TruthPinger(plan, u.meters.column("two_way").to_numpy(zero_copy_only=False),
                         loss=ping_loss, seed=seed) if pings else None
    eng = RuleEngine(None, u.meters, config=default_ruleset(), sink=MemorySink(),
                     pinger=pinger)
    for up in iter_uploads(u, plan):  # the live stream: one upload per cycle
        eng.on_stored(SimpleNamespace(source="sim", reads=up.reads, events=up.events))
        eng.on_watermark(eng.max_seen)
    # the simulator stamps gasps 0-2 s and restorations 0-29 s after the change
    truth = observable_truth(plan.ground_truth(), interval_s=900, gasp_spread_s=3,
                             restore_spread_s=30)
    found = list(eng.outages)
    sc = score_outages(found, truth, tol_s=900)
    pre = ("pings_" if pings else "") + ("held_out_" if held_out else "")
    out: dict[str, Any] = {
        "sim_meters": len(u.meters), "sim_seed": seed,
        "sim_outages_injected": len(truth.faults) + len(truth.unobservable),
        "sim_outages_unobservable": len(truth.unobservable),
        "sim_unobservable_by_reason": {k: truth.reasons.count(k) for k in sorted(set(truth.reasons))},
        "sim_outages_shifted": truth.shifted,
        "sim_outages_true": len(truth.faults), "sim_outages_found": len(found),
        "sim_precision": sc["precision"], "sim_recall": sc["recall"],
        "sim_max_start_error_s": sc["max_start_error_s"], "sim_late_rows": eng.late_rows}
    if pinger is not None:
        out["sim_pings"] = pinger.asked
    if held_out:  # outages whose every gasp was lost, apart
        ev = plan.events
        gm, gt_ = ev.column("meter_idx").to_numpy(), ev.column("true_time").to_numpy()
        gasp = ev.column("event_code").to_numpy() == codes.EVENT.power_fail
        dark = {(i.level, i.device_id) for i in plan.incidents
                if i.kind in ("outage", "momentary") and not np.any(
                    gasp & np.isin(gm, i.meters) & (gt_ >= i.start_s) & (gt_ <= i.start_s + 10))}
        lost = [f for f in truth.faults if (f.level, f.device_id) in dark]
        pairs, _, _ = match_outages(found, lost, 900)
        out.update(sim_outages_all_gasps_lost=len(lost), sim_found_all_gasps_lost=len(pairs))
    if detail:
        _, miss, fp = match_outages(found, truth.faults, 900)
        out["sim_misses"] = [(f.level, f.device_id, f.start, f.end) for f in miss]
        out["sim_false_positives"] = [(o.level, o.device_id, o.start, o.end, o.meters_affected,
                                       o.parent_id) for o in fp]
    return {pre + k: v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--state-meters", type=int, default=4_000_000)
    ap.add_argument("--sim-meters", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="fewer storms, shorter latency run")
    ap.add_argument("--storm-only", action="store_true",
                    help="only the simulator's storms (held-out with and without pings)")
    ap.add_argument("--seeds", default="1", help="held-out storm seeds, e.g. 1,2,3,4,5")
    ap.add_argument("--ping-loss", type=float, default=0.0,
                    help="share of powered meters' ping answers lost (TruthPinger)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    figures: dict[str, Any] = {}
    if not args.storm_only:
        figures.update(throughput(args.meters))
        figures.update(state_and_latency(args.state_meters))
        figures.update(kit_storms(2 if args.quick else 5))
        figures.update(sim_storm(args.sim_meters))
    for seed in (int(x) for x in args.seeds.split(",")):
        for pings in (False, True):  # evidence only, then verification by ping
            r = sim_storm(args.sim_meters, seed=seed, held_out=True, pings=pings,
                          ping_loss=args.ping_loss, detail=True)
            figures.update({f"{k}_seed{seed}": v for k, v in r.items()})
    figures["peak_rss_mb"] = peak_rss_mb()
    report("rules", figures, args.out)


if __name__ == "__main__":
    main()
