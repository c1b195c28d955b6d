"""Quarantine rows: build them, vectorised, and turn them back into canonical CSV.

A refused row or frame is never dropped: it becomes one row of
:data:`headend.model.schema.QUARANTINE` with a reason from
:data:`headend.model.reasons.REASONS`. Row-level rejects keep their fields as
canonical text (``meter_id``, ``type``, ``time``, ``value``, ``quality``), so that
:func:`rejects_to_csv_bytes` can rebuild a canonical CSV that
:func:`headend.wire.csvfmt.decode_csv` reads again once the cause is gone (for
example a meter that is now in the registry). Rows whose fields do not fit those
columns (meter registry, collectors, weather, malformed lines) keep the whole line
in ``payload``.

Examples
--------
>>> t = make_rejects("up.csv", "reads", "bad_value", "value 'x' is not a number",
...                  meter_id=["M1"], value=["x"], received_at=0)
>>> t.column("reason").to_pylist(), t.column("value").to_pylist()
(['bad_value'], ['x'])
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import schema
from headend.wire.batch import DecodedEvents, DecodedReads, DecodedRegisters
from headend.wire.csvfmt import _text as tx
from headend.wire.csvfmt._format import (
    REG_DECIMALS,
    REG_NAMES,
    RT_DECIMALS,
    RT_NAMES,
    decimals_for,
    format_event_codes,
    format_meter,
    format_names,
    format_quality,
    format_times,
)

__all__ = [
    "csv_header",
    "make_rejects",
    "rejects_from_events",
    "rejects_from_reads",
    "rejects_from_registers",
    "rejects_to_csv_bytes",
]


_HEX: Final = np.frombuffer(b"0123456789abcdef", np.uint8)
_ID_ROW_DIGITS: Final = 12


def _quarantine_ids(n: int) -> pa.StringArray:
    """``<16 random hex>-<12 hex row number>``: unique per call, then per row."""
    prefix = np.frombuffer(secrets.token_hex(8).encode() + b"-", np.uint8)
    m = np.empty((n, len(prefix) + _ID_ROW_DIGITS), np.uint8)
    m[:, : len(prefix)] = prefix
    rows = np.arange(n, dtype=np.uint64)
    for j in range(_ID_ROW_DIGITS):
        shift = np.uint64(4 * (_ID_ROW_DIGITS - 1 - j))
        m[:, len(prefix) + j] = _HEX[((rows >> shift) & np.uint64(15)).astype(np.intp)]
    return tx.strings_from_matrix(m)


def _length(v: Any) -> int | None:
    if v is None or isinstance(v, (str, bytes, int, float, datetime, pa.Scalar)):
        return None
    return len(v)


def _column(v: Any, n: int, typ: pa.DataType) -> pa.Array:
    if v is None:
        return pa.nulls(n, typ)
    if _length(v) is None:
        if isinstance(v, pa.Scalar):
            v = v.as_py()
        return pa.array([v], typ).take(np.zeros(n, np.intp)) if n else pa.array([], typ)
    if isinstance(v, pa.ChunkedArray):
        v = v.combine_chunks()
    arr = v if isinstance(v, pa.Array) else pa.array(v, typ)
    return arr if arr.type == typ else arr.cast(typ)


def _received_at(v: Any, n: int) -> pa.Array:
    if v is None:
        v = int(datetime.now(UTC).timestamp())
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        v = int(v.timestamp())
    if isinstance(v, int):
        return pa.array(np.full(n, v, dtype=np.int64)).cast(schema.TS)
    arr = _column(v, n, schema.TS) if not isinstance(v, np.ndarray) else (
        pa.array(v.astype(np.int64)).cast(schema.TS))
    return arr


def make_rejects(
    source: Any,
    kind: Any,
    reason: Any,
    detail: Any,
    *,
    meter_id: Any = None,
    type: Any = None,
    time: Any = None,
    value: Any = None,
    quality: Any = None,
    payload: Any = None,
    received_at: Any = None,
) -> pa.Table:
    """Quarantine rows in the :data:`~headend.model.schema.QUARANTINE` schema.

    Every argument is a scalar (broadcast to all rows) or an array-like (list, NumPy
    array, Arrow array); all array-likes must have the same length, which is the number
    of rows (1 if every argument is a scalar). ``None`` means a null column.

    Parameters
    ----------
    source, kind, reason, detail : str or array of str
        Where the row came from, its kind (``reads``, ``registers``, ``events``,
        ``meters``, ``collectors``, ``weather``, ``frame``, ``file``), a key of
        :data:`headend.model.reasons.REASONS` and a human-readable detail.
    meter_id, type, time, value, quality : str or array of str, optional
        The row's fields as canonical text.
    payload : bytes or array of bytes, optional
        Raw bytes (a frame, a file or a CSV line).
    received_at : datetime, int [Unix s] or array, optional
        When the input was received; now (UTC, whole seconds) if omitted.

    Returns
    -------
    pyarrow.Table
        With a fresh unique ``quarantine_id`` per row.
    """
    args = {"source": source, "kind": kind, "reason": reason, "detail": detail,
            "meter_id": meter_id, "type": type, "time": time, "value": value,
            "quality": quality, "payload": payload}
    lengths = {k: n for k, v in args.items() if (n := _length(v)) is not None}
    if _length(received_at) is not None:
        lengths["received_at"] = _length(received_at)  # type: ignore[assignment]
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    n = next(iter(lengths.values())) if lengths else 1
    cols = [_quarantine_ids(n), _received_at(received_at, n)]
    for f in schema.QUARANTINE:
        if f.name in args:
            cols.append(_column(args[f.name], n, f.type))
    return pa.Table.from_arrays(cols, schema=schema.QUARANTINE)


# --------------------------------------------------------------------------- formatting


def _select(mask: npt.ArrayLike, n: int) -> npt.NDArray[np.bool_]:
    m = np.asarray(mask).astype(np.bool_, copy=False)
    if m.shape != (n,):
        raise ValueError(f"mask of shape {m.shape} for {n} rows")
    return m


def _detail(detail: Any, sel: npt.NDArray[np.bool_]) -> Any:
    if _length(detail) is not None and _length(detail) == len(sel) != int(sel.sum()):
        return pa.array(detail, pa.string()).filter(pa.array(sel))
    return detail


def rejects_from_reads(
    decoded: DecodedReads, mask: npt.ArrayLike, reason: str, detail: Any, source: str,
    *, received_at: Any = None,
) -> pa.Table:
    """Quarantine rows for the decoded interval reads selected by ``mask``.

    Fields are written back as canonical CSV text (reading type name, ISO 8601 UTC
    time, exact decimal value in the unit, ``;``-joined quality codes), so
    :func:`rejects_to_csv_bytes` rebuilds a CSV that decodes to the same reads.
    ``detail`` is a string or an array aligned with ``decoded`` or with the selection.
    """
    sel = _select(mask, len(decoded))
    rt = np.asarray(decoded.reading_type)[sel]
    return make_rejects(
        source, "reads", reason, _detail(detail, sel),
        meter_id=format_meter(decoded.meter, sel),
        type=format_names(rt, RT_NAMES),
        time=format_times(np.asarray(decoded.interval_end)[sel]),
        value=tx.format_decimal(np.asarray(decoded.value)[sel], decimals_for(rt, RT_DECIMALS)),
        quality=format_quality(np.asarray(decoded.quality)[sel]),
        received_at=received_at,
    )


def rejects_from_registers(
    decoded: DecodedRegisters, mask: npt.ArrayLike, reason: str, detail: Any, source: str,
    *, received_at: Any = None,
) -> pa.Table:
    """Quarantine rows for the decoded register reads selected by ``mask``."""
    sel = _select(mask, len(decoded))
    reg = np.asarray(decoded.register)[sel]
    return make_rejects(
        source, "registers", reason, _detail(detail, sel),
        meter_id=format_meter(decoded.meter, sel),
        type=format_names(reg, REG_NAMES),
        time=format_times(np.asarray(decoded.read_time)[sel]),
        value=tx.format_decimal(np.asarray(decoded.value)[sel], decimals_for(reg, REG_DECIMALS)),
        received_at=received_at,
    )


def rejects_from_events(
    decoded: DecodedEvents, mask: npt.ArrayLike, reason: str, detail: Any, source: str,
    *, received_at: Any = None,
) -> pa.Table:
    """Quarantine rows for the decoded events selected by ``mask``."""
    sel = _select(mask, len(decoded))
    return make_rejects(
        source, "events", reason, _detail(detail, sel),
        meter_id=format_meter(decoded.meter, sel),
        type=format_event_codes(np.asarray(decoded.event_code)[sel]),
        time=format_times(np.asarray(decoded.event_time)[sel]),
        received_at=received_at,
    )


# --------------------------------------------------------------------------- back to CSV

#: quarantine columns written back, per kind, in canonical column order
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "reads": ("meter_id", "type", "time", "value", "quality"),
    "registers": ("meter_id", "type", "time", "value"),
    "events": ("meter_id", "time", "type"),
}


def csv_header(kind: str, *, optional: bool = True) -> bytes:
    """The canonical header line of ``kind`` (with its optional columns)."""
    names = schema.CSV_HEADERS[kind] + (schema.CSV_OPTIONAL.get(kind, ()) if optional else ())
    return (",".join(names) + "\n").encode()


def rejects_to_csv_bytes(table: pa.Table, kind: str) -> bytes:
    """A canonical CSV (header included) of the quarantined rows of one kind.

    Rows of other kinds in ``table`` are ignored. Rows kept as a whole line
    (``payload``: meter registry, collectors, weather, malformed lines) are written as
    that line; the others are rebuilt from their text fields. Order is kept.

    Raises
    ------
    ValueError
        If ``kind`` has no canonical CSV (``frame``, ``file``).
    """
    if kind not in schema.CSV_HEADERS:
        raise ValueError(f"kind {kind!r} has no canonical CSV")
    t = table.filter(pc.equal(table.column("kind"), kind))
    head = csv_header(kind)
    if t.num_rows == 0:
        return head
    line: pa.Array = t.column("payload").combine_chunks()  # binary: may not be UTF-8
    if kind in _FIELDS:
        fields = [tx.csv_quote(t.column(c).combine_chunks()) for c in _FIELDS[kind]]
        built = pc.binary_join_element_wise(*fields, ",", null_handling="replace",
                                            null_replacement="")
        line = pc.if_else(line.is_valid(), line, built.cast(pa.binary()))
    line = pc.fill_null(line, b"")
    return head + tx.concat_strings(pc.binary_join_element_wise(line, b"", b"\n"))
