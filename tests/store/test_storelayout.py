"""The data directory's recorded layout (``layout.json``): created, read, checked, migrated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ConfigError
from headend.model.schema import READS
from headend.store import DataDir, ParquetStore, StoreConfig
from headend.store._storelayout import (
    LAYOUT_FILE,
    open_layout,
    partition_of,
    read_layout,
)

T0 = 1_767_225_600  # 2026-01-01T00:00Z


def reads(meters: np.ndarray, hours: int = 2) -> pa.Table:
    m = np.repeat(meters.astype(np.int32), hours)
    t = T0 + 3600 * np.tile(np.arange(1, hours + 1), len(meters))
    n = len(m)
    return pa.table({
        "meter_idx": pa.array(m, pa.int32()),
        "reading_type": pa.array(np.zeros(n, np.uint8)),
        "interval_end": pa.array(t.astype(np.int64)).cast(READS.field("interval_end").type),
        "value": pa.array(np.arange(n, dtype=np.int64)),
        "quality": pa.array(np.zeros(n, np.uint32)),
    }).cast(READS)


def test_new_store_records_its_layout_and_reopens_with_it(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=6, partitions=4)) as s:
        s.append_reads(reads(np.arange(0, 300, 7)))
    raw = json.loads((tmp_path / LAYOUT_FILE).read_text())
    assert (raw["bucket_bits"], raw["partitions"], raw["format_version"], raw["origin"]) == (
        6, 4, 1, "created")
    assert raw["created_at"].endswith("Z") and raw["headend_version"]
    with ParquetStore(tmp_path) as s:  # no bits given: the recorded ones
        assert (s.config.bucket_bits, s.config.partitions) == (6, 4)
        assert s.scan_reads().num_rows == 2 * len(range(0, 300, 7))
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=6, partitions=4)) as s:
        assert s.config.bits == 6  # agreeing values are accepted


def test_disagreeing_bits_or_partitions_are_refused(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=6, partitions=4)) as s:
        s.append_reads(reads(np.arange(200)))
    with pytest.raises(ConfigError, match=r"bucket_bits 16 asked for.*bucket_bits 6"):
        ParquetStore(tmp_path, config=StoreConfig(bucket_bits=16))
    with pytest.raises(ConfigError, match=r"partitions 8 asked for.*partitions 4"):
        DataDir.open(tmp_path, config=StoreConfig(partitions=8))
    assert read_layout(tmp_path) is not None
    assert read_layout(tmp_path).bucket_bits == 6  # type: ignore[union-attr]


def test_partitions_recorded_by_the_first_process_that_has_some(tmp_path: Path) -> None:
    with ParquetStore(tmp_path):  # an embedded store: default bits, no partitions
        pass
    assert read_layout(tmp_path) is not None
    lay = open_layout(tmp_path, default_partitions=4)
    assert (lay.bucket_bits, lay.partitions) == (16, 4)
    assert read_layout(tmp_path).partitions == 4  # type: ignore[union-attr]
    assert open_layout(tmp_path, default_partitions=8).partitions == 4  # a default yields
    with pytest.raises(ConfigError):
        open_layout(tmp_path, partitions=8)


def test_legacy_store_opens_with_16_bits_and_records_them(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=16)) as s:
        s.append_reads(reads(np.array([0, 5, 40_000, 70_000])))  # buckets 0 and 1
    (tmp_path / LAYOUT_FILE).unlink()  # as written before layouts were recorded
    with DataDir.open(tmp_path) as dd:
        assert dd.store.config.bucket_bits == 16
        assert dd.store.scan_reads().num_rows == 8
    lay = read_layout(tmp_path)
    assert lay is not None and (lay.bucket_bits, lay.origin) == (16, "migrated")


def test_legacy_store_written_with_other_bits_is_read_with_those(tmp_path: Path) -> None:
    """What serve --bucket-bits 6 left before layouts were recorded: its files tell."""
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=6)) as s:
        s.append_reads(reads(np.arange(2000)))
        s.compact()
    (tmp_path / LAYOUT_FILE).unlink()
    with ParquetStore(tmp_path) as s:
        assert s.config.bucket_bits == 6
        assert s.scan_reads().num_rows == 4000
    (tmp_path / LAYOUT_FILE).unlink()
    with pytest.raises(ConfigError, match="which its files show"):
        ParquetStore(tmp_path, config=StoreConfig(bucket_bits=16))


def test_legacy_store_of_one_bucket(tmp_path: Path) -> None:
    """Data in bucket 0 only: 16 bits if they hold it, a flag that holds it too wins."""
    with ParquetStore(tmp_path, config=StoreConfig(bucket_bits=12)) as s:
        s.append_reads(reads(np.arange(0, 4000, 10)))
    (tmp_path / LAYOUT_FILE).unlink()
    assert open_layout(tmp_path).bucket_bits == 16
    (tmp_path / LAYOUT_FILE).unlink()
    assert open_layout(tmp_path, bucket_bits=12).bucket_bits == 12
    (tmp_path / LAYOUT_FILE).unlink()
    with pytest.raises(ConfigError):  # meter 3990 is not in bucket 0 with 6 bits
        open_layout(tmp_path, bucket_bits=6)


def test_bad_layout_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / LAYOUT_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        ParquetStore(tmp_path)
    (tmp_path / LAYOUT_FILE).write_text(json.dumps({"format_version": 99, "bucket_bits": 8}))
    with pytest.raises(ConfigError, match="format_version 99"):
        ParquetStore(tmp_path)
    (tmp_path / LAYOUT_FILE).write_text(json.dumps({"format_version": 1, "bucket_bits": 40}))
    with pytest.raises(ConfigError, match="bucket_bits must be within"):
        ParquetStore(tmp_path)


def test_empty_store_error_says_how_to_choose_again(tmp_path: Path) -> None:
    ParquetStore(tmp_path, config=StoreConfig(bucket_bits=10)).close()
    with pytest.raises(ConfigError, match="holds no data yet: delete"):
        ParquetStore(tmp_path, config=StoreConfig(bucket_bits=8))


def test_unresolved_config_has_no_bucket() -> None:
    with pytest.raises(ConfigError):
        _ = StoreConfig().bucket_size
    assert StoreConfig(bucket_bits=4).bucket_of(33) == 2


def test_partition_of_round_robin_over_buckets() -> None:
    got = partition_of(np.arange(2000), 8, 4)
    assert np.bincount(got).tolist() == [512, 512, 512, 464]
    assert partition_of(np.arange(2000), 16, 4).tolist() == [0] * 2000
