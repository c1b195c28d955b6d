"""Canonical CSV writers for exports: exact text, chunking, refusals."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from headend.model import codes, schema
from headend.wire.csvfmt import _text as tx
from headend.wire.csvfmt import (
    write_events_csv,
    write_meters_csv,
    write_reads_csv,
    write_registers_csv,
)

T = 1_772_378_100  # 2026-03-01T15:15:00Z


def reads_table(n: int = 4) -> pa.Table:
    base = pa.table({
        "meter_id": ["M1", "M,2", 'say "hi"', "M4"],
        "reading_type": pa.array([0, 2, 1, 4], pa.uint8()),
        "interval_end": pa.array([T, T + 900, 0, T], schema.TS),
        "value": pa.array([1234, 2401, -5, 0], pa.int32()),
        "quality": pa.array([0, codes.quality_mask("1.2.32;3.8.1"), 1 << 22, 0], pa.uint32()),
    })
    return base.slice(0, n)


READS_CSV = (
    b"meter_id,reading_type,interval_end,value,quality\n"
    b"M1,kwh_del,2026-03-01T15:15:00Z,1.234,\n"
    b'"M,2",volts,2026-03-01T15:30:00Z,240.1,1.2.32;3.8.1\n'
    b'"say ""hi""",kwh_rec,1970-01-01T00:00:00Z,-0.005,3.8.0\n'
    b"M4,gas_m3,2026-03-01T15:15:00Z,0.000,\n"
)


def test_write_reads_exact_text() -> None:
    out = io.BytesIO()
    assert write_reads_csv(reads_table(), out) == 4
    assert out.getvalue() == READS_CSV


def test_chunking_and_inputs_do_not_change_the_text() -> None:
    t = reads_table()
    for data in (t, t.to_batches()[0], t.to_batches(max_chunksize=1), t.to_reader()):
        out = io.BytesIO()
        write_reads_csv(data, out, chunk_rows=3)
        assert out.getvalue() == READS_CSV


def test_timestamp_units_are_floored_to_seconds() -> None:
    t = reads_table(1).set_column(
        2, "interval_end", pa.array([T * 1000 + 999], pa.timestamp("ms", "UTC")))
    out = io.BytesIO()
    write_reads_csv(t, out)
    assert out.getvalue().splitlines()[1] == b"M1,kwh_del,2026-03-01T15:15:00Z,1.234,"


def test_header_only_for_an_empty_table() -> None:
    out = io.BytesIO()
    assert write_reads_csv(reads_table(0), out) == 0
    assert out.getvalue() == b"meter_id,reading_type,interval_end,value,quality\n"


def test_refuses_line_breaks_and_nulls() -> None:
    t = reads_table(1).set_column(0, "meter_id", pa.array(["a\nb"]))
    with pytest.raises(ValueError, match="line break"):
        write_reads_csv(t, io.BytesIO())
    t = reads_table(1).set_column(3, "value", pa.array([None], pa.int32()))
    with pytest.raises(ValueError, match="nulls"):
        write_reads_csv(t, io.BytesIO())


def test_write_registers_and_events() -> None:
    regs = pa.table({"meter_id": ["M1", "M2"],
                     "register": pa.array([0, 5], pa.uint8()),
                     "read_time": pa.array([T, T], schema.TS),
                     "value": pa.array([123_456_789, -1], pa.int64())})
    out = io.BytesIO()
    write_registers_csv(regs, out)
    assert out.getvalue() == (b"meter_id,register,read_time,value\n"
                              b"M1,kwh_del_total,2026-03-01T15:15:00Z,123456.789\n"
                              b"M2,water_m3_total,2026-03-01T15:15:00Z,-0.001\n")
    evs = pa.table({"meter_id": ["M1", "M2"],
                    "event_time": pa.array([T, T + 1], schema.TS),
                    "event_code": pa.array([codes.EVENT.power_fail, codes.EVENT.water_leak],
                                           pa.uint32())})
    out = io.BytesIO()
    write_events_csv(evs, out)
    assert out.getvalue() == (b"meter_id,event_time,event_code\n"
                              b"M1,2026-03-01T15:15:00Z,3.26.0.85\n"
                              b"M2,2026-03-01T15:15:01Z,8.31.0.93\n")


def test_write_meters_from_the_registry_schema() -> None:
    meters = pa.table({
        "meter_idx": pa.array([0, 1], pa.int32()), "meter_id": ["M1", "M2"],
        "serial": pa.array([5, 0], pa.uint64()),
        "commodity": pa.array([0, 2], pa.uint8()), "technology": pa.array([2, 1], pa.uint8()),
        "two_way": [True, False], "collector_id": ["C1", None],
        "transformer_id": ["T,1", None], "feeder_id": ["F1", None],
        "substation_id": ["S1", None], "interval_s": pa.array([900, 3600], pa.int32()),
    }, schema=schema.METERS)
    out = io.BytesIO()
    write_meters_csv(meters, out)
    assert out.getvalue() == (
        b"meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
        b"substation_id,interval_minutes,critical_care\n"
        b'M1,electric,plc,true,C1,"T,1",F1,S1,15,\n'
        b"M2,gas,gprs,false,,,,,60,\n"
    )
    flags = meters.append_column("critical_care", pa.array([True, False])).append_column(
        "switch_state", pa.array([2, 0], pa.uint8()))
    out = io.BytesIO()
    write_meters_csv(flags, out)
    assert out.getvalue().splitlines() == [
        (b"meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
         b"substation_id,interval_minutes,critical_care,switch_state"),
        b'M1,electric,plc,true,C1,"T,1",F1,S1,15,true,disconnected',
        b"M2,gas,gprs,false,,,,,60,false,unknown"]
    bad = meters.set_column(10, "interval_s", pa.array([90, 60], pa.int32()))
    with pytest.raises(ValueError, match="whole minutes"):
        write_meters_csv(bad, io.BytesIO())


@pytest.mark.parametrize(
    ("values", "decimals", "expected"),
    [
        ([1234, 2401, -5, 0, 10], [3, 1, 3, 3, 1], ["1.234", "240.1", "-0.005", "0.000", "1.0"]),
        ([2**63 - 1, -(2**63)], [0, 3], ["9223372036854775807", "-9223372036854775.808"]),
        ([999, 1000, 100000, -999999], [0, 0, 3, 3], ["999", "1000", "100.000", "-999.999"]),
    ],
)
def test_format_decimal(values: list[int], decimals: list[int], expected: list[str]) -> None:
    assert tx.format_decimal(np.array(values, np.int64), decimals).to_pylist() == expected


def test_format_time_range() -> None:
    assert tx.format_time([-62167219200, 253402300799]).to_pylist() == [
        "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
    with pytest.raises(ValueError, match="0-9999"):
        tx.format_time([253402300800])
