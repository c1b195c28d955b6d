"""Tariffs: the YAML schema (pydantic), read once and validated, immutable.

A tariff file holds **one version** of one tariff: ``tariff_id``, ``version`` (a positive
integer) and ``effective_from`` (a local date in the tariff's ``timezone``) say which;
a later version of the same tariff, effective later, replaces it from that date on
(:class:`headend.dr.TariffStore` keeps every version). ``kind`` is one of
:data:`headend.model.dr.TARIFF_KINDS`:

* ``flat``: ``price`` [currency/kWh] at every hour;
* ``tou``: ``seasons``, each a set of months and ``periods``; a period has a price, the
  day types it applies to (:data:`headend.model.dr.DAY_TYPES`) and a local ``start`` and
  ``end`` (``HH:MM``, end exclusive, ``24:00`` allowed, ``22:00``-``06:00`` wraps past
  midnight); a period without ``start``/``end`` takes every minute of its day types that
  no timed period takes. Every minute of every day type of every month must fall in
  exactly one period;
* ``cpp``: a ``tou`` tariff plus ``critical_peak``: on its ``days`` (local dates the
  utility calls, added as events come), the window ``start``-``end`` is priced at its
  ``price`` (period ``critical_peak``);
* ``rtp``: ``real_time.prices``, a series of ``{start, price}`` (``start`` an ISO 8601
  time with an offset); each price holds from its start to the next one, plus
  ``real_time.adder``.

Any kind may have ``tiers`` (consumption blocks per billing period, a local calendar
month): each tier adds its ``adder`` [currency/kWh] to the energy price of the kWh that
fall in it (``up_to_kwh``: the block's upper bound in the month, the last block
unbounded), plus ``demand_charge`` [currency/kW of the month's peak demand] and
``fixed_charge`` [currency per month]. An interval's period is that of the local
minute at which it *starts* (as in :mod:`headend.analytics.shapes`).

:func:`load_tariff` / :func:`parse_tariff` raise :class:`~headend.errors.ConfigError`
with one line naming the field that is wrong.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from headend.errors import ConfigError
from headend.model import dr

__all__ = ["CriticalPeak", "Period", "RealTime", "RealTimePrice", "Season", "Tariff", "Tier",
           "load_tariff", "minutes_of", "parse_tariff"]

DayType = Literal["weekday", "weekend", "holiday"]
ALL_DAY_TYPES: tuple[DayType, ...] = ("weekday", "weekend", "holiday")
assert set(ALL_DAY_TYPES) == set(dr.DAY_TYPES)

_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Price = Annotated[float, Field(allow_inf_nan=False)]


def _minute(text: str) -> int:
    m = _HHMM.match(text)
    if m is None or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"{text!r} is not a local time HH:MM (00:00 to 24:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Window(_Frozen):
    """A local time window; both or neither of ``start``/``end``."""

    start: str | None = None
    end: str | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):  # YAML reads 17:00 as 1020 (base 60)
            v = f"{v // 60:02d}:{v % 60:02d}"
        if v is not None:
            _minute(str(v))
        return v if v is None else str(v)

    @model_validator(mode="after")
    def _both(self) -> _Window:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither")
        if self.start is not None and self.start == self.end:
            raise ValueError("start and end are equal: an empty window")
        return self


def minutes_of(start: str, end: str) -> tuple[tuple[int, int], ...]:
    """Local minute ranges ``[a, b)`` of a window ``start``-``end`` (wrapping midnight
    when ``end`` is before ``start``)."""
    a, b = _minute(start), _minute(end)
    if a < b:
        return ((a, b),)
    return tuple(r for r in ((a, 1440), (0, b)) if r[0] < r[1])


class Period(_Window):
    """A time-of-use period: ``price`` [currency/kWh] on ``day_types``, in a window."""

    name: Annotated[str, Field(pattern=_ID)]
    price: Price
    day_types: tuple[DayType, ...] = ALL_DAY_TYPES

    @field_validator("name")
    @classmethod
    def _reserved(cls, v: str) -> str:
        if v in (dr.CRITICAL_PEAK_PERIOD, dr.REAL_TIME_PERIOD, dr.FLAT_PERIOD):
            raise ValueError(f"{v!r} is a reserved period name")
        return v


class Season(_Frozen):
    """Months (1..12) and the periods of their days."""

    name: Annotated[str, Field(pattern=_ID)]
    months: tuple[Annotated[int, Field(ge=1, le=12)], ...]
    periods: tuple[Period, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _cover(self) -> Season:
        for day_type in ALL_DAY_TYPES:
            cover = [0] * 1440
            untimed = [p.name for p in self.periods
                       if day_type in p.day_types and p.start is None]
            if len(untimed) > 1:
                raise ValueError(f"day type {day_type}: several periods without start/end "
                                 f"({', '.join(untimed)})")
            for p in self.periods:
                if day_type in p.day_types and p.start is not None and p.end is not None:
                    for a, b in minutes_of(p.start, p.end):
                        for i in range(a, b):
                            cover[i] += 1
            if max(cover) > 1:
                m = cover.index(max(cover))
                raise ValueError(f"day type {day_type}: periods overlap at "
                                 f"{m // 60:02d}:{m % 60:02d}")
            if not untimed and min(cover) == 0:
                m = cover.index(0)
                raise ValueError(f"day type {day_type}: no period covers "
                                 f"{m // 60:02d}:{m % 60:02d}")
        return self


class CriticalPeak(_Window):
    """The critical-peak price [currency/kWh] in a window of the called ``days``."""

    price: Price
    days: tuple[date, ...] = ()

    @model_validator(mode="after")
    def _window(self) -> CriticalPeak:
        if self.start is None:
            raise ValueError("critical_peak needs start and end")
        return self


class RealTimePrice(_Frozen):
    """One step of a price series: ``price`` [currency/kWh] from ``start`` on."""

    start: datetime
    price: Price

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("start needs an offset (Z or +HH:MM)")
        return v


class RealTime(_Frozen):
    """A price series, increasing starts; ``adder`` [currency/kWh] on every price."""

    prices: tuple[RealTimePrice, ...] = Field(min_length=1)
    adder: Price = 0.0

    @model_validator(mode="after")
    def _increasing(self) -> RealTime:
        for a, b in pairwise(self.prices):
            if b.start <= a.start:
                raise ValueError(f"prices: start {b.start.isoformat()} is not after "
                                 f"{a.start.isoformat()}")
        return self


class Tier(_Frozen):
    """A consumption block of a billing period: kWh up to ``up_to_kwh`` (cumulative in
    the month; None: unbounded) get ``adder`` [currency/kWh] on top of the price."""

    up_to_kwh: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    adder: Price = 0.0


class Tariff(_Frozen):
    """One version of a tariff (see the module docstring)."""

    tariff_id: Annotated[str, Field(pattern=_ID)]
    version: Annotated[int, Field(ge=1)]
    effective_from: date
    kind: Literal["flat", "tou", "cpp", "rtp"]
    timezone: str
    name: str = ""
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    holidays: tuple[date, ...] = ()
    price: Price | None = None
    seasons: tuple[Season, ...] = ()
    critical_peak: CriticalPeak | None = None
    real_time: RealTime | None = None
    tiers: tuple[Tier, ...] = ()
    demand_charge: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    fixed_charge: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{v!r} is not an IANA time zone") from exc
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: tuple[Tier, ...]) -> tuple[Tier, ...]:
        if not v:
            return v
        bounds = [t.up_to_kwh for t in v]
        if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier is unbounded (no up_to_kwh), and it must be")
        finite = [b for b in bounds[:-1] if b is not None]
        if any(b >= c for b, c in pairwise(finite)):
            raise ValueError("up_to_kwh must increase from tier to tier")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> Tariff:
        given = {"price": self.price is not None, "seasons": bool(self.seasons),
                 "critical_peak": self.critical_peak is not None,
                 "real_time": self.real_time is not None}
        need = {"flat": {"price"}, "tou": {"seasons"}, "cpp": {"seasons", "critical_peak"},
                "rtp": {"real_time"}}[self.kind]
        for f in sorted(need - {k for k, v in given.items() if v}):
            raise ValueError(f"{f}: a {self.kind} tariff needs it")
        for f in sorted({k for k, v in given.items() if v} - need):
            raise ValueError(f"{f}: not used by a {self.kind} tariff")
        if self.seasons:
            months = [m for s in self.seasons for m in s.months]
            for m in range(1, 13):
                if months.count(m) != 1:
                    raise ValueError(f"seasons: month {m} is in {months.count(m)} seasons, "
                                     "not exactly one")
        return self

    def season_of_month(self) -> list[int]:
        """Index into :attr:`seasons` of each month 1..12 (position 0 unused: -1)."""
        out = [-1] * 13
        for i, s in enumerate(self.seasons):
            for m in s.months:
                out[m] = i
        return out

    def canonical(self) -> dict[str, Any]:
        """The content as JSON-able data (what two loads of one version compare)."""
        out: dict[str, Any] = self.model_dump(mode="json")
        return out


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(x) for x in loc)


def parse_tariff(doc: Any, *, source: str = "tariff") -> Tariff:
    """Validate a parsed YAML/JSON document; ConfigError names the first bad field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a tariff is a mapping (tariff_id, version, ...)")
    try:
        return Tariff.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = f"{_where(err['loc'])}: " if err["loc"] else ""  # else msg names it
        raise ConfigError(f"{source}: {where}{msg}") from exc


def load_tariff(path: Path) -> Tariff:
    """Read one tariff version from a YAML file (:func:`parse_tariff`)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read tariff file {path}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    return parse_tariff(doc, source=str(path))
