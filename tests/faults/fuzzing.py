"""Mutation fuzzing of the two wire formats (binary frames, canonical CSV).

Shared by ``tests/faults/test_fuzz.py`` (at least 100,000 inputs per CI run) and
``bench/bench_fuzz.py`` (1M inputs). Each input is a valid upload, mutated in one of
several ways chosen to reach past the first check:

* frames: bit flips, truncation, garbage between frames, header counts and lengths
  overwritten, and body columns filled with random values **then signed again** with
  the collector's key (a collector that holds its key but sends nonsense: the HMAC no
  longer stops it, so the decoder and validation see it);
* CSV: byte flips, deletions and insertions (separators, quotes, line ends, NUL,
  invalid UTF-8), cells replaced with hostile values, truncation, shuffled headers.

:func:`check_frame_input` and :func:`check_csv_input` run the decoders and assert the
contract: no exception other than :class:`~headend.errors.DecodeError`, and every
rejection (raised or returned as quarantine rows) carries a reason of
:data:`headend.model.reasons.REASONS`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

import numpy as np

from headend.errors import DecodeError
from headend.model import codes
from headend.model.reasons import REASONS
from headend.wire.csvfmt import decode_csv
from headend.wire.frame import HEADER, HMAC_LEN, encode_frame, iter_frames

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
KEY = bytes(range(32))
COLLECTOR = 501
SERIALS = np.arange(100_000_001, 100_000_021, dtype=np.uint64)
KEYS = {COLLECTOR: KEY}

METERS_CSV = (
    "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id\n"
    + "".join(f"{s},electric,rf,true,{COLLECTOR},T1,F1,S1\n" for s in SERIALS)
)
COLLECTORS_CSV = f"collector_id,hmac_key\n{COLLECTOR},{KEY.hex()}\n"

HOSTILE_CELLS = [
    b"", b"NaN", b"nan", b"inf", b"-inf", b"1e400", b"-0", b"9" * 40, b"-9223372036854775809",
    b"0x10", b"1,5", b"\"", b"\"\"\"", b"\x00", b"\xff\xfe", b"\xc3\x28", b" ", b"\t",
    b"2026-02-30T10:15:00Z", b"2026-03-01T10:15:00", b"2026-03-01T10:15:00+25:00",
    b"1970-01-01T00:00:00Z", b"9999-12-31T23:59:59Z", b"2026-03-01T10:15:07Z",
    b"kwh_del", b"unknown_type", b"3.0.0.26", b"99999", b"-1", b"M" * 300, b"\xe2\x80\x8b",
]


def _valid_frame(rng: np.random.Generator) -> bytes:
    n_i = int(rng.integers(0, 40))
    n_r = int(rng.integers(0, 6))
    n_e = int(rng.integers(0, 6))
    s = rng.choice(SERIALS, n_i)
    t = T0 + 900 * rng.integers(1, 97, n_i)
    v = rng.integers(0, 2_000, n_i).astype(np.int32)
    rs = rng.choice(SERIALS, n_r)
    es = rng.choice(SERIALS, n_e)
    code = codes.pack_event_code("3.26.0.85")
    return encode_frame(
        KEY, COLLECTOR, int(rng.integers(1, 1 << 30)), T0 + 86_400,
        interval=(s, t, v, np.zeros(n_i, np.uint32), np.zeros(n_i, np.uint8)),
        register=(rs, rng.integers(0, 10**9, n_r), T0 + rng.integers(0, 86_400, n_r),
                  np.zeros(n_r, np.uint8)),
        event=(es, T0 + rng.integers(0, 86_400, n_e), np.full(n_e, code, np.uint32)),
    )


def _resign(buf: bytearray) -> bytearray:
    """Sign a (mutated) frame again with the collector's key, when its header's length
    fits in the buffer: the mutation then reaches the body decoder and validation."""
    if len(buf) < HEADER.size:
        return buf
    flen = HEADER.unpack_from(buf, 0)[-1]
    if HMAC_LEN <= flen <= len(buf):
        buf[flen - HMAC_LEN : flen] = hmac.new(KEY, bytes(buf[: flen - HMAC_LEN]),
                                               hashlib.sha256).digest()
    return buf


def _fill_body(buf: bytearray, rng: np.random.Generator) -> bytearray:
    if len(buf) > HEADER.size + HMAC_LEN:
        lo, hi = HEADER.size, len(buf) - HMAC_LEN
        n = int(rng.integers(1, max(2, (hi - lo) // 4)))
        pos = rng.integers(lo, hi, n)
        buf_np = np.frombuffer(buf, dtype=np.uint8).copy()
        buf_np[pos] = rng.integers(0, 256, n, dtype=np.uint8)
        buf = bytearray(buf_np.tobytes())
    return _resign(buf)


def _header_field(buf: bytearray, rng: np.random.Generator) -> bytearray:
    # n_interval, n_register, n_event, frame_len are u32 at 32, 36, 40, 44
    off = int(rng.choice([4, 6, 32, 36, 40, 44]))
    width = 2 if off in (4, 6) else 4
    big = int(rng.choice([0, 1, 2, 7, 255, 65_535, 2**31, 2**32 - 1]))
    val = big if rng.random() < 0.5 else int(rng.integers(0, 1 << (8 * width)))
    struct.pack_into("<H" if width == 2 else "<I", buf, off, val % (1 << (8 * width)))
    return _resign(buf) if rng.random() < 0.5 else buf


def mutate_frame(rng: np.random.Generator) -> bytes:
    """One fuzzed frame upload (one to three frames, one of them mutated)."""
    frames = [bytearray(_valid_frame(rng)) for _ in range(int(rng.integers(1, 4)))]
    i = int(rng.integers(0, len(frames)))
    buf = frames[i]
    kind = int(rng.integers(0, 6))
    if kind == 0:  # bit flips anywhere (mostly bad_hmac / bad_frame)
        for p in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[p] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncation
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 2:  # header counts or lengths overwritten
        buf = _header_field(buf, rng)
    elif kind == 3:  # body filled with random values, signed again
        buf = _fill_body(buf, rng)
    elif kind == 4:  # garbage (sometimes with a magic in it) before the frame
        junk = bytearray(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
        if rng.random() < 0.5:
            junk[0:4] = b"HEFR"
        buf = junk + buf
    else:  # a frame of a collector without a key, or a wrong key
        struct.pack_into("<I", buf, 8, int(rng.integers(0, 2**32)))
        buf = _resign(buf) if rng.random() < 0.5 else buf
    frames[i] = buf
    return b"".join(bytes(f) for f in frames)


_CSV_BASES: list[Callable[[np.random.Generator], bytes]] = []


def _reads_csv(rng: np.random.Generator) -> bytes:
    n = int(rng.integers(1, 30))
    rows = [b"meter_id,reading_type,interval_end,value,quality"]
    for _ in range(n):
        s = int(rng.choice(SERIALS))
        t = np.datetime64(T0 + 900 * int(rng.integers(1, 97)), "s").astype(str)
        rows.append(f"{s},kwh_del,{t}Z,{rng.integers(0, 5000) / 1000:.3f},".encode())
    return b"\n".join(rows) + b"\n"


def _registers_csv(rng: np.random.Generator) -> bytes:
    rows = [b"meter_id,register,read_time,value"]
    for _ in range(int(rng.integers(1, 10))):
        t = np.datetime64(T0 + int(rng.integers(0, 86_400)), "s").astype(str)
        rows.append(f"{int(rng.choice(SERIALS))},kwh_del_total,{t}Z,{rng.integers(0, 10**6)}"
                    .encode())
    return b"\n".join(rows) + b"\n"


def _events_csv(rng: np.random.Generator) -> bytes:
    rows = [b"meter_id,event_time,event_code"]
    for _ in range(int(rng.integers(1, 10))):
        t = np.datetime64(T0 + int(rng.integers(0, 86_400)), "s").astype(str)
        rows.append(f"{int(rng.choice(SERIALS))},{t}Z,3.26.0.85".encode())
    return b"\n".join(rows) + b"\n"


def _meters_csv(rng: np.random.Generator) -> bytes:
    lines = METERS_CSV.encode().splitlines()
    k = int(rng.integers(2, len(lines) + 1))
    return b"\n".join(lines[:k]) + b"\n"


_CSV_BASES.extend([_reads_csv, _registers_csv, _events_csv, _meters_csv])
_INSERTS = [b",", b";", b"\"", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3", b"\t", b" "]


def mutate_csv(rng: np.random.Generator) -> bytes:
    """One fuzzed CSV upload."""
    base = _CSV_BASES[int(rng.integers(0, len(_CSV_BASES)))](rng)
    buf = bytearray(base)
    kind = int(rng.integers(0, 6))
    if kind == 0:  # byte flips
        for p in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[p] = int(rng.integers(0, 256))
    elif kind == 1:  # deletions
        for _ in range(int(rng.integers(1, 6))):
            if buf:
                p = int(rng.integers(0, len(buf)))
                del buf[p : p + int(rng.integers(1, 8))]
    elif kind == 2:  # insertions of structure characters
        for _ in range(int(rng.integers(1, 6))):
            p = int(rng.integers(0, len(buf) + 1))
            buf[p:p] = _INSERTS[int(rng.integers(0, len(_INSERTS)))]
    elif kind == 3:  # cells replaced with hostile values
        lines = bytes(buf).split(b"\n")
        for _ in range(int(rng.integers(1, 6))):
            li = int(rng.integers(1, max(2, len(lines))))
            if li < len(lines) and lines[li]:
                cells = lines[li].split(b",")
                cells[int(rng.integers(0, len(cells)))] = HOSTILE_CELLS[
                    int(rng.integers(0, len(HOSTILE_CELLS)))]
                lines[li] = b",".join(cells)
        buf = bytearray(b"\n".join(lines))
    elif kind == 4:  # truncation (also inside the header)
        buf = buf[: int(rng.integers(0, len(buf) + 1))]
    else:  # header columns shuffled, dropped or duplicated
        head, _, rest = bytes(buf).partition(b"\n")
        cols = head.split(b",")
        rng.shuffle(cols)
        if rng.random() < 0.3 and len(cols) > 1:
            cols = cols[:-1]
        if rng.random() < 0.3:
            cols.append(cols[0])
        buf = bytearray(b",".join(cols) + b"\n" + rest)
    return bytes(buf)


def check_frame_input(data: bytes) -> tuple[int, int]:
    """Decode ``data`` as frames; assert the contract. Returns (frames, rejections)."""
    good = bad = 0
    for item in iter_frames(data, KEYS, source="fuzz"):
        if isinstance(item, DecodeError):
            assert item.reason in REASONS, item
            bad += 1
        else:
            h = item.header
            assert len(item.i_end) == h.n_interval
            assert len(item.r_value) == h.n_register
            assert len(item.e_code) == h.n_event
            good += 1
    return good, bad


def check_csv_input(data: bytes) -> tuple[int, int]:
    """Decode ``data`` as canonical CSV; assert the contract. Returns (rows, rejections)."""
    rows = bad = 0
    try:
        for d in decode_csv(data, source="fuzz", block_size=4096):
            for part in (d.reads, d.registers, d.events):
                if part is not None:
                    rows += len(part)
            for tab in (d.meters, d.collectors):
                if tab is not None:
                    rows += tab.num_rows
            for rj in d.rejects:
                reasons = set(rj.column("reason").to_pylist())
                assert reasons <= REASONS.keys(), reasons
                bad += rj.num_rows
    except DecodeError as exc:
        assert exc.reason in REASONS, exc
        bad += 1
    return rows, bad
