"""One data directory: the store, the meter registry, the collector keys, the quarantine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from headend.store.config import StoreConfig
from headend.store.parquet import ParquetStore
from headend.store.quarantine import QuarantineStore
from headend.store.registry import CollectorKeys, MeterRegistry

__all__ = ["DataDir"]


@dataclass(slots=True)
class DataDir:
    """Everything headend keeps under one ``root``; open with :meth:`open`."""

    root: Path
    store: ParquetStore
    registry: MeterRegistry
    keys: CollectorKeys
    quarantine: QuarantineStore

    @classmethod
    def open(cls, root: Path | str, *, config: StoreConfig | None = None) -> DataDir:
        """Open (creating if needed) the data directory ``root``.

        The store's bucket bits and partitions come from ``<root>/layout.json``,
        written when the store is created (or, for a store that predates it, on this
        open: :mod:`headend.store._storelayout`). ``config`` may leave them None;
        a value that differs from the recorded one raises ConfigError.
        """
        r = Path(root)
        r.mkdir(parents=True, exist_ok=True)
        return cls(r, ParquetStore(r, config=config), MeterRegistry(r), CollectorKeys(r),
                   QuarantineStore(r))

    def close(self) -> None:
        """Release the store's bucket locks (the other parts hold nothing open)."""
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
