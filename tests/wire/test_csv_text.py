"""Vectorised text primitives checked against Python's decimal and datetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.wire.csvfmt import _text as tx

decimal_texts = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}{'.' + frac if frac is not None else ''}",
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=1, max_size=12),
    st.one_of(st.none(), st.text("0123456789", max_size=12)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(decimal_texts, min_size=1, max_size=50), st.sampled_from([0, 1, 3, 6]))
def test_parse_decimal_matches_decimal_half_away_from_zero(texts: list[str], k: int) -> None:
    lo, hi = -(2**31), 2**31 - 1
    values, ok = tx.parse_decimal(pa.array(texts), k, lo=lo, hi=hi)
    for text, v, good in zip(texts, values.tolist(), ok.tolist(), strict=True):
        ref = int((Decimal(text) * 10**k).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        assert good == (lo <= ref <= hi), text
        assert v == (ref if good else 0), text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from(["T", " "]),
    st.booleans(),
), min_size=1, max_size=30))
def test_parse_time_matches_datetime(items: list[tuple[datetime, int, str, bool]]) -> None:
    texts, expected = [], []
    for local, offset_min, sep, colon in items:
        local = local.replace(microsecond=0)
        sign = "-" if offset_min < 0 else "+"
        hh, mm = divmod(abs(offset_min), 60)
        zone = f"{sign}{hh:02d}{':' if colon else ''}{mm:02d}"
        texts.append(local.strftime(f"%Y-%m-%d{sep}%H:%M:%S").rjust(19, "0") + zone)
        aware = local.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
        expected.append(int((aware - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()))
    seconds, status = tx.parse_time(pa.array(texts))
    assert status.tolist() == [tx.TIME_OK] * len(texts)
    assert seconds.tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30),
       st.sampled_from([0, 1, 3]))
def test_format_decimal_is_exact(values: list[int], k: int) -> None:
    texts = tx.format_decimal(np.array(values, np.int64), k).to_pylist()
    for v, text in zip(values, texts, strict=True):
        assert Decimal(text) == Decimal(v).scaleb(-k)
        assert len(text.partition(".")[2]) == k
