"""Tariffs: the schema's checks, and prices and billing determinants of every kind (flat,
time-of-use with seasons and day types, critical peak, real time), tiers, effective
dates and versions, DST days in a local time zone; cross-checked against the analytics
billing determinants."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.dr import determinants, parse_tariff, price_intervals
from headend.errors import ConfigError
from headend.model.schema import TS

NY = "America/New_York"


def _t(**kw: Any) -> Any:
    doc = {"tariff_id": "t", "version": 1, "effective_from": "2026-01-01", "timezone": NY}
    doc.update(kw)
    return parse_tariff(doc)


TOU: dict[str, Any] = {"kind": "tou", "holidays": ["2026-07-03"], "seasons": [
    {"name": "summer", "months": [6, 7, 8, 9], "periods": [
        {"name": "peak", "day_types": ["weekday"], "start": "14:00", "end": "19:00",
         "price": 0.30},
        {"name": "off_peak", "price": 0.10}]},
    {"name": "winter", "months": [1, 2, 3, 4, 5, 10, 11, 12], "periods": [
        {"name": "night", "start": "22:00", "end": "06:00", "price": 0.05},
        {"name": "peak", "day_types": ["weekday"], "start": "17:00", "end": "21:00",
         "price": 0.20},
        {"name": "off_peak", "price": 0.12}]}]}


def _local(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(NY)).timestamp())


def _iv(ends: list[int] | np.ndarray, kwh: list[float] | np.ndarray, meter: int | np.ndarray = 0,
        interval_s: int = 900) -> pa.Table:
    ends = np.asarray(ends, np.int64)
    return pa.table({"meter_idx": pa.array(np.broadcast_to(meter, len(ends)), pa.int32()),
                     "interval_end": pa.array(ends).cast(TS),
                     "interval_s": pa.array(np.full(len(ends), interval_s), pa.int32()),
                     "kwh": pa.array(np.asarray(kwh, np.float64))})


def _col(t: pa.Table, c: str) -> list[Any]:
    return t.column(c).to_pylist()


# ------------------------------------------------------------------- schema


@pytest.mark.parametrize(("change", "field"), [
    ({"kind": "hourly"}, "kind"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"version": 0}, "version"),
    ({"tariff_id": "a b"}, "tariff_id"),
    ({"kind": "flat"}, "price"),  # a flat tariff needs a price
    ({"price": 0.1}, "price"),  # not used by a tou tariff
    ({"currency": "euro"}, "currency"),
    ({"seasons": [{"name": "s", "months": [1, 2], "periods": [
        {"name": "p", "price": 0.1}]}]}, "seasons: month 3"),
    ({"seasons": [{"name": "s", "months": list(range(1, 13)), "periods": [
        {"name": "p", "start": "08:00", "end": "12:00", "price": 0.1}]}]}, "no period covers"),
    ({"seasons": [{"name": "s", "months": list(range(1, 13)), "periods": [
        {"name": "a", "start": "08:00", "end": "12:00", "price": 0.1},
        {"name": "b", "start": "11:00", "end": "13:00", "price": 0.1},
        {"name": "c", "price": 0.1}]}]}, "overlap at 11:00"),
    ({"seasons": [{"name": "s", "months": list(range(1, 13)), "periods": [
        {"name": "a", "start": "08:00", "price": 0.1}]}]}, "both start and end"),
    ({"seasons": [{"name": "s", "months": list(range(1, 13)), "periods": [
        {"name": "a", "start": "25:00", "end": "26:00", "price": 0.1}]}]}, "HH:MM"),
    ({"seasons": [{"name": "s", "months": list(range(1, 13)), "periods": [
        {"name": "critical_peak", "price": 0.1}]}]}, "reserved"),
    ({"tiers": [{"up_to_kwh": 100}, {"up_to_kwh": 50}, {}]}, "increase"),
    ({"tiers": [{"up_to_kwh": 100}]}, "tiers"),
    ({"unknown": 1}, "unknown"),
])
def test_a_bad_tariff_names_its_field(change: dict[str, Any], field: str) -> None:
    doc = {**TOU, **change}
    with pytest.raises(ConfigError) as info:
        _t(**doc)
    msg = str(info.value)
    assert field in msg and "\n" not in msg, msg


def test_rtp_needs_offsets_and_increasing_starts() -> None:
    with pytest.raises(ConfigError, match="offset"):
        _t(kind="rtp", real_time={"prices": [{"start": "2026-07-01T00:00:00", "price": 1}]})
    with pytest.raises(ConfigError, match="not after"):
        _t(kind="rtp", real_time={"prices": [{"start": "2026-07-01T01:00:00Z", "price": 1},
                                             {"start": "2026-07-01T00:00:00Z", "price": 1}]})


def test_yaml_sexagesimal_times_are_read_as_times() -> None:
    """Unquoted 17:00 is the integer 1020 in YAML 1.1; it means 17:00."""
    import yaml

    doc = yaml.safe_load("name: p\nstart: 17:00\nend: 21:30\nprice: 1\n")
    assert doc["start"] == 1020
    t = _t(kind="tou", seasons=[{"name": "s", "months": list(range(1, 13)),
                                 "periods": [doc, {"name": "o", "price": 0}]}])
    assert (t.seasons[0].periods[0].start, t.seasons[0].periods[0].end) == ("17:00", "21:30")


# ------------------------------------------------------------------- pricing


def test_flat() -> None:
    t = _t(kind="flat", price=0.15, fixed_charge=9.0, demand_charge=2.0)
    ends = [_local(2026, 2, 3, 10, 15), _local(2026, 2, 3, 10, 30)]
    p = price_intervals([t], _iv(ends, [1.0, 3.0]))
    assert _col(p, "period") == ["flat", "flat"] and _col(p, "price") == [0.15, 0.15]
    assert _col(p, "cost") == pytest.approx([0.15, 0.45])
    _, s = determinants([t], _iv(ends, [1.0, 3.0]))
    row = s.to_pylist()[0]
    assert row["kwh"] == 4.0 and row["max_kw"] == 12.0  # 3 kWh in 15 min
    assert row["max_interval_end"] == datetime.fromtimestamp(ends[1], UTC)
    assert row["demand_cost"] == 24.0 and row["fixed_cost"] == 9.0
    assert row["total_cost"] == pytest.approx(0.6 + 24 + 9)


def test_tou_seasons_day_types_holidays_and_a_wrapping_period() -> None:
    t = _t(**TOU)
    cases = [  # interval end (local), expected period and price
        (_local(2026, 7, 1, 14, 15), "peak", 0.30),  # summer Wednesday 14:00-14:15
        (_local(2026, 7, 1, 14, 0), "off_peak", 0.10),  # starts 13:45
        (_local(2026, 7, 1, 19, 0), "peak", 0.30),  # starts 18:45
        (_local(2026, 7, 1, 19, 15), "off_peak", 0.10),
        (_local(2026, 7, 3, 15, 0), "off_peak", 0.10),  # holiday (a Friday)
        (_local(2026, 7, 4, 15, 0), "off_peak", 0.10),  # Saturday
        (_local(2026, 1, 6, 18, 0), "peak", 0.20),  # winter Tuesday
        (_local(2026, 1, 6, 23, 0), "night", 0.05),
        (_local(2026, 1, 7, 3, 0), "night", 0.05),  # wraps past midnight
        (_local(2026, 1, 7, 6, 15), "off_peak", 0.12),
        (_local(2026, 1, 10, 18, 0), "off_peak", 0.12),  # winter Saturday, no peak
        (_local(2026, 1, 10, 23, 0), "night", 0.05),  # night on every day type
    ]
    p = price_intervals([t], _iv([c[0] for c in cases], [1.0] * len(cases)))
    got = dict(zip(_col(p, "interval_end"), zip(_col(p, "period"), _col(p, "price"),
                                                strict=True), strict=True))
    for end, period, price in cases:
        assert got[datetime.fromtimestamp(end, UTC)] == (period, price), end


def test_critical_peak_overrides_only_its_window_on_called_days() -> None:
    t = _t(kind="cpp", seasons=TOU["seasons"],
           critical_peak={"price": 0.9, "start": "15:00", "end": "17:00",
                          "days": ["2026-07-21"]})
    ends = [_local(2026, 7, 21, 15, 15), _local(2026, 7, 21, 17, 15),
            _local(2026, 7, 22, 15, 15)]
    p = price_intervals([t], _iv(ends, [1.0, 1.0, 1.0]))
    assert _col(p, "period") == ["critical_peak", "peak", "peak"]
    assert _col(p, "price") == [0.9, 0.3, 0.3]


def test_real_time_steps_and_before_the_first_price() -> None:
    t = _t(kind="rtp", real_time={"adder": 0.01, "prices": [
        {"start": "2026-07-01T00:00:00Z", "price": 0.05},
        {"start": "2026-07-01T01:00:00+00:00", "price": 0.25}]})
    base = int(datetime(2026, 7, 1, tzinfo=UTC).timestamp())
    ends = [base, base + 900, base + 3600, base + 3600 + 900]
    p = price_intervals([t], _iv(ends, [1.0] * 4))
    price = _col(p, "price")
    assert np.isnan(price[0])  # starts 23:45 the day before: no price yet
    assert price[1:] == pytest.approx([0.06, 0.06, 0.26])
    assert _col(p, "period")[1:] == ["real_time"] * 3


def test_tiers_split_an_interval_across_a_bound_and_reset_each_month() -> None:
    t = _t(kind="flat", price=0.10, tiers=[{"up_to_kwh": 5, "adder": 0.0},
                                           {"up_to_kwh": 8, "adder": 0.05},
                                           {"adder": 0.10}])
    jan = [_local(2026, 1, 5, 10, 15 * i) for i in range(1, 4)]
    feb = [_local(2026, 2, 2, 10, 15)]
    iv = _iv(jan + feb, [4.0, 3.0, 2.0, 6.0])
    p = price_intervals([t], iv)
    # Jan: 4 in tier 0; 1 in tier 0 + 2 in tier 1; 1 in tier 1 + 1 in tier 2. Feb: 5 + 1
    assert _col(p, "tier") == [0, 1, 2, 1]
    assert _col(p, "cost") == pytest.approx([0.4, 0.1 + 2 * 0.15, 0.15 + 0.2, 0.5 + 0.15])
    e, s = determinants([t], iv)
    assert [(r["billing_period"], r["tier"], r["kwh"]) for r in e.to_pylist()] == [
        ("2026-01", 0, 5.0), ("2026-01", 1, 3.0), ("2026-01", 2, 1.0),
        ("2026-02", 0, 5.0), ("2026-02", 1, 1.0)]
    assert sum(_col(e, "cost")) == pytest.approx(sum(_col(s, "energy_cost")))


def test_versions_take_effect_on_their_local_date_and_earlier_reads_are_unpriced() -> None:
    v1 = _t(kind="flat", price=0.10, effective_from="2026-03-01", demand_charge=1.0)
    v2 = _t(kind="flat", price=0.20, version=2, effective_from="2026-03-15",
            demand_charge=3.0)
    ends = [_local(2026, 2, 28, 23, 45), _local(2026, 3, 1, 0, 15),
            _local(2026, 3, 15, 0, 0), _local(2026, 3, 15, 0, 15)]
    p = price_intervals([v2, v1], _iv(ends, [1.0, 1.0, 2.0, 1.0]))
    assert _col(p, "version") == [None, 1, 1, 2]  # 00:00 ends an interval of the 14th
    assert _col(p, "price")[1:] == [0.10, 0.10, 0.20]
    _, s = determinants([v1, v2], _iv(ends, [1.0, 1.0, 2.0, 1.0]))
    row = s.to_pylist()[0]
    assert row["kwh"] == 4.0 and row["version"] == 2
    assert row["demand_cost"] == pytest.approx(8.0 * 3.0)  # peak 2 kWh / 15 min, v2's rate


@pytest.mark.parametrize(("day", "intervals", "peak"), [
    (date(2026, 3, 9), 96, 16), (date(2026, 3, 8), 92, 0), (date(2026, 11, 1), 100, 0),
    (date(2026, 3, 10), 96, 16)])
def test_dst_days_count_local_hours(day: date, intervals: int, peak: int) -> None:
    """Every 15-minute interval of a local day, on the DST days of New York: 92 and 100
    intervals; peak 17:00-21:00 on weekdays only (3-8 and 11-01 are Sundays)."""
    t = _t(kind="tou", seasons=[{"name": "y", "months": list(range(1, 13)), "periods": [
        {"name": "peak", "day_types": ["weekday"], "start": "17:00", "end": "21:00",
         "price": 0.3}, {"name": "off_peak", "price": 0.1}]}])
    a = int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(NY)).timestamp())
    nxt = date.fromordinal(day.toordinal() + 1)
    b = int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(NY)).timestamp())
    ends = np.arange(a + 900, b + 1, 900)
    assert len(ends) == intervals
    e, _ = determinants([t], _iv(ends, np.ones(len(ends))))
    got = {r["period"]: r["kwh"] for r in e.to_pylist()}
    assert got.get("peak", 0) == peak and got["off_peak"] == intervals - peak


def test_same_energy_per_period_as_the_analytics_billing_determinants() -> None:
    from headend.analytics.shapes import TouSchedule, billing_determinants
    from headend.model.schema import READS

    rng = np.random.default_rng(3)
    n, m = 24 * 4 * 40, 3
    t0 = int(datetime(2026, 1, 20, tzinfo=UTC).timestamp())
    ends = np.tile(t0 + 900 * np.arange(1, n + 1), m)
    meter = np.repeat(np.arange(m), n)
    wh = rng.integers(0, 500, n * m)
    reads = pa.table({"meter_idx": pa.array(meter, pa.int32()),
                      "reading_type": pa.array(np.zeros(n * m, np.uint8)),
                      "interval_end": pa.array(ends).cast(TS),
                      "value": pa.array(wh.astype(np.int32)),
                      "quality": pa.array(np.zeros(n * m, np.uint32))}, schema=READS)
    ivl = np.full(m, 900, np.int32)
    ours = _t(kind="tou", holidays=["2026-02-16"], seasons=[{
        "name": "y", "months": list(range(1, 13)), "periods": [
            {"name": "peak", "day_types": ["weekday"], "start": "16:00", "end": "21:00",
             "price": 0.3}, {"name": "off_peak", "price": 0.1}]}])
    from headend.dr import interval_kwh

    e, _ = determinants([ours], interval_kwh(reads, ivl))
    theirs, _ = billing_determinants(reads, ivl, tz=NY, tou=TouSchedule(holidays=("2026-02-16",)))
    a = sorted((r["meter_idx"], r["billing_period"], r["period"], round(r["kwh"], 9))
               for r in e.to_pylist())
    b = sorted((r["meter_idx"], r["period"], r["tou"], round(r["kwh"], 9))
               for r in theirs.to_pylist())
    assert a == b


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.floats(0.5, 20, allow_nan=False), min_size=0, max_size=3),
       st.integers(0, 2**31 - 1))
def test_tier_split_conserves_energy_and_cost(kwh: list[float], blocks: list[float],
                                              seed: int) -> None:
    """Tier kWh add up to the interval kWh; costs add up per meter and month; each
    tier holds at most its block's size per billing period."""
    bounds = np.cumsum(blocks).tolist()
    tiers = [{"up_to_kwh": b, "adder": 0.01 * (i + 1)} for i, b in enumerate(bounds)]
    t = _t(kind="flat", price=0.1, tiers=[*tiers, {"adder": 0.5}])
    rng = np.random.default_rng(seed)
    ends = _local(2026, 4, 1, 0) + 900 * np.sort(rng.choice(30 * 96 * 2, len(kwh),
                                                            replace=False) + 1)
    meter = rng.integers(0, 2, len(kwh))
    iv = _iv(ends, kwh, meter)
    e, s = determinants([t], iv)
    assert sum(_col(e, "kwh")) == pytest.approx(sum(kwh))
    assert sum(_col(e, "cost")) == pytest.approx(sum(_col(s, "energy_cost")))
    sizes = np.diff([0.0, *bounds])
    for r in e.to_pylist():
        if r["tier"] < len(sizes):
            assert r["kwh"] <= sizes[r["tier"]] + 1e-9
    p = price_intervals([t], iv)
    assert sum(_col(p, "cost")) == pytest.approx(sum(_col(s, "energy_cost")))
