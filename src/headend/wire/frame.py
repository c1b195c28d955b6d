"""The collector upload frame, versions 1 and 2: compact, column-wise, authenticated.

A frame carries one collector's upload: interval reads, register reads and events,
each as a block of fixed-width columns (struct of arrays), so decoding is a handful of
``numpy.frombuffer`` views over the bytes, with no per-record Python work. All integers
are little-endian. A file or an HTTP body may hold several frames back to back.

Layout (offsets in bytes)::

    header (48)
      0  magic         4s   b"HEFR"
      4  version       u16  1, or 2 when sections follow the blocks
      6  header_len    u16  48
      8  collector_id  u32
     12  flags         u32  bit 0: retransmission
     16  sequence      u64  per collector, increasing
     24  created_at    i64  Unix seconds (UTC)
     32  n_interval    u32
     36  n_register    u32
     40  n_event       u32
     44  frame_len     u32  total bytes, HMAC included
    interval block, n = n_interval
      meter_serial u64[n] | interval_end u32[n] (Unix s) | value i32[n] |
      quality u32[n] (codes.QUALITY_CODES mask) | reading_type u8[n] | pad to 8
    register block, m = n_register
      meter_serial u64[m] | value i64[m] | read_time u32[m] | register u8[m] | pad to 8
    event block, k = n_event
      meter_serial u64[k] | event_time u32[k] | event_code u32[k] (packed) | pad to 8
    sections (version 2 only), each: type u16 | reserved u16 (0) | length u32 | body
      (length bytes, a multiple of 8); type 1 = command_responses
      (:mod:`headend.wire.responses`), at most one; another type refuses the frame
    trailer
      hmac  32 bytes  HMAC-SHA256(collector key, bytes[0 : frame_len - 32])

Interval reads cost 21 bytes each on the wire. Values are integers in the reading
type's resolution (1 Wh, 0.1 V, 1 L), as in the store. A version 2 frame's ``frame_len``
is the version 1 length of its counts plus its sections; a frame without sections is
written as version 1, so every version 1 frame stays valid and readers of version 1
read what carries no section.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import FrameError
from headend.model import reasons
from headend.wire.responses import SECTION, SECTION_COMMAND_RESPONSES, decode_responses_section

__all__ = [
    "FLAG_RETRANSMISSION",
    "HEADER",
    "HMAC_LEN",
    "MAGIC",
    "VERSION",
    "VERSION_SECTIONS",
    "Frame",
    "FrameHeader",
    "decode_frame",
    "encode_frame",
    "is_frame",
    "iter_frames",
]

MAGIC: Final = b"HEFR"
VERSION: Final = 1
#: the version of a frame with sections after its blocks
VERSION_SECTIONS: Final = 2
HEADER: Final = struct.Struct("<4sHHIIQqIIII")
HEADER_LEN: Final = HEADER.size  # 48
HMAC_LEN: Final = 32
FLAG_RETRANSMISSION: Final = 1

_INTERVAL_BYTES: Final = 8 + 4 + 4 + 4 + 1
_REGISTER_BYTES: Final = 8 + 8 + 4 + 1
_EVENT_BYTES: Final = 8 + 4 + 4


_WIDTH: Final = {"<u8": 8, "<i8": 8, "<u4": 4, "<i4": 4, "u1": 1}


def _pad8(n: int) -> int:
    return (-n) % 8


def _block_sizes(n_i: int, n_r: int, n_e: int) -> tuple[int, int, int]:
    bi = n_i * _INTERVAL_BYTES
    br = n_r * _REGISTER_BYTES
    be = n_e * _EVENT_BYTES
    return bi + _pad8(bi), br + _pad8(br), be + _pad8(be)


def frame_length(n_interval: int, n_register: int, n_event: int) -> int:
    """Total bytes of a frame with these record counts."""
    return HEADER_LEN + sum(_block_sizes(n_interval, n_register, n_event)) + HMAC_LEN


assert HEADER_LEN == 48


@dataclass(frozen=True, slots=True)
class FrameHeader:
    collector_id: int
    sequence: int
    created_at: int
    flags: int
    n_interval: int
    n_register: int
    n_event: int
    frame_len: int


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: views into the original bytes (no copies)."""

    header: FrameHeader
    # interval block
    i_meter: npt.NDArray[np.uint64]
    i_end: npt.NDArray[np.uint32]
    i_value: npt.NDArray[np.int32]
    i_quality: npt.NDArray[np.uint32]
    i_type: npt.NDArray[np.uint8]
    # register block
    r_meter: npt.NDArray[np.uint64]
    r_value: npt.NDArray[np.int64]
    r_time: npt.NDArray[np.uint32]
    r_type: npt.NDArray[np.uint8]
    # event block
    e_meter: npt.NDArray[np.uint64]
    e_time: npt.NDArray[np.uint32]
    e_code: npt.NDArray[np.uint32]
    #: the ``command_responses`` section (version 2): the decoded responses
    #: (:data:`headend.model.commands.RESPONSES`) and the refused ones (quarantine
    #: rows); None without one
    responses: pa.Table | None = None
    response_rejects: pa.Table | None = None
    #: the frame's sections as sent (headers included; empty for version 1)
    sections: bytes = b""


def is_frame(data: bytes | memoryview) -> bool:
    """True if ``data`` starts with the frame magic."""
    return bytes(data[:4]) == MAGIC


def encode_frame(
    key: bytes,
    collector_id: int,
    sequence: int,
    created_at: int,
    *,
    interval: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]
    | None = None,
    register: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None = None,
    event: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None = None,
    flags: int = 0,
    sections: bytes = b"",
) -> bytes:
    """Encode one frame (version 2 when ``sections`` is not empty, else version 1).

    Parameters
    ----------
    key : bytes
        The collector's HMAC key.
    interval : (meter_serial, interval_end [Unix s], value, quality, reading_type)
    register : (meter_serial, value, read_time [Unix s], register)
    event : (meter_serial, event_time [Unix s], event_code (packed))
    sections : bytes
        Sections as built, headers included, e.g.
        :func:`headend.wire.responses.encode_responses_section`.
    """
    parts: list[bytes] = []
    n_i = n_r = n_e = 0
    if interval is not None:
        cols = [
            np.ascontiguousarray(interval[0], dtype="<u8"),
            np.ascontiguousarray(interval[1], dtype="<u4"),
            np.ascontiguousarray(interval[2], dtype="<i4"),
            np.ascontiguousarray(interval[3], dtype="<u4"),
            np.ascontiguousarray(interval[4], dtype="u1"),
        ]
        n_i = len(cols[0])
        parts += [c.tobytes() for c in cols]
        parts.append(b"\0" * _pad8(n_i * _INTERVAL_BYTES))
    if register is not None:
        cols = [
            np.ascontiguousarray(register[0], dtype="<u8"),
            np.ascontiguousarray(register[1], dtype="<i8"),
            np.ascontiguousarray(register[2], dtype="<u4"),
            np.ascontiguousarray(register[3], dtype="u1"),
        ]
        n_r = len(cols[0])
        parts += [c.tobytes() for c in cols]
        parts.append(b"\0" * _pad8(n_r * _REGISTER_BYTES))
    if event is not None:
        cols = [
            np.ascontiguousarray(event[0], dtype="<u8"),
            np.ascontiguousarray(event[1], dtype="<u4"),
            np.ascontiguousarray(event[2], dtype="<u4"),
        ]
        n_e = len(cols[0])
        parts += [c.tobytes() for c in cols]
        parts.append(b"\0" * _pad8(n_e * _EVENT_BYTES))
    if len(sections) % 8:
        raise ValueError("sections are padded to a multiple of 8 bytes")
    total = frame_length(n_i, n_r, n_e) + len(sections)
    version = VERSION_SECTIONS if sections else VERSION
    header = HEADER.pack(
        MAGIC, version, HEADER_LEN, collector_id, flags, sequence, created_at, n_i, n_r, n_e, total
    )
    body = header + b"".join(parts) + bytes(sections)
    assert len(body) == total - HMAC_LEN
    return body + hmac.new(key, body, hashlib.sha256).digest()


def _header(buf: memoryview, offset: int, source: str) -> FrameHeader:
    if len(buf) - offset < HEADER_LEN:
        raise FrameError(
            f"{len(buf) - offset} bytes left, a header needs {HEADER_LEN}",
            reason=reasons.TRUNCATED_FRAME, source=source,
        )
    magic, version, hlen, coll, flags, seq, created, n_i, n_r, n_e, flen = HEADER.unpack_from(
        buf, offset
    )
    if magic != MAGIC:
        raise FrameError(f"bad magic {magic!r}", reason=reasons.BAD_FRAME, source=source)
    if version not in (VERSION, VERSION_SECTIONS) or hlen != HEADER_LEN:
        raise FrameError(
            f"unsupported version {version} / header length {hlen}",
            reason=reasons.BAD_FRAME, source=source, collector_id=coll,
        )
    base = frame_length(n_i, n_r, n_e)
    if flen != base and not (version == VERSION_SECTIONS and flen > base
                             and (flen - base) % 8 == 0):
        raise FrameError(
            f"frame_len {flen} does not match record counts ({n_i}, {n_r}, {n_e})",
            reason=reasons.BAD_FRAME, source=source, collector_id=coll,
        )
    if len(buf) - offset < flen:
        raise FrameError(
            f"frame says {flen} bytes, {len(buf) - offset} present",
            reason=reasons.TRUNCATED_FRAME, source=source, collector_id=coll,
        )
    return FrameHeader(coll, seq, created, flags, n_i, n_r, n_e, flen)


def decode_frame(
    data: bytes | memoryview,
    key_for: Callable[[int], bytes | None] | Mapping[int, bytes],
    *,
    offset: int = 0,
    source: str = "",
    _u8: npt.NDArray[np.uint8] | None = None,
) -> Frame:
    """Decode and authenticate the frame starting at ``offset``.

    Parameters
    ----------
    key_for : mapping or callable
        Collector id -> HMAC key; ``None``/missing means the collector is unknown.

    Raises
    ------
    FrameError
        ``reason`` is ``truncated_frame``, ``bad_frame`` (including a section whose
        structure does not add up, or of an unknown type), ``unknown_collector`` or
        ``bad_hmac``.
    """
    buf = memoryview(data).cast("B")
    h = _header(buf, offset, source)
    key = key_for.get(h.collector_id) if isinstance(key_for, Mapping) else key_for(h.collector_id)
    if key is None:
        raise FrameError(
            f"no key for collector {h.collector_id}",
            reason=reasons.UNKNOWN_COLLECTOR, source=source, collector_id=h.collector_id,
        )
    end = offset + h.frame_len
    mac = hmac.new(key, buf[offset : end - HMAC_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(mac, bytes(buf[end - HMAC_LEN : end])):
        raise FrameError(
            f"HMAC mismatch for collector {h.collector_id} sequence {h.sequence}",
            reason=reasons.BAD_HMAC, source=source, collector_id=h.collector_id,
        )
    pos = offset + HEADER_LEN
    # one uint8 view of the whole buffer; each column is a slice of it viewed as its
    # dtype (frames and their blocks are 8-byte aligned, so the views are aligned
    # whenever the buffer is)
    u8 = _u8 if _u8 is not None else np.frombuffer(buf, dtype=np.uint8)

    def take(dtype: str, n: int) -> npt.NDArray[Any]:
        nonlocal pos
        width = _WIDTH[dtype]
        arr = u8[pos : pos + n * width].view(dtype)
        pos += n * width
        return arr

    n = h.n_interval
    i_meter, i_end, i_value, i_quality, i_type = (
        take("<u8", n), take("<u4", n), take("<i4", n), take("<u4", n), take("u1", n)
    )
    pos += _pad8(n * _INTERVAL_BYTES)
    m = h.n_register
    r_meter, r_value, r_time, r_type = take("<u8", m), take("<i8", m), take("<u4", m), take("u1", m)
    pos += _pad8(m * _REGISTER_BYTES)
    k = h.n_event
    e_meter, e_time, e_code = take("<u8", k), take("<u4", k), take("<u4", k)
    pos += _pad8(k * _EVENT_BYTES)
    if pos == end - HMAC_LEN:  # no section (every version 1 frame)
        return Frame(h, i_meter, i_end, i_value, i_quality, i_type,
                     r_meter, r_value, r_time, r_type, e_meter, e_time, e_code)
    responses, rejects = _sections(buf, pos, end - HMAC_LEN, h, source)
    return Frame(h, i_meter, i_end, i_value, i_quality, i_type,
                 r_meter, r_value, r_time, r_type, e_meter, e_time, e_code,
                 responses, rejects, bytes(buf[pos:end - HMAC_LEN]))


def _sections(buf: memoryview, pos: int, limit: int, h: FrameHeader, source: str
              ) -> tuple[pa.Table | None, pa.Table | None]:
    """Walk the sections in ``buf[pos:limit]``: the decoded command responses and their
    rejects. Raises ``FrameError`` ``bad_frame`` for a section that does not fit."""
    responses = rejects = None
    while pos < limit:
        kind, reserved, length = SECTION.unpack_from(buf, pos)
        why = ("section reserved field is not 0" if reserved
               else "section length is not a multiple of 8" if length % 8
               else f"section of {length} bytes past the frame's end" if
               pos + SECTION.size + length > limit
               else f"unknown section type {kind}" if kind != SECTION_COMMAND_RESPONSES
               else "two command_responses sections" if responses is not None else None)
        if why is not None:
            raise FrameError(why, reason=reasons.BAD_FRAME, source=source,
                             collector_id=h.collector_id)
        body = buf[pos + SECTION.size:pos + SECTION.size + length]
        responses, rejects = decode_responses_section(
            body, source=source, collector_id=h.collector_id)
        pos += SECTION.size + length
    return responses, rejects


def iter_frames(
    data: bytes | memoryview,
    key_for: Callable[[int], bytes | None] | Mapping[int, bytes],
    *,
    source: str = "",
) -> Iterator[Frame | FrameError]:
    """Yield each frame of a buffer of back-to-back frames, or the error it raised.

    A frame that fails authentication is skipped by its declared length; one whose
    header cannot be trusted makes the reader resynchronise on the next magic. The
    bytes a yielded :class:`FrameError` covers are in ``err.span`` (start, end).
    """
    buf = memoryview(data).cast("B")
    u8 = np.frombuffer(buf, dtype=np.uint8)
    offset = 0
    while offset < len(buf):
        try:
            frame = decode_frame(buf, key_for, offset=offset, source=source, _u8=u8)
        except FrameError as err:
            if err.reason == reasons.UNKNOWN_COLLECTOR:
                # the header is sound: keep the frame whole so it can be retried later
                end = offset + HEADER.unpack_from(buf, offset)[-1]
            else:
                # resynchronise on the next magic (a truncated frame may be followed by
                # a good one inside what its header claimed)
                nxt = bytes(buf[offset + 1 :]).find(MAGIC)  # copies only on this error path
                end = len(buf) if nxt < 0 else offset + 1 + nxt
            err.span = (offset, end)  # type: ignore[attr-defined]
            yield err
            offset = end
            continue
        yield frame
        offset += frame.header.frame_len
