"""Outage detection, location, restoration, nesting, storms, replay and restart."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from pyarrow import ipc

from headend.model.codes import EVENT
from headend.rules import EngineConfig, MemorySink, RuleEngine, default_ruleset, parse_ruleset
from headend.rules.testing import Fault, grid_meters, score_outages, simulate
from headend.rules.topology import SUBSTATION, Topology, partition_of

from ._kit import T0, events, grid_reads

ONLY_OUTAGES = parse_ruleset({"rules": [{"name": "outages", "kind": "outage"}]})


def _run(meters: pa.Table, reads: pa.Table, evs: pa.Table, **kw: object) -> RuleEngine:
    eng = RuleEngine(None, meters, config=kw.pop("config", ONLY_OUTAGES),  # type: ignore[arg-type]
                     sink=MemorySink())
    eng.process(reads, evs)
    return eng


def _exported(eng: RuleEngine) -> list[dict[str, object]]:
    return [o.export() | {"parent": o.parent_id} for o in eng.outages]


def test_transformer_outage_located_with_30_percent_of_gasps_and_restorations_lost() -> None:
    meters = grid_meters(1, 2, 5, 4)
    f = Fault("transformer", "S0F0T1", T0 + 3617, T0 + 3617 + 3 * 3600)
    reads, evs = simulate(meters, T0, T0 + 86_400, [f], gasp_loss=0.3, restore_loss=0.3, seed=1)
    # the seed loses gasps and restorations of this transformer's meters
    lost = 4 - sum(1 for r in evs.to_pylist() if r["event_code"] == EVENT.power_fail)
    assert lost >= 1
    out = _exported(_run(meters, reads, evs))
    assert [(o["level"], o["device_id"], o["start"], o["end"], o["sustained"],
             o["meters_affected"]) for o in out] == [
        ("transformer", "S0F0T1", "2026-01-01T01:00:17Z", "2026-01-01T04:00:17Z", True, 4)]


def test_momentary_meter_outage_is_not_sustained() -> None:
    meters = grid_meters(1, 1, 2, 3)
    f = Fault("meter", "S0F0T1M2", T0 + 7205, T0 + 7205 + 60)
    reads, evs = simulate(meters, T0, T0 + 6 * 3600, [f])
    out = _exported(_run(meters, reads, evs))
    assert [(o["level"], o["device_id"], o["start"], o["end"], o["sustained"])
            for o in out] == [("meter", "S0F0T1M2", "2026-01-01T02:00:05Z",
                               "2026-01-01T02:01:05Z", False)]


def test_feeder_outage_is_one_outage_not_five_transformers() -> None:
    meters = grid_meters(1, 2, 5, 4)
    f = Fault("feeder", "S0F1", T0 + 5 * 3600 + 1, T0 + 6 * 3600)
    reads, evs = simulate(meters, T0, T0 + 12 * 3600, [f], gasp_loss=0.3, seed=4)
    out = _exported(_run(meters, reads, evs))
    assert [(o["level"], o["device_id"], o["start"], o["end"], o["meters_affected"])
            for o in out] == [("feeder", "S0F1", "2026-01-01T05:00:01Z",
                               "2026-01-01T06:00:00Z", 20)]


def test_meter_still_out_after_feeder_restoration_is_a_nested_outage() -> None:
    meters = grid_meters(1, 2, 5, 4)
    a, b, c = T0 + 3600 + 30, T0 + 3 * 3600, T0 + 6 * 3600 + 10
    faults = [Fault("feeder", "S0F0", a, b), Fault("meter", "S0F0T2M1", a, c)]
    reads, evs = simulate(meters, T0, T0 + 12 * 3600, faults, seed=2)
    eng = _run(meters, reads, evs)
    out = _exported(eng)
    feeder = next(o for o in out if o["level"] == "feeder")
    assert (feeder["device_id"], feeder["start"], feeder["end"], feeder["meters_affected"]) == (
        "S0F0", "2026-01-01T01:00:30Z", "2026-01-01T03:00:00Z", 20)
    nested = [o for o in out if o["level"] == "meter"]
    assert [(o["device_id"], o["start"], o["end"], o["parent"]) for o in nested] == [
        ("S0F0T2M1", "2026-01-01T03:00:00Z", "2026-01-01T06:00:10Z", feeder["outage_id"])]
    assert len(out) == 2


def test_transformer_with_every_gasp_lost_is_found_from_silence() -> None:
    meters = grid_meters(1, 1, 3, 4)
    f = Fault("transformer", "S0F0T2", T0 + 7200 + 100, T0 + 5 * 3600 + 40)
    reads, evs = simulate(meters, T0, T0 + 10 * 3600, [f], gasp_loss=1.0, seed=0)
    out = _exported(_run(meters, reads, evs))
    # start known to one interval: the last read before the silence (02:00) + 1 s
    assert [(o["level"], o["device_id"], o["start"], o["end"]) for o in out] == [
        ("transformer", "S0F0T2", "2026-01-01T02:00:01Z", "2026-01-01T05:00:40Z")]


def test_storm_mode_raises_one_storm_alert_and_keeps_meter_outages_off_the_oms() -> None:
    meters = grid_meters(1, 4, 20, 3)
    faults = [Fault("transformer", f"S0F{i % 4}T{i // 4}", T0 + 3600 + 7 * i, T0 + 7200)
              for i in range(60)]
    faults.append(Fault("meter", "S0F3T19M0", T0 + 3700, T0 + 9000))
    reads, evs = simulate(meters, T0, T0 + 4 * 3600, faults, gasp_loss=0.3, seed=6)
    cfg = parse_ruleset({"rules": [{"name": "outages", "kind": "outage",
                                    "params": {"storm_outages": 50}}]})
    eng = _run(meters, reads, evs, config=cfg)
    # starts of transformers whose every gasp was lost are known to one interval
    assert score_outages(list(eng.outages), faults, tol_s=900)["recall"] == 1.0
    kinds = [(a.kind, a.level) for a in eng.sink.alerts]  # type: ignore[union-attr]
    assert kinds.count(("storm", "substation")) == 1
    assert ("outage", "meter") not in kinds  # recorded, but not sent during the storm
    assert sum(1 for o in eng.outages if o.level == "meter") == 1


def test_storm_location_precision_and_recall() -> None:
    meters = grid_meters(2, 5, 20, 5)
    faults = [Fault("feeder", "S1F4", T0 + 3650, T0 + 9000)]
    faults += [Fault("transformer", f"S{i % 2}F{(i // 2) % 4}T{i // 8}", T0 + 3600 + 11 * i,
                     T0 + 3600 + 11 * i + (120 if i % 5 == 0 else 5400)) for i in range(150)]
    reads, evs = simulate(meters, T0, T0 + 8 * 3600, faults, gasp_loss=0.3, restore_loss=0.3,
                          seed=11)
    score = score_outages(list(_run(meters, reads, evs).outages), faults)
    assert score["precision"] == 1.0
    assert score["recall"] == 1.0
    assert score["max_start_error_s"] == 0.0


def test_file_order_inside_one_ingest_does_not_matter() -> None:
    meters = grid_meters(1, 2, 5, 4)
    f = Fault("transformer", "S0F1T3", T0 + 4000, T0 + 9000)
    reads, evs = simulate(meters, T0, T0 + 6 * 3600, [f], gasp_loss=0.3, seed=3)
    together = _exported(_run(meters, reads, evs))
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES)
    eng.on_stored(SimpleNamespace(source="r", reads=reads, events=evs.slice(0, 0)))
    eng.on_stored(SimpleNamespace(source="e", reads=reads.slice(0, 0), events=evs))
    eng.on_watermark(T0 + 6 * 3600)
    assert _exported(eng) == together
    assert len(together) == 1


def test_restart_from_checkpoint_gives_the_same_outages(tmp_path: Path) -> None:
    meters = grid_meters(1, 2, 5, 4)
    faults = [Fault("transformer", "S0F1T3", T0 + 4000, T0 + 4 * 3600),
              Fault("meter", "S0F0T0M0", T0 + 7 * 3600, T0 + 7 * 3600 + 100)]
    reads, evs = simulate(meters, T0, T0 + 10 * 3600, faults, gasp_loss=0.3, seed=3)
    straight = _exported(_run(meters, reads, evs))

    def part(t: pa.Table, col: str, lo: int, hi: int) -> pa.Table:
        s = t.column(col).cast(pa.int64()).to_numpy()
        return t.filter(pa.array((s > lo) & (s <= hi)))

    cut = T0 + 2 * 3600 + 450  # in the middle of the transformer outage
    e1 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)
    e1.process(part(reads, "interval_end", 0, cut), part(evs, "event_time", 0, cut), cut)
    assert [o["end"] for o in _exported(e1)] == [None]  # ongoing at the cut
    e2 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)  # a new process
    assert e2.watermark == cut
    e2.process(part(reads, "interval_end", cut, 1 << 40), part(evs, "event_time", cut, 1 << 40))
    assert _exported(e2) == straight
    assert (tmp_path / "rules" / "outages.jsonl").read_text().count("\n") == 2


def test_replayed_rows_go_to_the_late_output_and_change_nothing(tmp_path: Path) -> None:
    meters = grid_meters(1, 1, 2, 2)
    reads = grid_reads(4, T0, T0 + 3 * 3600)
    evs = events([(1, T0 + 3700, "power_fail"), (1, T0 + 3760, "power_restored")])
    eng = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)
    eng.process(reads, evs)
    before = _exported(eng)
    eng.process(reads, evs)  # same rows again, all at or before the watermark
    assert _exported(eng) == before and len(before) == 1
    assert eng.late_rows == len(reads) + len(evs)
    files = sorted(p.name for p in (tmp_path / "rules" / "late").iterdir())
    assert [f.split("-")[1] for f in files] == ["reads.arrow", "events.arrow"]
    with pa.memory_map(str(tmp_path / "rules" / "late" / files[1])) as src:
        assert ipc.open_file(src).read_all().num_rows == 2


def test_ongoing_outage_at_end_of_input_stays_open() -> None:
    meters = grid_meters(1, 1, 2, 3)
    f = Fault("transformer", "S0F0T0", T0 + 3600 + 9, None)
    reads, evs = simulate(meters, T0, T0 + 3 * 3600, [f])
    out = _exported(_run(meters, reads, evs))
    assert [(o["level"], o["device_id"], o["end"], o["sustained"]) for o in out] == [
        ("transformer", "S0F0T0", None, True)]


class _AnsweringPinger:
    """A Pinger adapter whose meters in ``up`` answer at once, others stay silent."""

    verifies = True

    def __init__(self, up: set[int]) -> None:
        self.up = up
        self.calls: list[tuple[list[int], int]] = []

    def request(self, meters: np.ndarray, at_s: int) -> None:
        self.calls.append((meters.tolist(), at_s))

    def answers(self, meters: np.ndarray, at_s: int) -> np.ndarray:
        return np.array([1 if m in self.up else 0 for m in meters.tolist()], np.int8)


def test_a_meter_answering_a_ping_is_not_left_in_a_nested_outage() -> None:
    meters = grid_meters(1, 2, 5, 4)
    a, b, c = T0 + 3600 + 30, T0 + 3 * 3600, T0 + 6 * 3600 + 10
    faults = [Fault("feeder", "S0F0", a, b), Fault("meter", "S0F0T2M1", a, c)]
    reads, evs = simulate(meters, T0, T0 + 12 * 3600, faults, seed=2)
    pinger = _AnsweringPinger({9})  # S0F0T2M1 is meter_idx 9: it answers
    eng = RuleEngine(None, meters, config=ONLY_OUTAGES, pinger=pinger)
    eng.process(reads, evs)
    assert [(o["level"], o["device_id"]) for o in _exported(eng)] == [("feeder", "S0F0")]
    # asked at the first slice of data one interval + slack after the feeder's end (the
    # meters back by then have reported), read when the outage is finished (the same
    # request again: idempotent)
    assert {(tuple(m), t) for m, t in pinger.calls} == {((9,), T0 + 3 * 3600 + 1800)}
    assert next(iter(eng.outages)).inputs[-1] == "ping"


def test_crash_between_checkpoints_replays_the_durable_buffer(tmp_path: Path) -> None:
    meters = grid_meters(1, 2, 5, 4)
    f = Fault("transformer", "S0F1T3", T0 + 4000, T0 + 4 * 3600)
    reads, evs = simulate(meters, T0, T0 + 8 * 3600, [f], gasp_loss=0.3, seed=3)
    straight = _exported(_run(meters, reads, evs))
    cfg = ONLY_OUTAGES.model_copy(update={"engine": EngineConfig(checkpoint_interval_s=1e9)})
    e1 = RuleEngine(tmp_path, meters, config=cfg)
    e1.process(reads, evs)  # first flush checkpoints; nothing after it would
    e1.process(reads.slice(0, 0), evs.slice(0, 0), T0 + 9 * 3600)  # no checkpoint: "crash"
    e2 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)
    assert e2.watermark == T0 + 8 * 3600
    assert _exported(e2) == straight


def test_two_partitions_by_substation_find_what_one_engine_finds() -> None:
    meters = grid_meters(2, 2, 5, 4)
    faults = [Fault("feeder", "S0F1", T0 + 3700, T0 + 9000),
              Fault("transformer", "S1F0T2", T0 + 3710, T0 + 5000),
              Fault("meter", "S1F1T4M3", T0 + 3720, T0 + 3800)]
    reads, evs = simulate(meters, T0, T0 + 6 * 3600, faults, gasp_loss=0.3, seed=8)
    full = RuleEngine(None, meters)
    full.process(reads, evs)
    part = partition_of(Topology.from_meters(meters).device[SUBSTATION], 2)
    found: list[dict[str, object]] = []
    alarms = 0
    for k in range(2):
        cfg = default_ruleset().model_copy(update={"engine": EngineConfig(partitions=2,
                                                                          partition=k)})
        eng = RuleEngine(None, meters, config=cfg)
        mine_r = pa.array(part[reads.column("meter_idx").to_numpy()] == k)
        mine_e = pa.array(part[evs.column("meter_idx").to_numpy()] == k)
        eng.process(reads.filter(mine_r), evs.filter(mine_e), T0 + 6 * 3600)
        found += _exported(eng)
        alarms += len(eng.alarms)
    assert sorted(found, key=str) == sorted(_exported(full), key=str)
    assert len(found) == 3
    assert alarms == len(full.alarms) == 0  # no partition sees the other's meters as silent


def test_files_left_by_a_crash_inside_a_checkpoint_are_ignored(tmp_path: Path) -> None:
    meters = grid_meters(1, 1, 2, 2)
    reads = grid_reads(4, T0, T0 + 2 * 3600)
    eng = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)
    eng.on_stored(SimpleNamespace(source="a", reads=reads, events=events([])))
    eng.on_watermark(T0 + 3600)  # half the rows stay buffered
    meta = json.loads((tmp_path / "rules" / "checkpoint" / "meta.json").read_text())
    assert len(meta["pending"]) == 1 and meta["state"].startswith("state-")
    # leftovers of an interrupted checkpoint: an older state, an already processed file
    ck = tmp_path / "rules" / "checkpoint"
    (ck / "state-000000000000.npz").write_bytes(b"garbage")
    stale = tmp_path / "rules" / "pending" / "000000000001-events.arrow"
    with pa.OSFile(str(stale), "wb") as sink, ipc.new_file(sink, evs_schema()) as w:
        w.write_table(events([(0, T0 + 100, "power_fail")]))
    e2 = RuleEngine(tmp_path, meters, config=ONLY_OUTAGES)
    assert (e2.watermark, e2._buf_rows) == (T0 + 3600, len(reads) // 2)
    e2.on_watermark(T0 + 2 * 3600)
    assert list(e2.outages) == [] and e2.watermark == T0 + 2 * 3600


def evs_schema() -> pa.Schema:
    return events([]).schema
