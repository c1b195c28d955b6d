"""SparkEngine.load_store: the store read by Spark gives the embedded engine's results."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from headend.analytics import EmbeddedEngine
from headend.analytics.matrix import HourlyMatrix
from headend.model.schema import READS, TS
from headend.store import ParquetStore, StoreConfig
from headend.vee import VersionStore, current_reads

from ._data import T0, utility
from .test_engines import TASKS, assert_same, run
from .test_hourly import assert_same as assert_same_matrix
from .test_hourly import messy_reads, reference

pytestmark = pytest.mark.slow

RT0 = np.array([0], np.uint8)


def _split_store(root, reads: pa.Table, cfg: StoreConfig, cut: int) -> None:
    """Reads ending before ``cut`` compacted into Parquet, the rest left in segments."""
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    early = t < cut
    with ParquetStore(root, config=cfg) as s:
        s.append_reads(reads.filter(pa.array(early)))
        s.compact()
        s.append_reads(reads.filter(pa.array(~early)))


@pytest.fixture(scope="module")
def utility_store(tmp_path_factory):
    """8 households x 21 days with 5 % of the reads missing and a second reading type;
    14 days compacted, 7 in segments, meters 12..19 in 2 buckets."""
    reads, weather = utility()
    reads = reads.set_column(0, READS.field("meter_idx"),
                             pc.add(reads.column("meter_idx"), np.int32(12)))
    keep = np.random.default_rng(7).random(reads.num_rows) > 0.05
    reads = reads.filter(pa.array(keep))
    other = reads.set_column(1, READS.field("reading_type"),
                             pa.array(np.ones(reads.num_rows, np.uint8)))
    root = tmp_path_factory.mktemp("utility")
    cfg = StoreConfig(bucket_bits=4, background_compaction=False)
    _split_store(root, pa.concat_tables([reads, other]), cfg, T0 + 14 * 86_400)
    return root, cfg, weather


@pytest.fixture(scope="module")
def messy_store(tmp_path_factory):
    """test_hourly's messy reads: compacted days plus segments in 2 buckets."""
    reads = messy_reads()
    root = tmp_path_factory.mktemp("messy")
    cfg = StoreConfig(bucket_bits=5, background_compaction=False)
    _split_store(root, reads, cfg, T0 + 3 * 86_400)
    return root, cfg, reads


@pytest.fixture
def spark_engine(spark):
    from headend.analytics.spark import SparkEngine

    s = SparkEngine(spark, partitions=3)
    yield s
    s.close()


def both(root, cfg, spark_engine, weather=None, **kw) -> tuple[EmbeddedEngine, object]:
    e = EmbeddedEngine()
    with ParquetStore(root, config=cfg) as st:
        e.load_store(st, weather, **kw)
        spark_engine.load_store(st, weather, **kw)
    return e, spark_engine


def test_every_task_matches_the_embedded_engine(utility_store, spark_engine):
    root, cfg, weather = utility_store
    with ParquetStore(root, config=cfg) as st:
        plan = st.plan_reads(reading_types=RT0)
        segs = {c.file.path for c in plan._chunks if c.file.is_segment}
        assert segs and plan.files > len(segs)  # Parquet files and segments
    e, s = both(root, cfg, spark_engine, weather)
    assert_same_matrix(s.collect_matrix(), e.matrix)
    np.testing.assert_array_equal(s._temp, e.temp)
    for task in TASKS:
        assert_same(run(e, task), run(s, task))


@pytest.mark.parametrize("kw", [
    {},
    {"meters": np.array([4, 9, 41, 3, 4, 500], np.int32)},  # unsorted, repeated, unknown
    {"meters": np.array([9, 10, 11], np.int32)},  # a contiguous range
    {"start": T0 + 86_400 + 1800, "end": T0 + 4 * 86_400 - 900},
    {"start": T0 + 2 * 86_400 + 7},
    {"end": T0 + 86_400},
    {"reading_type": 1, "meters": np.array([40, 41], np.int32)},
    {"meters": np.array([], np.int32)},
    {"start": T0 + 30 * 86_400},  # no reads
], ids=["all", "meters", "range", "window", "from", "until", "type1", "no-meters", "empty"])
def test_hourly_data_matches_the_scan_and_the_embedded_engine(messy_store, spark_engine, kw):
    root, cfg, _ = messy_store
    with ParquetStore(root, config=cfg) as st:
        spark_engine.load_store(st, **kw)
        e = EmbeddedEngine()
        e.load_store(st, **kw)
        assert_same_matrix(spark_engine.collect_matrix(), e.matrix)
    got = spark_engine.collect_matrix()
    rt = kw.get("reading_type", 0)
    scan_kw = {k: v for k, v in kw.items() if k != "reading_type"}
    with ParquetStore(root, config=cfg) as st:
        reads = st.scan_reads(reading_types=np.array([rt], np.uint8), **scan_kw)
    if reads.num_rows:
        assert_same_matrix(got, reference(reads, rt))
    else:
        assert got.kwh.shape == (0, 0)


@pytest.fixture(scope="module")
def vee_store(messy_store, tmp_path_factory):
    """The messy store with VEE edits of stored reads and estimates of missing ones
    (inside meter 3's span, one beyond its last read, one of a meter without reads)."""
    _, cfg, reads = messy_store
    root = tmp_path_factory.mktemp("vee")
    _split_store(root, reads, cfg, T0 + 3 * 86_400)
    vs = VersionStore(root)
    n = reads.num_rows
    pick = np.zeros(n, bool)
    pick[np.random.default_rng(2).choice(n, 60, replace=False)] = True  # both types
    edited = reads.filter(pa.array(pick))
    edited = edited.set_column(3, "value", pa.array(np.full(60, 77_777, np.int32)))
    vs.append(edited, method="manual", author="t", reason="test")
    m3 = reads.filter(pa.array((reads.column("meter_idx").to_numpy() == 3)
                               & (reads.column("reading_type").to_numpy() == 0)))
    present = m3.column("interval_end").cast(pa.int64()).to_numpy()
    grid = T0 + 900 * np.arange(1, 4 * 86_400 // 900, dtype=np.int64)
    gap = grid[~np.isin(grid, present)][:3]
    assert len(gap) == 3
    est_t = np.r_[gap, present.max() + 86_400, T0 + 3600]
    vs.append(pa.table({"meter_idx": np.array([3, 3, 3, 3, 7], np.int32),
                        "reading_type": pa.array(np.zeros(5, np.uint8)),
                        "interval_end": pa.array(est_t).cast(TS),
                        "value": np.array([5, 6, 7, 8, 9], np.int32),
                        "quality": pa.array(np.zeros(5, np.uint32))}, schema=READS),
              method="estimate", author="t", reason="test")
    return root, cfg


@pytest.mark.parametrize("window", [
    (None, None), (T0 + 3600, T0 + 5 * 86_400), (T0 + 3600, None), (None, T0 + 5 * 86_400)],
    ids=["whole", "window", "from", "until"])
def test_vee_versions_give_the_current_reads(vee_store, spark_engine, window):
    root, cfg = vee_store
    start, end = window
    cur = VersionStore(root).latest(start=start, end=end, reading_types=RT0)
    assert cur.num_rows > 5
    with ParquetStore(root, config=cfg) as st:
        raw = st.scan_reads(start=start, end=end, reading_types=RT0)
        spark_engine.load_store(st, start=start, end=end, overlay=cur)
    want = reference(current_reads(root, raw, start=start, end=end))
    got = spark_engine.collect_matrix()
    assert_same_matrix(got, want)
    assert not np.array_equal(np.nan_to_num(got.kwh), np.nan_to_num(reference(raw).kwh))
    e = EmbeddedEngine()
    with ParquetStore(root, config=cfg) as st:
        e.load_store(st, start=start, end=end, overlay=cur)
    assert_same_matrix(got, e.matrix)


class _CompactsAfterPlanning:
    """A store that compacts (deleting the planned files) right after the first plan."""

    def __init__(self, store: ParquetStore) -> None:
        self.store = store
        self.plans = 0

    def plan_reads(self, **kw):
        plan = self.store.plan_reads(**kw)
        self.plans += 1
        if self.plans == 1:
            self.store.compact()
        return plan


def test_a_compaction_while_loading_starts_the_load_over(messy_store, spark_engine,
                                                          tmp_path):
    _, cfg, reads = messy_store
    _split_store(tmp_path, reads, cfg, T0 + 3 * 86_400)
    with ParquetStore(tmp_path, config=cfg) as st:
        want = reference(st.scan_reads(reading_types=RT0))
        before = {c.file.path for c in st.plan_reads()._chunks if not c.file.is_segment}
        racing = _CompactsAfterPlanning(st)
        spark_engine.load_store(racing)
        assert not any(p.exists() for p in before)  # the first plan's files are gone
    assert racing.plans == 2
    assert_same_matrix(spark_engine.collect_matrix(), want)


def test_an_in_memory_store_loads_through_its_plan(messy_store, spark_engine):
    """Every store adapter plans its reads: the in-memory one has no Parquet file, its
    rows go to Spark as the plan's segments."""
    from headend.store import InMemoryStore

    _, _, reads = messy_store
    mem = InMemoryStore()
    mem.append_reads(reads)
    start = T0 + 86_400 + 1800
    spark_engine.load_store(mem, start=start)
    want = reference(mem.scan_reads(start=start, reading_types=RT0))
    assert want.kwh.size
    assert_same_matrix(spark_engine.collect_matrix(), want)


def test_nothing_loaded_collects_an_empty_matrix(spark_engine):
    m = spark_engine.collect_matrix()
    assert isinstance(m, HourlyMatrix) and m.kwh.shape == (0, 0)
