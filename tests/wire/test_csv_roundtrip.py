"""Property tests: write -> decode is the identity; garbage never escapes as a crash."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.errors import DecodeError
from headend.model import codes, schema
from headend.wire.batch import Decoded
from headend.wire.csvfmt import (
    decode_csv,
    write_events_csv,
    write_meters_csv,
    write_reads_csv,
    write_registers_csv,
)
from headend.wire.csvfmt.rejects import rejects_to_csv_bytes

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# any text but line breaks (which canonical CSV forbids) and surrogates; never empty
id_texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
                   min_size=1, max_size=12)
times = st.integers(-62_167_219_200, 253_402_300_799)  # years 0000-9999 [Unix s]


def meter_ids(meter: Any) -> list[Any]:
    """Meter ids of a decoded batch (CSV: a string array)."""
    assert isinstance(meter, pa.StringArray)
    return meter.to_pylist()  # type: ignore[no-any-return]


def decode_all(data: bytes, block_size: int) -> list[Decoded]:
    return list(decode_csv(data, source="p", block_size=block_size))


@st.composite
def reads_tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 30))
    return pa.table({
        "meter_id": pa.array(draw(st.lists(id_texts, min_size=n, max_size=n)), pa.string()),
        "reading_type": pa.array(draw(st.lists(st.integers(0, len(codes.READING_TYPES) - 1),
                                               min_size=n, max_size=n)), pa.uint8()),
        "interval_end": pa.array(draw(st.lists(times, min_size=n, max_size=n)),
                                 pa.int64()).cast(schema.TS),
        "value": pa.array(draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n,
                                        max_size=n)), pa.int32()),
        "quality": pa.array(draw(st.lists(st.integers(0, codes.KNOWN_QUALITY_MASK).map(
            lambda m: m & codes.KNOWN_QUALITY_MASK), min_size=n, max_size=n)), pa.uint32()),
    })


@SETTINGS
@given(reads_tables(), st.integers(64, 4096))
def test_reads_round_trip(table: pa.Table, block_size: int) -> None:
    out = io.BytesIO()
    write_reads_csv(table, out, chunk_rows=7)
    units = decode_all(out.getvalue(), block_size)
    assert all(d.rejects == [] for d in units)
    reads = [d.reads for d in units if d.reads is not None]
    assert pa.concat_arrays([r.meter for r in reads]).to_pylist() == (
        table.column("meter_id").to_pylist())
    cat = np.concatenate
    assert cat([r.reading_type for r in reads]).tolist() == table["reading_type"].to_pylist()
    assert cat([r.interval_end for r in reads]).tolist() == (
        table["interval_end"].cast(pa.int64()).to_pylist())
    assert cat([r.value for r in reads]).tolist() == table["value"].to_pylist()
    assert cat([r.quality for r in reads]).tolist() == table["quality"].to_pylist()


@SETTINGS
@given(st.data())
def test_registers_and_events_round_trip(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 20))
    ids = data.draw(st.lists(id_texts, min_size=n, max_size=n))
    regs = pa.table({
        "meter_id": pa.array(ids, pa.string()),
        "register": pa.array(data.draw(st.lists(st.integers(0, len(codes.REGISTER_TYPES) - 1),
                                                min_size=n, max_size=n)), pa.uint8()),
        "read_time": pa.array(data.draw(st.lists(times, min_size=n, max_size=n))).cast(schema.TS),
        "value": pa.array(data.draw(st.lists(st.integers(-(10**18) + 1, 10**18 - 1),
                                             min_size=n, max_size=n)), pa.int64()),
    })
    out = io.BytesIO()
    write_registers_csv(regs, out)
    [d] = decode_all(out.getvalue(), 1 << 16)
    assert d.rejects == [] and d.registers is not None
    assert meter_ids(d.registers.meter) == ids
    assert d.registers.register.tolist() == regs["register"].to_pylist()
    assert d.registers.read_time.tolist() == regs["read_time"].cast(pa.int64()).to_pylist()
    assert d.registers.value.tolist() == regs["value"].to_pylist()

    evs = pa.table({
        "meter_id": pa.array(ids, pa.string()),
        "event_time": pa.array(data.draw(st.lists(times, min_size=n, max_size=n))).cast(schema.TS),
        "event_code": pa.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n,
                                                  max_size=n)), pa.uint32()),
    })
    out = io.BytesIO()
    write_events_csv(evs, out)
    [e] = decode_all(out.getvalue(), 1 << 16)
    assert e.rejects == [] and e.events is not None
    assert meter_ids(e.events.meter) == ids
    assert e.events.event_time.tolist() == evs["event_time"].cast(pa.int64()).to_pylist()
    assert e.events.event_code.tolist() == evs["event_code"].to_pylist()


optional_text = st.one_of(st.none(), id_texts)


@SETTINGS
@given(st.data())
def test_meters_round_trip(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 10))

    def col(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return data.draw(st.lists(strategy, min_size=n, max_size=n))

    minutes = [m for m in range(1, 1441) if 1440 % m == 0]
    table = pa.table({
        "meter_id": pa.array(col(id_texts), pa.string()),
        "commodity": pa.array(col(st.integers(0, 2)), pa.uint8()),
        "technology": pa.array(col(st.integers(0, 2)), pa.uint8()),
        "two_way": pa.array(col(st.booleans())),
        **{k: pa.array(col(optional_text), pa.string())
           for k in ("collector_id", "transformer_id", "feeder_id", "substation_id")},
        "interval_s": pa.array([m * 60 for m in col(st.sampled_from(minutes))], pa.int32()),
        "critical_care": pa.array(col(st.none() | st.booleans()), pa.bool_()),
    })
    out = io.BytesIO()
    write_meters_csv(table, out)
    [d] = decode_all(out.getvalue(), 1 << 16)
    assert d.rejects == [] and d.meters is not None
    assert d.meters.equals(table)


HEADERS = [b""] + [(",".join(h) + "\n").encode() for h in schema.CSV_HEADERS.values()]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(HEADERS), st.binary(max_size=300), st.integers(16, 512))
def test_garbage_gives_rejects_or_decode_error(header: bytes, body: bytes, block: int) -> None:
    try:
        units = decode_all(header + body, block)
    except DecodeError as err:
        assert err.reason == "bad_csv"
        return
    for d in units:
        for t in d.rejects:
            assert t.schema == schema.QUARANTINE
            kind = t.column("kind")[0].as_py()
            rejects_to_csv_bytes(t, kind)  # always rebuildable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(
    ["M1", "", "kwh_del", "volts", "x", "2026-03-01T10:15:00Z", "2026-03-01T10:15:00",
     "1.5", "-0.0005", "nan", "1.2.32", "9.9", '"', '"a,b"', "\xe9"]), max_size=7),
    max_size=20))
def test_mixed_rows_account_for_every_line(rows: list[list[str]]) -> None:
    lines = [",".join(r) for r in rows]
    text = "meter_id,reading_type,interval_end,value,quality\n" + "\n".join(lines) + "\n"
    units = decode_all(text.encode(), 64)
    good = sum(len(d.reads) for d in units if d.reads is not None)
    bad = sum(t.num_rows for d in units for t in d.rejects)
    # every non-blank line is either decoded or quarantined, never lost
    assert good + bad == sum(1 for line in lines if line != "")
