"""Decoding canonical CSV: parsed columns and exact quarantine rows for every reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import DecodeError
from headend.model import codes, schema
from headend.wire.batch import Decoded
from headend.wire.csvfmt import decode_csv

READS_H = b"meter_id,reading_type,interval_end,value,quality\n"
T1015Z = 1_772_360_100  # 2026-03-01T10:15:00Z
T1515Z = 1_772_378_100  # 2026-03-01T15:15:00Z


def meter_ids(meter: Any) -> list[Any]:
    """Meter ids of a decoded batch (CSV: a string array)."""
    assert isinstance(meter, pa.StringArray)
    return meter.to_pylist()  # type: ignore[no-any-return]


def decode(data: bytes | Path, **kw: Any) -> list[Decoded]:
    return list(decode_csv(data, source="test.csv", **kw))


def rejected(units: list[Decoded]) -> list[dict[str, Any]]:
    """Quarantine rows without their random id and clock-dependent time."""
    out: list[dict[str, Any]] = []
    for d in units:
        for t in d.rejects:
            assert t.schema == schema.QUARANTINE
            out += t.drop(["quarantine_id", "received_at"]).to_pylist()
    return out


def row(reason: str, detail: str, **fields: Any) -> dict[str, Any]:
    base = {"source": "test.csv", "kind": "reads", "reason": reason, "detail": detail,
            "meter_id": None, "type": None, "time": None, "value": None, "quality": None,
            "payload": None}
    base.update(fields)
    return base


def read_row(reason: str, detail: str, meter: str, rt: str, t: str, v: str, q: str
             ) -> dict[str, Any]:
    return row(reason, detail, meter_id=meter, type=rt, time=t, value=v, quality=q)


def reads_of(units: list[Decoded]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"meter": [], "reading_type": [], "interval_end": [],
                                 "value": [], "quality": []}
    for d in units:
        assert d.reads is not None
        assert isinstance(d.reads.meter, pa.StringArray)
        out["meter"] += meter_ids(d.reads.meter)
        out["reading_type"] += d.reads.reading_type.tolist()
        out["interval_end"] += d.reads.interval_end.tolist()
        out["value"] += d.reads.value.tolist()
        out["quality"] += d.reads.quality.tolist()
    return out


def test_good_reads_columns_and_dtypes() -> None:
    data = READS_H + (
        b"M1,kwh_del,2026-03-01T10:15:00Z,1.234,\n"
        b"M2,volts,2026-03-01T10:15:00Z,240.1,1.2.32;3.8.1\n"
        b"M3,kwh_rec,2026-03-01T10:15:00Z,-0.005,1.0.0\n"
        b"M4,water_m3,2026-03-01T10:15:00Z,12,\n"
        b"M5,gas_m3,2026-03-01T10:15:00Z,.5,\n"
    )
    [d] = decode(data)
    assert d.source == "test.csv" and d.rejects == []
    assert d.reads is not None
    assert d.reads.reading_type.dtype == np.uint8
    assert d.reads.interval_end.dtype == np.int64
    assert d.reads.value.dtype == np.int64
    assert d.reads.quality.dtype == np.uint32
    q = codes.quality_mask
    assert reads_of([d]) == {
        "meter": ["M1", "M2", "M3", "M4", "M5"],
        "reading_type": [0, 2, 1, 3, 4],
        "interval_end": [T1015Z] * 5,
        "value": [1234, 2401, -5, 12000, 500],
        "quality": [0, q("1.2.32;3.8.1"), q("1.0.0"), 0, 0],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T10:15:00-05:00", T1515Z),
        ("2026-03-01T10:15:00Z", T1015Z),
        ("2026-03-01T10:15:00z", T1015Z),
        ("2026-03-01T10:15:00+00:00", T1015Z),
        ("2026-03-01T15:45:00+05:30", T1015Z),
        ("2026-03-01T11:15:00+0100", T1015Z),
        ("2026-03-01 10:15:00Z", T1015Z),
        ("2026-03-01T10:15Z", T1015Z),
        ("2026-03-01T10:15:00.999Z", T1015Z),  # fractions of a second are truncated
        ("2026-03-02T00:15:00+14:00", T1015Z),
        ("2026-02-28T23:15:00-11:00", T1015Z),
        ("2024-02-29T00:00:00Z", 1_709_164_800),
        ("1969-12-31T23:59:59Z", -1),
    ],
)
def test_offsets_converted_to_utc(text: str, expected: int) -> None:
    [d] = decode(READS_H + f"M1,kwh_del,{text},1,\n".encode())
    assert rejected([d]) == []
    assert reads_of([d])["interval_end"] == [expected]


@pytest.mark.parametrize(
    ("text", "rt", "expected"),
    [
        ("0.0005", "kwh_del", 1),  # half away from zero
        ("-0.0005", "kwh_del", -1),
        ("0.00049999", "kwh_del", 0),
        ("1.2345", "kwh_del", 1235),
        ("240.15", "volts", 2402),
        ("-240.149", "volts", -2401),
        ("+3", "water_m3", 3000),
        ("7.", "gas_m3", 7000),
        ("2147483.647", "kwh_del", 2_147_483_647),
        ("-2147483.648", "kwh_del", -2_147_483_648),
        ("214748364.7", "volts", 2_147_483_647),
        ("0000000000000000000000000001.5", "kwh_del", 1500),
    ],
)
def test_values_exact_in_resolution_units(text: str, rt: str, expected: int) -> None:
    [d] = decode(READS_H + f"M1,{rt},2026-03-01T10:15:00Z,{text},\n".encode())
    assert rejected([d]) == []
    assert reads_of([d])["value"] == [expected]


@pytest.mark.parametrize(
    "text",
    ["", "abc", "NaN", "nan", "inf", "-inf", "1e3", "1.2.3", "--1", "+", ".", " 1", "1,5",
     "2147483.648", "-2147483.649", "99999999999999999999", "0x10",
     "0.0000000000000000000000000000001"],  # longer than 32 characters
)
def test_bad_value(text: str) -> None:
    field = f'"{text}"' if "," in text else text
    units = decode(READS_H + f"M1,kwh_del,2026-03-01T10:15:00Z,{field},\n".encode())
    assert rejected(units) == [read_row(
        "bad_value", f"value not a decimal number in range of the reading type's unit '{text}'",
        "M1", "kwh_del", "2026-03-01T10:15:00Z", text, "")]
    assert reads_of(units)["value"] == []


@pytest.mark.parametrize(
    "text",
    ["2026-03-01", "2026-02-30T10:15:00Z", "2026-13-01T10:15:00Z", "2026-03-01T24:00:00Z",
     "2026-03-01T10:60:00Z", "2026-03-01T10:15:60Z", "2026-03-01T10:15:00+25:00",
     "2026-03-01T10:15:00 Z", "20260301T101500Z", "1772360100", "", "yesterday",
     "2026-03-01T10:15:00.Z", "2026-03-01T10:15:00-0"],
)
def test_malformed_timestamp(text: str) -> None:
    units = decode(READS_H + f"M1,kwh_del,{text},1,\n".encode())
    assert rejected(units) == [read_row(
        "bad_timestamp", f"interval_end not ISO 8601 '{text}'", "M1", "kwh_del", text, "1", "")]


def test_every_reason_in_one_block_keeps_the_good_rows() -> None:
    data = READS_H + (
        b"G1,kwh_del,2026-03-01T10:15:00Z,1.5,\n"
        b"B1,kwh_xx,2026-03-01T10:15:00Z,1,\n"
        b"B2,kwh_del,2026-03-01T10:15:00,1,\n"
        b"G2,volts,2026-03-01T10:15:00-05:00,230,\n"
        b"B3,kwh_del,2026-03-01T10:15:00Z,inf,\n"
        b"B4,kwh_del,2026-03-01T10:15:00Z,1,1.2.32;9.9.9\n"
        b"B5,kwh_del,2026-03-01T10:15:00Z\n"
        b",kwh_del,2026-03-01T10:15:00Z,1,\n"
        b"B\xff6,kwh_del,2026-03-01T10:15:00Z,1,\n"
        b"G3,kwh_rec,2026-03-01T10:15:00Z,0,3.8.0\n"
        b"B7,kwh_xx,not-a-time,x,9.9\n"  # several faults: the first column's reason wins
    )
    units = decode(data)
    assert reads_of(units) == {
        "meter": ["G1", "G2", "G3"], "reading_type": [0, 2, 1],
        "interval_end": [T1015Z, T1515Z, T1015Z], "value": [1500, 2300, 0],
        "quality": [0, 0, 1 << 22],
    }
    t = "2026-03-01T10:15:00Z"
    assert rejected(units) == [
        row("bad_csv", "line is not valid UTF-8",
            payload=b"B\xff6,kwh_del,2026-03-01T10:15:00Z,1,"),
        row("bad_csv", "expected 5 fields, got 3", payload=b"B5,kwh_del,2026-03-01T10:15:00Z"),
        read_row("bad_csv", "empty meter_id", "", "kwh_del", t, "1", ""),
        read_row("unknown_reading_type", "unknown reading type 'kwh_xx'",
                 "B1", "kwh_xx", t, "1", ""),
        read_row("unknown_reading_type", "unknown reading type 'kwh_xx'",
                 "B7", "kwh_xx", "not-a-time", "x", "9.9"),
        read_row("bad_timestamp",
                 "interval_end without a UTC offset (Z or +hh:mm) '2026-03-01T10:15:00'",
                 "B2", "kwh_del", "2026-03-01T10:15:00", "1", ""),
        read_row("bad_value", "value not a decimal number in range of the reading type's "
                 "unit 'inf'", "B3", "kwh_del", t, "inf", ""),
        read_row("bad_quality", "unknown quality code in '1.2.32;9.9.9'",
                 "B4", "kwh_del", t, "1", "1.2.32;9.9.9"),
    ]


def test_bom_crlf_and_blank_lines() -> None:
    data = (b"\xef\xbb\xbfmeter_id,reading_type,interval_end,value,quality\r\n"
            b"M1,kwh_del,2026-03-01T10:15:00Z,1.234,\r\n\r\n"
            b"\"M,2\",volts,2026-03-01T10:15:00Z,240.1,\r\n")
    units = decode(data)
    assert rejected(units) == []
    assert reads_of(units)["meter"] == ["M1", "M,2"]
    assert reads_of(units)["value"] == [1234, 2401]


def test_extra_columns_are_ignored() -> None:
    data = (b"meter_id,reading_type,interval_end,value,quality,note,meter_id\n"
            b"M1,kwh_del,2026-03-01T10:15:00Z,1,,hello,other\n")
    assert reads_of(decode(data))["meter"] == ["M1"]


def test_small_blocks_and_path_give_the_same_result(tmp_path: Path) -> None:
    lines = [f"M{i},kwh_del,2026-03-01T10:{i % 60:02d}:00Z,{i}.5,\n" for i in range(200)]
    lines[77] = "M77,kwh_del,2026-03-01T10:15:00Z\n"  # wrong field count
    lines[150] = "M150,kwh_del,2026-03-01T10:15:00Z,x,\n"
    data = READS_H + "".join(lines).encode()
    whole = decode(data)
    assert len(whole) == 1
    path = tmp_path / "reads.csv"
    path.write_bytes(data)
    for units in (decode(data, block_size=100), decode(path, block_size=100), decode(path)):
        assert reads_of(units) == reads_of(whole)
        assert sorted(map(str, rejected(units))) == sorted(map(str, rejected(whole)))
    assert len(reads_of(whole)["meter"]) == 198
    assert len(decode(data, block_size=100)) > 20


def test_last_line_without_newline(tmp_path: Path) -> None:
    data = READS_H + b"M1,kwh_del,2026-03-01T10:15:00Z,1,\nM2,kwh_del,2026-03-01T10:15:00Z,2,"
    path = tmp_path / "r.csv"
    path.write_bytes(data)
    for src in (data, path):
        assert reads_of(decode(src, block_size=40))["value"] == [1000, 2000]


def test_header_only_yields_one_empty_unit() -> None:
    [d] = decode(READS_H)
    assert d.reads is not None and len(d.reads) == 0 and d.rejects == []


def test_unknown_header_raises_bad_csv() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"id,when,what\n1,2,3\n")
    assert info.value.reason == "bad_csv" and info.value.source == "test.csv"


def test_registers() -> None:
    data = (b"meter_id,register,read_time,value\n"
            b"M1,kwh_del_total,2026-03-01T00:00:00Z,123456.789\n"
            b"M1,kw_max,2026-03-01T00:00:00+01:00,4.2\n"
            b"M2,kwh_xx_total,2026-03-01T00:00:00Z,1\n"
            b"M3,water_m3_total,2026-03-01T00:00:00Z,\n"
            b"M4,gas_m3_total,2026-03-01T00:00:00Z,999999999999999.999\n")
    units = decode(data)
    [d] = units
    assert d.registers is not None
    assert meter_ids(d.registers.meter) == ["M1", "M1", "M4"]
    assert d.registers.register.tolist() == [0, 2, 6]
    assert d.registers.read_time.tolist() == [1_772_323_200, 1_772_319_600, 1_772_323_200]
    assert d.registers.value.tolist() == [123_456_789, 4_200, 999_999_999_999_999_999]
    assert rejected(units) == [
        row("unknown_reading_type", "unknown register 'kwh_xx_total'", kind="registers",
            meter_id="M2", type="kwh_xx_total", time="2026-03-01T00:00:00Z", value="1"),
        row("bad_value", "value not a decimal number in range of the register's unit ''",
            kind="registers", meter_id="M3", type="water_m3_total",
            time="2026-03-01T00:00:00Z", value=""),
    ]


def test_events() -> None:
    data = (b"meter_id,event_time,event_code\n"
            b"M1,2026-03-01T10:15:00Z,3.26.0.85\n"
            b"M2,2026-03-01T10:15:00-05:00,3.26.0.216\n"
            b"M3,2026-03-01T10:15:00Z,power_fail\n"
            b"M4,2026-03-01T10:15:00Z,32.0.0.0\n"
            b"M5,2026-03-01T10:15,3.26.0.85\n")
    units = decode(data)
    [d] = units
    assert d.events is not None
    assert meter_ids(d.events.meter) == ["M1", "M2"]
    assert d.events.event_time.tolist() == [T1015Z, T1515Z]
    assert d.events.event_code.dtype == np.uint32
    assert d.events.event_code.tolist() == [codes.EVENT.power_fail, codes.EVENT.power_restored]
    ev = {"kind": "events", "time": "2026-03-01T10:15:00Z"}
    assert rejected(units) == [
        row("bad_timestamp", "event_time without a UTC offset (Z or +hh:mm) '2026-03-01T10:15'",
            kind="events", meter_id="M5", type="3.26.0.85", time="2026-03-01T10:15"),
        row("bad_event_code", "event_code not a dotted EndDeviceEventType 'power_fail'",
            meter_id="M3", type="power_fail", **ev),
        row("bad_event_code", "event_code not a dotted EndDeviceEventType '32.0.0.0'",
            meter_id="M4", type="32.0.0.0", **ev),
    ]


METERS_H = (b"meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
            b"substation_id")


def test_meters_without_interval_minutes_leave_it_undeclared() -> None:
    data = METERS_H + b"\nM1,electric,rf,true,C1,T1,F1,S1\nM2,water,gprs,false,,,,\n"
    [d] = decode(data)
    assert d.rejects == []
    assert d.meters is not None
    assert d.meters.to_pylist() == [
        {"meter_id": "M1", "commodity": 0, "technology": 0, "two_way": True,
         "collector_id": "C1", "transformer_id": "T1", "feeder_id": "F1",
         "substation_id": "S1", "interval_s": 0, "critical_care": None},
        {"meter_id": "M2", "commodity": 1, "technology": 1, "two_way": False,
         "collector_id": None, "transformer_id": None, "feeder_id": None,
         "substation_id": None, "interval_s": 0, "critical_care": None},
    ]
    assert [f.type for f in d.meters.schema] == [
        pa.string(), pa.uint8(), pa.uint8(), pa.bool_(), pa.string(), pa.string(),
        pa.string(), pa.string(), pa.int32(), pa.bool_()]


def test_bad_meters() -> None:
    data = METERS_H + b",interval_minutes\n" + (
        b"M1,gas,plc,false,C1,T1,F1,S1,60\n"
        b"M2,steam,rf,true,C1,T1,F1,S1,\n"
        b"M3,electric,wifi,true,C1,T1,F1,S1,\n"
        b"M4,electric,rf,yes,C1,T1,F1,S1,\n"
        b"M5,electric,rf,true,C1,T1,F1,S1,7\n"
        b",electric,rf,true,\"C,1\",T1,F1,S1,5\n"
        b"M6,electric,rf,true,C1,T1,F1,S1,\n"
    )
    units = decode(data)
    [d] = units
    assert d.meters is not None
    assert d.meters.column("meter_id").to_pylist() == ["M1", "M6"]
    assert d.meters.column("interval_s").to_pylist() == [3600, 0]
    assert d.meters.column("commodity").to_pylist() == [2, 0]

    def bad(detail: str, meter: str, line: bytes) -> dict[str, Any]:
        return row("bad_meter", detail, kind="meters", meter_id=meter, payload=line)

    assert rejected(units) == [
        bad("empty meter_id", "", b',electric,rf,true,"C,1",T1,F1,S1,5,'),
        bad("commodity not electric|water|gas: 'steam'", "M2",
            b"M2,steam,rf,true,C1,T1,F1,S1,,"),
        bad("technology not rf|gprs|plc: 'wifi'", "M3", b"M3,electric,wifi,true,C1,T1,F1,S1,,"),
        bad("two_way not true|false: 'yes'", "M4", b"M4,electric,rf,yes,C1,T1,F1,S1,,"),
        bad("interval_minutes not a divisor of 1440: '7'", "M5",
            b"M5,electric,rf,true,C1,T1,F1,S1,7,"),
    ]


def test_collectors() -> None:
    data = (b"collector_id,hmac_key\n"
            b"7,00ff10Ab\n"
            b"4294967295,0102\n"
            b"4294967296,0102\n"
            b"-1,0102\n"
            b"8,abc\n"
            b"9,zz\n")
    units = decode(data)
    [d] = units
    assert d.collectors is not None
    assert d.collectors.schema == pa.schema([("collector_id", pa.uint32()),
                                             ("hmac_key", pa.binary())])
    assert d.collectors.to_pylist() == [
        {"collector_id": 7, "hmac_key": b"\x00\xff\x10\xab"},
        {"collector_id": 4294967295, "hmac_key": b"\x01\x02"},
    ]
    col = {"kind": "collectors"}
    assert rejected(units) == [
        row("bad_csv", "collector_id not a decimal uint32: '4294967296'",
            payload=b"4294967296,<redacted>", **col),
        row("bad_csv", "collector_id not a decimal uint32: '-1'",
            payload=b"-1,<redacted>", **col),
        row("bad_csv", "hmac_key not an even number of hex digits",
            payload=b"8,<redacted>", **col),
        row("bad_csv", "hmac_key not an even number of hex digits",
            payload=b"9,<redacted>", **col),
    ]


def test_weather() -> None:
    data = (b"time,temperature_c,zone\n"
            b"2026-03-01T10:00:00Z,-3.25,north\n"
            b"2026-03-01T11:00:00+01:00,21.5,\n"
            b"2026-03-01T12:00:00Z,warm,north\n")
    units = decode(data)
    [d] = units
    assert d.weather is not None
    assert d.weather.schema == pa.schema([("time", schema.TS), ("temperature_c", pa.float64()),
                                          ("zone", pa.string())])
    assert d.weather.column("time").cast(pa.int64()).to_pylist() == [1_772_359_200] * 2
    assert d.weather.column("temperature_c").to_pylist() == [-3.25, 21.5]
    assert d.weather.column("zone").to_pylist() == ["north", None]
    assert rejected(units) == [
        row("bad_value", "temperature_c not a decimal number: 'warm'", kind="weather",
            time="2026-03-01T12:00:00Z", value="warm",
            payload=b"2026-03-01T12:00:00Z,warm,north"),
    ]


def test_weather_without_zone_column() -> None:
    [d] = decode(b"time,temperature_c\n2026-03-01T10:00:00Z,4\n")
    assert d.weather is not None
    assert d.weather.column("zone").to_pylist() == [None]
    assert d.weather.column("temperature_c").to_pylist() == [4.0]


def test_malformed_quoting_never_swallows_the_next_lines() -> None:
    data = READS_H + (
        b'"M1,kwh_del,2026-03-01T10:15:00Z,1,\n'  # opens a quote that never closes
        b"M2,kwh_del,2026-03-01T10:15:00Z,2,\n"
        b'M"3,kwh_del,2026-03-01T10:15:00Z,3,\n'  # quote inside an unquoted field
        b'"M""4",kwh_del,2026-03-01T10:15:00Z,4,\r\n'  # escaped quote: fine
        b'"M5"x,kwh_del,2026-03-01T10:15:00Z,5,\n'  # text after the closing quote
    )
    for block_size in (1 << 20, 50):
        units = decode(data, block_size=block_size)
        assert reads_of(units)["meter"] == ["M2", 'M"4']
        assert rejected(units) == [
            row("bad_csv", "malformed quoting", payload=b'"M1,kwh_del,2026-03-01T10:15:00Z,1,'),
            row("bad_csv", "malformed quoting", payload=b'M"3,kwh_del,2026-03-01T10:15:00Z,3,'),
            row("bad_csv", "malformed quoting", payload=b'"M5"x,kwh_del,2026-03-01T10:15:00Z,5,'),
        ]


def test_header_without_line_break_and_crlf_file(tmp_path: Path) -> None:
    [d] = decode(READS_H.rstrip(b"\n"))
    assert d.reads is not None and len(d.reads) == 0
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"\xef\xbb\xbf" + READS_H.replace(b"\n", b"\r\n")
                     + b"M1,kwh_del,2026-03-01T10:15:00Z,1,1.0.0\r\n")
    units = decode(path)
    assert rejected(units) == []
    assert reads_of(units)["quality"] == [1]


def test_fully_quoted_file() -> None:
    data = (b'"meter_id","reading_type","interval_end","value","quality"\r\n'
            b'"M1","kwh_del","2026-03-01T10:15:00Z","1.234",""\r\n')
    units = decode(data)
    assert rejected(units) == []
    assert reads_of(units)["value"] == [1234]
