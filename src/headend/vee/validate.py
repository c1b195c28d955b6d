"""VEE validation: every rule as a whole-matrix mask over a :class:`~headend.vee.grid.Grid`.

Each rule sets its own IEC 61968-9 quality code (category 6, system 3) on the cells it
finds suspect; any suspect cell also gets ``3.6.0`` (failed validation) and every other
read gets ``3.0.1`` (validated). Rules never change values.

=====================  ========  =========================================================
rule                   code      a cell is suspect when
=====================  ========  =========================================================
impossible             3.6.0     negative, or above the reading type's physical maximum
zero_consumption       3.6.1     part of a run of zeros lasting ``zero_run_s`` or more
spike                  3.6.2     > ``spike_factor`` x and > ``spike_min`` above both neighbours
flat_line              3.6.3     part of a run of one non-zero value lasting ``flat_run_s``
high_vs_history        3.6.4     > ``high_factor`` x the meter's own 95th percentile
low_vs_history         3.6.5     its complete local day totals < ``low_factor`` x median day
register_mismatch      3.6.6     the register advance over its span differs from the sum
time_check             3.6.7     meter reported a clock change / long or partial interval,
                                 or the interval ends after ``now + max_clock_skew_s``
=====================  ========  =========================================================

References
----------
California Public Utilities Commission, *Direct Access Standards for Metering and Meter
Data (DASMMD)*, Validation, Editing and Estimation rules (interval data checks: time
check, high/low usage, spike, zero usage, sum check against register reads).
Edison Electric Institute / AEIC, *Uniform Business Practices for Unbundled Electricity
Metering*, VEE guidelines (2011).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.model import codes
from headend.vee.config import VeeConfig
from headend.vee.grid import Grid, LocalCalendar

__all__ = [
    "REGISTER_FOR_READING_TYPE",
    "RULES",
    "RegisterSpans",
    "Validation",
    "in_long_run",
    "register_spans",
    "validate",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
B = npt.NDArray[np.bool_]


def _bit(name: str) -> np.uint32:
    return np.uint32(1 << codes.QUALITY_BY_NAME[name].bit)


VALIDATED = _bit("validated")
FAILED = _bit("failed_validation")
#: rule name -> quality bit it sets
RULES: dict[str, np.uint32] = {
    "impossible": FAILED,
    "zero_consumption": _bit("zero_consumption"),
    "spike": _bit("spike"),
    "flat_line": _bit("flat_line"),
    "high_vs_history": _bit("high_vs_history"),
    "low_vs_history": _bit("low_vs_history"),
    "register_mismatch": _bit("register_mismatch"),
    "time_check": _bit("time_check"),
}
_METER_TIME_BITS = np.uint32(
    sum(1 << codes.QUALITY_BY_NAME[n].bit
        for n in ("clock_set_forward", "clock_set_backward", "long_interval", "partial_interval"))
)
POWER_FAIL = _bit("power_fail")

#: reading types measuring consumption (zero and low-usage checks apply to these only;
#: received energy of a PV system is legitimately zero at night and on dull days)
CONSUMPTION_TYPES = frozenset(codes.READING_TYPE_BY_NAME[n].code
                              for n in ("kwh_del", "water_m3", "gas_m3"))

#: interval reading type code -> register code whose advance it must sum to
REGISTER_FOR_READING_TYPE: dict[int, int] = {
    codes.READING_TYPE_BY_NAME["kwh_del"].code: codes.REGISTER_TYPE_BY_NAME["kwh_del_total"].code,
    codes.READING_TYPE_BY_NAME["kwh_rec"].code: codes.REGISTER_TYPE_BY_NAME["kwh_rec_total"].code,
    codes.READING_TYPE_BY_NAME["water_m3"].code: codes.REGISTER_TYPE_BY_NAME["water_m3_total"].code,
    codes.READING_TYPE_BY_NAME["gas_m3"].code: codes.REGISTER_TYPE_BY_NAME["gas_m3_total"].code,
}


@dataclass(slots=True)
class Validation:
    """Outcome of :func:`validate` on one grid.

    ``flags`` holds the quality bits to OR onto each present cell (0 elsewhere);
    ``counts`` the number of cells each rule flagged.
    """

    flags: U32
    suspect: B
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegisterSpans:
    """Consecutive register reads of each meter mapped onto grid columns.

    Span ``k`` covers the intervals ending in ``(t1, t2]`` of row ``row[k]``, i.e. the
    columns ``lo[k] .. hi[k]`` inclusive; ``advance[k]`` is the register advance in
    raw steps (same resolution as the reading type).
    """

    row: I64
    lo: I64
    hi: I64
    advance: F64

    def __len__(self) -> int:
        return len(self.row)


def register_spans(grid: Grid, registers: pa.Table | None) -> RegisterSpans:
    """Pair consecutive register reads of the grid's meters (spans fully on the grid)."""
    empty = RegisterSpans(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                          np.empty(0))
    reg_code = REGISTER_FOR_READING_TYPE.get(grid.reading_type)
    if registers is None or reg_code is None or registers.num_rows == 0:
        return empty
    m = registers.column("meter_idx").to_numpy()
    keep = (registers.column("register").to_numpy() == reg_code) & np.isin(m, grid.meter_idx)
    if not keep.any():
        return empty
    m = m[keep]
    t = registers.column("read_time").cast(pa.int64()).to_numpy()[keep]
    v = registers.column("value").to_numpy()[keep].astype(np.float64)
    order = np.lexsort((t, m))
    m, t, v = m[order], t[order], v[order]
    same = m[1:] == m[:-1]
    row = np.searchsorted(grid.meter_idx, m[1:][same]).astype(np.int64)
    t1, t2 = t[:-1][same], t[1:][same]
    step = grid.interval_s
    lo = (t1 - grid.t0) // step + 1  # first interval ending after t1
    hi = (t2 - grid.t0) // step  # last interval ending at or before t2
    ncol = grid.value.shape[1]
    ok = (lo >= 0) & (hi < ncol) & (hi >= lo)
    return RegisterSpans(row[ok], lo[ok], hi[ok], (v[1:][same] - v[:-1][same])[ok])


def span_mask(shape: tuple[int, int], spans: RegisterSpans, which: B | None = None) -> B:
    """Cells covered by the (selected) spans, by a difference array (no loop)."""
    rows, lo, hi = spans.row, spans.lo, spans.hi
    if which is not None:
        rows, lo, hi = rows[which], lo[which], hi[which]
    d = np.zeros((shape[0], shape[1] + 1), dtype=np.int32)
    np.add.at(d, (rows, lo), 1)
    np.add.at(d, (rows, hi + 1), -1)
    return np.cumsum(d[:, :-1], axis=1) > 0


def in_long_run(value: F64, member: B, n: int) -> B:
    """Cells that belong to a run of at least ``n`` consecutive ``member`` cells of one
    row holding the same value (rows never join).

    With ``eq[j]`` = cell ``j`` continues the run of cell ``j - 1``, a run of ``n`` ends at
    ``j`` when the ``n - 1`` values ``eq[j-n+2 .. j]`` are all true (a window sum over a
    cumulative sum); a cell is covered when such an end lies in ``[i, i + n - 1]``.
    """
    m, t = value.shape
    if n <= 1:
        return member.copy()
    eq = np.zeros((m, t), dtype=np.int32)
    if t > 1:
        np.logical_and(member[:, 1:], member[:, :-1], out=eq[:, 1:], casting="unsafe")
        eq[:, 1:] &= value[:, 1:] == value[:, :-1]
    c = np.zeros((m, t + 1), dtype=np.int32)
    np.cumsum(eq, axis=1, out=c[:, 1:])
    end = np.zeros((m, t), dtype=np.int32)
    if t >= n:
        end[:, n - 1:] = (c[:, n:] - c[:, 1:t - n + 2]) == n - 1
    e = np.zeros((m, t + 1), dtype=np.int32)
    np.cumsum(end, axis=1, out=e[:, 1:])
    hi = np.minimum(np.arange(t) + n, t)
    return (e[:, hi] - e[:, :t]) > 0


def _quantile_rows(x: F64, present: B, q: float) -> F64:
    """Lower nearest-rank ``q`` quantile of each row over present cells (NaN if none)."""
    n = present.sum(axis=1)
    k = np.clip(np.floor(q * (n - 1)).astype(np.int64), 0, max(x.shape[1] - 1, 0))
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    filled = np.where(present, x, np.inf)
    ks = np.unique(k)
    # rows mostly hold the same number of reads: partition at those few ranks only
    s = np.partition(filled, ks, axis=1) if len(ks) <= 32 else np.sort(filled, axis=1)
    out = np.take_along_axis(s, k[:, None], axis=1)[:, 0]
    return np.where(n > 0, out, np.nan)


def _median_rows(x: F64, member: B) -> F64:
    """Median of each row over ``member`` cells (mean of the two middle ones; NaN if none)."""
    s = np.sort(np.where(member, x, np.inf), axis=1)
    n = member.sum(axis=1)
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    a = np.take_along_axis(s, np.clip((n - 1) // 2, 0, None)[:, None], axis=1)[:, 0]
    b = np.take_along_axis(s, np.clip(n // 2, 0, x.shape[1] - 1)[:, None], axis=1)[:, 0]
    return np.where(n > 0, (a + b) / 2, np.nan)


def day_sums(x: F64, cal: LocalCalendar) -> F64:
    """Per-row sums over each local day's columns, shape (M, D)."""
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0))
    starts = np.flatnonzero(np.r_[True, cal.day[1:] != cal.day[:-1]])
    return np.add.reduceat(x, starts, axis=1)


def validate(grid: Grid, cal: LocalCalendar, cfg: VeeConfig, *,
             spans: RegisterSpans | None = None, now: int | None = None) -> Validation:
    """Run every validation rule on ``grid``.

    Parameters
    ----------
    grid : Grid
        Reads of one reading type and interval length.
    cal : LocalCalendar
        ``local_calendar(grid.t0, T, grid.interval_s, cfg.tz)``.
    cfg : VeeConfig
        Thresholds.
    spans : RegisterSpans, optional
        Register spans for the register-to-interval check.
    now : int, optional
        Current time [Unix s] for the clock-skew check; skipped when ``None``.
    """
    rt = codes.READING_TYPES[grid.reading_type]
    res = rt.resolution
    step = grid.interval_s
    v = grid.value
    present = grid.present
    vz = np.where(present, v, 0.0)
    flags = np.zeros(v.shape, dtype=np.uint32)
    counts: dict[str, int] = {}

    def mark(name: str, mask: B) -> None:
        mask = mask & present
        flags[mask] |= RULES[name]
        counts[name] = int(mask.sum())

    scale = step / 900.0 if rt.cumulative else 1.0
    lo_raw = codes.RT_MIN_RAW[rt.code] * scale
    hi_raw = codes.RT_MAX_RAW[rt.code] * scale
    mark("impossible", (vz < lo_raw) | (vz > hi_raw))

    zero_n = max(1, -(-cfg.zero_run_s // step))
    flat_n = max(2, -(-cfg.flat_run_s // step))
    consumption = rt.code in CONSUMPTION_TYPES
    if consumption:
        mark("zero_consumption", in_long_run(v, present & (v == 0), zero_n))
    else:
        counts["zero_consumption"] = 0
    mark("flat_line", in_long_run(v, present & (v != 0), flat_n))

    # spike: both neighbours present; the larger one is the reference
    spike = np.zeros(v.shape, bool)
    if v.shape[1] >= 3:
        before, after, mid = v[:, :-2], v[:, 2:], vz[:, 1:-1]
        ref = np.fmax(before, after)
        with np.errstate(invalid="ignore"):
            spike[:, 1:-1] = ((mid > cfg.spike_factor * ref) & (mid - ref > cfg.spike_min / res)
                              & ~np.isnan(before) & ~np.isnan(after))
    mark("spike", spike)

    p95 = _quantile_rows(v, present, 0.95)
    limit = cfg.high_factor * np.fmax(p95, cfg.high_min / res)
    with np.errstate(invalid="ignore"):
        mark("high_vs_history", vz > limit[:, None])

    if consumption and v.shape[1]:
        tot = day_sums(vz, cal)
        cnt = day_sums(present.astype(np.float64), cal)
        complete = cnt == cal.n_intervals[None, :]
        med = _median_rows(tot, complete)
        with np.errstate(invalid="ignore"):
            low_day = complete & (tot < cfg.low_factor * med[:, None]) & (med[:, None] > 0)
        mark("low_vs_history", low_day[:, cal.day])
    else:
        counts["low_vs_history"] = 0

    if spans is not None and len(spans):
        cs = np.concatenate([np.zeros((v.shape[0], 1)), np.cumsum(vz, axis=1)], axis=1)
        pc_ = np.concatenate([np.zeros((v.shape[0], 1), np.int64),
                              np.cumsum(present, axis=1)], axis=1)
        total = cs[spans.row, spans.hi + 1] - cs[spans.row, spans.lo]
        full = (pc_[spans.row, spans.hi + 1] - pc_[spans.row, spans.lo]) == spans.hi - spans.lo + 1
        tol = np.maximum(cfg.register_tol_abs / res, cfg.register_tol_rel * np.abs(spans.advance))
        bad = full & (np.abs(total - spans.advance) > tol)
        if bad.any():
            mark("register_mismatch", span_mask(v.shape, spans, bad))
        else:
            counts["register_mismatch"] = 0
    else:
        counts["register_mismatch"] = 0

    tmask = (grid.quality & _METER_TIME_BITS) != 0
    if now is not None:
        tmask |= (grid.interval_end > now + cfg.max_clock_skew_s)[None, :]
    mark("time_check", tmask)

    suspect = (flags != 0) & present
    flags[suspect] |= FAILED
    flags[present & ~suspect] |= VALIDATED
    return Validation(flags, suspect, counts)
