"""Quarantine rows: building them and turning them back into canonical CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from headend.model import codes, schema
from headend.wire.batch import DecodedEvents, DecodedReads, DecodedRegisters
from headend.wire.csvfmt import decode_csv
from headend.wire.csvfmt.rejects import (
    make_rejects,
    rejects_from_events,
    rejects_from_reads,
    rejects_from_registers,
    rejects_to_csv_bytes,
)

T = 1_772_378_100  # 2026-03-01T15:15:00Z


def meter_ids(meter: Any) -> list[Any]:
    """Meter ids of a decoded batch (CSV: a string array)."""
    assert isinstance(meter, pa.StringArray)
    return meter.to_pylist()  # type: ignore[no-any-return]


def fields(t: pa.Table) -> list[dict[str, Any]]:
    return t.drop(["quarantine_id", "received_at"]).to_pylist()  # type: ignore[no-any-return]


def test_make_rejects_broadcasts_scalars() -> None:
    t = make_rejects("up.csv", "reads", "bad_value", ["d1", "d2", "d3"],
                     meter_id=pa.array(["A", "B", "C"]), value="x", received_at=T)
    assert t.schema == schema.QUARANTINE
    assert t.num_rows == 3
    assert t.column("received_at").cast(pa.int64()).to_pylist() == [T] * 3
    assert fields(t) == [
        {"source": "up.csv", "kind": "reads", "reason": "bad_value", "detail": d,
         "meter_id": m, "type": None, "time": None, "value": "x", "quality": None,
         "payload": None}
        for d, m in zip(["d1", "d2", "d3"], "ABC", strict=True)
    ]


def test_make_rejects_single_row_with_payload() -> None:
    when = datetime(2026, 3, 1, 15, 15, tzinfo=timezone(timedelta(hours=1)))
    t = make_rejects("c7", "frame", "bad_hmac", "HMAC mismatch", payload=[b"\x00\x01"],
                     received_at=when)
    assert t.num_rows == 1
    assert t.column("payload").to_pylist() == [b"\x00\x01"]
    assert t.column("received_at").cast(pa.int64()).to_pylist() == [T - 3600]


def test_make_rejects_defaults_received_at_to_now() -> None:
    before = int(datetime.now(UTC).timestamp())
    t = make_rejects("s", "file", "bad_csv", "x")
    after = int(datetime.now(UTC).timestamp())
    assert before <= t.column("received_at").cast(pa.int64())[0].as_py() <= after


def test_quarantine_ids_unique_within_and_across_calls() -> None:
    a = make_rejects("s", "reads", "bad_value", "d", meter_id=[str(i) for i in range(5000)])
    b = make_rejects("s", "reads", "bad_value", "d", meter_id=[str(i) for i in range(5000)])
    ids = a.column("quarantine_id").to_pylist() + b.column("quarantine_id").to_pylist()
    assert len(set(ids)) == 10_000
    assert all(len(i) == 29 and i[16] == "-" for i in ids)
    assert ids[1][-12:] == "000000000001"


def test_make_rejects_refuses_mismatched_lengths_and_naive_times() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        make_rejects("s", "reads", "bad_value", ["a", "b"], meter_id=["x"])
    with pytest.raises(ValueError, match="timezone-aware"):
        make_rejects("s", "reads", "bad_value", "d", received_at=datetime(2026, 1, 1))


def test_empty_selection_gives_empty_table() -> None:
    d = DecodedReads(np.array([1], np.uint64), np.array([0], np.uint8),
                     np.array([T], np.int64), np.array([5], np.int64), np.array([0], np.uint32))
    t = rejects_from_reads(d, np.array([False]), "unknown_meter", "x", "s")
    assert t.num_rows == 0 and t.schema == schema.QUARANTINE


def test_rejects_from_reads_formats_canonical_text() -> None:
    d = DecodedReads(
        np.array([10, 2**64 - 1, 30], np.uint64),  # serials of a binary frame
        np.array([0, 2, 31], np.uint8),
        np.array([T, 0, T], np.int64),
        np.array([1234, 2401, -5], np.int64),
        np.array([0, codes.quality_mask("1.2.32;3.8.1"), 1 << 22], np.uint32),
    )
    t = rejects_from_reads(d, np.array([True, True, True]), "impossible_value",
                           np.array(["a", "b", "c"], dtype=object), "frames.bin", received_at=T)
    base = {"source": "frames.bin", "kind": "reads", "reason": "impossible_value",
            "payload": None}
    assert fields(t) == [
        {**base, "detail": "a", "meter_id": "10", "type": "kwh_del",
         "time": "2026-03-01T15:15:00Z", "value": "1.234", "quality": ""},
        {**base, "detail": "b", "meter_id": "18446744073709551615", "type": "volts",
         "time": "1970-01-01T00:00:00Z", "value": "240.1", "quality": "1.2.32;3.8.1"},
        {**base, "detail": "c", "meter_id": "30", "type": "31",  # no such reading type
         "time": "2026-03-01T15:15:00Z", "value": "-5", "quality": "3.8.0"},
    ]


def test_reads_rejects_back_to_csv_decode_to_the_same_reads() -> None:
    d = DecodedReads(
        pa.array(["M1", "M,2", 'M"3', "M4"]),
        np.array([0, 1, 2, 4], np.uint8),
        np.array([T, T + 900, -86400, 253402300799], np.int64),
        np.array([1234, -2**31, 2**31 - 1, 0], np.int64),
        np.array([0, 1, codes.KNOWN_QUALITY_MASK, 1 << 13], np.uint32),
    )
    mask = np.array([True, True, False, True])
    t = rejects_from_reads(d, mask, "unknown_meter", "meter not in the registry", "up.csv")
    other = make_rejects("x", "events", "bad_event_code", "d", meter_id="E")
    csv = rejects_to_csv_bytes(pa.concat_tables([t, other]), "reads")
    assert csv == (
        b"meter_id,reading_type,interval_end,value,quality\n"
        b"M1,kwh_del,2026-03-01T15:15:00Z,1.234,\n"
        b'"M,2",kwh_rec,2026-03-01T15:30:00Z,-2147483.648,1.0.0\n'
        b"M4,gas_m3,9999-12-31T23:59:59Z,0.000,3.6.0\n"
    )
    [again] = decode_csv(csv, source="quarantine")
    assert again.rejects == [] and again.reads is not None
    assert meter_ids(again.reads.meter) == ["M1", "M,2", "M4"]
    np.testing.assert_array_equal(again.reads.reading_type, d.reading_type[mask])
    np.testing.assert_array_equal(again.reads.interval_end, d.interval_end[mask])
    np.testing.assert_array_equal(again.reads.value, d.value[mask])
    np.testing.assert_array_equal(again.reads.quality, d.quality[mask])


def test_register_and_event_rejects_round_trip() -> None:
    regs = DecodedRegisters(pa.array(["R1", "R2"]), np.array([0, 2], np.uint8),
                            np.array([T, T], np.int64), np.array([10**18 - 1, -7], np.int64))
    evs = DecodedEvents(pa.array(["E1", "E2"]), np.array([T, T + 1], np.int64),
                        np.array([codes.EVENT.power_fail, 2**32 - 1], np.uint32))
    rt = rejects_from_registers(regs, np.array([0, 1]), "unknown_meter", "d", "s")
    assert fields(rt)[0] | {"payload": None} == {
        "source": "s", "kind": "registers", "reason": "unknown_meter", "detail": "d",
        "meter_id": "R2", "type": "kw_max", "time": "2026-03-01T15:15:00Z",
        "value": "-0.007", "quality": None, "payload": None}
    et = rejects_from_events(evs, np.array([True, True]), "unknown_meter", "d", "s")
    assert et.column("type").to_pylist() == ["3.26.0.85", "31.127.1023.1023"]
    [r] = decode_csv(rejects_to_csv_bytes(rejects_from_registers(
        regs, np.array([True, True]), "unknown_meter", "d", "s"), "registers"), source="q")
    assert r.registers is not None and r.rejects == []
    assert r.registers.value.tolist() == [10**18 - 1, -7]
    assert r.registers.register.tolist() == [0, 2]
    [e] = decode_csv(rejects_to_csv_bytes(et, "events"), source="q")
    assert e.events is not None and e.rejects == []
    assert e.events.event_code.tolist() == [codes.EVENT.power_fail, 2**32 - 1]
    assert e.events.event_time.tolist() == [T, T + 1]


def test_payload_rows_are_written_verbatim() -> None:
    data = (b"meter_id,reading_type,interval_end,value,quality\n"
            b"M1,kwh_del\n"
            b"M2,kwh_del,2026-03-01T10:15:00Z,x,\n")
    [d] = decode_csv(data, source="s")
    csv = rejects_to_csv_bytes(pa.concat_tables(d.rejects), "reads")
    assert csv == (b"meter_id,reading_type,interval_end,value,quality\n"
                   b"M1,kwh_del\n"
                   b"M2,kwh_del,2026-03-01T10:15:00Z,x,\n")
    w = b"time,temperature_c,zone\n2026-03-01T10:00:00Z,warm,\"a,b\"\n"
    [dw] = decode_csv(w, source="s")
    assert rejects_to_csv_bytes(pa.concat_tables(dw.rejects), "weather") == w


def test_rejects_to_csv_refuses_kinds_without_csv() -> None:
    t = make_rejects("s", "frame", "bad_frame", "d", payload=[b"x"])
    with pytest.raises(ValueError, match="no canonical CSV"):
        rejects_to_csv_bytes(t, "frame")
    assert rejects_to_csv_bytes(t, "events") == b"meter_id,event_time,event_code\n"
