"""Weather kept in the data directory: outdoor temperature per zone and hour.

Layout: ``<root>/weather/part-<ns>-<uuid>.parquet`` in
:data:`headend.model.schema.WEATHER`, published durably (temp file + fsync + rename +
directory fsync) under a short ``flock``. Keyed on ``(zone, time)``; the first value
stored for a key wins and later ones are counted as duplicates (the store's rule).
A missing or null zone is stored as ``""``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from headend.errors import StorageError, ValidationError
from headend.model.schema import TS, WEATHER
from headend.store._fs import locked, publish_path, remove_temp_files

__all__ = ["WeatherAppend", "WeatherStore"]


@dataclass(frozen=True, slots=True)
class WeatherAppend:
    """What :meth:`WeatherStore.append` did."""

    accepted: int
    duplicate: int


def _normalise(table: pa.Table) -> pa.Table:
    try:
        n = table.num_rows
        zone = table.column("zone") if "zone" in table.column_names else pa.nulls(n, pa.string())
        zone = pc.fill_null(pc.cast(zone, pa.string()), "")
        t = table.column("time")
        if pa.types.is_timestamp(t.type) and t.type.tz is None:
            raise ValidationError("weather times must be timezone-aware (UTC)")
        t = pc.cast(t, TS) if pa.types.is_timestamp(t.type) else pc.cast(t, pa.int64()).cast(TS)
        temp = pc.cast(table.column("temperature_c"), pa.float64())
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError(f"weather table does not fit: {exc}") from exc
    out = pa.table({"zone": zone, "time": t, "temperature_c": temp}, schema=WEATHER)
    if out.column("temperature_c").null_count or out.column("time").null_count:
        raise ValidationError("weather rows need a time and a temperature")
    return out


def _key(t: pa.Table) -> np.ndarray:
    z = t.column("zone").to_numpy(zero_copy_only=False).astype(str)
    s = t.column("time").cast(pa.int64()).to_numpy()
    return np.char.add(np.char.add(z, "\x1f"), s.astype(str))


class WeatherStore:
    """Temperatures under ``<root>/weather/``.

    Contract: ``append`` is durable on return and idempotent (a key stored once);
    ``load`` returns rows sorted by ``(zone, time)``.
    """

    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / "weather"

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []

    def load(self, *, zone: str | None = None, start: int | None = None,
             end: int | None = None) -> pa.Table:
        """Stored rows with ``start <= time < end`` [Unix s] of ``zone`` (all by default)."""
        files = self._files()
        if not files:
            return WEATHER.empty_table()
        try:
            t = pa.concat_tables([pq.read_table(f).cast(WEATHER) for f in files])
        except (OSError, pa.ArrowInvalid) as exc:
            raise StorageError(f"cannot read weather in {self.dir}: {exc}") from exc
        mask = np.ones(t.num_rows, bool)
        if zone is not None:
            mask &= t.column("zone").to_numpy(zero_copy_only=False) == zone
        s = t.column("time").cast(pa.int64()).to_numpy()
        if start is not None:
            mask &= s >= start
        if end is not None:
            mask &= s < end
        return t.filter(pa.array(mask)).sort_by([("zone", "ascending"), ("time", "ascending")])

    def append(self, table: pa.Table) -> WeatherAppend:
        """Store the rows of ``table`` (``time``, ``temperature_c``, optional ``zone``)
        whose ``(zone, time)`` is new; first occurrence wins."""
        new = _normalise(table)
        if new.num_rows == 0:
            return WeatherAppend(0, 0)
        self.dir.mkdir(parents=True, exist_ok=True)
        with locked(self.dir / ".lock", what="weather store"):
            k = _key(new)
            _, first = np.unique(k, return_index=True)
            keep = np.zeros(len(k), bool)
            keep[first] = True
            old = self.load()
            if old.num_rows:
                keep &= ~np.isin(k, _key(old))
            out = new.filter(pa.array(keep))
            if out.num_rows:
                remove_temp_files(self.dir, only_dead=True)
                name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
                publish_path(self.dir / name, lambda p: pq.write_table(out, p))
        return WeatherAppend(int(keep.sum()), int(len(k) - keep.sum()))
