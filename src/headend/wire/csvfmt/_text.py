"""Vectorised text primitives of the canonical CSV: parse and format without row loops.

Every function works on whole Arrow string arrays or NumPy arrays at once, through
character matrices (one row per value, one column per character) built from the
Arrow buffers. Nothing here raises on bad input: parsers return a status per value.

Grammar accepted by the parsers
-------------------------------
decimal
    ``[+-]? digits [. digits]`` or ``[+-]? . digits``, at most :data:`MAX_DECIMAL_LEN`
    characters; no exponent, no spaces, no thousands separator.
timestamp
    ``YYYY-MM-DD(T|t| )HH:MM[:SS[(.|,)digits]](Z|z|+HH:MM|-HH:MM|+HHMM|-HHMM)``,
    ISO 8601 / RFC 3339 with a mandatory UTC offset; fractions of a second are
    truncated (the stored resolution is 1 s).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "MAX_DECIMAL_LEN",
    "TIME_MALFORMED",
    "TIME_NO_OFFSET",
    "TIME_OK",
    "char_matrix",
    "concat_strings",
    "csv_quote",
    "decimals_of",
    "format_decimal",
    "format_time",
    "join_lines",
    "parse_decimal",
    "parse_time",
    "string_views",
    "strings_from_matrix",
]

#: Values parsed at once: bounds the character matrices' memory [values].
CHUNK: Final = 1 << 16
#: Longest decimal text accepted [characters].
MAX_DECIMAL_LEN: Final = 32
_MAX_TIME_LEN: Final = 40

TIME_OK: Final = 0
TIME_NO_OFFSET: Final = 1
TIME_MALFORMED: Final = 2

_POW10: Final = 10 ** np.arange(19, dtype=np.int64)
_DIGIT0: Final = ord("0")

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def decimals_of(resolution: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Number of decimals of each resolution (``0.001`` -> 3, ``0.1`` -> 1, ``1`` -> 0)."""
    res = np.asarray(resolution, dtype=np.float64)
    k = np.rint(-np.log10(res)).astype(np.int64)
    if not np.allclose(10.0 ** (-k.astype(np.float64)), res, rtol=1e-12, atol=0):
        raise ValueError(f"resolutions {res} are not powers of ten")
    return k


# --------------------------------------------------------------------------- buffers


def string_views(arr: pa.Array) -> tuple[I64, U8]:
    """Offsets (``int64``, ``len + 1``) and data bytes of a string/binary array, no copy
    of the data. Nulls read as empty values."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(b"" if pa.types.is_binary(arr.type) else "", arr.type))
    n = len(arr)
    bufs = arr.buffers()
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    odt = np.int64 if large else np.int32
    if bufs[1] is None:
        offsets = np.zeros(n + 1, dtype=np.int64)
    else:
        raw = np.frombuffer(bufs[1], dtype=odt)[arr.offset : arr.offset + n + 1]
        offsets = raw.astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _matrix_from(starts: I64, lengths: I64, data: U8, width: int) -> tuple[U8, Mask]:
    n = len(starts)
    if width == 0 or n == 0:
        return np.zeros((n, width), np.uint8), np.zeros((n, width), np.bool_)
    cols = np.arange(width, dtype=np.int64)
    inside = cols[None, :] < lengths[:, None]
    pos = starts[:, None] + cols[None, :]
    if len(data):
        np.clip(pos, 0, len(data) - 1, out=pos)
        m = np.where(inside, data[pos], 0).astype(np.uint8)
    else:
        m = np.zeros((n, width), np.uint8)
    return m, inside


def _compact(m: U8) -> tuple[I64, U8]:
    keep = m != 0
    lengths = keep.sum(axis=1, dtype=np.int64)
    offsets = np.zeros(len(m) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, m[keep]


def char_matrix(arr: pa.Array, max_width: int) -> tuple[U8, I64, Mask]:
    """Characters of each value as a zero-padded ``(n, w)`` byte matrix.

    Returns the matrix, the lengths [bytes] and a mask of values longer than
    ``max_width`` (their matrix rows are truncated).
    """
    offsets, data = string_views(arr)
    lengths = np.diff(offsets)
    too_long = lengths > max_width
    width = int(min(lengths.max(initial=0), max_width))
    m, _ = _matrix_from(offsets[:-1], np.minimum(lengths, width), data, width)
    return m, lengths, too_long


def strings_from_matrix(m: U8) -> pa.StringArray:
    """Rows of a byte matrix as strings; zero bytes are padding and are dropped."""
    offsets, data = _compact(m)
    if len(offsets) and offsets[-1] >= 2**31:
        raise ValueError("more than 2 GiB of text in one array; use smaller chunks")
    return pa.StringArray.from_buffers(
        len(m), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(data))
    )


def concat_strings(arr: pa.Array) -> bytes:
    """All values of a string array concatenated (the data buffer, no separators)."""
    offsets, data = string_views(arr)
    if len(offsets) == 0:
        return b""
    return data[offsets[0] : offsets[-1]].tobytes()


# --------------------------------------------------------------------------- parse


def parse_decimal(
    arr: pa.Array, decimals: npt.ArrayLike, *, lo: int, hi: int
) -> tuple[I64, Mask]:
    """Decimal text to integers in units of ``10**-decimals``, rounding half away from zero.

    Exact: digits are combined as integers, never through floating point.

    Parameters
    ----------
    arr : pyarrow.StringArray
        Decimal texts (see the module grammar).
    decimals : int or array of int
        Decimals of the target resolution, per value or for all (``3`` for 1 Wh when
        the text is in kWh).
    lo, hi : int
        Accepted range of the result [resolution units], inclusive; magnitudes up to
        ``10**18 - 1``.

    Returns
    -------
    values : ndarray of int64
        0 where not ok.
    ok : ndarray of bool
        False for empty, malformed, too long (> :data:`MAX_DECIMAL_LEN`) or out of range.
    """
    k_all = np.broadcast_to(np.asarray(decimals, dtype=np.int64), (len(arr),))
    parts = [_parse_decimal(arr.slice(i, CHUNK), k_all[i : i + CHUNK], lo, hi)
             for i in range(0, len(arr), CHUNK)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.bool_))


def _parse_decimal(arr: pa.Array, k: I64, lo: int, hi: int) -> tuple[I64, Mask]:
    m, lengths, too_long = char_matrix(arr, MAX_DECIMAL_LEN)
    n, w = m.shape
    if w == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.bool_)
    cols = np.arange(w, dtype=np.int64)[None, :]
    first = m[:, 0]
    neg = first == ord("-")
    s0 = (neg | (first == ord("+"))).astype(np.int64)
    inside = cols < lengths[:, None]
    isdig = (m >= _DIGIT0) & (m <= _DIGIT0 + 9) & inside
    isdot = (m == ord(".")) & inside
    ndig = isdig.sum(axis=1)
    ndot = isdot.sum(axis=1)
    ok = ~too_long & (ndig >= 1) & (ndot <= 1) & (ndig + ndot + s0 == lengths)
    p = np.where(ndot == 1, np.argmax(isdot, axis=1), lengths)[:, None]
    kk = k[:, None]
    e = np.where(cols < p, p + kk - cols - 1, p + kk - cols)  # decimal exponent per digit
    d = np.where(isdig, m.astype(np.int64) - _DIGIT0, 0)
    max_abs = max(-lo, hi)
    emax = len(str(max_abs))  # a nonzero digit at this exponent is already too large
    ok &= ~((d > 0) & (e >= emax)).any(axis=1)
    used = (e >= 0) & (e < emax)
    mag = (d * np.where(used, _POW10[np.clip(e, 0, 18)], 0)).sum(axis=1)
    mag += ((d * (e == -1)).sum(axis=1) >= 5).astype(np.int64)  # half away from zero
    signed = np.where(neg, -mag, mag)
    ok &= (signed >= lo) & (signed <= hi)
    values = np.where(ok, signed, 0)
    return values.astype(np.int64), ok


def _days_from_civil(y: I64, mo: I64, d: I64) -> I64:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (mo <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (mo + np.where(mo > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468  # type: ignore[no-any-return]


def _civil_from_days(z: I64) -> tuple[I64, I64, I64]:
    z = z + 719468
    era = np.floor_divide(z, 146097)
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = np.where(mp < 10, mp + 3, mp - 9)
    return y + (mo <= 2), mo, d


_DAYS_IN_MONTH: Final = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def parse_time(arr: pa.Array) -> tuple[I64, U8]:
    """ISO 8601 timestamps with a UTC offset to Unix seconds (UTC).

    Returns
    -------
    seconds : ndarray of int64
        Unix time [s]; 0 where the status is not ``TIME_OK``.
    status : ndarray of uint8
        :data:`TIME_OK`, :data:`TIME_NO_OFFSET` (a valid local time without an
        offset) or :data:`TIME_MALFORMED`.

    Examples
    --------
    >>> import pyarrow as pa
    >>> s, st = parse_time(pa.array(["2026-03-01T10:15:00-05:00", "2026-03-01T10:15:00"]))
    >>> s.tolist(), st.tolist()
    ([1772378100, 0], [0, 1])
    """
    parts = [_parse_time(arr.slice(i, CHUNK)) for i in range(0, len(arr), CHUNK)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.uint8))


def _parse_time(arr: pa.Array) -> tuple[I64, U8]:
    m, lengths, too_long = char_matrix(arr, _MAX_TIME_LEN)
    n = len(lengths)
    if m.shape[1] < 16:
        m = np.pad(m, ((0, 0), (0, 16 - m.shape[1])))
    w = m.shape[1]
    isdig = (m >= _DIGIT0) & (m <= _DIGIT0 + 9)
    dv = m.astype(np.int64) - _DIGIT0

    def num(*cols: int) -> I64:
        v = np.zeros(n, np.int64)
        for c in cols:
            v = v * 10 + dv[:, c]
        return v

    def digits(*cols: int) -> Mask:
        out: Mask = np.logical_and.reduce([isdig[:, c] for c in cols])
        return out

    ok = ~too_long & (lengths >= 16)
    ok &= digits(0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15)
    ok &= (m[:, 4] == ord("-")) & (m[:, 7] == ord("-")) & (m[:, 13] == ord(":"))
    ok &= np.isin(m[:, 10], np.frombuffer(b"Tt ", np.uint8))
    y, mo, d, hh, mi = num(0, 1, 2, 3), num(5, 6), num(8, 9), num(11, 12), num(14, 15)
    rows = np.arange(n)
    # seconds (optional)
    c16 = m[:, 16] if w > 16 else np.zeros(n, np.uint8)
    has_s = (c16 == ord(":")) & (lengths >= 19)
    if w >= 19:
        ok &= ~has_s | (isdig[:, 17] & isdig[:, 18])
        ss = np.where(has_s, num(17, 18), 0)
    else:
        ss = np.zeros(n, np.int64)
    rest = np.where(has_s, 19, 16)
    # zone, from the end
    last = np.clip(lengths - 1, 0, w - 1)

    def at(pos: I64) -> U8:
        return m[rows, np.clip(pos, 0, w - 1)]

    def dig(pos: I64) -> Mask:
        return isdig[rows, np.clip(pos, 0, w - 1)] & (pos >= 0)

    zulu = (at(last) == ord("Z")) | (at(last) == ord("z"))
    sign6 = at(lengths - 6)
    colon6 = (np.isin(sign6, np.frombuffer(b"+-", np.uint8)) & (at(lengths - 3) == ord(":"))
              & dig(lengths - 5) & dig(lengths - 4) & dig(lengths - 2) & dig(lengths - 1))
    sign5 = at(lengths - 5)
    plain5 = (np.isin(sign5, np.frombuffer(b"+-", np.uint8)) & dig(lengths - 4)
              & dig(lengths - 3) & dig(lengths - 2) & dig(lengths - 1))
    zlen = np.select([zulu, colon6, plain5], [1, 6, 5], 0)
    zlen = np.where(lengths - zlen >= rest, zlen, 0)
    zsign = np.where(zlen == 6, sign6, sign5)
    z0 = lengths - zlen  # first zone character
    oh = np.where(zlen >= 5, (at(z0 + 1).astype(np.int64) - _DIGIT0) * 10
                  + at(z0 + 2).astype(np.int64) - _DIGIT0, 0)
    om_pos = np.where(zlen == 6, z0 + 4, z0 + 3)
    om = np.where(zlen >= 5, (at(om_pos).astype(np.int64) - _DIGIT0) * 10
                  + at(om_pos + 1).astype(np.int64) - _DIGIT0, 0)
    offset = np.where(zsign == ord("-"), -1, 1) * (oh * 3600 + om * 60)
    ok &= (oh <= 23) & (om <= 59)
    # optional fraction between rest and the zone: [.,] digits
    cols = np.arange(w, dtype=np.int64)[None, :]
    frac_len = z0 - rest
    sep = at(rest)
    ok &= (frac_len == 0) | (has_s & (frac_len >= 2) & ((sep == ord(".")) | (sep == ord(","))))
    in_frac = (cols > rest[:, None]) & (cols < z0[:, None])
    ok &= ~(in_frac & ~isdig).any(axis=1)
    # calendar ranges
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    dim = _DAYS_IN_MONTH[np.clip(mo, 0, 12)] - ((mo == 2) & ~leap)
    ok &= (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= dim) & (hh <= 23) & (mi <= 59) & (ss <= 59)
    local = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
    status = np.where(ok & (zlen > 0), TIME_OK, np.where(ok, TIME_NO_OFFSET, TIME_MALFORMED))
    seconds = np.where(status == TIME_OK, local - offset, 0)
    return seconds.astype(np.int64), status.astype(np.uint8)


# --------------------------------------------------------------------------- format


def _digits(a: npt.NDArray[np.uint64], width: int) -> U8:
    """Right-aligned ASCII digits of non-negative integers, ``(n, width)``."""
    out = np.empty((len(a), width), np.uint8)
    v = a.copy()
    for j in range(width - 1, -1, -1):
        out[:, j] = (v % np.uint64(10)).astype(np.uint8) + _DIGIT0
        v //= np.uint64(10)
    return out


def format_decimal(values: npt.ArrayLike, decimals: npt.ArrayLike) -> pa.StringArray:
    """Integers in units of ``10**-decimals`` as exact decimal text.

    Examples
    --------
    >>> format_decimal([1234, -5, 2401], [3, 3, 1]).to_pylist()
    ['1.234', '-0.005', '240.1']
    """
    v = np.asarray(values, dtype=np.int64)
    n = len(v)
    k = np.broadcast_to(np.asarray(decimals, dtype=np.int64), (n,))
    neg = v < 0
    a = np.where(neg, ~v.astype(np.uint64) + np.uint64(1), v.astype(np.uint64))
    kmax = int(k.max(initial=0))
    width = max(len(str(int(a.max(initial=0)))), kmax + 1)
    dig = _digits(a, width)
    cols = np.arange(width, dtype=np.int64)[None, :]
    # number of digits to show: significant ones, at least one before the point
    nsig = np.where(a > 0, np.floor(np.log10(np.maximum(a, 1).astype(np.float64))), 0)
    nsig = nsig.astype(np.int64) + 1
    # guard against float rounding of log10 near powers of ten
    nsig = np.where((nsig < 19) & (a >= _POW10[np.clip(nsig, 0, 18)].astype(np.uint64)),
                    nsig + 1, nsig)
    nshow = np.maximum(nsig, k + 1)
    dig = np.where(cols >= width - nshow[:, None], dig, 0).astype(np.uint8)
    out = np.zeros((n, width + 2), np.uint8)
    out[:, 0] = np.where(neg, ord("-"), 0)
    target = 1 + cols + (cols >= (width - k)[:, None])  # leave room for the point
    np.put_along_axis(out, np.broadcast_to(target, dig.shape), dig, axis=1)
    dot_col = 1 + width - k
    has_dot = k > 0
    out[np.arange(n)[has_dot], dot_col[has_dot]] = ord(".")
    return strings_from_matrix(out)


def format_time(seconds: npt.ArrayLike) -> pa.StringArray:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, years 0-9999).

    Raises
    ------
    ValueError
        If a time lies outside years 0-9999.

    Examples
    --------
    >>> format_time([1772378100]).to_pylist()
    ['2026-03-01T15:15:00Z']
    """
    s = np.asarray(seconds, dtype=np.int64)
    days = np.floor_divide(s, 86400)
    sod = s - days * 86400
    y, mo, d = _civil_from_days(days)
    if len(s) and (y.min() < 0 or y.max() > 9999):
        raise ValueError("time outside years 0-9999 cannot be written as ISO 8601")
    out = np.empty((len(s), 20), np.uint8)
    out[:, 0:4] = _digits(y.astype(np.uint64), 4)
    out[:, 5:7] = _digits(mo.astype(np.uint64), 2)
    out[:, 8:10] = _digits(d.astype(np.uint64), 2)
    out[:, 11:13] = _digits((sod // 3600).astype(np.uint64), 2)
    out[:, 14:16] = _digits((sod // 60 % 60).astype(np.uint64), 2)
    out[:, 17:19] = _digits((sod % 60).astype(np.uint64), 2)
    out[:, 4] = out[:, 7] = ord("-")
    out[:, 10] = ord("T")
    out[:, 13] = out[:, 16] = ord(":")
    out[:, 19] = ord("Z")
    return strings_from_matrix(out)


# --------------------------------------------------------------------------- CSV lines

_STRUCTURAL: Final = np.zeros(256, np.uint8)
_STRUCTURAL[[ord(","), ord('"')]] = 1
_STRUCTURAL[[ord("\n"), ord("\r")]] = 2


def csv_quote(arr: pa.Array, *, name: str | None = None) -> pa.Array:
    """Quote the values that need it (RFC 4180): those holding ``,`` or ``"``.

    Raises
    ------
    ValueError
        If ``name`` is given and a value holds a line break, which canonical CSV
        forbids (without ``name``, such values are quoted too).
    """
    arr = arr.cast(pa.string())
    offsets, data = string_views(arr)
    if len(offsets) < 2:
        return arr
    cls = _STRUCTURAL[data[offsets[0] : offsets[-1]]]
    if not cls.any():
        return arr
    rel = offsets - offsets[0]
    if name is not None and (cls == 2).any():
        raise ValueError(f"column {name!r} holds a line break, which canonical CSV forbids")
    cs = np.concatenate([[0], np.cumsum(cls > 0, dtype=np.int64)])
    need = pa.array(cs[rel[1:]] - cs[rel[:-1]] > 0)
    if arr.null_count:
        need = pc.and_kleene(need, arr.is_valid())
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(need, quoted, arr)


def join_lines(columns: list[pa.Array]) -> bytes:
    """CSV lines (``\\n``-terminated) of already formatted and quoted string columns;
    nulls are written as empty fields."""
    line = pc.binary_join_element_wise(
        *columns, ",", null_handling="replace", null_replacement=""
    )
    line = pc.binary_join_element_wise(line, "", "\n")
    return concat_strings(line)
