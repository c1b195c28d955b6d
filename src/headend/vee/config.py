"""VEE parameters: one frozen, validated configuration object, read once.

Every threshold is in seconds or in the reading type's unit (kWh, m3, V), never in raw
integer steps, so that the same configuration serves all reading types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from headend.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "VeeConfig"]


@dataclass(frozen=True, slots=True)
class VeeConfig:
    """Parameters of validation, estimation and editing (see docs/vee.md).

    Attributes
    ----------
    tz : str
        IANA time zone of the utility's local days (like days, daily totals); default
        ``"UTC"``. Storage stays UTC whatever this is.
    holidays : tuple of datetime.date
        Local dates treated like a weekend day when choosing like days.
    zero_run_s : int
        Zero consumption for at least this long is suspect [s]; default 24 h.
    flat_run_s : int
        The same non-zero value repeated for at least this long is suspect [s]; 6 h.
    spike_factor : float
        A value above ``spike_factor`` times the larger neighbour is a spike ...
    spike_min : float
        ... when it also exceeds that neighbour by ``spike_min`` [unit]; 1.0.
    high_factor : float
        A value above ``high_factor`` times the meter's own 95th percentile ...
    high_min : float
        ... (taken as at least ``high_min`` [unit]) is high against history.
    low_factor : float
        A complete local day whose total is below ``low_factor`` times the meter's
        median complete-day total is low against history.
    register_tol_rel, register_tol_abs : float
        Register advance and interval sum may differ by ``max(tol_abs [unit],
        tol_rel * advance)``.
    max_clock_skew_s : int
        Interval ends later than ``now + max_clock_skew_s`` fail the time check [s].
    max_interpolation_s : int
        Gaps of at most this length are linearly interpolated [s]; 2 h.
    like_days : int
        Number of like days averaged; 3.
    like_day_lookback_days : int
        How far before (then after) a day like days are searched [local days].
    """

    tz: str = "UTC"
    holidays: tuple[date, ...] = field(default_factory=tuple)
    zero_run_s: int = 86_400
    flat_run_s: int = 6 * 3600
    spike_factor: float = 10.0
    spike_min: float = 1.0
    high_factor: float = 5.0
    high_min: float = 0.5
    low_factor: float = 0.1
    register_tol_rel: float = 0.01
    register_tol_abs: float = 0.01
    max_clock_skew_s: int = 300
    max_interpolation_s: int = 7200
    like_days: int = 3
    like_day_lookback_days: int = 56

    def __post_init__(self) -> None:
        for name in ("zero_run_s", "flat_run_s", "max_interpolation_s", "like_days",
                     "like_day_lookback_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"VeeConfig.{name} must be positive")
        if self.spike_factor <= 1 or self.high_factor <= 1:
            raise ConfigError("VeeConfig spike_factor and high_factor must exceed 1")
        if not 0 <= self.low_factor < 1:
            raise ConfigError("VeeConfig.low_factor must be in [0, 1)")
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.tz)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError
            raise ConfigError(f"unknown time zone {self.tz!r}") from exc


DEFAULT_CONFIG = VeeConfig()
