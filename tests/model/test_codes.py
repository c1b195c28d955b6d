"""The model: codes round-trip, keys sort like tuples, docs/codes.md is current."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headend.model import codes, schema
from headend.model.docs import render


def test_docs_codes_is_generated_from_the_model() -> None:
    doc = Path(__file__).parents[2] / "docs" / "codes.md"
    assert doc.read_text() == render(), "run: python -m headend.model.docs > docs/codes.md"


@given(st.integers(0, 31), st.integers(0, 127), st.integers(0, 1023), st.integers(0, 1023))
def test_event_code_packing_round_trips(t: int, d: int, s: int, e: int) -> None:
    text = f"{t}.{d}.{s}.{e}"
    assert codes.event_code_str(codes.pack_event_code(text)) == text


@pytest.mark.parametrize("bad", ["3.26.0", "3.26.0.85.1", "32.0.0.0", "3.128.0.0", "a.b.c.d", ""])
def test_malformed_event_codes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        codes.pack_event_code(bad)


def test_required_event_codes_are_known() -> None:
    known = {e.code for e in codes.EVENT_TYPES}
    assert {"3.26.0.85", "3.26.0.216", "3.12.29.212", "3.26.131.223", "3.26.131.248"} <= known
    assert codes.EVENT.power_fail == codes.pack_event_code("3.26.0.85")


def test_quality_mask_round_trip_and_categories() -> None:
    mask = codes.quality_mask("1.2.32;3.8.1")
    assert codes.quality_to_str(mask) == "1.2.32;3.8.1"
    assert mask & codes.ESTIMATED_MASK
    assert all(q.category == 8 for q in codes.QUALITY_CODES if (1 << q.bit) & codes.ESTIMATED_MASK)
    with pytest.raises(KeyError):
        codes.quality_mask("9.9.9")
    arr = np.array([0, mask, mask], dtype=np.uint32)
    assert codes.quality_str_array(arr).tolist() == ["", "1.2.32;3.8.1", "1.2.32;3.8.1"]


def test_reading_type_cim_measuring_period() -> None:
    kwh = codes.reading_type("kwh_del")
    assert kwh.cim_for(900).split(".")[2] == "2"
    assert kwh.cim_for(300).split(".")[2] == "6"
    assert kwh.cim_for(3600).split(".")[2] == "7"


@given(st.lists(st.tuples(st.integers(0, schema.MAX_METER_IDX), st.integers(0, 31),
                          st.integers(schema.KEY_EPOCH_S, schema.KEY_EPOCH_S + 2**32 - 1)),
                min_size=1, max_size=50))
def test_read_key_sorts_like_the_tuple_and_round_trips(rows: list[tuple[int, int, int]]) -> None:
    m = np.array([r[0] for r in rows], np.int32)
    rt = np.array([r[1] for r in rows], np.uint8)
    t = np.array([r[2] for r in rows], np.int64)
    key = schema.read_key(m, rt, t)
    assert [tuple(x) for x in np.array(rows)[np.argsort(key, kind="stable")]] == sorted(
        rows, key=lambda r: (r[0], r[1], r[2]))
    m2, rt2, t2 = schema.split_key(key)
    assert (m2 == m).all() and (rt2 == rt).all() and (t2 == t).all()
