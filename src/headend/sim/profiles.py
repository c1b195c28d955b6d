"""Load, generation, voltage and flow models for one interval across many meters.

Each function takes the scalar time of one interval and per-meter parameter arrays and
returns one value per meter, computed by broadcasting (no per-meter Python work).

Notes
-----
Electric demand of meter ``m`` at local time ``t`` [kW]::

    P = base[m] * shape[class[m]](t) + heat[m] * HDD(t) + cool[m] * CDD(t)
    HDD = max(0, 15.5 - T),  CDD = max(0, T - 22)     (T: air temperature [degC])

multiplied by ``1 + 0.18 * N(0, 1)`` noise and clipped at 0. PV output is
``capacity * max(0, sin(solar elevation)) * clearness(day)``, with the elevation of a
site at 40 deg N (declination by Cooper's formula). Voltage is 240 V nominal plus a
feeder-level diurnal drift and load sag, a per-meter offset and noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

#: hourly load shape per customer class (residential, commercial, industrial), weekday
SHAPE_WEEKDAY: Final = np.array([
    [0.55, 0.50, 0.48, 0.47, 0.50, 0.60, 0.85, 1.10, 1.00, 0.85, 0.80, 0.80,
     0.85, 0.80, 0.80, 0.90, 1.10, 1.45, 1.70, 1.75, 1.60, 1.35, 1.00, 0.70],
    [0.45, 0.45, 0.45, 0.45, 0.45, 0.50, 0.60, 0.90, 1.30, 1.50, 1.55, 1.60,
     1.60, 1.60, 1.55, 1.50, 1.40, 1.10, 0.80, 0.60, 0.50, 0.45, 0.45, 0.45],
    [0.75, 0.75, 0.75, 0.75, 0.75, 0.80, 1.10, 1.15, 1.15, 1.15, 1.15, 1.15,
     1.10, 1.15, 1.15, 1.15, 1.15, 1.15, 1.15, 1.15, 1.15, 1.10, 0.80, 0.75],
], dtype=np.float64)
#: weekend shapes (Saturday and Sunday)
SHAPE_WEEKEND: Final = np.array([
    [0.60, 0.55, 0.50, 0.48, 0.48, 0.50, 0.60, 0.80, 1.05, 1.20, 1.20, 1.15,
     1.10, 1.05, 1.00, 1.00, 1.10, 1.40, 1.65, 1.70, 1.55, 1.35, 1.05, 0.75],
    [0.45, 0.45, 0.45, 0.45, 0.45, 0.45, 0.50, 0.60, 0.70, 0.80, 0.85, 0.85,
     0.85, 0.85, 0.80, 0.75, 0.70, 0.60, 0.55, 0.50, 0.45, 0.45, 0.45, 0.45],
    [0.70, 0.70, 0.70, 0.70, 0.70, 0.70, 0.72, 0.75, 0.75, 0.75, 0.75, 0.75,
     0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.72, 0.72, 0.70, 0.70, 0.70, 0.70],
], dtype=np.float64)
#: residential water use shape (share of the daily mean, by hour)
SHAPE_WATER: Final = np.array([
    0.15, 0.10, 0.08, 0.08, 0.15, 0.60, 1.90, 2.40, 1.80, 1.20, 1.00, 1.00,
    1.10, 0.95, 0.85, 0.85, 1.00, 1.35, 1.70, 1.75, 1.55, 1.20, 0.75, 0.35,
])
#: gas use shape (heating with night set-back, cooking peaks)
SHAPE_GAS: Final = np.array([
    0.55, 0.50, 0.50, 0.50, 0.60, 1.10, 1.60, 1.55, 1.25, 1.00, 0.95, 0.95,
    1.05, 0.95, 0.90, 0.95, 1.10, 1.35, 1.50, 1.40, 1.25, 1.05, 0.85, 0.65,
])

NOMINAL_V: Final = 240.0
HEAT_BASE_C: Final = 15.5
COOL_BASE_C: Final = 22.0
LATITUDE_DEG: Final = 40.0


def _hourly(shape: npt.NDArray[np.float64], hour: float) -> npt.NDArray[np.float64]:
    """Shape value(s) at a fractional local hour (linear between hour midpoints, periodic).

    ``shape`` has 24 values on its last axis; the result drops that axis.
    """
    x = (hour - 0.5) % 24.0
    i = int(x)
    f = x - i
    return np.asarray(shape[..., i] * (1 - f) + shape[..., (i + 1) % 24] * f)


@dataclass(frozen=True, slots=True)
class Moment:
    """Scalars describing the midpoint of one interval.

    Attributes
    ----------
    hour : float
        Local hour of day [h].
    weekend : bool
    temperature_c : float
        Air temperature [degC].
    sun : float
        ``max(0, sin(solar elevation))`` [-].
    clearness : float
        Share of clear-sky PV output that day [-].
    """

    hour: float
    weekend: bool
    temperature_c: float
    sun: float
    clearness: float

    @property
    def hdd(self) -> float:
        return max(0.0, HEAT_BASE_C - self.temperature_c)

    @property
    def cdd(self) -> float:
        return max(0.0, self.temperature_c - COOL_BASE_C)


def moment(mid_s: float, utc_offset_h: float, temperature_c: float, clearness: float) -> Moment:
    """Build the :class:`Moment` of an interval whose midpoint is ``mid_s`` [Unix s]."""
    local = mid_s + utc_offset_h * 3600.0
    hour = (local % 86_400.0) / 3600.0
    weekday = int((local // 86_400 + 3) % 7)  # 1970-01-01 was a Thursday (3)
    doy = (mid_s / 86_400.0) % 365.2425
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    lat = np.radians(LATITUDE_DEG)
    # solar time ~ local standard time here (longitude at the zone's meridian)
    ha = np.radians(15.0 * (hour - 12.0))
    sin_el = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(ha)
    return Moment(hour, weekday >= 5, temperature_c, max(0.0, float(sin_el)), clearness)


def class_shape(m: Moment) -> npt.NDArray[np.float32]:
    """Load shape value per customer class at ``m`` [-]."""
    table = SHAPE_WEEKEND if m.weekend else SHAPE_WEEKDAY
    return np.asarray(_hourly(table, m.hour), dtype=np.float32)


def demand_kw(
    m: Moment, cls: npt.NDArray[np.uint8], base: F32, heat: F32, cool: F32, noise: F32
) -> F32:
    """Electric demand [kW] per meter (see module notes); ``noise`` is N(0, 1)."""
    s = class_shape(m)
    p = base * s[cls]
    hdd, cdd = m.hdd, m.cdd
    if hdd:
        p += heat * np.float32(hdd)
    if cdd:
        p += cool * np.float32(cdd)
    p *= np.float32(1.0) + np.float32(0.18) * noise
    np.maximum(p, 0, out=p)
    return p


def pv_kw(m: Moment, capacity: F32, noise: F32) -> F32:
    """PV generation [kW]: capacity x sun x clearness, with 5 % per-site noise."""
    if m.sun <= 0.0:
        return np.zeros(len(capacity), np.float32)
    g = capacity * np.float32(m.sun * m.clearness) * (np.float32(1.0) + np.float32(0.05) * noise)
    np.maximum(g, 0, out=g)
    return g


def feeder_drift_v(
    m: Moment, amplitude: F32, phase: F32, walk: F32
) -> F32:
    """Feeder voltage offset from nominal [V]: diurnal regulation swing, load sag, walk."""
    sag = np.float32(-2.5 * (float(class_shape(m)[0]) - 1.0))
    ang = np.float32(2 * np.pi * m.hour / 24.0)
    out: F32 = (amplitude * np.sin(phase + ang) + sag + walk).astype(np.float32)
    return out


def volts(drift_of_meter: F32, offset: F32, demand: F32, noise: F32) -> F32:
    """Meter voltage [V]: nominal + feeder drift + offset - own-load drop + noise."""
    v = drift_of_meter + offset
    v += np.float32(NOMINAL_V)
    v -= np.float32(0.12) * np.minimum(demand, np.float32(40.0))
    v += np.float32(0.4) * noise
    return v


def water_l(m: Moment, base_lph: F32, interval_h: float, u: F32, e: F32) -> F32:
    """Water volume per interval [L]: intermittent use, more likely at shape peaks.

    ``u`` ~ U(0, 1) decides whether water ran in the interval, ``e`` ~ Exp(1) how much.
    """
    s = float(_hourly(SHAPE_WATER, m.hour))
    p_use = min(1.0, 0.08 + 0.35 * s * min(1.0, interval_h * 4))
    mean = base_lph * np.float32(interval_h * s / p_use)
    return np.where(u < np.float32(p_use), mean * e, np.float32(0.0)).astype(np.float32)


def gas_l(m: Moment, base_lph: F32, heat_lph: F32, interval_h: float, noise: F32) -> F32:
    """Gas volume per interval [L]: (base + heat x HDD) x shape, with 20 % noise."""
    s = float(_hourly(SHAPE_GAS, m.hour))
    v = (base_lph + heat_lph * np.float32(m.hdd)) * np.float32(interval_h * s)
    v *= np.float32(1.0) + np.float32(0.2) * noise
    np.maximum(v, 0, out=v)
    return v
