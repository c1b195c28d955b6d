from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headend.store import InMemoryStore, ParquetStore, StoreConfig

# the month tier without day copies: the layout tests check its files exactly (the
# default year tier with day copies has its own tests in test_day_copies.py)
SMALL = StoreConfig(bucket_bits=4, row_group_rows=1024, merge_rows=4096,
                    auto_compact_segments=0, writer_threads=2, top_level="month",
                    day_copies=False)


@pytest.fixture(params=["memory", "parquet"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Every ReadStore adapter (conformance suite)."""
    s: object = InMemoryStore() if request.param == "memory" else ParquetStore(
        tmp_path / "data", config=SMALL)
    yield s
    s.close()  # type: ignore[attr-defined]
