"""Writers: canonical CSV, binary frames, ground truth, determinism, the CLI verb."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from headend.model.codes import READING_TYPES, REGISTER_TYPES, event_code_str
from headend.model.schema import CSV_HEADERS, CSV_OPTIONAL
from headend.sim import GROUND_TRUTH, Faults, build_utility, iter_uploads, simulate
from headend.sim.utility import SERIAL_BASE
from headend.sim.writers import cycle_file_name, decimal_text, iso_times, quality_text
from headend.wire.frame import FLAG_RETRANSMISSION, Frame, iter_frames

FAULTS = "outage,tamper,retransmission,duplicate,late_upload,clock_skew"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sim")
    u = build_utility(2500, seed=21)
    simulate(u, Faults.from_names(FAULTS), d, formats=("frames", "csv"))
    return d


@pytest.fixture(scope="module")
def uploads():
    u = build_utility(2500, seed=21)
    return u, list(iter_uploads(u, Faults.from_names(FAULTS)))


def test_formatting_helpers():
    three = np.array([3])
    assert decimal_text(np.array([0, 7, 1234, 1000, -1234]), None, three).to_pylist() == [
        "0.000", "0.007", "1.234", "1.000", "-1.234"]
    digits = np.array([3, 3, 1])  # per code: kWh, kWh, V
    assert decimal_text(np.array([2404, 5, 1234, 7]), np.array([2, 2, 0, 1], np.uint8),
                        digits).to_pylist() == ["240.4", "0.5", "1.234", "0.007"]
    assert decimal_text(np.array([2404]), np.array([2], np.uint8), digits).to_pylist() == [
        "240.4"]
    assert iso_times(np.array([1767571200, 1767572100, 1767571200])).to_pylist() == [
        "2026-01-05T00:00:00+00:00", "2026-01-05T00:15:00+00:00", "2026-01-05T00:00:00+00:00"]
    assert quality_text(np.array([0, 4, 4 | (1 << 22), 0], np.uint32)).to_pylist() == [
        None, "1.2.32", "1.2.32;3.8.0", None]
    assert cycle_file_name(dt.datetime(2026, 1, 5, 0, 15, tzinfo=dt.UTC)) == \
        "cycle-20260105T0015.hef"


def _header(p: Path) -> str:
    with open(p) as f:
        return f.readline().rstrip("\n")


def test_csv_headers_exact(out):
    for kind in ("reads", "registers", "events", "collectors"):
        assert _header(out / f"{kind}.csv") == ",".join(CSV_HEADERS[kind])
    assert _header(out / "meters.csv") == ",".join(CSV_HEADERS["meters"] + CSV_OPTIONAL["meters"])
    assert _header(out / "meters.csv") == ("meter_id,commodity,technology,two_way,collector_id,"
                                           "transformer_id,feeder_id,substation_id,"
                                           "interval_minutes,critical_care")
    assert _header(out / "weather.csv") == "time,temperature_c"
    assert _header(out / "customers.csv") == "meter_id,customer_class"
    from headend.rules.grid import RATINGS_FILE, RATINGS_HEADER, load_ratings

    assert _header(out / RATINGS_FILE) == ",".join(RATINGS_HEADER)
    ratings = load_ratings(out / RATINGS_FILE)
    assert len(ratings) == round(2300 / 8) and ratings["T0000001"] in (10, 15, 25, 37.5, 50, 75, 100)
    assert (out / "meters.csv").read_text().splitlines()[1] == \
        "100000000,electric,rf,true,7000000,T0000001,F00001,S001,15,false"


def _strings(p: Path) -> pa.Table:
    names = _header(p).split(",")
    return pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=False))


def test_reads_csv_matches_tables(out, uploads):
    _u, ups = uploads
    reads = pa.concat_tables([up.reads for up in ups])
    t = _strings(out / "reads.csv")
    assert t.num_rows == reads.num_rows
    m = reads.column("meter_idx").to_numpy()
    rt = reads.column("reading_type").to_numpy()
    assert t.column("meter_id").to_pylist() == [str(SERIAL_BASE + i) for i in m]
    names = np.array([r.name for r in READING_TYPES])
    assert t.column("reading_type").to_pylist() == names[rt].tolist()
    res = np.array([r.resolution for r in READING_TYPES])[rt]
    val = np.array([float(x) for x in t.column("value").to_pylist()])
    np.testing.assert_array_equal(np.rint(val / res).astype(np.int64),
                                  reads.column("value").to_numpy())
    ends = t.column("interval_end").to_pylist()
    assert ends[0] == "2026-01-05T00:15:00+00:00"
    assert all(e.endswith("+00:00") for e in ends[:: 997])
    q = t.column("quality").to_pylist()
    assert "1.2.32" in q and "1.3.0" in q and "" in q
    sample = [x for x in t.column("value").to_pylist()[:50]]
    assert all("." in x and "e" not in x for x in sample)


def test_registers_and_events_csv(out, uploads):
    _u, ups = uploads
    g = pa.concat_tables([up.registers for up in ups])
    t = _strings(out / "registers.csv")
    assert t.num_rows == g.num_rows
    names = np.array([r.name for r in REGISTER_TYPES])
    assert t.column("register").to_pylist() == names[g.column("register").to_numpy()].tolist()
    assert t.column("value").to_pylist()[0] == f"{g.column('value')[0].as_py() / 1000:.3f}"
    e = pa.concat_tables([up.events for up in ups])
    te = _strings(out / "events.csv")
    assert te.num_rows == e.num_rows > 0
    assert te.column("event_code").to_pylist() == [
        event_code_str(c) for c in e.column("event_code").to_pylist()]
    assert te.column("event_time").to_pylist() == [
        x.isoformat() for x in e.column("event_time").to_pylist()]


def _keys(out: Path) -> dict[int, bytes]:
    t = _strings(out / "collectors.csv")
    return {int(c): bytes.fromhex(k) for c, k in zip(t.column("collector_id").to_pylist(),
                                                      t.column("hmac_key").to_pylist(),
                                                      strict=True)}


def test_frames_decode_to_the_uploads(out, uploads):
    u, ups = uploads
    keys = _keys(out)
    assert keys == u.collector_keys()
    files = sorted((out / "uploads").iterdir())
    assert len(files) == 96 and files[0].name == "cycle-20260105T0015.hef"
    flagged = 0
    for up, path in zip(ups, files, strict=True):
        assert path.name == cycle_file_name(up.cycle_time)
        frames = list(iter_frames(path.read_bytes(), keys, source=path.name))
        assert all(isinstance(f, Frame) for f in frames)
        got = np.concatenate([
            np.stack([f.i_meter.astype(np.int64) - SERIAL_BASE, f.i_end.astype(np.int64),
                      f.i_value.astype(np.int64), f.i_quality.astype(np.int64),
                      f.i_type.astype(np.int64)], axis=1) for f in frames])
        r = up.reads
        want = np.stack([r.column("meter_idx").to_numpy().astype(np.int64),
                         r.column("interval_end").cast(pa.int64()).to_numpy(),
                         r.column("value").to_numpy().astype(np.int64),
                         r.column("quality").to_numpy().astype(np.int64),
                         r.column("reading_type").to_numpy().astype(np.int64)], axis=1)
        np.testing.assert_array_equal(np.unique(got, axis=0), np.unique(want, axis=0))
        assert len(got) == len(want)
        assert sum(f.header.n_register for f in frames) == up.registers.num_rows
        assert sum(f.header.n_event for f in frames) == up.events.num_rows
        for f in frames:
            h = f.header
            assert h.created_at == u.start_s + (h.sequence // 4) * 900
            assert (h.flags & FLAG_RETRANSMISSION) == (FLAG_RETRANSMISSION if h.sequence % 4 == 1
                                                       else 0)
            flagged += h.flags & FLAG_RETRANSMISSION
        normal = [f.header.collector_id for f in frames if f.header.sequence == up.cycle * 4]
        assert normal == sorted(normal) and len(set(normal)) == len(normal)
    assert flagged == 3  # the three retransmission incidents


def test_ground_truth_file_and_summary(out):
    # Parquet has no second unit: times come back as ms; casting restores the schema
    gt = pq.read_table(out / "ground_truth.parquet").cast(GROUND_TRUTH)
    u = build_utility(2500, seed=21)
    assert gt.equals(Faults.from_names(FAULTS).resolve(u).ground_truth())
    assert set(gt.column("kind").to_pylist()) == {
        "outage", "cover_removed", "magnetic_tamper", "retransmission", "duplicate",
        "late_upload", "clock_skew"}
    s = json.loads((out / "utility.json").read_text())
    assert s["meters"] == 2500 and s["seed"] == 21 and s["cycles"] == 96
    assert s["incidents"]["retransmission"] == 3
    reads_lines = (out / "reads.csv").read_bytes().count(b"\n") - 1
    assert s["rows"]["reads"] == reads_lines
    assert s["frames"]["files"] == 96


def test_same_seed_same_bytes(tmp_path, out):
    u = build_utility(2500, seed=21)
    simulate(u, Faults.from_names(FAULTS), tmp_path, formats=("frames", "csv"))
    a = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert a == b and len(a) == 96 + 10
    for rel in a:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_cli(tmp_path):
    from headend.cli.simulate import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test group"""

    register(app)
    res = CliRunner().invoke(app, [
        "simulate", "--meters", "400", "--days", "1", "--start", "2026-03-02",
        "--interval-minutes", "60", "--network", "plc", "--seed", "3", "--faults", "storm,gap",
        "--format", "csv", "-o", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["network"] == "plc" and s["interval_s"] == 3600 and s["cycles"] == 24
    assert s["start"] == "2026-03-02T00:00:00+00:00"
    assert not (tmp_path / "uploads").exists()
    assert (tmp_path / "reads.csv").exists() and (tmp_path / "ground_truth.parquet").exists()
    bad = CliRunner().invoke(app, ["simulate", "--faults", "meteor", "-o", str(tmp_path)])
    assert bad.exit_code == 2
    bad = CliRunner().invoke(app, ["simulate", "--format", "xml", "-o", str(tmp_path)])
    assert bad.exit_code == 2
    helptext = CliRunner().invoke(app, ["simulate", "--help"]).output
    for opt in ("--meters", "--days", "--start", "--interval-minutes", "--network", "--seed",
                "--faults", "--format", "--out"):
        assert opt in helptext
