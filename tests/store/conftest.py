from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headend.store import InMemoryStore, ParquetStore, StoreConfig

SMALL = StoreConfig(bucket_bits=4, row_group_rows=1024, merge_rows=4096,
                    auto_compact_segments=0, writer_threads=2)


@pytest.fixture(params=["memory", "parquet"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Every ReadStore adapter (conformance suite)."""
    s: object = InMemoryStore() if request.param == "memory" else ParquetStore(
        tmp_path / "data", config=SMALL)
    yield s
    s.close()  # type: ignore[attr-defined]
