"""critical_care and switch_state: the meters CSV, the registry and export meters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from headend.model import schema
from headend.store.registry import MeterRegistry
from headend.wire.csvfmt import decode_csv

HEAD = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
        "substation_id")


def _load(reg: MeterRegistry, text: str) -> list[str]:
    reasons = []
    for d in decode_csv(text.encode(), source="m.csv"):
        if d.meters is not None and d.meters.num_rows:
            reg.upsert(d.meters)
        for r in d.rejects:
            reasons += r.column("detail").to_pylist()
    return reasons


def _flags(reg: MeterRegistry) -> dict[str, tuple[bool, int]]:
    t = reg.table()
    return dict(zip(t.column("meter_id").to_pylist(),
                    zip(t.column("critical_care").to_pylist(),
                        t.column("switch_state").to_pylist(), strict=True), strict=True))


def test_critical_care_column_is_optional_and_kept(tmp_path: Path) -> None:
    reg = MeterRegistry(tmp_path)
    bad = _load(reg, f"{HEAD},interval_minutes,critical_care\n"
                     "A,electric,rf,true,1,T,F,S,15,true\n"
                     "B,electric,rf,true,1,T,F,S,,\n"
                     "C,electric,rf,true,1,T,F,S,,yes\n")
    assert bad == ["critical_care not true|false: 'yes'"]
    assert _flags(reg) == {"A": (True, 0), "B": (False, 0)}
    # a file without the column (or with it empty) keeps the flag; false clears it
    _load(reg, f"{HEAD}\nA,electric,rf,true,1,T,F,S\nD,water,rf,true,1,T,F,S\n")
    assert _flags(reg) == {"A": (True, 0), "B": (False, 0), "D": (False, 0)}
    _load(reg, f"{HEAD},critical_care\nA,electric,rf,true,1,T,F,S,\nB,electric,rf,true,1,T,F,S,true\n")
    assert _flags(MeterRegistry(tmp_path)) == {"A": (True, 0), "B": (True, 0), "D": (False, 0)}
    _load(reg, f"{HEAD},critical_care\nA,electric,rf,true,1,T,F,S,false\n")
    assert _flags(MeterRegistry(tmp_path))["A"] == (False, 0)


def test_a_registry_written_before_the_columns_reads_with_defaults(tmp_path: Path) -> None:
    old = pa.table({
        "meter_idx": pa.array([0], pa.int32()), "meter_id": ["A"],
        "serial": pa.array([0], pa.uint64()), "commodity": pa.array([0], pa.uint8()),
        "technology": pa.array([0], pa.uint8()), "two_way": [True],
        "collector_id": ["1"], "transformer_id": ["T"], "feeder_id": ["F"],
        "substation_id": ["S"], "interval_s": pa.array([900], pa.int32())},
        schema=schema.METERS)
    pq.write_table(old, tmp_path / "meters.parquet")
    reg = MeterRegistry(tmp_path)
    assert reg.table().schema == schema.REGISTRY
    assert _flags(reg) == {"A": (False, 0)}
    _load(reg, f"{HEAD},critical_care\nB,gas,rf,true,1,,,,true\n")
    assert _flags(MeterRegistry(tmp_path)) == {"A": (False, 0), "B": (True, 0)}


def test_export_meters_shows_both_and_loads_back(tmp_path: Path) -> None:
    data = tmp_path / "d"
    reg = MeterRegistry(data)
    _load(reg, f"{HEAD},critical_care\nB,electric,rf,true,1,T,F,S,true\n"
               "A,water,gprs,false,,,,,\n")
    out = subprocess.run([sys.executable, "-m", "headend", "export", "meters", "--data",
                          str(data)], capture_output=True, check=True).stdout.decode()
    assert out.splitlines() == [
        f"{HEAD},interval_minutes,critical_care,interval_source,switch_state",
        "A,water,gprs,false,,,,,,false,,unknown",
        "B,electric,rf,true,1,T,F,S,,true,,unknown"]
    again = MeterRegistry(tmp_path / "again")
    assert _load(again, out) == []
    assert _flags(again) == {"B": (True, 0), "A": (False, 0)}
