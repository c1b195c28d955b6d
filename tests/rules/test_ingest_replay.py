"""Replaying canonical CSV files through ingest runs the rules like the live stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headend.cli import rules as cli_rules
from headend.model.codes import event_code_str
from headend.rules import RuleEngine
from headend.rules.alerts import iso
from headend.rules.testing import Fault, grid_meters, simulate

from ._kit import T0

pipeline = pytest.importorskip("headend.ingest.pipeline")
store = pytest.importorskip("headend.store")


def _write_csvs(d: Path) -> list[Path]:
    meters = grid_meters(1, 1, 3, 3)
    faults = [Fault("transformer", "S0F0T1", T0 + 3600 + 12, T0 + 3 * 3600 + 20),
              Fault("meter", "S0F0T2M0", T0 + 6 * 3600 + 3, None)]
    reads, evs = simulate(meters, T0, T0 + 8 * 3600, faults, seed=1)
    ids = meters.column("meter_id").to_pylist()
    d.mkdir(parents=True, exist_ok=True)
    rows = [("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
             "substation_id")]
    rows += [f"{r['meter_id']},electric,rf,true,1,{r['transformer_id']},{r['feeder_id']},"
             f"{r['substation_id']}" for r in meters.to_pylist()]
    (d / "meters.csv").write_text("\n".join(rows) + "\n")
    names = {0: ("kwh_del", 1000), 2: ("volts", 10)}
    out = ["meter_id,reading_type,interval_end,value,quality"]
    for r in reads.to_pylist():
        name, div = names[r["reading_type"]]
        q = "1.2.32" if r["quality"] else ""
        out.append(f"{ids[r['meter_idx']]},{name},{iso(int(r['interval_end'].timestamp()))},"
                   f"{r['value'] / div},{q}")
    (d / "reads.csv").write_text("\n".join(out) + "\n")
    ev = ["meter_id,event_time,event_code"]
    ev += [f"{ids[r['meter_idx']]},{iso(int(r['event_time'].timestamp()))},"
           f"{event_code_str(r['event_code'])}" for r in evs.to_pylist()]
    (d / "events.csv").write_text("\n".join(ev) + "\n")
    # events first: file order inside one ingest call must not matter
    return [d / "meters.csv", d / "events.csv", d / "reads.csv"]


def _export(root: Path) -> list[dict[str, object]]:
    app = typer.Typer()
    export = typer.Typer()
    cli_rules.register_export(export)
    app.add_typer(export, name="export")
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["export", "outages", "--data", str(root)])
    assert res.exit_code == 0, res.output
    return [json.loads(x) for x in res.stdout.splitlines()]


def test_ingesting_csv_twice_exports_the_same_outages_once(tmp_path: Path) -> None:
    files = _write_csvs(tmp_path / "in")
    root = tmp_path / "data"
    expected = [
        {"level": "transformer", "device_id": "S0F0T1", "start": "2026-01-01T01:00:12Z",
         "end": "2026-01-01T03:00:20Z", "sustained": True, "meters_affected": 3},
        {"level": "meter", "device_id": "S0F0T2M0", "start": "2026-01-01T06:00:03Z",
         "end": None, "sustained": True, "meters_affected": 1},
    ]
    for _ in range(2):
        dd = store.DataDir.open(root)
        eng = RuleEngine.open(root, dd.registry)
        ing = pipeline.Ingestor(dd, listeners=[eng])
        ing.ingest_paths(files)
        ing.close()
        got = _export(root)
        assert [{k: v for k, v in o.items() if k != "outage_id"} for o in got] == expected
    assert len({o["outage_id"] for o in got}) == 2
