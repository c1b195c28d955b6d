import numpy as np
import pyarrow as pa
import pytest

from headend.model import codes
from headend.model.schema import READS, TS
from headend.report import tables
from headend.rules.alerts import Outage, RecordBook
from headend.store import DataDir

T0 = 1_704_067_200


def reads(meter, t, value, quality=0):
    n = len(t)
    return pa.table({"meter_idx": pa.array(np.full(n, meter), pa.int32()),
                     "reading_type": pa.array(np.zeros(n), pa.uint8()),
                     "interval_end": pa.array(np.asarray(t, np.int64)).cast(TS),
                     "value": pa.array(np.asarray(value), pa.int32()),
                     "quality": pa.array(np.full(n, quality), pa.uint32())}, schema=READS)


def registry(n=3):
    return pa.table({
        "meter_id": [f"M{i}" for i in range(n)], "commodity": pa.array([0] * n, pa.uint8()),
        "technology": pa.array([0, 0, 2][:n], pa.uint8()), "two_way": [True] * n,
        "collector_id": ["C1", "C1", "C2"][:n], "transformer_id": ["T1", "T1", "T2"][:n],
        "feeder_id": ["F1"] * n, "substation_id": ["S"] * n,
        "interval_s": pa.array([900, 900, 3600][:n], pa.int32())})


def test_completeness_per_collector_and_technology(tmp_path):
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(registry())
        meters = dd.registry.table()
    raw = pa.concat_tables([
        reads(0, T0 + 900 * np.arange(1, 97), np.ones(96)),  # complete day
        reads(1, T0 + 900 * np.arange(1, 49), np.ones(48)),  # half a day
        reads(2, T0 + 3600 * np.arange(1, 19), np.ones(18)),  # 18 of 24 hours
    ])
    t = tables.completeness(raw, meters, T0 + 1, T0 + 86_400 + 1)
    assert t.to_pylist() == [
        {"collector_id": "C1", "technology": "rf", "meters": 2, "expected": 192,
         "received": 144, "completeness_pct": 75.0},
        {"collector_id": "C2", "technology": "plc", "meters": 1, "expected": 24,
         "received": 18, "completeness_pct": 75.0}]


def test_vee_statistics_counts_each_code():
    valid = 1 << codes.QUALITY_BY_NAME["validated"].bit
    est = codes.quality_mask("3.8.0;3.8.1")
    cur = pa.concat_tables([reads(0, [T0 + 900, T0 + 1800, T0 + 2700], [1, 1, 1], valid),
                            reads(0, [T0 + 3600], [1], est)])
    t = tables.vee_statistics(cur)
    assert t.column("code").to_pylist() == ["3.0.1", "3.8.0", "3.8.1"]
    assert t.column("reads").to_pylist() == [3, 1, 1]
    assert t.column("share_pct").to_pylist() == [75.0, 25.0, 25.0]


def outage(oid, start, end, meters, sustained=True):
    return Outage(oid, "transformer", "T1", start, end, sustained, meters, "outage")


def test_outage_table_clips_to_the_window_and_counts_customer_minutes():
    recs = [outage("a", T0 - 600, T0 + 1200, 10),  # 20 min inside the window
            outage("b", T0 + 3600, None, 4),  # ongoing: until the end, 60 min
            outage("c", T0 + 9000, T0 + 9600, 99)]  # after the window
    t = tables.outage_table(recs, T0, T0 + 7200)
    assert t.column("outage_id").to_pylist() == ["a", "b"]
    assert t.column("minutes").to_pylist() == [20.0, 60.0]
    assert t.column("customer_minutes").to_pylist() == [200.0, 240.0]


@pytest.mark.slow
def test_report_writes_html_pngs_and_csvs(tmp_path):
    pytest.importorskip("matplotlib")
    from headend.report import build_report

    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(registry())
        dd.store.append_reads(pa.concat_tables([
            reads(0, T0 + 900 * np.arange(1, 97), np.full(96, 500)),
            reads(1, T0 + 900 * np.arange(1, 97), np.full(96, 250)),
            reads(2, T0 + 3600 * np.arange(1, 25), np.full(24, 1000))]))
    book = RecordBook(tmp_path / "rules" / "outages.jsonl", Outage)
    (tmp_path / "rules").mkdir()
    book.put(outage("x", T0 + 3600, T0 + 7200, 2))
    book.save()
    out = tmp_path / "report"
    res = build_report(tmp_path, out, start=T0, end=T0 + 86_400 + 1,
                       ratings_kva={"T1": 2.5, "T2": 10.0})
    assert res.customer_minutes_lost == 120.0
    for name in ("feeder_load", "transformer_loading", "vee_statistics", "completeness",
                 "outages"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.png").exists()
    html = (out / "index.html").read_text()
    assert "Customer-minutes lost: 120" in html and "transformer_loading.png" in html
    loading = (out / "transformer_loading.csv").read_text().splitlines()
    # T1: 0.5 + 0.25 kWh per quarter hour = 3 kW against 2.5 kVA -> 120 %
    assert loading[1] == "T1,2,3,2024-01-01T01:00:00Z,2.5,120,24"
    assert loading[2] == "T2,1,1,2024-01-01T01:00:00Z,10,10,0"


def test_report_tables_as_parquet_equal_the_csvs(tmp_path):
    pytest.importorskip("matplotlib")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from headend.errors import ConfigError
    from headend.report import build_report

    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(registry())
        dd.store.append_reads(reads(0, T0 + 900 * np.arange(1, 97), np.full(96, 500)))
    out = tmp_path / "report"
    res = build_report(tmp_path, out, table_formats=("csv", "parquet"))
    assert "feeder_load.parquet" in res.files and "completeness.csv" in res.files
    for name in ("feeder_load", "completeness", "vee_statistics"):  # no outages here
        pt = pq.read_table(out / f"{name}.parquet")
        ct = pacsv.read_csv(out / f"{name}.csv")
        assert pt.column_names == ct.column_names and pt.num_rows == ct.num_rows
    fl = pq.read_table(out / "feeder_load.parquet")  # 0.5 kWh per quarter hour: 2 kW
    assert fl.num_rows == 24 and set(fl.column("kw").to_pylist()) == {2.0}
    assert pa.types.is_timestamp(fl.schema.field("hour_end").type)
    with pytest.raises(ConfigError):
        build_report(tmp_path, tmp_path / "r2", table_formats=("xlsx",))
