"""Write canonical CSV exports, chunk by chunk, without a per-row Python loop.

Each chunk's columns are formatted as Arrow string arrays (names, ISO 8601 UTC times,
exact decimals, ``;``-joined quality codes), free-text columns are quoted where RFC 4180
needs it, and the lines are written to a binary sink, so memory stays bounded by
``chunk_rows`` whatever the size of the export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import codes, schema
from headend.model.commands import SWITCH_STATES
from headend.wire.csvfmt import _text as tx
from headend.wire.csvfmt._format import (
    REG_DECIMALS,
    REG_NAMES,
    RT_DECIMALS,
    RT_NAMES,
    decimals_for,
    format_event_codes,
    format_names,
    format_quality,
    format_times,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Tabular",
    "write_events_csv",
    "write_meters_csv",
    "write_reads_csv",
    "write_registers_csv",
]

#: rows formatted at once [rows]
DEFAULT_CHUNK_ROWS: Final = 1 << 18

Tabular: TypeAlias = "pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch]"
_UNIT_PER_S: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _batches(data: Tabular, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.Table):
        yield from data.to_batches(max_chunksize=chunk_rows)
    elif isinstance(data, pa.RecordBatch):
        yield from pa.Table.from_batches([data]).to_batches(max_chunksize=chunk_rows)
    else:
        for batch in data:
            yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=chunk_rows)


def _np(batch: pa.RecordBatch, name: str) -> npt.NDArray[np.generic]:
    col = batch.column(name)
    if col.null_count:
        raise ValueError(f"column {name!r} holds nulls")
    return np.asarray(col.to_numpy(zero_copy_only=False))


def _seconds(batch: pa.RecordBatch, name: str) -> npt.NDArray[np.int64]:
    """A timestamp (any unit) or integer Unix-seconds column as Unix seconds (floor)."""
    col = batch.column(name)
    if col.null_count:
        raise ValueError(f"column {name!r} holds nulls")
    if pa.types.is_timestamp(col.type):
        per_s = _UNIT_PER_S[col.type.unit]
        raw = np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)
        secs: npt.NDArray[np.int64] = raw // per_s
        return secs
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _text(batch: pa.RecordBatch, name: str) -> pa.Array:
    return tx.csv_quote(batch.column(name).cast(pa.string()), name=name)


def _write(
    data: Tabular, sink: BinaryIO, header: tuple[str, ...],
    fmt: Callable[[pa.RecordBatch], list[pa.Array]], chunk_rows: int,
) -> int:
    sink.write((",".join(header) + "\n").encode())
    rows = 0
    for batch in _batches(data, chunk_rows):
        if batch.num_rows:
            sink.write(tx.join_lines(fmt(batch)))
            rows += batch.num_rows
    return rows


def write_reads_csv(
    table: Tabular, sink: BinaryIO, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> int:
    """Write interval reads as canonical CSV (``meter_id,reading_type,interval_end,value,quality``).

    Parameters
    ----------
    table : Table, RecordBatch or iterable of RecordBatch
        Columns ``meter_id`` (string), ``reading_type`` (``uint8`` code),
        ``interval_end`` (timestamp, UTC), ``value`` (integer, resolution units) and
        ``quality`` (``uint32`` mask).
    sink : binary file
        For example ``sys.stdout.buffer``; written in chunks of ``chunk_rows`` rows.

    Returns
    -------
    int
        Rows written.

    Examples
    --------
    >>> import io, pyarrow as pa
    >>> t = pa.table({"meter_id": ["M1"], "reading_type": pa.array([2], pa.uint8()),
    ...               "interval_end": pa.array([1772378100], pa.timestamp("s", "UTC")),
    ...               "value": [2401], "quality": pa.array([0], pa.uint32())})
    >>> out = io.BytesIO(); _ = write_reads_csv(t, out); print(out.getvalue().decode())
    meter_id,reading_type,interval_end,value,quality
    M1,volts,2026-03-01T15:15:00Z,240.1,
    <BLANKLINE>
    """
    def fmt(b: pa.RecordBatch) -> list[pa.Array]:
        rt = _np(b, "reading_type")
        return [_text(b, "meter_id"), format_names(rt, RT_NAMES),
                format_times(_seconds(b, "interval_end")),
                tx.format_decimal(_np(b, "value"), decimals_for(rt, RT_DECIMALS)),
                format_quality(_np(b, "quality"))]

    return _write(table, sink, schema.CSV_HEADERS["reads"], fmt, chunk_rows)


def write_registers_csv(
    table: Tabular, sink: BinaryIO, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> int:
    """Write register reads as canonical CSV (``meter_id,register,read_time,value``).

    ``table`` has ``meter_id`` (string), ``register`` (``uint8`` code), ``read_time``
    (timestamp, UTC) and ``value`` (``int64``, resolution units). Returns rows written.
    """
    def fmt(b: pa.RecordBatch) -> list[pa.Array]:
        reg = _np(b, "register")
        return [_text(b, "meter_id"), format_names(reg, REG_NAMES),
                format_times(_seconds(b, "read_time")),
                tx.format_decimal(_np(b, "value"), decimals_for(reg, REG_DECIMALS))]

    return _write(table, sink, schema.CSV_HEADERS["registers"], fmt, chunk_rows)


def write_events_csv(
    table: Tabular, sink: BinaryIO, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> int:
    """Write events as canonical CSV (``meter_id,event_time,event_code``).

    ``table`` has ``meter_id`` (string), ``event_time`` (timestamp, UTC) and
    ``event_code`` (``uint32``, :func:`headend.model.codes.pack_event_code`), written
    as the dotted EndDeviceEventType. Returns rows written.
    """
    def fmt(b: pa.RecordBatch) -> list[pa.Array]:
        return [_text(b, "meter_id"), format_times(_seconds(b, "event_time")),
                format_event_codes(_np(b, "event_code"))]

    return _write(table, sink, schema.CSV_HEADERS["events"], fmt, chunk_rows)


_BOOL_TEXT: Final = pa.array(["false", "true"], pa.string())


def _care_text(b: pa.RecordBatch) -> pa.Array:
    """``critical_care`` as true|false; empty where null or where the column is absent."""
    if "critical_care" not in b.schema.names:
        return pa.array([""] * b.num_rows, pa.string())
    col = b.column("critical_care")
    text = pc.if_else(col, pa.scalar("true"), pa.scalar("false"))
    return pc.fill_null(text, "")


def write_meters_csv(
    table: Tabular, sink: BinaryIO, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> int:
    """Write the meter registry as canonical CSV, ``interval_minutes`` and
    ``critical_care`` included.

    ``table`` has the columns of :data:`headend.model.schema.METERS` (``meter_idx`` and
    ``serial`` are not written) or of a decoded meters CSV: ``meter_id``,
    ``commodity`` and ``technology`` (``uint8`` codes), ``two_way`` (bool),
    ``collector_id``, ``transformer_id``, ``feeder_id``, ``substation_id`` (string,
    nullable) and ``interval_s`` [s] (0: unknown, written empty); ``critical_care``
    (bool; null or absent: written empty). An ``interval_source`` column (text) and a
    ``switch_state`` column (``uint8``, :data:`headend.model.commands.SWITCH_STATES`)
    are written after them, in that order, when present. Returns rows written.

    Raises
    ------
    ValueError
        If an ``interval_s`` is not a whole number of minutes, or a text holds a line
        break.
    """
    def fmt(b: pa.RecordBatch) -> list[pa.Array]:
        interval_s = _np(b, "interval_s").astype(np.int64)
        if (interval_s % 60).any():
            raise ValueError("interval_s must be whole minutes")
        two_way = _np(b, "two_way").astype(np.int64)
        return [
            _text(b, "meter_id"),
            format_names(_np(b, "commodity"), codes.Commodity.NAMES),
            format_names(_np(b, "technology"), codes.Technology.NAMES),
            _BOOL_TEXT.take(pa.array(two_way)),
            *(_text(b, k) for k in ("collector_id", "transformer_id", "feeder_id",
                                    "substation_id")),
            # 0: not declared and not learned yet -> empty
            pc.if_else(pa.array(interval_s > 0), pc.cast(pa.array(interval_s // 60), pa.string()),
                       pa.scalar("", pa.string())),
            _care_text(b),
            *(_text(b, k) for k in extra if k != "switch_state"),
            *([format_names(_np(b, "switch_state"), SWITCH_STATES)]
              if "switch_state" in extra else []),
        ]

    names = table.schema.names if isinstance(table, (pa.Table, pa.RecordBatch)) else ()
    extra = tuple(k for k in ("interval_source", "switch_state") if k in names)
    header = schema.CSV_HEADERS["meters"] + schema.CSV_OPTIONAL["meters"] + extra
    return _write(table, sink, header, fmt, chunk_rows)
