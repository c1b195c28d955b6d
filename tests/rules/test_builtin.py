"""Power quality, revenue protection, water/gas, silent meters, overload, generic kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import schema
from headend.rules import RuleEngine, parse_ruleset
from headend.rules.alerts import iso

from ._kit import T0, events, grid_reads, reads


def _meters() -> pa.Table:
    """Four electric meters on S0F0T0 (M0-M3), a water (W) and a gas (G) meter on it."""
    ids = ["M0", "M1", "M2", "M3", "W", "G"]
    n = len(ids)
    return pa.table({
        "meter_idx": pa.array(np.arange(n, dtype=np.int32)),
        "meter_id": ids,
        "serial": pa.array(np.arange(n, dtype=np.uint64)),
        "commodity": pa.array([0, 0, 0, 0, 1, 2], pa.uint8()),
        "technology": pa.array([0] * n, pa.uint8()),
        "two_way": [True] * n,
        "collector_id": ["C"] * n,
        "transformer_id": ["S0F0T0"] * n,
        "feeder_id": ["S0F0"] * n,
        "substation_id": ["S0"] * n,
        "interval_s": pa.array([900] * n, pa.int32()),
    }, schema=schema.METERS)


def _engine(rule: dict[str, object], root: Path | None = None) -> RuleEngine:
    return RuleEngine(root, _meters(), config=parse_ruleset({"rules": [rule]}))


def _alarms(eng: RuleEngine) -> list[tuple[object, ...]]:
    out = [(a.rule, a.level, a.device_id, a.start - T0, None if a.end is None else a.end - T0)
           for a in eng.alarms]
    return sorted(out, key=lambda x: (x[3], x[1], x[2], x[0]))  # type: ignore[return-value]


def _set(tbl: pa.Table, meter: int, ends: list[int], value: int) -> pa.Table:
    """Replace the value of ``meter``'s reads at the given interval ends."""
    m = tbl.column("meter_idx").to_numpy()
    t = tbl.column("interval_end").cast(pa.int64()).to_numpy()
    hit = (m == meter) & np.isin(t, np.array(ends) + T0)
    v = np.where(hit, value, tbl.column("value").to_numpy()).astype(np.int32)
    return tbl.set_column(3, schema.READS.field("value"), pa.array(v))


def test_voltage_outside_range_a_per_meter_and_rolled_up_to_the_transformer() -> None:
    r = grid_reads(4, T0, T0 + 3 * 3600, rt="volts", value=2400)  # 240.0 V service
    for m in (0, 1):
        r = _set(r, m, [3600, 4500, 5400], 2250)  # 225.0 V < 228 V (114 V x 2)
    r = _set(r, 2, [7200], 2530)  # one interval above 252 V: shorter than 30 min
    eng = _engine({"name": "voltage", "kind": "voltage", "params": {"duration_s": 1800}})
    eng.process(r, events([]))
    assert _alarms(eng) == [("voltage", "meter", "M0", 2700, 5400),
                            ("voltage", "meter", "M1", 2700, 5400),
                            ("voltage", "transformer", "S0F0T0", 2700, 5400)]
    assert sorted(a.detail.split(" ANSI")[0] for a in eng.alarms) == [
        "transformer voltage below", "voltage below", "voltage below"]
    assert all("Range A (114-126 V on 120 V base); 45 min" in a.detail for a in eng.alarms)


def test_voltage_range_b_ignores_a_range_a_excursion() -> None:
    r = _set(grid_reads(4, T0, T0 + 3 * 3600, rt="volts", value=2400), 0, [3600, 4500], 2250)
    eng = _engine({"name": "vb", "kind": "voltage", "params": {"range": "B"}})
    eng.process(r, events([]))
    assert _alarms(eng) == []  # 225 V is inside Range B (220-254 V on 240 V)


def test_tamper_events_are_alarms_naming_their_input() -> None:
    eng = _engine({"name": "tamper", "kind": "tamper"})
    eng.process(reads([]), events([(3, T0 + 100, "cover_removed"),
                                   (2, T0 + 200, "magnetic_tamper"),
                                   (1, T0 + 300, "low_battery")]))
    assert _alarms(eng) == [("tamper", "meter", "M3", 100, 100), ("tamper", "meter", "M2", 200, 200)]
    assert [a.inputs for a in eng.alarms] == [("events:3.12.29.212",), ("events:3.12.66.257",)]


def test_reverse_energy_from_quality_events_or_assumed_absence_of_generation() -> None:
    rev = 1 << 4  # quality 1.3.1 reverse rotation
    rows = [(m, "kwh_rec", T0 + k * 900, 50 if k in (2, 3, 4) else 0, 0)
            for m in (1, 2) for k in range(1, 9)]
    rows += [(0, "kwh_del", T0 + k * 900, 0, rev if k in (5, 6) else 0) for k in range(1, 9)]
    evs = events([(3, T0 + 50, "reverse_energy")])
    eng = _engine({"name": "rev", "kind": "reverse_energy"})
    eng.process(reads(rows), evs)  # received energy alone may be rooftop solar
    assert _alarms(eng) == [("rev", "meter", "M3", 50, 50), ("rev", "meter", "M0", 3600, 5400)]
    eng = _engine({"name": "rev", "kind": "reverse_energy",
                   "params": {"assume_no_generation": True, "generation_meters": ["M2"]}})
    eng.process(reads(rows), evs)
    assert _alarms(eng) == [("rev", "meter", "M3", 50, 50), ("rev", "meter", "M1", 900, 3600),
                            ("rev", "meter", "M0", 3600, 5400)]


def test_zero_consumption_while_neighbours_consume() -> None:
    r = _set(grid_reads(4, T0, T0 + 4 * 3600), 3, [k * 900 for k in range(1, 11)], 0)
    r = _set(r, 2, [k * 900 for k in range(1, 11)], 0)
    # M2 exports meanwhile (rooftop solar): zero delivered is not suspicious there
    export = reads([(2, "kwh_rec", T0 + k * 900, 300, 0) for k in range(1, 11)])
    eng = _engine({"name": "zero", "kind": "zero_consumption"})
    eng.process(pa.concat_tables([r, export]), events([]))
    assert _alarms(eng) == [("zero", "meter", "M3", 0, 9000)]


def test_water_leak_after_24_hours_of_continuous_flow() -> None:
    rows = [(4, "water_m3", T0 + k * 900, 2 if k <= 100 else 0, 0) for k in range(1, 105)]
    eng = _engine({"name": "leak", "kind": "water_leak"})
    eng.process(reads(rows[:50]), events([]))
    assert _alarms(eng) == []  # 12.5 h of flow: not yet
    eng.process(reads(rows[50:]), events([]))
    assert _alarms(eng) == [("leak", "meter", "W", 0, 90_000)]


def test_gas_flow_above_limit_over_a_sliding_hour_across_batches() -> None:
    rows = [(5, "gas_m3", T0 + k * 900, 3000 if k in (3, 4, 5) else 0, 0) for k in range(1, 10)]
    eng = _engine({"name": "gas", "kind": "gas_flow"})
    eng.process(reads(rows[:4]), events([]))  # the window spans the two batches
    eng.process(reads(rows[4:]), events([]))
    # 1-h sums (4 intervals) exceed 6 m3 at the 5th and 6th interval ends
    assert _alarms(eng) == [("gas", "meter", "G", 3600, 5400)]


def test_silent_meter_opens_and_closes_and_is_not_an_outage() -> None:
    r = grid_reads(4, T0, T0 + 3 * 3600, skip=[(3, T0 + 3601, T0 + 9000)])
    eng = _engine({"name": "silent", "kind": "silent_meter"})
    eng.process(r.filter(pc.less_equal(r["interval_end"].cast(pa.int64()), T0 + 8100)),
                events([]))
    # the water and gas meters never reported: silent since the first data seen
    never = [("silent", "meter", "G", 900, None), ("silent", "meter", "W", 900, None)]
    assert _alarms(eng) == never + [("silent", "meter", "M3", 3600, None)]
    eng.process(r.filter(pc.greater(r["interval_end"].cast(pa.int64()), T0 + 8100)), events([]))
    assert _alarms(eng) == never + [("silent", "meter", "M3", 3600, 9000)]


def test_transformer_overload_uses_the_ratings_file(tmp_path: Path) -> None:
    (tmp_path / "transformer_ratings.csv").write_text("transformer_id,rating_kva\nS0F0T0,50\n")
    r = grid_reads(4, T0, T0 + 3 * 3600)  # 0.25 kWh / 15 min = 1 kW per meter
    r = r.filter(pc.less(r["meter_idx"], 4))
    for m in range(4):
        r = _set(r, m, [2700, 3600, 4500], 5000)  # 20 kW each, 80 kW > 50 kVA x 0.9
    eng = _engine({"name": "overload", "kind": "transformer_overload"}, tmp_path)
    eng.process(r, events([]))
    assert _alarms(eng) == [("overload", "transformer", "S0F0T0", 1800, 4500)]
    # without a rating nothing is checked, unless a rating per meter is assumed:
    # 4 meters x 5 kVA = 20 kVA (18 kW): 4 kW is fine, 80 kW is not
    eng2 = _engine({"name": "overload", "kind": "transformer_overload"})
    eng2.process(r, events([]))
    assert _alarms(eng2) == []
    eng3 = _engine({"name": "overload", "kind": "transformer_overload",
                    "params": {"default_kva_per_meter": 5}})
    eng3.process(r, events([]))
    assert _alarms(eng3) == [("overload", "transformer", "S0F0T0", 1800, 4500)]


def test_generic_threshold_and_event_count_rules_from_yaml_form() -> None:
    r = grid_reads(4, T0, T0 + 3 * 3600)
    for m in range(4):
        r = _set(r, m, [4500, 5400], 20_000)  # 20 kWh in each of two intervals
    rs = parse_ruleset({"rules": [
        {"name": "tx_hourly", "kind": "threshold",
         "params": {"reading_type": "kwh_del", "by": "transformer", "agg": "sum",
                    "window_s": 3600, "op": ">", "value": 50.0}},
        {"name": "battery", "kind": "event_count",
         "params": {"event_codes": ["3.2.22.150"], "count": 2, "window_s": 3600}},
        {"name": "off", "kind": "tamper", "enabled": False},
    ]})
    eng = RuleEngine(None, _meters(), config=rs)
    assert [x.name for x in eng.rules] == ["tx_hourly", "battery"]
    eng.process(r, events([(1, T0 + 100, "low_battery"), (1, T0 + 1000, "low_battery"),
                           (2, T0 + 100, "low_battery"), (3, T0 + 100, "cover_removed")]))
    assert _alarms(eng) == [("battery", "meter", "M1", 100, 1000),
                            ("tx_hourly", "transformer", "S0F0T0", 3600, 7200)]
    assert iso(T0) == "2026-01-01T00:00:00Z"
