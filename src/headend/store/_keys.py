"""Dedup keys of the three stored kinds and the array primitives on them (pure).

* reads: ``model.schema.read_key(meter_idx, reading_type, interval_end)`` (``uint64``);
* registers: the same packing with the register code in the reading-type bits;
* events: a structured pair ``(read_key(meter_idx, 0, event_time), event_code)``.

Each key sorts like its tuple, so "sorted by key" is one ``argsort``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import StorageError, ValidationError
from headend.model import schema as S

EVENT_KEY: Final = np.dtype([("mt", "<u8"), ("code", "<u4")])
DAY_S: Final = 86_400

Keys = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """One stored kind: its schema, meter and time columns, and key."""

    name: str
    schema: pa.Schema
    time_col: str
    type_col: str | None  # second key column packed into the uint64 (None for events)

    def coerce(self, table: pa.Table) -> pa.Table:
        """``table`` with exactly this kind's columns and types (raises StorageError)."""
        if table.schema.equals(self.schema):
            return table
        try:
            return table.select(self.schema.names).cast(self.schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise StorageError(f"{self.name}: table does not fit the schema: {e}") from e

    def validate(self, t: pa.Table) -> None:
        """Raise ValidationError unless every row fits the key (meter, type, time ranges)."""
        m = t.column("meter_idx").to_numpy()
        tt = self.times(t)
        if int(m.min()) < 0 or int(m.max()) > S.MAX_METER_IDX:
            raise ValidationError(f"{self.name}: meter_idx outside 0..{S.MAX_METER_IDX}")
        if int(tt.min()) < S.KEY_EPOCH_S or int(tt.max()) >= S.KEY_EPOCH_S + (1 << 32):
            raise ValidationError(f"{self.name}: {self.time_col} outside 2000..2136")
        if self.type_col is not None and int(t.column(self.type_col).to_numpy().max()) > 31:
            raise ValidationError(f"{self.name}: {self.type_col} code above 31")

    def times(self, table: pa.Table) -> npt.NDArray[np.int64]:
        col = table.column(self.time_col)
        return col.cast(pa.int64()).to_numpy()  # type: ignore[no-any-return]

    def keys(self, table: pa.Table) -> Keys:
        """The key of every row of ``table`` (already coerced)."""
        meter = table.column("meter_idx").to_numpy()
        t = self.times(table)
        if self.type_col is not None:
            return S.read_key(meter, table.column(self.type_col).to_numpy(), t)
        out = np.empty(len(t), EVENT_KEY)
        out["mt"] = S.read_key(meter, np.zeros(len(t), np.uint8), t)
        out["code"] = table.column("event_code").to_numpy()
        return out


READS_KIND: Final = Kind("reads", S.READS, "interval_end", "reading_type")
REGISTERS_KIND: Final = Kind("registers", S.REGISTERS, "read_time", "register")
EVENTS_KIND: Final = Kind("events", S.EVENTS, "event_time", None)
KINDS: Final = (READS_KIND, REGISTERS_KIND, EVENTS_KIND)


def key_meter(keys: Keys) -> npt.NDArray[np.int64]:
    """meter_idx of each key."""
    k = keys["mt"] if keys.dtype == EVENT_KEY else keys
    return (k >> np.uint64(37)).astype(np.int64)


def key_time(keys: Keys) -> npt.NDArray[np.int64]:
    """Unix seconds of each key."""
    k = keys["mt"] if keys.dtype == EVENT_KEY else keys
    return (k & np.uint64(0xFFFFFFFF)).astype(np.int64) + S.KEY_EPOCH_S


def is_strictly_sorted(keys: Keys) -> bool:
    if len(keys) < 2:
        return True
    if keys.dtype == EVENT_KEY:
        a, b = keys[:-1], keys[1:]
        return bool(np.all((a["mt"] < b["mt"]) | ((a["mt"] == b["mt"]) & (a["code"] < b["code"]))))
    return bool(np.all(keys[1:] > keys[:-1]))


def sort_unique_first(keys: Keys) -> tuple[npt.NDArray[np.int64], Keys]:
    """Input positions of the first occurrence of each distinct key, in key order.

    Returns ``(rows, sorted_unique_keys)``; ``keys[rows] == sorted_unique_keys``.
    A stable sort keeps the earliest row of equal keys (first write wins).
    """
    n = len(keys)
    if is_strictly_sorted(keys):
        return np.arange(n, dtype=np.int64), keys
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    first = np.empty(n, np.bool_)
    first[:1] = True
    first[1:] = ks[1:] != ks[:-1]
    return order[first].astype(np.int64), ks[first]


def sorted_contains(haystack: Keys, needles: Keys) -> npt.NDArray[np.bool_]:
    """``needles`` found in the sorted array ``haystack`` (vectorised)."""
    if len(haystack) == 0 or len(needles) == 0:
        return np.zeros(len(needles), np.bool_)
    pos = np.searchsorted(haystack, needles)
    pos = np.minimum(pos, len(haystack) - 1)
    return haystack[pos] == needles  # type: ignore[no-any-return]


def merge_sorted(a: Keys, b: Keys) -> Keys:
    """Union of two sorted, mutually disjoint key arrays, sorted."""
    if len(a) == 0:
        return b.copy()
    if len(b) == 0:
        return a
    out = np.concatenate([a, b])
    out.sort(kind="stable")  # two runs: timsort merges them in linear time
    return out


def day_of(t: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """UTC day number (days since 1970-01-01) of Unix seconds."""
    return np.floor_divide(t, DAY_S)
