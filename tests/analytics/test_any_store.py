"""The analytics that read a store take any store adapter (``ReadStore.plan_reads``):
the in-memory store gives what the Parquet store gives, VEE versions included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from headend.analytics.daily import daily_from_store
from headend.analytics.hourly import matrix_from_store
from headend.analytics.stream import histogram_from_store
from headend.store import InMemoryStore, ParquetStore, StoreConfig
from headend.vee import VersionStore

from ._data import T0
from .test_daily import long_reads
from .test_hourly import assert_same
from .test_stream import assert_same as assert_same_table

CFG = StoreConfig(bucket_bits=5, row_group_rows=1024, background_compaction=False)
RT0 = np.array([0], np.uint8)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same reads in an in-memory store and in a compacted Parquet store, and
    current VEE versions of some of them."""
    reads = long_reads(days=12)
    root = tmp_path_factory.mktemp("any")
    mem = InMemoryStore()
    mem.append_reads(reads)
    disk = ParquetStore(root, config=CFG)
    disk.append_reads(reads)
    disk.compact()  # year files: every meter in one file, as the streamed histogram wants
    edit = reads.slice(200, 40).set_column(3, "value", pa.array(np.full(40, 9_999, np.int32)))
    VersionStore(root).append(edit, method="manual", author="t", reason="test")
    yield mem, disk, VersionStore(root).latest(reading_types=RT0)
    disk.close()


@pytest.mark.parametrize("kw", [
    {},
    {"meters": np.array([4, 40], np.int32)},
    {"start": T0 + 2 * 86_400 + 900, "end": T0 + 9 * 86_400},
])
def test_the_in_memory_store_gives_the_parquet_results(stores, kw):
    mem, disk, cur = stores
    want = matrix_from_store(disk, **kw)
    assert want.kwh.size
    assert_same(matrix_from_store(mem, chunk_rows=500, **kw), want)
    assert_same(matrix_from_store(mem, overlay=cur, **kw),
                matrix_from_store(disk, overlay=cur, **kw))
    got_d, want_d = daily_from_store(mem, **kw), daily_from_store(disk, **kw)
    np.testing.assert_array_equal(got_d.meter_idx, want_d.meter_idx)
    assert got_d.day0 == want_d.day0
    np.testing.assert_array_equal(got_d.kwh, want_d.kwh)  # integer sums: exact
    assert_same_table(histogram_from_store(mem, chunk_rows=500, **kw),
                      histogram_from_store(disk, **kw))
