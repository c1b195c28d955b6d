"""Decode canonical CSV into :class:`headend.wire.batch.Decoded` units, vectorised.

Each block of lines is read by Arrow as string columns, then every column is parsed at
once (see :mod:`._text`); columns with few distinct values (reading types, interval
ends, quality, event codes) are parsed once per distinct value through Arrow's
dictionary encoding. Rows that fail a check become quarantine rows with the first
reason that applies, in column order; the good rows of the block are kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import codes, reasons, schema
from headend.wire.batch import Decoded, DecodedEvents, DecodedReads, DecodedRegisters
from headend.wire.csvfmt import _text as tx
from headend.wire.csvfmt._blocks import Block, open_blocks, parse_block
from headend.wire.csvfmt._detect import parse_header
from headend.wire.csvfmt._format import REG_DECIMALS, RT_DECIMALS
from headend.wire.csvfmt.rejects import make_rejects

__all__ = ["DEFAULT_BLOCK_SIZE", "DEFAULT_INTERVAL_MINUTES", "decode_csv"]

DEFAULT_BLOCK_SIZE: Final = 16 << 20
#: ``interval_minutes`` empty or absent: not declared (0), learned from the reads
DEFAULT_INTERVAL_MINUTES: Final = 0
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
#: register values are int64; accepted magnitude [resolution units]
REGISTER_MAX: Final = 10**18 - 1
#: temperatures are kept to 1e-6 degC
_TEMP_DECIMALS: Final = 6
_DETAIL_CHARS: Final = 64

_RT_NAMES: Final = pa.array([r.name for r in codes.READING_TYPES], pa.string())
_REG_NAMES: Final = pa.array([r.name for r in codes.REGISTER_TYPES], pa.string())
_COMMODITIES: Final = pa.array(list(codes.Commodity.NAMES), pa.string())
_TECHNOLOGIES: Final = pa.array(list(codes.Technology.NAMES), pa.string())
_BOOLS: Final = pa.array(["false", "true"], pa.string())

Mask = npt.NDArray[np.bool_]

#: quarantine text column -> canonical CSV column, per kind
_FIELDS: Final[dict[str, dict[str, str]]] = {
    "reads": {"meter_id": "meter_id", "type": "reading_type", "time": "interval_end",
              "value": "value", "quality": "quality"},
    "registers": {"meter_id": "meter_id", "type": "register", "time": "read_time",
                  "value": "value"},
    "events": {"meter_id": "meter_id", "type": "event_code", "time": "event_time"},
    "meters": {"meter_id": "meter_id"},
    "collectors": {},
    "weather": {"time": "time", "value": "temperature_c"},
    "transformers": {"type": "transformer_id", "value": "rating_kva"},
    "customers": {"meter_id": "meter_id", "type": "customer_class"},
}
#: kinds whose rejects keep the whole row (as a canonical line) in ``payload``
_PAYLOAD_KINDS: Final = frozenset({"meters", "collectors", "weather", "transformers",
                                    "customers"})
#: customer classes a customers CSV may name
CUSTOMER_CLASSES: Final = ("residential", "commercial", "industrial")


class _Rows:
    """The rows of one block and the rejects taken from them, first reason wins."""

    def __init__(self, kind: str, cols: dict[str, pa.StringArray], n: int, source: str,
                 received_at: int) -> None:
        self.kind, self.cols, self.n = kind, cols, n
        self.source, self.received_at = source, received_at
        self.taken = np.zeros(n, np.bool_)
        self.rejects: list[pa.Table] = []

    def reject(self, bad: Mask, reason: str, detail: str | tuple[str, str]) -> None:
        """Quarantine the rows of ``bad`` not yet rejected; ``detail`` is a text or
        ``(text, column)`` to quote the offending value after the text."""
        m = bad & ~self.taken
        if not m.any():
            return
        fm = pa.array(m)
        if isinstance(detail, tuple):
            text, col = detail
            shown = pc.utf8_slice_codeunits(self.cols[col].filter(fm), 0, _DETAIL_CHARS)
            det: Any = pc.binary_join_element_wise(f"{text} '", shown, "'", "")
        else:
            det = detail
        fields = {q: self.cols[c].filter(fm) for q, c in _FIELDS[self.kind].items()}
        payload = self._lines(fm) if self.kind in _PAYLOAD_KINDS else None
        self.rejects.append(make_rejects(
            self.source, self.kind, reason, det, payload=payload,
            received_at=self.received_at, **fields))
        self.taken |= m

    def _lines(self, fm: pa.Array) -> pa.Array:
        names = schema.CSV_HEADERS[self.kind] + schema.CSV_OPTIONAL.get(self.kind, ())
        parts = []
        for name in names:
            col = self.cols.get(name)
            if col is None:
                parts.append(pa.nulls(int(pc.sum(fm).as_py()), pa.string()))
            elif name == "hmac_key":  # never keep a secret in the quarantine
                parts.append(pa.array(["<redacted>"] * int(pc.sum(fm).as_py()), pa.string()))
            else:
                parts.append(tx.csv_quote(col.filter(fm)))
        line = pc.binary_join_element_wise(*parts, ",", null_handling="replace",
                                           null_replacement="")
        return line.cast(pa.binary())

    @property
    def ok(self) -> Mask:
        return ~self.taken

    def empty_text(self, col: str) -> Mask:
        empty: Mask = np.diff(tx.string_views(self.cols[col])[0]) == 0
        return empty


def _repetitive(col: pa.Array, sample: int = 4096) -> bool:
    """Whether ``col`` repeats values enough that parsing each distinct value once
    pays for the hashing (judged on its first ``sample`` values: even a column of a
    few thousand possible values shows some repeats there, a column of unique values
    shows none)."""
    head = col.slice(0, sample)
    return len(head) > 0 and pc.count_distinct(head).as_py() <= 0.9 * len(head)


def _by_value(col: pa.Array, parse: Callable[[pa.Array], tuple[Any, ...]]) -> tuple[Any, ...]:
    """Apply ``parse`` to the distinct values of ``col`` and spread the results back
    (or to every value, if they hardly repeat)."""
    if not _repetitive(col):
        return tuple(np.asarray(r) for r in parse(col))
    enc = pc.dictionary_encode(col)
    idx = np.asarray(enc.indices)
    return tuple(np.asarray(r)[idx] for r in parse(enc.dictionary))


def _decimals(col: pa.Array, decimals: npt.NDArray[np.int64], lo: int, hi: int
              ) -> tuple[npt.NDArray[np.int64], Mask]:
    """:func:`._text.parse_decimal` with per-row decimals; once per distinct text and
    number of decimals when values repeat (meter data repeats values a lot)."""
    ks = np.unique(decimals)
    if not _repetitive(col):
        return tx.parse_decimal(col, decimals, lo=lo, hi=hi)
    enc = pc.dictionary_encode(col)
    idx = np.asarray(enc.indices)
    if len(ks) == 1:
        v, o = tx.parse_decimal(enc.dictionary, int(ks[0]), lo=lo, hi=hi)
        return v[idx], o[idx]
    values = np.zeros(len(col), np.int64)
    ok = np.zeros(len(col), np.bool_)
    for k in ks:
        sel = decimals == k
        v, o = tx.parse_decimal(enc.dictionary, int(k), lo=lo, hi=hi)
        values[sel] = v[idx[sel]]
        ok[sel] = o[idx[sel]]
    return values, ok


def _index_in(col: pa.Array, names: pa.Array) -> npt.NDArray[np.int64]:
    """Position of each value in ``names``; -1 if absent."""
    return np.asarray(pc.fill_null(pc.index_in(col, value_set=names), -1)).astype(np.int64)


def _times(rows: _Rows, col: str) -> npt.NDArray[np.int64]:
    t, status = _by_value(rows.cols[col], tx.parse_time)
    rows.reject(status == tx.TIME_NO_OFFSET, reasons.BAD_TIMESTAMP,
                (f"{col} without a UTC offset (Z or +hh:mm)", col))
    rows.reject(status != tx.TIME_OK, reasons.BAD_TIMESTAMP, (f"{col} not ISO 8601", col))
    return t  # type: ignore[no-any-return]


def _quality_of(values: pa.Array) -> tuple[npt.NDArray[np.uint32], Mask]:
    texts = values.to_pylist()  # distinct values only
    masks = np.zeros(len(texts), np.uint32)
    bad = np.zeros(len(texts), np.bool_)
    for i, text in enumerate(texts):
        try:
            masks[i] = codes.quality_mask(text)
        except (KeyError, ValueError):
            bad[i] = True
    return masks, bad


def _event_codes_of(values: pa.Array) -> tuple[npt.NDArray[np.uint32], Mask]:
    texts = values.to_pylist()  # distinct values only
    packed = np.zeros(len(texts), np.uint32)
    bad = np.zeros(len(texts), np.bool_)
    for i, text in enumerate(texts):
        try:
            packed[i] = codes.pack_event_code(text)
        except ValueError:
            bad[i] = True
    return packed, bad


def _reads(rows: _Rows) -> Decoded:
    c = rows.cols
    rows.reject(rows.empty_text("meter_id"), reasons.BAD_CSV, "empty meter_id")
    rt = _index_in(c["reading_type"], _RT_NAMES)
    rows.reject(rt < 0, reasons.UNKNOWN_READING_TYPE, ("unknown reading type", "reading_type"))
    t = _times(rows, "interval_end")
    value, ok = _decimals(c["value"], RT_DECIMALS[np.maximum(rt, 0)], INT32_MIN, INT32_MAX)
    rows.reject(~ok, reasons.BAD_VALUE,
                ("value not a decimal number in range of the reading type's unit", "value"))
    quality, bad_q = _by_value(c["quality"], _quality_of)
    rows.reject(bad_q, reasons.BAD_QUALITY, ("unknown quality code in", "quality"))
    keep = rows.ok
    return Decoded(rows.source, reads=DecodedReads(
        c["meter_id"].filter(pa.array(keep)), rt[keep].astype(np.uint8), t[keep],
        value[keep], quality[keep].astype(np.uint32),
    ), rejects=rows.rejects)


def _registers(rows: _Rows) -> Decoded:
    c = rows.cols
    rows.reject(rows.empty_text("meter_id"), reasons.BAD_CSV, "empty meter_id")
    reg = _index_in(c["register"], _REG_NAMES)
    rows.reject(reg < 0, reasons.UNKNOWN_READING_TYPE, ("unknown register", "register"))
    t = _times(rows, "read_time")
    value, ok = _decimals(c["value"], REG_DECIMALS[np.maximum(reg, 0)],
                          -REGISTER_MAX, REGISTER_MAX)
    rows.reject(~ok, reasons.BAD_VALUE,
                ("value not a decimal number in range of the register's unit", "value"))
    keep = rows.ok
    return Decoded(rows.source, registers=DecodedRegisters(
        c["meter_id"].filter(pa.array(keep)), reg[keep].astype(np.uint8), t[keep], value[keep],
    ), rejects=rows.rejects)


def _events(rows: _Rows) -> Decoded:
    c = rows.cols
    rows.reject(rows.empty_text("meter_id"), reasons.BAD_CSV, "empty meter_id")
    t = _times(rows, "event_time")
    code, bad = _by_value(c["event_code"], _event_codes_of)
    rows.reject(bad, reasons.BAD_EVENT_CODE,
                ("event_code not a dotted EndDeviceEventType", "event_code"))
    keep = rows.ok
    return Decoded(rows.source, events=DecodedEvents(
        c["meter_id"].filter(pa.array(keep)), t[keep], code[keep].astype(np.uint32),
    ), rejects=rows.rejects)


def _null_if_empty(col: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def _meters(rows: _Rows) -> Decoded:
    c = rows.cols
    rows.reject(rows.empty_text("meter_id"), reasons.BAD_METER, "empty meter_id")
    commodity = _index_in(c["commodity"], _COMMODITIES)
    rows.reject(commodity < 0, reasons.BAD_METER,
                ("commodity not electric|water|gas:", "commodity"))
    technology = _index_in(c["technology"], _TECHNOLOGIES)
    rows.reject(technology < 0, reasons.BAD_METER,
                ("technology not rf|gprs|plc:", "technology"))
    two_way = _index_in(c["two_way"], _BOOLS)
    rows.reject(two_way < 0, reasons.BAD_METER, ("two_way not true|false:", "two_way"))
    minutes = np.full(rows.n, DEFAULT_INTERVAL_MINUTES, np.int64)
    if "interval_minutes" in c:
        col = c["interval_minutes"]
        given = ~rows.empty_text("interval_minutes")
        digits = np.asarray(pc.match_substring_regex(col, r"^[0-9]{1,4}$"))
        m, _ = tx.parse_decimal(col, 0, lo=0, hi=9999)
        good = digits & (m >= 1) & (m <= 1440) & (1440 % np.maximum(m, 1) == 0)
        rows.reject(given & ~good, reasons.BAD_METER,
                    ("interval_minutes not a divisor of 1440:", "interval_minutes"))
        minutes = np.where(given, m, minutes)
    # critical_care: true|false; empty or absent: not given (null), the registry keeps
    # the meter's flag (false for a new meter)
    care = np.full(rows.n, -1, np.int64)
    if "critical_care" in c:
        given = ~rows.empty_text("critical_care")
        care = np.where(given, _index_in(c["critical_care"], _BOOLS), -1)
        rows.reject(given & (care < 0), reasons.BAD_METER,
                    ("critical_care not true|false:", "critical_care"))
    keep = rows.ok
    fk = pa.array(keep)
    table = pa.table({
        "meter_id": c["meter_id"].filter(fk),
        "commodity": pa.array(commodity[keep].astype(np.uint8)),
        "technology": pa.array(technology[keep].astype(np.uint8)),
        "two_way": pa.array(two_way[keep] == 1),
        **{k: _null_if_empty(c[k].filter(fk))
           for k in ("collector_id", "transformer_id", "feeder_id", "substation_id")},
        "interval_s": pa.array((minutes[keep] * 60).astype(np.int32)),
        "critical_care": pa.array(care[keep] == 1, mask=care[keep] < 0),
    })
    return Decoded(rows.source, meters=table, rejects=rows.rejects)


_NIBBLE: Final = np.full(256, 255, np.uint8)
for _i, _ch in enumerate(b"0123456789abcdef"):
    _NIBBLE[_ch] = _i
for _i, _ch in enumerate(b"ABCDEF"):
    _NIBBLE[_ch] = 10 + _i


def _hex_decode(col: pa.Array) -> tuple[pa.BinaryArray, Mask]:
    """Hex text to bytes; ok only for a non-empty, even number of hex digits."""
    offsets, data = tx.string_views(col)
    lengths = np.diff(offsets)
    nib = _NIBBLE[data]
    bad_byte = np.concatenate([[0], np.cumsum(nib == 255, dtype=np.int64)])
    ok = (lengths > 0) & (lengths % 2 == 0) & (bad_byte[offsets[1:]] == bad_byte[offsets[:-1]])
    lengths = np.where(ok, lengths, 0)
    starts = offsets[:-1]
    row = np.repeat(np.arange(len(lengths)), lengths // 2)
    pair = np.arange(len(row)) - np.repeat(np.cumsum(lengths // 2) - lengths // 2, lengths // 2)
    pos = starts[row] + 2 * pair
    out = (nib[pos] << 4 | nib[pos + 1]).astype(np.uint8) if len(pos) else np.zeros(0, np.uint8)
    out_offsets = np.concatenate([[0], np.cumsum(lengths // 2)]).astype(np.int32)
    arr = pa.BinaryArray.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(out_offsets),
                                                                  pa.py_buffer(out)])
    return arr, ok


def _collectors(rows: _Rows) -> Decoded:
    c = rows.cols
    digits = np.asarray(pc.match_substring_regex(c["collector_id"], r"^[0-9]{1,10}$"))
    cid, in_range = tx.parse_decimal(c["collector_id"], 0, lo=0, hi=2**32 - 1)
    rows.reject(~(digits & in_range), reasons.BAD_CSV,
                ("collector_id not a decimal uint32:", "collector_id"))
    key, ok = _hex_decode(c["hmac_key"])
    rows.reject(~ok, reasons.BAD_CSV, "hmac_key not an even number of hex digits")
    keep = rows.ok
    table = pa.table({"collector_id": pa.array(cid[keep].astype(np.uint32)),
                      "hmac_key": key.filter(pa.array(keep))})
    return Decoded(rows.source, collectors=table, rejects=rows.rejects)


def _weather(rows: _Rows) -> Decoded:
    c = rows.cols
    t = _times(rows, "time")
    micro, ok = tx.parse_decimal(c["temperature_c"], _TEMP_DECIMALS, lo=-10**12, hi=10**12)
    rows.reject(~ok, reasons.BAD_VALUE, ("temperature_c not a decimal number:", "temperature_c"))
    keep = rows.ok
    fk = pa.array(keep)
    zone = (_null_if_empty(c["zone"].filter(fk)) if "zone" in c
            else pa.nulls(int(keep.sum()), pa.string()))
    table = pa.table({"time": pa.array(t[keep]).cast(schema.TS),
                      "temperature_c": pa.array(micro[keep] / 10.0**_TEMP_DECIMALS),
                      "zone": zone})
    return Decoded(rows.source, weather=table, rejects=rows.rejects)


def _transformers(rows: _Rows) -> Decoded:
    c = rows.cols
    tid = c["transformer_id"]
    rows.reject(np.asarray(pc.equal(pc.utf8_length(tid), 0)), reasons.BAD_CSV,
                "transformer_id empty")
    milli, ok = tx.parse_decimal(c["rating_kva"], 3, lo=1, hi=10**12)
    rows.reject(~ok, reasons.BAD_VALUE, ("rating_kva not a positive number:", "rating_kva"))
    keep = rows.ok
    table = pa.table({"transformer_id": tid.filter(pa.array(keep)),
                      "rating_kva": pa.array(milli[keep] / 1000.0)})
    return Decoded(rows.source, reference={"transformers": table}, rejects=rows.rejects)


def _customers(rows: _Rows) -> Decoded:
    c = rows.cols
    mid, cls = c["meter_id"], c["customer_class"]
    rows.reject(np.asarray(pc.equal(pc.utf8_length(mid), 0)), reasons.BAD_CSV, "meter_id empty")
    known = np.asarray(pc.is_in(cls, value_set=pa.array(CUSTOMER_CLASSES)))
    rows.reject(~known, reasons.BAD_CSV, ("customer_class not one of "
                                          + "|".join(CUSTOMER_CLASSES) + ":", "customer_class"))
    fk = pa.array(rows.ok)
    table = pa.table({"meter_id": mid.filter(fk), "customer_class": cls.filter(fk)})
    return Decoded(rows.source, reference={"customers": table}, rejects=rows.rejects)


_CONVERTERS: Final[dict[str, Callable[[_Rows], Decoded]]] = {
    "reads": _reads, "registers": _registers, "events": _events, "meters": _meters,
    "collectors": _collectors, "weather": _weather, "transformers": _transformers,
    "customers": _customers,
}


def _decode_block(block: Block, kind: str, source: str, received_at: int) -> Decoded:
    rows = _Rows(kind, block.columns, block.num_rows, source, received_at)
    decoded = _CONVERTERS[kind](rows)
    if block.bad_lines:
        decoded.rejects.insert(0, make_rejects(
            source, kind, reasons.BAD_CSV, block.bad_details, payload=block.bad_lines,
            received_at=received_at))
    return decoded


def decode_csv(
    data: bytes | bytearray | memoryview | os.PathLike[str],
    *,
    source: str,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[Decoded]:
    """Decode a canonical CSV, block by block, with bounded memory.

    Parameters
    ----------
    data : bytes or path
        The CSV (UTF-8, header row; LF or CRLF line ends; values without line breaks).
    source : str
        Name of the input, carried into :class:`~headend.wire.batch.Decoded` and
        every quarantine row.
    block_size : int
        Bytes of whole lines decoded at once [bytes]; memory use is a small multiple.

    Yields
    ------
    Decoded
        One per block: the parsed columns of its kind (``reads``, ``registers``,
        ``events``, ``meters``, ``collectors`` or ``weather``) and ``rejects``, the
        refused rows in the quarantine schema. Blocks without any line still yield an
        empty unit for files with only a header.

    Raises
    ------
    DecodeError
        ``reason="bad_csv"`` if the header is unknown or the CSV cannot be split into
        lines (a line longer than ``max(4 * block_size, 64 MiB)``).

    Examples
    --------
    >>> csv = b"meter_id,reading_type,interval_end,value,quality\\n" \\
    ...       b"M1,kwh_del,2026-03-01T10:15:00-05:00,1.234,\\n"
    >>> d = next(decode_csv(csv, source="ex"))
    >>> d.reads.interval_end.tolist(), d.reads.value.tolist()
    ([1772378100], [1234])
    """
    header, blocks = open_blocks(data, block_size, source)
    kind, names = parse_header(header, source=source)
    wanted = list(schema.CSV_HEADERS[kind]) + [
        n for n in schema.CSV_OPTIONAL.get(kind, ()) if n in names[len(schema.CSV_HEADERS[kind]):]
    ]
    # rename unknown extra columns so that duplicates never clash
    arrow_names = [
        n if n in wanted and i == names.index(n) else f"_extra{i}" for i, n in enumerate(names)
    ]
    received_at = int(datetime.now(UTC).timestamp())
    yielded = False
    for raw in blocks:
        block = parse_block(raw, arrow_names, wanted, source)
        yielded = True
        yield _decode_block(block, kind, source, received_at)
    if not yielded:
        empty = Block({n: pa.array([], pa.string()) for n in wanted}, 0)
        yield _decode_block(empty, kind, source, received_at)
