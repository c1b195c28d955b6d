"""Fault scenarios: small frozen dataclasses resolved into concrete incidents.

A scenario is *resolved* against a :class:`~headend.sim.utility.Utility` into
:class:`Incident` objects (devices, meters, times) drawn from the utility's seed; see
:mod:`headend.sim.faults` for the plan and ground truth, and :mod:`headend.sim` for what
each kind does to the data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import ConfigError
from headend.sim.utility import Utility

__all__ = [
    "SCENARIOS",
    "ClockSkew",
    "CoverRemoved",
    "Duplicate",
    "FlatLine",
    "Gap",
    "Incident",
    "LateUpload",
    "MagneticTamper",
    "Momentary",
    "Outage",
    "Retransmission",
    "ReverseEnergy",
    "Scenario",
    "Spike",
    "Storm",
    "VoltageExcursion",
    "WaterLeak",
]

I32 = npt.NDArray[np.int32]

LEVELS: Final = ("meter", "transformer", "feeder", "substation", "collector")


@dataclass(eq=False)
class Incident:
    """One injected fault: ``kind`` on ``device_id`` at ``level``, over ``[start_s, end_s)``."""

    kind: str
    level: str
    device_id: str
    meters: I32
    start_s: int
    end_s: int
    detail: dict[str, float | int | str] = field(default_factory=dict)
    events_sent: int = 0
    events_lost: int = 0


@dataclass(frozen=True, slots=True)
class _Ctx:
    u: Utility
    rng: np.random.Generator

    def when(self, start: dt.datetime | None, lo: float = 0.1, hi: float = 0.6) -> int:
        if start is not None:
            return int(start.timestamp())
        span = self.u.end_s - self.u.start_s
        return int(self.u.start_s + self.rng.integers(int(span * lo), int(span * hi)))

    def devices(self, level: str, count: int) -> list[tuple[str, I32]]:
        """Pick ``count`` distinct devices of ``level``; returns (id, meter_idx) pairs."""
        u = self.u
        if level == "meter":
            idx = self.rng.choice(u.n_electric, min(count, u.n_electric), replace=False)
            ids = u.meters.column("meter_id").take(pa.array(np.sort(idx))).to_pylist()
            return [(i, np.array([m], np.int32)) for i, m in zip(ids, np.sort(idx), strict=True)]
        table = {"transformer": u.transformers, "feeder": u.feeders,
                 "substation": u.substations}.get(level)
        if table is None:
            raise ConfigError(f"level must be one of {LEVELS[:4]}, not {level!r}")
        pick = np.sort(self.rng.choice(table.num_rows, min(count, table.num_rows), replace=False))
        ids = table.column(f"{level}_id").take(pa.array(pick)).to_pylist()
        first = table.column("first_meter").to_numpy()[pick]
        n = table.column("n_meters").to_numpy()[pick]
        return [(i, np.arange(f, f + k, dtype=np.int32)) for i, f, k in zip(ids, first, n,
                                                                             strict=True)]

    def meters_of(self, commodity: str, count: int) -> I32:
        u = self.u
        lo, hi = {"electric": (0, u.n_electric),
                  "water": (u.n_electric, u.n_electric + u.n_water),
                  "gas": (u.n_electric + u.n_water, u.n_meters)}[commodity]
        k = min(count, hi - lo)
        return np.sort(lo + self.rng.choice(hi - lo, k, replace=False)).astype(np.int32)

    def meter_id(self, m: int) -> str:
        return str(self.u.meters.column("meter_id")[m].as_py())

    def collectors(self, count: int) -> list[tuple[str, int, I32]]:
        u = self.u
        n = u.collectors.num_rows
        pick = np.sort(self.rng.choice(n, min(count, n), replace=False))
        ids = u.collectors.column("collector_id").take(pa.array(pick)).to_pylist()
        return [(i, int(c), np.flatnonzero(u.meter_collector == c).astype(np.int32))
                for i, c in zip(ids, pick, strict=True)]

    def cycle_end(self, t: int) -> int:
        """First interval end at or after ``t`` [Unix s]."""
        d = self.u.interval_s
        return self.u.start_s + -(-(t - self.u.start_s) // d) * d


class Scenario:
    """Base of the scenario classes: ``resolve`` turns one into incidents."""

    name: str = ""

    def resolve(self, ctx: _Ctx) -> list[Incident]:  # pragma: no cover - abstract
        raise NotImplementedError


def _outage_incident(ctx: _Ctx, kind: str, level: str, dev: str, meters: I32, start: int,
                     end: int, gasp_loss: float, restore_loss: float, **detail: float | str
                     ) -> Incident:
    inc = Incident(kind, level, dev, meters, start, end, dict(detail))
    inc.detail.update(gasp_loss=gasp_loss, restore_loss=restore_loss)
    return inc


@dataclass(frozen=True)
class Outage(Scenario):
    """Sustained outages of ``count`` devices at ``level``; last gasps and restorations.

    A ``gasp_loss`` share of last gasps (3.26.0.85) and ``restore_loss`` share of
    restorations (3.26.0.216) never reach the head end. No interval reads exist for
    intervals wholly inside the outage; partial intervals carry quality 1.2.32. A meter
    already dark under an enclosing outage sends no gasp, and restores only when the
    last outage covering it ends (events follow the union of the outages per meter).
    """

    level: str = "transformer"
    count: int = 1
    start: dt.datetime | None = None
    duration_s: int = 3600
    gasp_loss: float = 0.0
    restore_loss: float = 0.0
    name = "outage"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        t0 = ctx.when(self.start)
        return [_outage_incident(ctx, "outage", self.level, dev, m, t0, t0 + self.duration_s,
                                 self.gasp_loss, self.restore_loss)
                for dev, m in ctx.devices(self.level, self.count)]


@dataclass(frozen=True)
class Momentary(Outage):
    """Momentary interruptions (< 5 min): gasp and restoration, reads flagged 1.2.32."""

    level: str = "feeder"
    duration_s: int = 20
    name = "momentary"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        if not 0 < self.duration_s < 300:
            raise ConfigError("a momentary interruption lasts under 300 s")
        t0 = ctx.when(self.start)
        return [_outage_incident(ctx, "momentary", self.level, dev, m, t0, t0 + self.duration_s,
                                 self.gasp_loss, self.restore_loss)
                for dev, m in ctx.devices(self.level, self.count)]


@dataclass(frozen=True)
class Storm(Scenario):
    """Hundreds of near-simultaneous transformer and feeder outages, 30 % of gasps lost.

    Devices fail within ``spread_s`` of ``start``; durations are log-normal around
    ``median_duration_s`` (10 min to 12 h). Counts are capped at a quarter of the
    utility's transformers / feeders.
    """

    start: dt.datetime | None = None
    n_transformers: int = 300
    n_feeders: int = 20
    spread_s: int = 1800
    median_duration_s: int = 5400
    gasp_loss: float = 0.3
    restore_loss: float = 0.05
    name = "storm"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        t0 = ctx.when(self.start, 0.1, 0.4)
        u = ctx.u
        out: list[Incident] = []
        for level, want, total in (("feeder", self.n_feeders, u.feeders.num_rows),
                                   ("transformer", self.n_transformers, u.transformers.num_rows)):
            n = min(want, total // 4)
            for dev, m in ctx.devices(level, n):
                s = t0 + int(ctx.rng.integers(0, self.spread_s + 1))
                d = int(np.clip(self.median_duration_s * ctx.rng.lognormal(0.0, 0.6), 600,
                                43_200))
                out.append(_outage_incident(ctx, "outage", level, dev, m, s, s + d,
                                            self.gasp_loss, self.restore_loss, storm=1))
        return out


@dataclass(frozen=True)
class CoverRemoved(Scenario):
    """Meter cover removed (3.12.29.212); the interval containing it is flagged 1.3.0."""

    count: int = 1
    start: dt.datetime | None = None
    name = "cover_removed"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        for m in ctx.meters_of("electric", self.count):
            t = ctx.when(self.start)
            out.append(Incident("cover_removed", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), t, t + 1))
        return out


@dataclass(frozen=True)
class MagneticTamper(Scenario):
    """Magnetic tamper (3.12.66.257): the meter under-registers by ``factor``, reads 1.3.0."""

    count: int = 1
    start: dt.datetime | None = None
    duration_s: int = 6 * 3600
    factor: float = 0.4
    name = "magnetic_tamper"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        for m in ctx.meters_of("electric", self.count):
            t = ctx.when(self.start)
            out.append(Incident("magnetic_tamper", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), t, t + self.duration_s,
                                {"factor": self.factor}))
        return out


@dataclass(frozen=True)
class ReverseEnergy(Scenario):
    """Reverse energy flow (3.26.93.219): ``kwh_del`` drops to 0 (PV meters: the load shows
    on ``kwh_rec``), reads flagged 1.3.1."""

    count: int = 1
    start: dt.datetime | None = None
    duration_s: int = 6 * 3600
    name = "reverse_energy"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        for m in ctx.meters_of("electric", self.count):
            t = ctx.when(self.start)
            out.append(Incident("reverse_energy", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), t, t + self.duration_s))
        return out


@dataclass(frozen=True)
class VoltageExcursion(Scenario):
    """Under- or over-voltage on a device's meters: volts shift by ``delta_v`` [V];
    two-way meters send 3.26.131.223 (under) or 3.26.131.248 (over) at the start."""

    direction: str = "under"
    level: str = "transformer"
    count: int = 1
    start: dt.datetime | None = None
    duration_s: int = 1800
    delta_v: float | None = None
    name = "voltage"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        if self.direction not in ("under", "over"):
            raise ConfigError("direction must be 'under' or 'over'")
        dv = self.delta_v if self.delta_v is not None else (-30.0 if self.direction == "under"
                                                            else 22.0)
        t0 = ctx.when(self.start)
        return [Incident(f"{self.direction}_voltage", self.level, dev, m, t0,
                         t0 + self.duration_s, {"delta_v": dv})
                for dev, m in ctx.devices(self.level, self.count)]


@dataclass(frozen=True)
class WaterLeak(Scenario):
    """Continuous flow >= 24 h on water meters (``rate_lph`` [L/h] on top of use); the
    meter sends 8.31.0.93 after 24 h of flow."""

    count: int = 1
    start: dt.datetime | None = None
    duration_s: int = 36 * 3600
    rate_lph: float = 12.0
    name = "water_leak"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        if self.duration_s < 86_400:
            raise ConfigError("a water leak is continuous flow for at least 24 h")
        out = []
        for m in ctx.meters_of("water", self.count):
            t = ctx.when(self.start, 0.0, 0.01) if self.start is None else ctx.when(self.start)
            out.append(Incident("water_leak", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), t, t + self.duration_s,
                                {"rate_lph": self.rate_lph}))
        return out


@dataclass(frozen=True)
class Spike(Scenario):
    """Single-interval spikes: one ``kwh_del`` read multiplied by ``factor``."""

    count: int = 3
    factor: float = 25.0
    name = "spike"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        d = ctx.u.interval_s
        for m in ctx.meters_of("electric", self.count):
            end = ctx.cycle_end(ctx.when(None, 0.05, 0.95))
            out.append(Incident("spike", "meter", ctx.meter_id(int(m)), np.array([m], np.int32),
                                end - d, end, {"factor": self.factor}))
        return out


@dataclass(frozen=True)
class FlatLine(Scenario):
    """Stale data: ``kwh_del`` repeats the first affected interval's value."""

    count: int = 2
    duration_s: int = 6 * 3600
    name = "flat_line"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        d = ctx.u.interval_s
        for m in ctx.meters_of("electric", self.count):
            s = ctx.cycle_end(ctx.when(None)) - d
            out.append(Incident("flat_line", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), s, s + self.duration_s))
        return out


@dataclass(frozen=True)
class Gap(Scenario):
    """Communication gaps: no reads, registers or events from a meter, never delivered."""

    count: int = 3
    duration_s: int = 2 * 3600
    name = "gap"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        d = ctx.u.interval_s
        for m in np.sort(ctx.rng.choice(ctx.u.n_meters, min(self.count, ctx.u.n_meters),
                                        replace=False)).astype(np.int32):
            s = ctx.cycle_end(ctx.when(None)) - d
            out.append(Incident("gap", "meter", ctx.meter_id(int(m)), np.array([m], np.int32),
                                s, s + self.duration_s))
        return out


@dataclass(frozen=True)
class Duplicate(Scenario):
    """A collector's upload sent again ``delay_cycles`` later, unflagged (a duplicate)."""

    count: int = 3
    delay_cycles: int = 1
    name = "duplicate"
    _kind = "duplicate"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        d = ctx.u.interval_s
        for cid, c, m in ctx.collectors(self.count):
            t = ctx.cycle_end(ctx.when(None, 0.05, 0.9))
            out.append(Incident(self._kind, "collector", cid, m, t, t + self.delay_cycles * d,
                                {"collector": c}))
        return out


@dataclass(frozen=True)
class Retransmission(Duplicate):
    """A collector's upload sent again with ``FLAG_RETRANSMISSION`` set."""

    name = "retransmission"
    _kind = "retransmission"


@dataclass(frozen=True)
class LateUpload(Scenario):
    """A collector's uploads held back for ``duration_s`` and delivered together at the
    end, newest first (late and out of order)."""

    count: int = 1
    duration_s: int = 2 * 3600
    name = "late_upload"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        for cid, c, m in ctx.collectors(self.count):
            s = ctx.cycle_end(ctx.when(None, 0.05, 0.6))
            out.append(Incident("late_upload", "collector", cid, m, s,
                                ctx.cycle_end(s + self.duration_s), {"collector": c}))
        return out


@dataclass(frozen=True)
class ClockSkew(Scenario):
    """Meter clocks off by up to ``max_skew_s`` [s]: event and register times shifted."""

    count: int = 3
    max_skew_s: int = 900
    name = "clock_skew"

    def resolve(self, ctx: _Ctx) -> list[Incident]:
        out = []
        for m in ctx.meters_of("electric", self.count):
            skew = int(ctx.rng.integers(60, self.max_skew_s + 1)) * int(ctx.rng.choice([-1, 1]))
            out.append(Incident("clock_skew", "meter", ctx.meter_id(int(m)),
                                np.array([m], np.int32), ctx.u.start_s, ctx.u.end_s + 1,
                                {"skew_s": skew}))
        return out


#: CLI names -> default scenarios
SCENARIOS: Final[dict[str, tuple[Scenario, ...]]] = {
    "outage": (Outage(),),
    "momentary": (Momentary(),),
    "storm": (Storm(),),
    "cover_removed": (CoverRemoved(),),
    "magnetic_tamper": (MagneticTamper(),),
    "tamper": (CoverRemoved(), MagneticTamper()),
    "reverse_energy": (ReverseEnergy(),),
    "under_voltage": (VoltageExcursion("under"),),
    "over_voltage": (VoltageExcursion("over"),),
    "voltage": (VoltageExcursion("under"), VoltageExcursion("over")),
    "water_leak": (WaterLeak(),),
    "spike": (Spike(),),
    "flat_line": (FlatLine(),),
    "gap": (Gap(),),
    "duplicate": (Duplicate(),),
    "retransmission": (Retransmission(),),
    "late_upload": (LateUpload(),),
    "clock_skew": (ClockSkew(),),
}
_ALL: Final = ("outage", "momentary", "tamper", "reverse_energy", "voltage", "water_leak",
               "spike", "flat_line", "gap", "duplicate", "retransmission", "late_upload",
               "clock_skew")
