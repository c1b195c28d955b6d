import csv
import io

import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from headend.analytics import open_engine
from headend.analytics.weather import WeatherStore
from headend.cli import analytics as cli_analytics
from headend.store import DataDir

from ._data import utility

HEADERS = {
    "histogram": "meter_id,bucket,lower_kwh,upper_kwh,count",
    "threeline": "meter_id,percentile,k1_c,k2_c,intercept_kwh,heating_slope_kwh_per_c,"
                 "base_slope_kwh_per_c,cooling_slope_kwh_per_c,sse,points",
    "par": "meter_id,hour,n_days,intercept,ar1,ar2,ar3,cool,heat,cold,rmse_kwh",
    "similarity": "meter_id,rank,other_meter_id,cosine",
    "anomaly": "meter_id,day,total_kwh,mean_kwh,std_kwh,z,anomaly",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("analytics")
    reads, weather = utility(households=4, days=21)
    n = 4
    meters = pa.table({
        "meter_id": [f"H{i}" for i in range(n)], "commodity": pa.array([0] * n, pa.uint8()),
        "technology": pa.array([0] * n, pa.uint8()), "two_way": [True] * n,
        "collector_id": ["C"] * n, "transformer_id": ["T1", "T1", "T2", "T2"],
        "feeder_id": ["F1"] * n, "substation_id": ["S"] * n,
        "interval_s": pa.array([900] * n, pa.int32())})
    with DataDir.open(root) as dd:
        dd.registry.upsert(meters)
        dd.store.append_reads(reads)
    WeatherStore(root).append(weather)
    return root


def invoke(root, *args):
    app = typer.Typer()
    cli_analytics.register(app)
    r = CliRunner().invoke(app, ["analytics", *args, "--data", str(root)])
    assert r.exit_code == 0, r.output
    return list(csv.reader(io.StringIO(r.stdout)))


@pytest.mark.parametrize("task", list(HEADERS))
def test_each_task_writes_one_csv_with_documented_columns(root, task):
    extra = ["--day", "2024-01-15"] if task == "anomaly" else []
    rows = invoke(root, task, "--format", "csv", *extra)
    assert ",".join(rows[0]) == HEADERS[task]
    assert {r[0] for r in rows[1:]} == {"H0", "H1", "H2", "H3"}


def test_similarity_rows_match_the_library(root):
    rows = invoke(root, "similarity", "--k", "2")
    reads, weather = utility(households=4, days=21)
    e = open_engine("duckdb")
    e.load(reads, weather)
    lib = e.similarity(k=2).to_pylist()
    assert [(r[0], int(r[1]), r[2]) for r in rows[1:]] == [
        (f"H{x['meter_idx']}", x["rank"], f"H{x['other_meter_idx']}") for x in lib]
    np.testing.assert_allclose([float(r[3]) for r in rows[1:]], [x["cosine"] for x in lib],
                               rtol=1e-15)


def test_loading_and_billing_and_forecast(root, tmp_path):
    tr = tmp_path / "transformers.csv"
    tr.write_text("transformer_id,feeder_id,substation_id,kva\nT1,F1,S,10\nT2,F1,S,100\n")
    rows = invoke(root, "loading", "--transformers", str(tr))
    assert rows[0] == ["asset_id", "meters", "peak_kw", "peak_hour_end", "rating_kva",
                       "peak_loading_pct", "hours_over_rating"]
    assert [r[0] for r in rows[1:]] == ["T1", "T2"] and rows[1][4] == "10"
    rows = invoke(root, "loading", "--level", "feeder", "--transformers", str(tr))
    assert rows[1][0] == "F1" and rows[1][4] == "110"
    rows = invoke(root, "billing")
    assert rows[0] == ["meter_id", "period", "tou", "kwh"] and len(rows) == 1 + 4 * 2
    rows = invoke(root, "billing", "--demand")
    assert rows[0][:3] == ["meter_id", "period", "max_kw"] and len(rows) == 5
    rows = invoke(root, "forecast", "--error")
    assert rows[0] == ["feeder_id", "mape_pct", "hours"] and rows[1][2] == "168"
    rows = invoke(root, "profile", "--season")
    assert rows[0] == ["meter_id", "season", "hour", "mean_kwh"] and len(rows) == 1 + 4 * 24


def test_similarity_projected_method_gives_the_exact_rows(root):
    # 4 households: every other household is a candidate, so projected == exact
    exact = invoke(root, "similarity", "--k", "3", "--method", "exact")
    proj = invoke(root, "similarity", "--k", "3", "--method", "projected")
    assert [r[:3] for r in proj] == [r[:3] for r in exact]
    np.testing.assert_allclose([float(r[3]) for r in proj[1:]],
                               [float(r[3]) for r in exact[1:]], rtol=1e-14)


def test_histogram_is_the_same_streamed_from_compacted_files(root, tmp_path):
    import shutil

    compacted = tmp_path / "compacted"
    shutil.copytree(root, compacted)
    with DataDir.open(compacted) as dd:
        dd.store.compact()  # year files: the streamed path
        assert dd.store.plan_reads().meters_in_one_file
    with DataDir.open(root) as dd:
        assert not dd.store.plan_reads().meters_in_one_file  # the matrix path
    assert invoke(compacted, "histogram") == invoke(root, "histogram")
