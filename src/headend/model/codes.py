"""Reading types, quality codes and end-device event codes: the one source of truth.

Every other module (wire formats, CSV, store, rules, exports, docs) takes its codes
from here. Codes are small integers on the hot path and strings at the edges:

* a **reading type** is a ``uint8`` index into :data:`READING_TYPES`; each carries its
  IEC 61968-9 ReadingType code (the 18-field dotted form of IEC 61968-9:2013 Annex C),
  its unit and the integer *resolution* in which values are stored (for example 1 Wh);
* **quality** is a ``uint32`` bit mask; bit ``i`` is :data:`QUALITY_CODES` ``[i]``, each an
  IEC 61968-9 ReadingQualityType code in the ``system.category.index`` form;
* an **event code** is an IEC 61968-9 EndDeviceEventType ``type.domain.subdomain.eventOrAction``
  packed into a ``uint32`` (5 + 7 + 10 + 10 bits), so any well-formed code is representable;
  :data:`EVENT_TYPES` names the ones headend knows and acts upon.

References
----------
IEC 61968-9:2013, Annex C (ReadingType), Annex D (ReadingQualityType), Annex E
(EndDeviceEventType). Enumeration values as in the NAESB ESPI schema (REQ.21),
which reuses the IEC 61968-9 enumerations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ESTIMATED_MASK",
    "EVENT",
    "EVENT_TYPES",
    "QUALITY_BIT",
    "QUALITY_CODES",
    "READING_TYPES",
    "READING_TYPE_BY_NAME",
    "REGISTER_TYPES",
    "REGISTER_TYPE_BY_NAME",
    "Commodity",
    "EventType",
    "QualityCode",
    "ReadingType",
    "RegisterType",
    "Technology",
    "event_code_str",
    "pack_event_code",
    "parse_event_code",
    "quality_mask",
    "quality_str_array",
    "quality_to_str",
    "reading_type",
    "unpack_event_code",
]


# --------------------------------------------------------------------------- meters

COMMODITIES: Final = ("electric", "water", "gas")
TECHNOLOGIES: Final = ("rf", "gprs", "plc")


class Commodity:
    """Commodity codes (``uint8``) used in the meter registry."""

    ELECTRIC: Final = 0
    WATER: Final = 1
    GAS: Final = 2
    NAMES: Final = COMMODITIES


class Technology:
    """Communication technology codes (``uint8``) used in the meter registry."""

    RF: Final = 0
    GPRS: Final = 1
    PLC: Final = 2
    NAMES: Final = TECHNOLOGIES


# --------------------------------------------------------------------------- reading types


@dataclass(frozen=True, slots=True)
class ReadingType:
    """One interval reading type.

    Attributes
    ----------
    code : int
        Index stored on the wire and in the store (``uint8``); never reused.
    name : str
        Canonical CSV name (``kwh_del``).
    cim : str
        IEC 61968-9 ReadingType code for the 15-minute variant; the measuring period
        field (3rd) is set from the meter's actual interval by :meth:`cim_for`.
    unit : str
        Unit of the CSV/exported value (``kWh``).
    resolution : float
        Value of one stored integer step in ``unit`` (``0.001`` kWh = 1 Wh).
    commodity : int
        :class:`Commodity` this reading type belongs to.
    min_value, max_value : float
        Physically possible range per interval in ``unit`` (15-minute basis for
        energy and volume; scaled to the actual interval by ingest). Outside is
        rejected as ``impossible_value``.
    """

    code: int
    name: str
    cim: str
    unit: str
    resolution: float
    commodity: int
    min_value: float
    max_value: float
    cumulative: bool = True  # energy/volume per interval (scales with interval length)

    def cim_for(self, interval_s: int) -> str:
        """ReadingType code with the measuring period for ``interval_s`` seconds."""
        period = _TIME_ATTRIBUTE.get(interval_s, 0)
        fields = self.cim.split(".")
        fields[2] = str(period)
        return ".".join(fields)


# IEC 61968-9 TimeAttributeKind for common interval lengths [s].
_TIME_ATTRIBUTE: Final = {60: 3, 300: 6, 600: 1, 900: 2, 1800: 5, 3600: 7, 86400: 4}

# ReadingType fields: macroPeriod.aggregate.measuringPeriod.accumulation.flowDirection.
# commodity.measurementKind.interharmonicNum.interharmonicDen.argumentNum.argumentDen.
# TOU.cpp.consumptionTier.phases.multiplier.unit.currency
READING_TYPES: Final[tuple[ReadingType, ...]] = (
    ReadingType(0, "kwh_del", "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "kWh", 0.001,
                Commodity.ELECTRIC, 0.0, 2_000.0),
    ReadingType(1, "kwh_rec", "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0", "kWh", 0.001,
                Commodity.ELECTRIC, 0.0, 2_000.0),
    ReadingType(2, "volts", "0.0.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0", "V", 0.1,
                Commodity.ELECTRIC, 0.0, 1_000.0, cumulative=False),
    ReadingType(3, "water_m3", "0.0.2.4.1.9.58.0.0.0.0.0.0.0.0.0.42.0", "m3", 0.001,
                Commodity.WATER, 0.0, 100.0),
    ReadingType(4, "gas_m3", "0.0.2.4.1.7.58.0.0.0.0.0.0.0.0.0.42.0", "m3", 0.001,
                Commodity.GAS, 0.0, 1_000.0),
)
READING_TYPE_BY_NAME: Final = {rt.name: rt for rt in READING_TYPES}


def reading_type(name_or_code: str | int) -> ReadingType:
    """Look a reading type up by CSV name or code; raises ``KeyError`` if unknown."""
    if isinstance(name_or_code, int):
        return READING_TYPES[name_or_code]
    return READING_TYPE_BY_NAME[name_or_code]


# Per-code lookup tables for vectorised use (index with the uint8 code column).
RT_RESOLUTION: Final = np.array([rt.resolution for rt in READING_TYPES], dtype=np.float64)
RT_COMMODITY: Final = np.array([rt.commodity for rt in READING_TYPES], dtype=np.uint8)
RT_MIN_RAW: Final = np.array(
    [round(rt.min_value / rt.resolution) for rt in READING_TYPES], dtype=np.int64
)
RT_MAX_RAW: Final = np.array(
    [round(rt.max_value / rt.resolution) for rt in READING_TYPES], dtype=np.int64
)
RT_CUMULATIVE: Final = np.array([rt.cumulative for rt in READING_TYPES], dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class RegisterType:
    """A register (daily payload) read: cumulative totals and maximum demand."""

    code: int
    name: str
    cim: str
    unit: str
    resolution: float
    commodity: int


REGISTER_TYPES: Final[tuple[RegisterType, ...]] = (
    RegisterType(0, "kwh_del_total", "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "kWh", 0.001,
                 Commodity.ELECTRIC),
    RegisterType(1, "kwh_rec_total", "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0", "kWh", 0.001,
                 Commodity.ELECTRIC),
    RegisterType(2, "kw_max", "8.0.2.6.1.1.8.0.0.0.0.0.0.0.0.3.38.0", "kW", 0.001,
                 Commodity.ELECTRIC),
    RegisterType(3, "kwh_del_tou_a", "0.0.0.1.1.1.12.0.0.0.0.1.0.0.0.3.72.0", "kWh", 0.001,
                 Commodity.ELECTRIC),
    RegisterType(4, "kwh_del_tou_b", "0.0.0.1.1.1.12.0.0.0.0.2.0.0.0.3.72.0", "kWh", 0.001,
                 Commodity.ELECTRIC),
    RegisterType(5, "water_m3_total", "0.0.0.1.1.9.58.0.0.0.0.0.0.0.0.0.42.0", "m3", 0.001,
                 Commodity.WATER),
    RegisterType(6, "gas_m3_total", "0.0.0.1.1.7.58.0.0.0.0.0.0.0.0.0.42.0", "m3", 0.001,
                 Commodity.GAS),
)
REGISTER_TYPE_BY_NAME: Final = {r.name: r for r in REGISTER_TYPES}
REG_RESOLUTION: Final = np.array([r.resolution for r in REGISTER_TYPES], dtype=np.float64)


# --------------------------------------------------------------------------- quality


@dataclass(frozen=True, slots=True)
class QualityCode:
    """An IEC 61968-9 ReadingQualityType code, ``system.category.index``.

    System 1 is the end device (the meter said so), 2 the head end's collection path,
    3 the head end acting as meter data management (VEE). Category 8 is *estimated*,
    7 *edited*, 6 *failed validation*, 4 *data collection*, 3 *tamper/revenue protection*,
    2 *power quality*, 1 *diagnostics*, 0 *valid*.
    """

    bit: int
    code: str
    name: str
    description: str

    @property
    def category(self) -> int:
        return int(self.code.split(".")[1])


QUALITY_CODES: Final[tuple[QualityCode, ...]] = (
    QualityCode(0, "1.0.0", "valid", "Data valid as reported by the meter"),
    QualityCode(1, "1.1.1", "battery_low", "Meter diagnostic: battery low"),
    QualityCode(2, "1.2.32", "power_fail", "A power failure occurred during the interval"),
    QualityCode(3, "1.3.0", "tamper", "Tamper detected during the interval"),
    QualityCode(4, "1.3.1", "reverse_rotation", "Reverse energy flow detected"),
    QualityCode(5, "1.4.1", "overflow", "Register overflow during the interval"),
    QualityCode(6, "1.4.2", "clock_set_forward", "Meter clock set forward in the interval"),
    QualityCode(7, "1.4.3", "clock_set_backward", "Meter clock set backward in the interval"),
    QualityCode(8, "1.4.128", "long_interval", "Interval longer than configured (clock change)"),
    QualityCode(9, "1.4.129", "partial_interval", "Interval shorter than configured"),
    QualityCode(10, "2.4.4", "retransmitted", "Read arrived in a retransmitted upload"),
    QualityCode(11, "2.4.5", "late", "Read arrived after its collection deadline"),
    QualityCode(12, "3.0.1", "validated", "Passed all VEE validation checks"),
    QualityCode(13, "3.6.0", "failed_validation", "Failed one or more VEE checks (suspect)"),
    QualityCode(14, "3.6.1", "zero_consumption", "Zero consumption for N intervals"),
    QualityCode(15, "3.6.2", "spike", "Spike against neighbouring intervals"),
    QualityCode(16, "3.6.3", "flat_line", "Stale or flat-lined values"),
    QualityCode(17, "3.6.4", "high_vs_history", "Above the meter's own history"),
    QualityCode(18, "3.6.5", "low_vs_history", "Below the meter's own history"),
    QualityCode(19, "3.6.6", "register_mismatch", "Register advance disagrees with intervals"),
    QualityCode(20, "3.6.7", "time_check", "Clock skew or DST time check failed"),
    QualityCode(21, "3.7.0", "edited", "Manually edited"),
    QualityCode(22, "3.8.0", "estimated", "Estimated"),
    QualityCode(23, "3.8.1", "estimated_interpolation", "Estimated by linear interpolation"),
    QualityCode(24, "3.8.2", "estimated_like_day", "Estimated from like days"),
    QualityCode(25, "3.8.3", "estimated_prorated", "Estimated by prorating a register advance"),
)
QUALITY_BIT: Final = {q.code: q.bit for q in QUALITY_CODES}
QUALITY_BY_NAME: Final = {q.name: q for q in QUALITY_CODES}
#: every code in category 8 (estimated)
ESTIMATED_MASK: Final = sum(1 << q.bit for q in QUALITY_CODES if q.category == 8)
#: every code in category 6 (failed validation / suspect)
SUSPECT_MASK: Final = sum(1 << q.bit for q in QUALITY_CODES if q.category == 6)
KNOWN_QUALITY_MASK: Final = sum(1 << q.bit for q in QUALITY_CODES)


def quality_mask(codes: str) -> int:
    """Parse ``"1.2.32;3.8.1"`` into a bit mask; raises ``KeyError`` for an unknown code."""
    mask = 0
    for code in codes.split(";"):
        code = code.strip()
        if code:
            mask |= 1 << QUALITY_BIT[code]
    return mask


def quality_to_str(mask: int) -> str:
    """Bit mask to ``;``-joined codes in bit order (empty for 0)."""
    return ";".join(q.code for q in QUALITY_CODES if mask >> q.bit & 1)


def quality_str_array(masks: npt.NDArray[np.uint32]) -> npt.NDArray[np.object_]:
    """Vectorised :func:`quality_to_str`: formats each *distinct* mask once."""
    uniq, inverse = np.unique(masks, return_inverse=True)
    table = np.array([quality_to_str(int(m)) for m in uniq], dtype=object)
    out: npt.NDArray[np.object_] = table[inverse]
    return out


# --------------------------------------------------------------------------- events

_EVENT_RE: Final = re.compile(r"^(\d{1,2})\.(\d{1,3})\.(\d{1,4})\.(\d{1,4})$")
_EVENT_LIMITS: Final = (31, 127, 1023, 1023)


def pack_event_code(code: str) -> int:
    """Pack ``"3.26.0.85"`` into a ``uint32``; raises ``ValueError`` if malformed or out of range."""
    m = _EVENT_RE.match(code.strip())
    if not m:
        raise ValueError(f"malformed EndDeviceEventType code {code!r}")
    t, d, s, e = (int(x) for x in m.groups())
    if t > 31 or d > 127 or s > 1023 or e > 1023:
        raise ValueError(f"EndDeviceEventType code {code!r} out of range")
    return (t << 27) | (d << 20) | (s << 10) | e


def unpack_event_code(packed: int) -> tuple[int, int, int, int]:
    """Inverse of :func:`pack_event_code`."""
    return (packed >> 27) & 31, (packed >> 20) & 127, (packed >> 10) & 1023, packed & 1023


def event_code_str(packed: int) -> str:
    """``uint32`` to the dotted form."""
    return ".".join(str(x) for x in unpack_event_code(packed))


def parse_event_code(code: str) -> int:
    """Alias of :func:`pack_event_code` for symmetry with the other parsers."""
    return pack_event_code(code)


@dataclass(frozen=True, slots=True)
class EventType:
    """A known IEC 61968-9 EndDeviceEventType."""

    name: str
    code: str
    description: str

    @property
    def packed(self) -> int:
        return pack_event_code(self.code)


EVENT_TYPES: Final[tuple[EventType, ...]] = (
    EventType("power_fail", "3.26.0.85", "Power failure (last gasp)"),
    EventType("power_restored", "3.26.0.216", "Power restored"),
    EventType("cover_removed", "3.12.29.212", "Meter cover removed"),
    EventType("under_voltage", "3.26.131.223", "Voltage below the low threshold"),
    EventType("over_voltage", "3.26.131.248", "Voltage above the high threshold"),
    EventType("reverse_energy", "3.26.93.219", "Reverse (received) energy flow detected"),
    EventType("magnetic_tamper", "3.12.66.257", "Magnetic tamper detected"),
    EventType("low_battery", "3.2.22.150", "Meter battery low"),
    EventType("clock_error", "3.36.0.79", "Meter clock error"),
    EventType("water_leak", "8.31.0.93", "Water meter: continuous flow (leak) suspected"),
    EventType("gas_abnormal_flow", "7.31.0.93", "Gas meter: abnormal flow"),
    # the service switch (RCDSwitch, domain 31) after a completed remote command:
    # action 68 disconnected, 42 connected (the action codes head ends use for
    # RCDSwitch remote disconnection and connection)
    EventType("switch_disconnected", "3.31.0.68", "Service switch opened (remote disconnect)"),
    EventType("switch_connected", "3.31.0.42", "Service switch closed (remote connect)"),
)


class _EventNamespace:
    """Packed codes by name: ``EVENT.power_fail``."""

    def __init__(self) -> None:
        for et in EVENT_TYPES:
            setattr(self, et.name, et.packed)

    def __getattr__(self, name: str) -> int:  # for mypy: attributes are set dynamically
        raise AttributeError(name)


EVENT: Final = _EventNamespace()
EVENT_BY_PACKED: Final = {et.packed: et for et in EVENT_TYPES}
