"""Rule configuration: immutable, validated, loaded from YAML (or built in Python).

A rule set is a list of rule instances, each ``{name, kind, enabled, params}``; ``kind``
selects a built-in (or registered Python) rule and ``params`` are validated by that
kind's frozen pydantic model below. Unknown kinds or parameters are rejected with
:class:`~headend.errors.ConfigError`. The YAML form (documented in ``docs/rules.md``)::

    engine:
      allowed_lateness_s: 0
    rules:
      - name: outages
        kind: outage
        params: {correlation_s: 120, confirm_s: 1200}
      - name: voltage_b
        kind: voltage
        params: {range: B, duration_s: 1800}
      - name: pump_station_overflow
        kind: threshold
        enabled: false
        params: {reading_type: water_m3, by: meter, agg: sum, window_s: 3600,
                 op: ">", value: 5.0, for_windows: 2}

Configuration is separate from runtime logic: the rule objects (``headend.rules.*``)
take one of these and keep their own snapshot-able state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headend.errors import ConfigError
from headend.model import codes

__all__ = [
    "CONFIG_BY_KIND",
    "EngineConfig",
    "EventCountConfig",
    "GasFlowConfig",
    "LeakConfig",
    "OutageConfig",
    "OverloadConfig",
    "ReverseEnergyConfig",
    "RuleSet",
    "RuleSpec",
    "SilentConfig",
    "TamperConfig",
    "ThresholdConfig",
    "VoltageConfig",
    "ZeroConsumptionConfig",
    "default_ruleset",
    "load_ruleset",
    "parse_ruleset",
]


class _Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OutageConfig(_Cfg):
    """Outage detection and location (last gasps 3.26.0.85, restorations 3.26.0.216).

    Times in seconds. A device is out when at least ``*_ratio`` of its meters are out
    (gasped, flagged a power failure, or silent through the start) and it has at least
    ``min_meters`` meters; otherwise the gasping meters get meter-level outages.
    """

    correlation_s: int = Field(120, gt=0)  # session gap that joins gasps into an incident
    simultaneity_s: int = Field(60, gt=0)  # gasps of one failed device fall within this
    coherence: float = Field(0.8, gt=0, le=1)  # share of a device's gasps that must
    confirm_s: int = Field(1200, gt=0)  # wait after the last gasp before locating
    max_delay_s: int = Field(3600, gt=0)  # locate at the latest this long after the first gasp
    slack_s: int = Field(60, ge=0)  # clock / reporting tolerance
    clock_tolerance_s: int = Field(300, ge=0)  # a lone gasp or restoration this close to
    #   an outage of its meter's device (or an enclosing one) belongs to it (meter clock
    #   drift); 0: off
    lead_s: int = Field(1, ge=0)  # a transformer whose gasps all precede its feeder's
    #   median gasp by more than this failed first: its own outage (0: off); keep at
    #   least half the spread of one failure's gasp time stamps (clock error)
    transformer_ratio: float = Field(0.5, gt=0, le=1)
    feeder_ratio: float = Field(0.6, gt=0, le=1)
    substation_ratio: float = Field(0.6, gt=0, le=1)
    min_meters: int = Field(1, ge=1)  # 1: a one-meter transformer is a transformer outage
    feeder_min_gasp_share: float = Field(0.05, ge=0, le=1)  # a feeder or substation is
    #   located from the gasps of at least this share of its meters (and of two meters)
    #   in its window: one or two meters' gasps, their clocks however wrong, locate no
    #   more than their transformers
    restore_ratio: float = Field(0.5, gt=0, le=1)  # device restored when this share is back
    momentary_s: int = Field(300, gt=0)  # IEEE 1366: momentary <= 5 min
    use_pings: bool = True  # verify by pinging two-way meters (docs/rules.md)
    ping_meters: int = Field(3, ge=1)  # meters pinged per transformer and question
    ping_wait_s: int = Field(900, gt=0)  # longest wait for ping answers [s of event
    #   time]; a ping unanswered by then counts as no answer
    storm_outages: int = Field(50, ge=1)  # this many new outages ...
    storm_window_s: int = Field(900, gt=0)  # ... within this window: storm mode


class VoltageConfig(_Cfg):
    """ANSI C84.1 service voltage ranges on a 120 V base, scaled to the service voltage."""

    range: Literal["A", "B"] = "A"
    low_v: float | None = None  # override on the 120 V base
    high_v: float | None = None
    service_voltages: tuple[float, ...] = (120.0, 208.0, 240.0, 277.0, 480.0)
    duration_s: int = Field(900, gt=0)  # outside for at least this long
    transformer_ratio: float = Field(0.5, gt=0, le=1)  # roll-up to the transformer
    transformer_min_meters: int = Field(2, ge=1)

    def limits(self) -> tuple[float, float]:
        lo, hi = (114.0, 126.0) if self.range == "A" else (110.0, 127.0)
        return (self.low_v if self.low_v is not None else lo,
                self.high_v if self.high_v is not None else hi)


def _event(name: str) -> str:
    return next(e.code for e in codes.EVENT_TYPES if e.name == name)


def _codes(v: Any) -> tuple[str, ...]:
    out = tuple(str(x) for x in v)
    for c in out:
        codes.pack_event_code(c)  # raises ValueError if malformed
    return out


class TamperConfig(_Cfg):
    """Revenue protection: tamper events (cover removal, magnetic tamper)."""

    event_codes: tuple[str, ...] = (_event("cover_removed"), _event("magnetic_tamper"))
    _v = field_validator("event_codes")(_codes)


class ReverseEnergyConfig(_Cfg):
    """Reverse energy on a meter with no generation.

    Evidence: the meter's reverse-energy event (3.26.93.219), or interval reads flagged
    reverse rotation (quality 1.3.1) for ``intervals`` intervals; with
    ``assume_no_generation``, also received energy (``kwh_rec`` >= ``min_kwh`` per
    interval) on any meter not in ``generation_meters`` (the registry does not say which
    meters have generation, so this is off by default).
    """

    min_kwh: float = Field(0.01, gt=0)  # per interval
    intervals: int = Field(2, ge=1)
    generation_meters: tuple[str, ...] = ()  # meters that may export
    assume_no_generation: bool = False


class ZeroConsumptionConfig(_Cfg):
    """Consumption at zero for N intervals while most neighbours (same transformer) use."""

    intervals: int = Field(8, ge=1)
    neighbour_ratio: float = Field(0.5, gt=0, le=1)
    min_neighbours: int = Field(1, ge=1)


class DisconnectedUseConfig(_Cfg):
    """Energy through an open service switch: delivered or received energy of at least
    ``min_kwh`` per interval on a meter whose switch is open (registry ``switch_state``
    ``disconnected``, set by a completed remote disconnect) for ``intervals`` intervals:
    a bypass, a switch that failed, or a switch state that is wrong."""

    min_kwh: float = Field(0.01, ge=0)
    intervals: int = Field(1, ge=1)


class LeakConfig(_Cfg):
    """Water: flow in every interval for ``duration_s`` (default 24 h)."""

    duration_s: int = Field(86_400, gt=0)
    min_m3: float = Field(0.0005, gt=0)  # smallest flow that counts, per interval


class GasFlowConfig(_Cfg):
    """Gas: flow over a sliding ``window_s`` above ``max_m3``."""

    window_s: int = Field(3600, gt=0)
    max_m3: float = Field(6.0, gt=0)


class SilentConfig(_Cfg):
    """No report for ``intervals`` intervals, outside any outage."""

    intervals: int = Field(4, ge=1)


class OverloadConfig(_Cfg):
    """Sum of a transformer's meters' demand above its rating for N intervals.

    Ratings come from ``<data>/transformer_ratings.csv``. A transformer without one is
    not checked, unless ``default_kva_per_meter`` is set: then its rating is assumed to
    be that many kVA per electric meter.
    """

    intervals: int = Field(2, ge=1)
    power_factor: float = Field(0.9, gt=0, le=1)
    default_kva_per_meter: float | None = Field(None, gt=0)
    load_ratio: float = Field(1.0, gt=0)


class ThresholdConfig(_Cfg):
    """Generic: an aggregate of a reading type per key and tumbling window vs a limit."""

    reading_type: str
    by: Literal["meter", "transformer", "feeder", "substation"] = "meter"
    agg: Literal["sum", "mean", "max", "min"] = "sum"
    window_s: int = Field(900, gt=0)
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float
    for_windows: int = Field(1, ge=1)

    @field_validator("reading_type")
    @classmethod
    def _rt(cls, v: str) -> str:
        if v not in codes.READING_TYPE_BY_NAME:
            raise ValueError(f"unknown reading type {v!r}")
        return v


class EventCountConfig(_Cfg):
    """Generic: at least ``count`` events with these codes per key within ``window_s``."""

    event_codes: tuple[str, ...]
    by: Literal["meter", "transformer", "feeder", "substation"] = "meter"
    count: int = Field(1, ge=1)
    window_s: int = Field(3600, gt=0)
    _v = field_validator("event_codes")(_codes)


#: kind -> parameter model. Python rules are added with ``headend.rules.register_kind``.
CONFIG_BY_KIND: dict[str, type[_Cfg]] = {
    "outage": OutageConfig,
    "voltage": VoltageConfig,
    "tamper": TamperConfig,
    "reverse_energy": ReverseEnergyConfig,
    "zero_consumption": ZeroConsumptionConfig,
    "disconnected_use": DisconnectedUseConfig,
    "water_leak": LeakConfig,
    "gas_flow": GasFlowConfig,
    "silent_meter": SilentConfig,
    "transformer_overload": OverloadConfig,
    "threshold": ThresholdConfig,
    "event_count": EventCountConfig,
}


class EngineConfig(_Cfg):
    """Engine settings. ``allowed_lateness_s``: the watermark trails the newest event time
    by this much [s]; ``tick_s``: buffered data is run through the rules in event-time
    slices of this length [s] (decisions such as outage location happen between slices);
    ``max_buffer_rows`` bounds rows waiting for the watermark; ``batch_rows``: rules
    whose records do not depend on the stepping (``TICK_FREE_KINDS``: voltage, revenue,
    flow, overload, threshold rules) take this many rows at once, many ticks per call,
    while outage location and silence still step tick by tick; ``checkpoint_interval_s``:
    checkpoint at most this often [s of wall time] (0: at every watermark advance); rows
    processed since the last checkpoint stay in the durable buffer and are replayed
    after a crash, re-deriving the same records. ``partitions``/``partition``: this
    engine owns the meters of substations with ``index % partitions == partition``
    (:func:`~headend.rules.topology.partition_of`); the bus routes rows the same way."""

    allowed_lateness_s: int = Field(0, ge=0)
    tick_s: int = Field(300, gt=0)  # rules step through buffered data this much at a time
    checkpoint_interval_s: float = Field(60.0, ge=0)  # wall clock; 0: at every watermark
    partitions: int = Field(1, ge=1)  # engines sharing the network, split by substation
    partition: int = Field(0, ge=0)  # this engine's partition
    max_buffer_rows: int = Field(20_000_000, gt=0)
    batch_rows: int = Field(2_000_000, gt=0)  # rows per call of the tick-free rules


class RuleSpec(_Cfg):
    """One rule instance: unique ``name``, its ``kind``, ``enabled`` and typed ``params``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str
    enabled: bool = True
    params: Any = None

    def config(self) -> Any:
        return self.params


class RuleSet(_Cfg):
    engine: EngineConfig = Field(default_factory=lambda: EngineConfig.model_validate({}))
    rules: tuple[RuleSpec, ...] = ()

    def enabled(self) -> tuple[RuleSpec, ...]:
        return tuple(r for r in self.rules if r.enabled)


DEFAULT_RULES: Final = (
    ("outages", "outage"), ("voltage", "voltage"), ("tamper", "tamper"),
    ("reverse_energy", "reverse_energy"), ("zero_consumption", "zero_consumption"),
    ("disconnected_use", "disconnected_use"),
    ("water_leak", "water_leak"), ("gas_flow", "gas_flow"), ("silent_meters", "silent_meter"),
    ("transformer_overload", "transformer_overload"),
)


def _spec(d: dict[str, Any]) -> RuleSpec:
    if not isinstance(d, dict):
        raise ConfigError(f"a rule must be a mapping, got {d!r}")
    kind = d.get("kind")
    if kind not in CONFIG_BY_KIND:
        raise ConfigError(f"rule {d.get('name')!r}: unknown kind {kind!r} "
                          f"(known: {', '.join(sorted(CONFIG_BY_KIND))})")
    try:
        params = CONFIG_BY_KIND[kind].model_validate(d.get("params") or {})
        return RuleSpec(name=str(d.get("name", kind)), kind=kind,
                        enabled=d.get("enabled", True), params=params)
    except ValidationError as exc:
        raise ConfigError(f"rule {d.get('name')!r}: {exc}") from exc


def parse_ruleset(doc: Any) -> RuleSet:
    """Validate a parsed YAML/JSON document into a :class:`RuleSet`."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or set(doc) - {"engine", "rules"}:
        raise ConfigError("a rule file is a mapping with keys 'engine' and 'rules'")
    specs = tuple(_spec(d) for d in doc.get("rules") or ())
    names = [s.name for s in specs]
    if len(names) != len(set(names)):
        raise ConfigError(f"duplicate rule names in {names}")
    try:
        engine = EngineConfig.model_validate(doc.get("engine") or {})
    except ValidationError as exc:
        raise ConfigError(f"engine: {exc}") from exc
    return RuleSet(engine=engine, rules=specs)


def load_ruleset(path: Path) -> RuleSet:
    """Load a YAML rule file; raises :class:`ConfigError` if unreadable or invalid."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rule file {path}: {exc}") from exc
    return parse_ruleset(doc)


def default_ruleset() -> RuleSet:
    """Every built-in rule, enabled, with default parameters."""
    return parse_ruleset({"rules": [{"name": n, "kind": k} for n, k in DEFAULT_RULES]})
