"""Conformance: the embedded (DuckDB) and Spark engines give the same results."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from headend.analytics import open_engine
from headend.analytics import results as R
from headend.errors import ConfigError

from ._data import utility

TASKS = {"histogram": R.HISTOGRAM, "threeline": R.THREELINE, "par": R.PAR,
         "similarity": R.SIMILARITY, "anomaly": R.ANOMALY}


def run(engine, task):
    if task == "anomaly":
        return engine.anomaly(dt.date(2024, 1, 15))
    if task == "similarity":
        return engine.similarity(k=3)
    return getattr(engine, task)()


def assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        x = a.column(name).to_numpy(zero_copy_only=False)
        y = b.column(name).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture(scope="module")
def embedded():
    reads, weather = utility()
    e = open_engine("duckdb")
    e.load(reads, weather)
    yield e
    e.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_embedded_results_have_the_documented_schema(embedded, task):
    out = run(embedded, task)
    assert out.schema.equals(TASKS[task])
    meters = np.unique(out.column("meter_idx").to_numpy())
    np.testing.assert_array_equal(meters, np.arange(8))


def test_embedded_hourly_matrix_sums_quarter_hours(embedded):
    reads, _ = utility()
    v = reads.column("value").to_numpy()[:4].sum()
    assert embedded.matrix.kwh.shape == (8, 21 * 24)
    assert embedded.matrix.kwh[0, 0] == v * 0.001
    assert not np.isnan(embedded.matrix.kwh).any()


def test_histogram_counts_every_hour(embedded):
    h = embedded.histogram()
    counts = h.column("count").to_numpy().reshape(8, 10)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(8, 21 * 24))


def test_anomaly_outside_the_data_is_a_config_error(embedded):
    with pytest.raises(ConfigError):
        embedded.anomaly(dt.date(2023, 1, 1))


def test_unknown_engine():
    with pytest.raises(ConfigError, match="duckdb, spark"):
        open_engine("hive")


@pytest.mark.slow
def test_spark_matches_embedded_on_every_task(embedded, spark):
    from headend.analytics.spark import SparkEngine

    reads, weather = utility()
    s = SparkEngine(spark, partitions=3)
    s.load(reads, weather)
    try:
        for task in TASKS:
            assert_same(run(embedded, task), run(s, task))
    finally:
        s.close()




@pytest.mark.slow
def test_spark_engines_sharing_a_session_keep_their_own_data(embedded, spark):
    from headend.analytics.spark import SparkEngine

    reads, weather = utility()
    a, b = SparkEngine(spark, partitions=2), SparkEngine(spark, partitions=2)
    try:
        a.load(reads, weather)
        b.load(utility(households=3, seed=5)[0], weather)
        assert_same(run(embedded, "histogram"), run(a, "histogram"))
        assert_same(run(embedded, "anomaly"), run(a, "anomaly"))
    finally:
        a.close()
        b.close()
