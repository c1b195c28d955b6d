"""The ``command_responses`` section of the binary collector frame (frame version 2).

A collector may carry its answers to commands (docs/commands.md) in the frame that
carries the meters' reads, instead of a separate ``command_responses`` CSV upload. The
section comes after the frame's event block, before the HMAC, so it is authenticated
with the rest of the frame (:mod:`headend.wire.frame`). Layout, all integers
little-endian, offsets relative to the start of the section body (which is 8-byte
aligned in the frame)::

    section header (8)
      0  type      u16  1 = command_responses
      2  reserved  u16  0
      4  length    u32  bytes of the body that follows (a multiple of 8)
    body, r = n_responses
      0  n_responses  u32
      4  reserved     u32  0
      8  time         i64[r]  when it happened at the collector [ms, Unix UTC]
         status       u8[r]   code (:data:`~headend.model.commands.RESPONSE_STATUS_CODES`)
         pad to 8
         command_id   offsets u32[r + 1] (the first 0, never decreasing), then the UTF-8
                      bytes of all ids (offsets[r] bytes); pad to 8
         meter_id     the same
         detail       the same (empty: no detail)

The strings are Arrow's own layout (offsets + data), so decoding is zero-copy views and
one validation, with no per-response Python. :func:`decode_responses_section` gives the
very table the CSV decoder gives (:data:`headend.model.commands.RESPONSES`); a section
whose structure does not add up raises :class:`~headend.errors.FrameError`
``bad_frame`` (the frame is refused whole, as for any frame whose sizes do not match),
and responses that cannot be used go to the quarantine like CSV rows.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from headend.errors import FrameError
from headend.model import commands as C
from headend.model import reasons, schema
from headend.wire.csvfmt.rejects import make_rejects

__all__ = [
    "KIND",
    "SECTION",
    "SECTION_COMMAND_RESPONSES",
    "decode_responses_section",
    "encode_responses_section",
    "responses_csv",
    "responses_table",
]

#: the quarantine kind of refused responses (as for the CSV)
KIND: Final = "command_responses"
#: section header: type u16, reserved u16, body length u32
SECTION: Final = struct.Struct("<HHI")
SECTION_COMMAND_RESPONSES: Final = 1
_COUNT: Final = struct.Struct("<II")
#: latest time a response may carry: 9999-12-31T23:59:59.999Z [ms]
_MAX_MS: Final = 253_402_300_799_999
_CODES: Final = pa.array(C.RESPONSE_STATUS_CODES, pa.string())
_STATE_OF: Final = pa.array([C.RESPONSE_STATUSES[s] for s in C.RESPONSE_STATUS_CODES],
                            pa.string())


def _pad8(n: int) -> int:
    return (-n) % 8


def _strings(values: Sequence[str]) -> bytes:
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, "<u4")
    np.cumsum([len(d) for d in data], out=offsets[1:])
    raw = offsets.tobytes() + b"".join(data)
    return raw + b"\0" * _pad8(len(raw))


def encode_responses_section(command_id: Sequence[str], meter_id: Sequence[str],
                             status: Sequence[str], time_ms: npt.ArrayLike,
                             detail: Sequence[str | None] | None = None) -> bytes:
    """The ``command_responses`` section (header included) of these responses.

    ``status`` are names (:data:`~headend.model.commands.RESPONSE_STATUS_CODES`; an
    unknown name raises ``ValueError``), ``time_ms`` [ms, Unix UTC], ``detail`` text or
    None (written empty).
    """
    n = len(command_id)
    times = np.ascontiguousarray(time_ms, dtype="<i8")
    if not len(meter_id) == len(status) == len(times) == n or (
            detail is not None and len(detail) != n):
        raise ValueError("every column of the responses needs one value per response")
    codes = np.array([C.RESPONSE_STATUS_CODES.index(s) for s in status], "u1")
    head = _COUNT.pack(n, 0) + times.tobytes() + codes.tobytes()
    body = (head + b"\0" * _pad8(len(head)) + _strings(command_id) + _strings(meter_id)
            + _strings([d or "" for d in (detail if detail is not None else [None] * n)]))
    return SECTION.pack(SECTION_COMMAND_RESPONSES, 0, len(body)) + body


def _bad(why: str, source: str, collector_id: int | None) -> FrameError:
    return FrameError(f"command_responses section: {why}", reason=reasons.BAD_FRAME,
                      source=source, collector_id=collector_id)


def decode_responses_section(body: bytes | memoryview, *, source: str,
                             received_at: int | None = None,
                             collector_id: int | None = None) -> tuple[pa.Table, pa.Table]:
    """Decode the body of a ``command_responses`` section (after its 8-byte header).

    Returns
    -------
    (responses, rejects)
        ``responses`` (:data:`~headend.model.commands.RESPONSES`), in section order;
        ``rejects`` (quarantine rows, kind ``command_responses``, the response as a CSV
        line in ``payload``): ``bad_command_response`` (status code unknown, an empty
        ``command_id`` or ``meter_id``, a line break in a field) or ``bad_timestamp``
        (a time before 1970 or after 9999).

    Raises
    ------
    FrameError
        ``bad_frame`` when the sizes or offsets do not add up to the body's length, a
        reserved field is not 0, or a string is not UTF-8.
    """
    buf = memoryview(body).cast("B")
    size = len(buf)
    if size < _COUNT.size:
        raise _bad(f"{size} bytes, the count needs 8", source, collector_id)
    n, reserved = _COUNT.unpack_from(buf, 0)
    if reserved:
        raise _bad(f"reserved field is {reserved}, not 0", source, collector_id)
    u8 = np.frombuffer(buf, np.uint8)
    pos = _COUNT.size + 9 * n
    if pos > size:
        raise _bad(f"{n} responses need {pos} bytes, the body has {size}", source,
                   collector_id)
    times = u8[8:8 + 8 * n].view("<i8")
    codes = u8[8 + 8 * n:pos]
    pos += _pad8(pos)
    cols: dict[str, pa.StringArray] = {}
    for name in ("command_id", "meter_id", "detail"):
        end = pos + 4 * (n + 1)
        if end > size:
            raise _bad(f"{name} offsets end at {end}, past the body ({size})", source,
                       collector_id)
        offsets = u8[pos:end].view("<u4")
        total = int(offsets[-1])
        if offsets[0] != 0 or bool(np.any(offsets[1:] < offsets[:-1])) \
                or end + total > size:
            raise _bad(f"{name} offsets are not 0, increasing and within the body", source,
                       collector_id)
        arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)),
                                          pa.py_buffer(u8[end:end + total]))
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise _bad(f"{name} is not UTF-8 ({exc})", source, collector_id) from exc
        cols[name] = arr
        pos = end + total
        pos += _pad8(pos)
    if pos != size:
        raise _bad(f"the columns end at {pos}, the body has {size} bytes", source,
                   collector_id)
    return _checked(cols, np.asarray(times, np.int64), np.asarray(codes), source,
                    received_at)


def _checked(cols: dict[str, pa.StringArray], times: npt.NDArray[np.int64],
             codes: npt.NDArray[np.uint8], source: str, received_at: int | None
             ) -> tuple[pa.Table, pa.Table]:
    """Row checks (masks), the good rows as RESPONSES and the rest as quarantine rows."""
    known = codes < len(C.RESPONSE_STATUS_CODES)
    empty = np.zeros(len(codes), np.bool_)
    breaks = np.zeros(len(codes), np.bool_)
    for name, arr in cols.items():
        if name != "detail":
            empty |= np.asarray(pc.equal(pc.utf8_length(arr), 0))
        breaks |= np.asarray(pc.match_substring_regex(arr, r"[\r\n]"))
    bad_time = (times < 0) | (times > _MAX_MS)
    status = _CODES.take(pa.array(np.where(known, codes, 0)))
    ts = pa.array(np.where(bad_time, 0, times), pa.int64()).cast(C.RESPONSES.field("time").type)
    rejects = []
    taken = np.zeros(len(codes), np.bool_)
    for mask, reason, why in (
            (~known, reasons.BAD_COMMAND_RESPONSE,
             f"status code not one of 0..{len(C.RESPONSE_STATUS_CODES) - 1}"),
            (empty, reasons.BAD_COMMAND_RESPONSE, "empty command_id or meter_id"),
            (breaks, reasons.BAD_COMMAND_RESPONSE, "a line break in a field"),
            (bad_time, reasons.BAD_TIMESTAMP, "time before 1970 or after 9999")):
        m = mask & ~taken
        if m.any():
            rejects.append(_rejects(cols, times, codes, status, np.flatnonzero(m), reason,
                                    why, source, received_at))
            taken |= m
    keep = pa.array(~taken)
    out = responses_table(cols["command_id"].filter(keep), cols["meter_id"].filter(keep),
                          status.filter(keep), ts.filter(keep), cols["detail"].filter(keep))
    rej = pa.concat_tables(rejects) if rejects else schema.QUARANTINE.empty_table()
    return out, rej


def responses_table(command_id: pa.Array, meter_id: pa.Array, status: pa.Array,
                    time: pa.Array, detail: pa.Array) -> pa.Table:
    """The :data:`~headend.model.commands.RESPONSES` table of checked columns (every
    ``status`` one of :data:`~headend.model.commands.RESPONSE_STATUSES`): the state
    each reports, the reason of a failure, an empty detail as null. Both decoders (CSV
    and frame section) end here."""
    state = _STATE_OF.take(pc.index_in(status, value_set=_CODES))
    return pa.table({
        "command_id": command_id,
        "meter_id": meter_id,
        "status": status,
        "state": state,
        "reason": pc.if_else(pc.equal(state, "failed"), status, pa.scalar(None, pa.string())),
        "time": time,
        "detail": pc.if_else(pc.equal(detail, ""), pa.scalar(None, pa.string()), detail),
    }, schema=C.RESPONSES)


def _rejects(cols: dict[str, pa.StringArray], times: npt.NDArray[np.int64],
             codes: npt.NDArray[np.uint8], status: pa.Array, rows: npt.NDArray[np.intp],
             reason: str, why: str, source: str, received_at: int | None) -> pa.Table:
    """Quarantine rows of the responses at ``rows`` (few: a loop over them is fine)."""
    idx = pa.array(rows)
    cid, mid, det = (cols[k].take(idx).to_pylist() for k in ("command_id", "meter_id",
                                                             "detail"))
    names = [s if ok else str(int(c)) for s, ok, c in zip(
        status.take(idx).to_pylist(), (codes[rows] < len(C.RESPONSE_STATUS_CODES)).tolist(),
        codes[rows].tolist(), strict=True)]
    when = [_iso(int(t)) for t in times[rows].tolist()]
    lines = []
    for fields in zip(cid, mid, names, when, det, strict=True):
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        lines.append(out.getvalue().encode())
    return make_rejects(source, KIND, reason, why, payload=lines, meter_id=mid, type=names,
                        time=when, received_at=received_at)


def _iso(ms: int) -> str:
    """A response time as text: ISO 8601 UTC with milliseconds, or the number of ms
    when it is no date."""
    if not 0 <= ms <= _MAX_MS:
        return str(ms)
    s = pc.strftime(pa.scalar(ms, pa.timestamp("ms", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    return str(s.as_py())


def responses_csv(responses: pa.Table) -> bytes:
    """The canonical ``command_responses`` CSV of a :data:`~headend.model.commands.
    RESPONSES` table (what :func:`headend.commands.decode_command_responses` reads back
    to the same table): the way a frame's section reaches the same ingest hook as an
    uploaded CSV."""
    header = ",".join(C.COMMAND_RESPONSE_HEADER).encode() + b"\n"
    if responses.num_rows == 0:
        return header
    t = pa.table({
        "command_id": responses.column("command_id"),
        "meter_id": responses.column("meter_id"),
        "status": responses.column("status"),
        "time": pc.strftime(responses.column("time"), "%Y-%m-%dT%H:%M:%SZ"),
        "detail": responses.column("detail"),
    })
    out = io.BytesIO()
    pacsv.write_csv(t, out, pacsv.WriteOptions(include_header=False,
                                               quoting_style="needed"))
    return header + out.getvalue()
