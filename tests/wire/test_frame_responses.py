"""The ``command_responses`` section of the binary frame (version 2): round trip, the
same table as the CSV decoder, version 1 frames unchanged, corrupt sections refused with
a reason (never a crash)."""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
import pyarrow as pa
import pytest

from headend.commands import decode_command_responses
from headend.errors import FrameError
from headend.model import commands as C
from headend.model.reasons import REASONS
from headend.wire import frame as wf
from headend.wire.responses import (
    SECTION,
    decode_responses_section,
    encode_responses_section,
    responses_csv,
)

KEY = bytes(range(32))
T_MS = 1_767_600_000_250  # 2026-01-05T08:00:00.250Z

ROWS = {
    "command_id": ["call-7:E1", "job,8", "r\u00e9p"],
    "meter_id": ["E1", "E2", "M\u00fcnchen-3"],
    "status": ["delivered", "meter_unreachable", "completed"],
    "time_ms": [T_MS, T_MS + 750, T_MS + 61_250],
    "detail": [None, '3 tries, "2" routes', "r\u00e9sum\u00e9 ok"],
}
CSV = ("command_id,meter_id,status,time,detail\n"
       "call-7:E1,E1,delivered,2026-01-05T08:00:00.250Z,\n"
       '"job,8",E2,meter_unreachable,2026-01-05T09:00:01+01:00,"3 tries, ""2"" routes"\n'
       "r\u00e9p,M\u00fcnchen-3,completed,2026-01-05T08:01:01.500Z,r\u00e9sum\u00e9 ok\n")


def _section() -> bytes:
    return encode_responses_section(ROWS["command_id"], ROWS["meter_id"], ROWS["status"],
                                    ROWS["time_ms"], ROWS["detail"])


def _frame(sections: bytes, *, reads: bool = True) -> bytes:
    interval = (np.array([7, 8], np.uint64), np.array([1_767_600_000] * 2),
                np.array([5, 6]), np.zeros(2, np.uint32), np.zeros(2, np.uint8)) \
        if reads else None
    return wf.encode_frame(KEY, 9, 1, 1_767_600_100, interval=interval, sections=sections)


def _resign(buf: bytearray) -> bytes:
    n = len(buf)
    buf[n - 32:] = hmac.new(KEY, bytes(buf[:n - 32]), hashlib.sha256).digest()
    return bytes(buf)


def test_round_trip_gives_the_csv_decoders_table() -> None:
    data = _frame(_section())
    assert struct.unpack_from("<H", data, 4)[0] == 2  # version 2 with a section
    f = wf.decode_frame(data, {9: KEY})
    assert f.responses is not None and f.response_rejects is not None
    assert f.response_rejects.num_rows == 0
    want, rej = decode_command_responses(CSV.encode(), source="x")
    assert rej.num_rows == 0
    assert f.responses.equals(want)
    assert f.responses.schema == C.RESPONSES
    # the reads are there as in version 1, and the section as sent
    assert f.i_meter.tolist() == [7, 8] and f.sections == _section()
    # the CSV the ingest hook gets reads back to the same table
    again, rej = decode_command_responses(responses_csv(f.responses), source="x")
    assert again.equals(want) and rej.num_rows == 0


def test_a_frame_without_a_section_is_version_1_byte_for_byte() -> None:
    data = _frame(b"")
    assert struct.unpack_from("<H", data, 4)[0] == 1
    assert len(data) == wf.frame_length(2, 0, 0)
    f = wf.decode_frame(data, {9: KEY})
    assert f.responses is None and f.sections == b""


def test_a_section_alone_and_an_empty_one() -> None:
    f = wf.decode_frame(_frame(_section(), reads=False), {9: KEY})
    assert f.header.n_interval == 0 and f.responses is not None
    assert f.responses.column("command_id").to_pylist() == ROWS["command_id"]
    empty = encode_responses_section([], [], [], [], [])
    f = wf.decode_frame(_frame(empty), {9: KEY})
    assert f.responses is not None and f.responses.num_rows == 0


def test_unusable_responses_are_quarantine_rows_with_a_reason() -> None:
    sec = bytearray(encode_responses_section(
        ["a", "", "c", "d", "e"], ["E1", "E2", "E3", "E4\nx", "E5"],
        ["delivered"] * 5, [T_MS, T_MS, T_MS, T_MS, -5], ["ok", None, None, None, None]))
    sec[SECTION.size + 8 + 8 * 5] = 200  # the first response's status code
    f = wf.decode_frame(_frame(bytes(sec)), {9: KEY})
    assert f.responses is not None and f.response_rejects is not None
    assert f.responses.column("command_id").to_pylist() == ["c"]
    rej = f.response_rejects
    assert rej.column("kind").to_pylist() == ["command_responses"] * 4
    assert rej.column("reason").to_pylist() == ["bad_command_response"] * 3 + [
        "bad_timestamp"]
    assert rej.column("payload").to_pylist()[0] == (
        b"a,E1,200,2026-01-05T08:00:00.250Z,ok")
    assert rej.column("meter_id").to_pylist() == ["E1", "E2", "E4\nx", "E5"]


@pytest.mark.parametrize(("patch", "why"), [
    (lambda s: s[:8] + struct.pack("<I", 200) + s[12:], "200 responses need"),
    (lambda s: s[:8] + struct.pack("<I", 5) + s[12:], "offsets"),
    (lambda s: struct.pack("<HHI", 7, 0, len(s) - 8) + s[8:], "unknown section type 7"),
    (lambda s: struct.pack("<HHI", 1, 3, len(s) - 8) + s[8:], "reserved"),
    (lambda s: s[:12] + b"\x01" + s[13:], "reserved field"),
    (lambda s: s + s, "two command_responses sections"),
])
def test_a_section_that_does_not_add_up_refuses_the_frame(patch, why: str) -> None:
    data = _frame(patch(_section()))
    with pytest.raises(FrameError) as exc:
        wf.decode_frame(data, {9: KEY})
    assert exc.value.reason == "bad_frame" and why in str(exc.value)


def test_a_version_1_frame_may_not_carry_trailing_bytes() -> None:
    data = bytearray(_frame(_section()))
    data[4:6] = struct.pack("<H", 1)  # claims version 1 with a section's length
    with pytest.raises(FrameError) as exc:
        wf.decode_frame(_resign(data), {9: KEY})
    assert exc.value.reason == "bad_frame"


def test_bad_utf8_in_a_string_refuses_the_frame() -> None:
    sec = bytearray(encode_responses_section(["ab"], ["E1"], ["completed"], [T_MS]))
    i = sec.index(b"ab")
    sec[i] = 0xFF
    with pytest.raises(FrameError) as exc:
        wf.decode_frame(_frame(bytes(sec)), {9: KEY})
    assert exc.value.reason == "bad_frame" and "UTF-8" in str(exc.value)


def test_corrupt_sections_signed_again_decode_or_are_refused_with_a_reason() -> None:
    """Fuzz-style: random bytes of the section overwritten, the frame signed again (a
    collector that holds its key and sends nonsense). Every outcome is a decoded frame
    whose responses are all accounted for, or a FrameError with a known reason."""
    rng = np.random.default_rng(12)
    base = _frame(_section())
    start = wf.frame_length(2, 0, 0) - 32  # the section starts where v1 would end
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3_000):
        buf = bytearray(base)
        for _k in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(start, len(buf) - 32))
            buf[pos] = int(rng.integers(0, 256))
        try:
            f = wf.decode_frame(_resign(buf), {9: KEY})
        except FrameError as exc:
            assert exc.reason in REASONS and exc.reason == "bad_frame"
            outcomes["refused"] += 1
            continue
        assert f.responses is not None and f.response_rejects is not None
        n = struct.unpack_from("<I", buf, start + SECTION.size)[0]
        assert f.responses.num_rows + f.response_rejects.num_rows == n
        assert set(f.response_rejects.column("reason").to_pylist()) <= set(REASONS)
        assert set(f.responses.column("status").to_pylist()) <= set(C.RESPONSE_STATUSES)
        outcomes["decoded"] += 1
    assert outcomes["decoded"] and outcomes["refused"]  # both paths were taken


def test_arbitrary_bodies_never_crash_the_section_decoder() -> None:
    rng = np.random.default_rng(3)
    for _ in range(3_000):
        n = int(rng.integers(0, 96))
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        if n >= 8 and rng.random() < 0.7:  # a plausible count, reserved 0
            body = struct.pack("<II", int(rng.integers(0, 4)), 0) + body[8:]
        try:
            good, rej = decode_responses_section(body, source="fuzz")
        except FrameError as exc:
            assert exc.reason == "bad_frame"
            continue
        assert isinstance(good, pa.Table) and isinstance(rej, pa.Table)


def test_encode_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError):
        encode_responses_section(["a"], ["E1"], ["done"], [T_MS])
    with pytest.raises(ValueError):
        encode_responses_section(["a", "b"], ["E1"], ["completed"], [T_MS])
    with pytest.raises(ValueError):
        wf.encode_frame(KEY, 9, 1, 0, sections=b"\0" * 4)


def test_the_example_section_of_formats_md() -> None:
    """docs/formats.md shows one response's section byte for byte: it is what the
    encoder writes, and it decodes to that response."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "formats.md").read_text()
    part = doc.split("### Command responses section (frame version 2)", 1)[1]
    hexdump = part.split("```\n", 2)[1]
    shown = bytes.fromhex(hexdump.replace("\n", " "))
    assert shown == encode_responses_section(["job7:M-1"], ["M-1"], ["completed"],
                                             [1_767_600_009_500], ["switch open"])
    good, rej = decode_responses_section(shown[SECTION.size:], source="doc")
    want, _ = decode_command_responses(
        b"command_id,meter_id,status,time,detail\n"
        b"job7:M-1,M-1,completed,2026-01-05T08:00:09.5Z,switch open\n", source="doc")
    assert good.equals(want) and rej.num_rows == 0
