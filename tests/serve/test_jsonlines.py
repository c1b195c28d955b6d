"""JSON lines of the third-party streams: exact values, the documented line format,
and the same text whichever way a column is built (per-batch tables or per row)."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from headend.model import schema
from headend.serve.jsonlines import (
    decimal_exponents,
    decimal_text,
    meter_heads,
    read_lines,
    register_lines,
)

NAMES = pa.array(["kwh_del", "kwh_rec", "volts"], pa.string())
RES = np.array([0.001, 0.001, 0.1])


@pytest.mark.parametrize("k", [0, 1, 3])
def test_decimal_text_is_the_exact_value_in_shortest_form(k: int) -> None:
    rng = np.random.default_rng(k)
    v = np.concatenate([rng.integers(-2**31, 2**31, 5000), rng.integers(-3000, 3000, 5000),
                        [0, 1, -1, 5, -5, 10, -10, 1000, -1000, 2**31 - 1, -2**31]])
    text = decimal_text(v.astype(np.int32), np.full(len(v), k)).to_pylist()
    for n, t in zip(v.tolist(), text, strict=True):
        assert Decimal(t) == Decimal(n).scaleb(-k), (n, t)
        assert isinstance(json.loads(t), int | float)  # a JSON number
        assert not t.endswith(".") and ("." not in t or not t.endswith("0")), t
        assert t != "-0"


def test_decimal_text_mixed_exponents_and_resolutions() -> None:
    k = decimal_exponents(RES)
    assert k is not None and k.tolist() == [3, 3, 1]
    assert decimal_exponents(np.array([0.001, 0.25])) is None
    t = np.array([0, 2, 1, 2, 0], dtype=np.int64)
    v = np.array([2365, 2301, -5, -3, 40], dtype=np.int32)
    assert decimal_text(v, k[t]).to_pylist() == ["2.365", "230.1", "-0.005", "-0.3", "0.04"]


def _reads(idx: list[int], types: list[int], ends: list[int], values: list[int],
           quality: list[int]) -> pa.Table:
    return pa.table([pa.array(idx, pa.int32()), pa.array(types, pa.uint8()),
                     pa.array(ends).cast(schema.TS), pa.array(values, pa.int32()),
                     pa.array(quality, pa.uint32())], schema=schema.READS)


def test_read_and_register_lines_documented_format() -> None:
    heads = meter_heads(pa.array(["100000001", 'M"2'], pa.string()))
    reads = _reads([0, 1], [0, 2], [1767226500, 1767226800], [250, 2301], [1, 0])
    lines = read_lines(heads, np.array([0, 1]), NAMES, np.array([0, 2]), RES, reads)
    assert lines.to_pylist() == [
        ('{"meter":"100000001","type":"kwh_del","end":"2026-01-01T00:15:00Z","value":0.25,'
        '"quality":1}\n'),
        ('{"meter":"M\\"2","type":"volts","end":"2026-01-01T00:20:00Z","value":230.1,'
        '"quality":0}\n')]
    regs = pa.table([pa.array([0], pa.int32()), pa.array([0], pa.uint8()),
                     pa.array([1767312000]).cast(schema.TS), pa.array([1234500], pa.int64())],
                    schema=schema.REGISTERS)
    assert register_lines(heads, np.array([0]), pa.array(["kwh_del_total"]), np.array([0]),
                          np.array([0.001]), regs).to_pylist() == [
        ('{"meter":"100000001","type":"kwh_del_total","time":"2026-01-02T00:00:00Z",'
        '"value":1234.5}\n')]


def test_many_distinct_times_give_the_same_lines() -> None:
    """Few distinct times: text from a table per (type, time); many: joined per row.
    Both give the same lines."""
    rng = np.random.default_rng(7)
    n = 400
    idx = rng.integers(0, 50, n)
    types = rng.integers(0, 3, n)
    values = rng.integers(-10_000, 10_000, n).tolist()
    heads = meter_heads(pa.array([f"M{i}" for i in range(50)], pa.string()))
    few = _reads(idx.tolist(), types.tolist(), (1767225600 + 900 * (idx % 4)).tolist(),
                 values, [0] * n)
    many = _reads(idx.tolist(), types.tolist(), (1767225600 + 7 * np.arange(n)).tolist(),
                  values, [0] * n)
    for table in (few, many):
        got = read_lines(heads, idx, NAMES, types, RES, table).to_pylist()
        ends = table.column("interval_end").to_pylist()
        for line, i, t, e, v in zip(got, idx, types, ends, values, strict=True):
            row = json.loads(line)
            assert row == {"meter": f"M{i}", "type": NAMES[int(t)].as_py(),
                           "end": e.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "value": float(Decimal(v).scaleb(-3 if t < 2 else -1)),
                           "quality": 0}
