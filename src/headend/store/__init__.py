"""Storage: the embedded columnar store, the meter registry, collector keys, quarantine.

``ReadStore`` (:mod:`headend.store.base`) is the port; :class:`ParquetStore` the
on-disk adapter and :class:`InMemoryStore` the in-memory one, both checked by the same
conformance suite. :class:`DataDir` bundles everything of one data directory;
:class:`WeatherStore` keeps the outdoor temperatures in it; :func:`open_layout` reads or
records the layout (bucket bits, partitions) it was written with.
"""

from headend.store._storelayout import StoreLayout, open_layout, partition_of, read_layout
from headend.store.base import AppendResult, Extent, QueryStore, ReadPlan, ReadStore, StoreStats
from headend.store.config import StoreConfig
from headend.store.datadir import DataDir
from headend.store.memory import InMemoryStore
from headend.store.parquet import ParquetStore
from headend.store.quarantine import QuarantineStore
from headend.store.registry import COLLECTORS, CollectorKeys, MeterRegistry, serial_of
from headend.store.weather import WeatherStore

__all__ = [
    "COLLECTORS",
    "AppendResult",
    "CollectorKeys",
    "DataDir",
    "Extent",
    "InMemoryStore",
    "MeterRegistry",
    "ParquetStore",
    "QuarantineStore",
    "QueryStore",
    "ReadPlan",
    "ReadStore",
    "StoreConfig",
    "StoreLayout",
    "StoreStats",
    "WeatherStore",
    "open_layout",
    "partition_of",
    "read_layout",
    "serial_of",
]
