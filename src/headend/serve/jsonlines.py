"""JSON-lines text of stored rows for the third-party streams, built column-wise.

Every line is the join of a few Arrow string columns, most of them taken from small
tables built once per batch (or once per registry version) rather than per row:

* ``{"meter":"<id>","type":"`` per meter (:func:`meter_heads`, per registry version);
* ``<type>","end":"<ISO time>","value":`` per distinct (type, time) of the batch: a
  batch holds few distinct interval ends, so each is formatted once;
* the value as exact decimal text from the stored integer and the type's resolution
  (:func:`decimal_text`);
* ``,"quality":<mask>}`` per distinct quality mask.

No per-row Python. The lines are those documented in docs/streams.md (fields, order,
units); values are written exactly (``4.879``, not the binary floating-point neighbour
``4.8790000000000004``).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["decimal_exponents", "decimal_text", "iso_text", "json_quote", "meter_heads",
           "read_lines", "register_lines"]

_ISO: Final = "%Y-%m-%dT%H:%M:%SZ"
#: a per-batch text table is used while it has at most this many entries per row
_TABLE_PER_ROW: Final = 0.25


def json_quote(arr: Any) -> Any:
    """Quote strings for JSON (ids are escaped for ``\\`` and ``"``)."""
    esc = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', esc, '"', "")


def meter_heads(ids: pa.Array) -> pa.Array:
    """``{"meter":"<id>","type":"`` for each meter id (JSON-escaped)."""
    return pc.binary_join_element_wise('{"meter":', json_quote(ids), ',"type":"', "")


def _flat(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def iso_text(col: pa.ChunkedArray | pa.Array) -> Any:
    """ISO 8601 UTC text of a timestamp column. A batch holds few distinct times (one
    per interval end), so each distinct value is formatted once and taken per row."""
    arr = _flat(col)
    if arr.null_count or len(arr) < 64:
        return pc.strftime(arr, format=_ISO)
    enc = pc.dictionary_encode(arr.cast(pa.int64()))  # hashing: O(rows)
    if len(enc.dictionary) * 4 > len(arr):
        return pc.strftime(arr, format=_ISO)
    text = pc.strftime(enc.dictionary.cast(arr.type), format=_ISO)
    return text.take(enc.indices)


def _codes(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    """``(distinct values, index of each row's value)`` by hashing (no sort)."""
    enc = pc.dictionary_encode(_flat(col))
    return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def decimal_exponents(resolution: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | None:
    """``k`` with ``resolution == 10**-k`` for every type, or None if one is not a power
    of ten (then values are written through float64)."""
    k = np.rint(-np.log10(resolution)).astype(np.int64)
    ok = (k >= 0) & (k <= 9) & np.isclose(10.0 ** -k.astype(np.float64), resolution,
                                          rtol=1e-12, atol=0.0)
    return k if bool(ok.all()) else None


_FRACTIONS: dict[int, pa.Array] = {}


def _fractions(k: int) -> pa.Array:
    """``"", ".001", ..., ".999"`` (trailing zeros dropped) for remainders ``0..10**k-1``."""
    if k not in _FRACTIONS:  # built once per exponent (10**k entries), not per row
        _FRACTIONS[k] = pa.array(
            [("." + f"{r:0{k}d}").rstrip("0") if r else "" for r in range(10 ** k)],
            pa.string())
    return _FRACTIONS[k]


def decimal_text(value: npt.NDArray[np.integer[Any]], k: npt.NDArray[np.int64]) -> Any:
    """Exact decimal text of ``value * 10**-k`` per row (JSON numbers, shortest form:
    ``2.365``, ``-0.5``, ``12``; the same text as the shortest round-trip form of the
    nearest float64 while it has at most 15 significant digits).

    Integer part and remainder come from one ``divmod`` per row in NumPy; the fraction
    text is taken from a table per exponent ``k``.
    """
    n = np.asarray(value).astype(np.int64)
    lo, hi = (int(k.min()), int(k.max())) if len(k) else (0, 0)
    if lo == hi:
        q, r = np.divmod(np.abs(n), np.int64(10 ** lo))
        frac = _fractions(lo).take(pa.array(r))
    else:  # several exponents: one table, each exponent's part at its offset
        ks = np.arange(lo, hi + 1)
        tables = [_fractions(int(x)) for x in ks]
        offset = np.cumsum([0] + [len(t) for t in tables[:-1]])
        pos = np.searchsorted(ks, k)
        q, r = np.divmod(np.abs(n), 10 ** k)
        frac = pa.concat_arrays(tables).take(pa.array(r + offset[pos]))
    whole = pc.cast(pa.array(np.where(n < 0, -q, q)), pa.string())
    neg_zero = (n < 0) & (q == 0)  # -0.5: the integer part alone has no sign
    if neg_zero.any():
        whole = pc.if_else(pa.array(neg_zero), pa.scalar("-0"), whole)
    return pc.binary_join_element_wise(whole, frac, "")


def float_text(value: npt.NDArray[Any], resolution: npt.NDArray[np.float64]) -> Any:
    """Fallback of :func:`decimal_text` for resolutions that are not powers of ten."""
    v = pc.multiply(pa.array(value).cast(pa.float64()), pa.array(resolution))
    return pc.cast(pc.round(v, 6), pa.string())


def _value_text(value: npt.NDArray[Any], t: npt.NDArray[np.int64],
                resolution: npt.NDArray[np.float64]) -> Any:
    k = decimal_exponents(resolution)
    if k is None:
        return float_text(value, resolution[t])
    return decimal_text(value, k[t])


def _type_time_value(names: pa.Array, t: npt.NDArray[np.int64], time_col: Any,
                     field: str) -> Any:
    """``<type>","<field>":"<ISO time>","value":`` per row: taken from a table of every
    (type, distinct time) pair when the batch holds few distinct times (interval ends),
    else joined per row."""
    times, tcode = _codes(pc.cast(_flat(time_col), pa.int64()))
    n_times = len(times)
    middle = f'","{field}":"'
    if n_times * len(names) > max(len(t) * _TABLE_PER_ROW, 64):
        return pc.binary_join_element_wise(names.take(pa.array(t)), middle,
                                           iso_text(time_col), '","value":', "")
    iso = pc.strftime(times.cast(_flat(time_col).type), format=_ISO)
    pair = np.arange(len(names) * n_times, dtype=np.int64)  # type * n_times + time
    texts = pc.binary_join_element_wise(names.take(pa.array(pair // n_times)), middle,
                                        iso.take(pa.array(pair % n_times)), '","value":', "")
    return texts.take(pa.array(t * n_times + tcode))


def read_lines(heads: pa.Array, idx: npt.NDArray[np.int64], names: pa.Array,
               t: npt.NDArray[np.int64], resolution: npt.NDArray[np.float64],
               table: pa.Table) -> pa.Array:
    """``{"meter":..,"type":..,"end":..,"value":..,"quality":..}`` + newline per row of
    a READS table; ``heads`` from :func:`meter_heads` (by meter_idx), ``names`` the
    reading type names, ``t`` each row's type index, ``resolution`` per type."""
    quality, qcode = _codes(table.column("quality"))
    tails = pc.binary_join_element_wise(',"quality":', pc.cast(quality, pa.string()), "}\n",
                                        "")
    return pc.binary_join_element_wise(
        heads.take(pa.array(idx)),
        _type_time_value(names, t, table.column("interval_end"), "end"),
        _value_text(table.column("value").to_numpy(), t, resolution),
        tails.take(pa.array(qcode)), "")


def register_lines(heads: pa.Array, idx: npt.NDArray[np.int64], names: pa.Array,
                   t: npt.NDArray[np.int64], resolution: npt.NDArray[np.float64],
                   table: pa.Table) -> pa.Array:
    """``{"meter":..,"type":..,"time":..,"value":..}`` + newline per row of a REGISTERS
    table (arguments as :func:`read_lines`)."""
    return pc.binary_join_element_wise(
        heads.take(pa.array(idx)),
        _type_time_value(names, t, table.column("read_time"), "time"),
        _value_text(table.column("value").to_numpy(), t, resolution), "}\n", "")
