"""The streamed histogram equals the engine's, bit for bit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from headend.analytics import EmbeddedEngine
from headend.analytics.stream import histogram_from_store
from headend.store import ParquetStore, StoreConfig

from ._data import T0, utility
from .test_daily import long_reads
from .test_hourly import messy_reads

CFG = StoreConfig(bucket_bits=5, row_group_rows=1024, background_compaction=False)


def assert_same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema)
    assert a.num_rows == b.num_rows > 0
    for name in a.column_names:
        x = a.column(name).to_numpy(zero_copy_only=False)
        y = b.column(name).to_numpy(zero_copy_only=False)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def complete_reads() -> pa.Table:
    return utility(households=6, days=21)[0]  # every household every quarter hour


@pytest.mark.parametrize("make", [long_reads, messy_reads, complete_reads],
                         ids=["gaps", "messy", "complete"])
def test_streamed_histogram_equals_the_engine(tmp_path, make):
    with ParquetStore(tmp_path, config=CFG) as s:
        s.append_reads(make())
        s.compact()  # year files: every meter in one file
        for kw in ({}, {"start": T0 + 86_400 + 900, "end": T0 + 5 * 86_400},
                   {"meters": np.array([4, 9, 41], np.int32)}):
            e = EmbeddedEngine()
            e.load_store(s, **kw)
            want = e.histogram()
            for chunk in (1024, 2_000_000):  # many chunks: households carried over
                assert_same(histogram_from_store(s, chunk_rows=chunk, **kw), want)


def test_meters_in_several_files_are_refused(tmp_path):
    reads = long_reads()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    with ParquetStore(tmp_path, config=CFG) as s:
        s.append_reads(reads.filter(pa.array(t <= T0 + 20 * 86_400)))
        s.compact()
        s.append_reads(reads.filter(pa.array(t > T0 + 20 * 86_400)))  # segments
        assert not s.plan_reads().meters_in_one_file
        with pytest.raises(ValueError, match="several files"):
            histogram_from_store(s)
