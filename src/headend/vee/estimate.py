"""VEE estimation: fill every expected interval that has no read.

Methods, in order of preference (each sets ``3.8.0`` estimated plus its own code):

1. **Linear interpolation** (``3.8.1``) of a gap of at most ``max_interpolation_s``
   (2 h) between the reads on either side: ``v_k = a + (b - a) k / (L + 1)``.
2. **Prorating a register advance** (``3.8.3``): where consecutive register reads
   bracket the remaining gap cells, the advance minus the intervals present is
   spread over them, shaped like the like-day estimate (or evenly without one),
   rounded so that the cells add up to the advance exactly.
3. **Like days** (``3.8.2``): the average, slot by slot in local time, of the
   ``like_days`` (3) nearest good days of the same day type (weekday, or
   weekend/holiday), searched first backwards then forwards within
   ``like_day_lookback_days``. A good day is complete, has no power-failure
   (outage) interval and no suspect value.
4. When no like day exists, longer gaps are interpolated linearly as well (``3.8.1``).

References
----------
California PUC, DASMMD VEE rules: interval gaps up to 2 hours by linear
interpolation; longer gaps from like days (average of 3 like days, holidays as
weekends, outage days excluded); register reads used to prorate usage over a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from headend.model import codes
from headend.vee.config import VeeConfig
from headend.vee.grid import Grid, LocalCalendar
from headend.vee.validate import POWER_FAIL, RegisterSpans, day_sums, span_mask

__all__ = ["Estimation", "day_types", "estimate", "gap_runs"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
B = npt.NDArray[np.bool_]


def _bit(name: str) -> int:
    return 1 << codes.QUALITY_BY_NAME[name].bit


EST = _bit("estimated")
EST_INTERP = np.uint32(EST | _bit("estimated_interpolation"))
EST_LIKE = np.uint32(EST | _bit("estimated_like_day"))
EST_PRORATE = np.uint32(EST | _bit("estimated_prorated"))


@dataclass(slots=True)
class Estimation:
    """Estimated cells of one grid: ``value`` (raw steps, integral) and ``quality``
    where ``mask``; ``counts`` per method; ``long_rows``: rows with a gap longer than
    ``max_interpolation_s`` (the ones like days and registers were used for)."""

    value: F64
    quality: U32
    mask: B
    counts: dict[str, int] = field(default_factory=dict)
    long_rows: I64 = field(default_factory=lambda: np.empty(0, np.int64))


def gap_runs(missing: B) -> tuple[I64, I64, I64]:
    """For every missing cell (row-major order): its gap's first column, the gap length
    and the cell's 1-based position in it."""
    m, n = missing.shape
    mm = np.concatenate([missing, np.zeros((m, 1), bool)], axis=1).ravel()
    start = mm.copy()
    start[1:] &= ~mm[:-1]
    ids = np.cumsum(start) - 1
    starts = np.flatnonzero(start)
    lengths = np.bincount(ids[mm], minlength=len(starts))
    flat = np.flatnonzero(mm)
    gid = ids[flat]
    first_flat = starts[gid]
    pos = flat - first_flat + 1
    first_col = first_flat % (n + 1)
    return first_col, lengths[gid], pos


def day_types(cal: LocalCalendar, holidays: tuple[object, ...]) -> I64:
    """0 for a weekday, 1 for a Saturday, Sunday or holiday, per local day."""
    hol = np.isin(cal.date, np.array([str(h) for h in holidays], dtype="datetime64[D]"))
    return np.where((cal.weekday >= 5) | hol, 1, 0).astype(np.int64)


def _interpolate(v: F64, rows: I64, cols: I64, first: I64, length: I64, pos: I64) -> F64:
    a = v[rows, first - 1]
    b = v[rows, first + length]
    out: F64 = a + (b - a) * pos / (length + 1)
    return out


def _like_day_profile(grid: Grid, cal: LocalCalendar, cfg: VeeConfig, good_cell: B,
                      need: B) -> F64:
    """Like-day estimate of every cell of ``need`` (NaN where no like day exists)."""
    m, n = grid.value.shape
    out = np.full((m, n), np.nan)
    if not need.any():
        return out
    ndays = len(cal.n_intervals)
    nslot = 86_400 // grid.interval_s
    # column of (day, slot); -1 where the grid has none (23-hour days, grid edges)
    colidx = np.full((ndays, nslot), -1, dtype=np.int64)
    colidx[cal.day, np.clip(cal.slot, 0, nslot - 1)] = np.arange(n)
    present_cnt = day_sums(good_cell.astype(np.float64), cal)
    good_day = present_cnt == cal.n_intervals[None, :]
    dtype_ = day_types(cal, cfg.holidays)
    need_day = day_sums(need.astype(np.float64), cal) > 0
    vz = np.where(good_cell, grid.value, 0.0)
    padded = np.concatenate([vz, np.zeros((m, 1))], axis=1)  # column -1 -> 0
    days = np.arange(ndays)
    for d in np.flatnonzero(need_day.any(axis=0)):  # loop over days, not reads
        same = (dtype_ == dtype_[d]) & (days != d) & (np.abs(days - d) <= cfg.like_day_lookback_days)
        before = days[same & (days < d)][::-1]
        after = days[same & (days > d)]
        cand = np.concatenate([before, after])
        if len(cand) == 0:
            continue
        ok = good_day[:, cand]
        sel = ok & (np.cumsum(ok, axis=1) <= cfg.like_days)
        cnt = sel.sum(axis=1)
        prof = np.einsum("mc,mcs->ms", sel.astype(np.float64), padded[:, colidx[cand]])
        with np.errstate(invalid="ignore", divide="ignore"):
            prof = np.where(cnt[:, None] > 0, prof / cnt[:, None], np.nan)
        cols = np.flatnonzero(cal.day == d)
        out[:, cols] = prof[:, np.clip(cal.slot[cols], 0, nslot - 1)]
    return np.where(need, out, np.nan)


def _round_preserving_sum(x: F64, group: I64) -> F64:
    """Round ``x`` to integers so that each group's sum rounds like its total
    (cumulative rounding inside each group, groups contiguous)."""
    cs = np.cumsum(x)
    r = np.rint(cs)
    prev = np.concatenate([[0.0], r[:-1]])
    start = np.r_[True, group[1:] != group[:-1]]
    base = np.concatenate([[0.0], cs[:-1]])
    prev = np.where(start, np.rint(base), prev)
    out: F64 = r - prev
    return out


def estimate(grid: Grid, cal: LocalCalendar, cfg: VeeConfig, *,
             suspect: B | None = None, spans: RegisterSpans | None = None) -> Estimation:
    """Estimate every expected cell without a read.

    Parameters
    ----------
    grid, cal, cfg
        As for :func:`~headend.vee.validate.validate`.
    suspect : ndarray of bool, optional
        Cells that failed validation: kept, but their days are not like days.
    spans : RegisterSpans, optional
        Register spans for prorating.
    """
    v = grid.value
    present = grid.present
    missing = grid.expected & ~present
    value = np.full(v.shape, np.nan)
    quality = np.zeros(v.shape, dtype=np.uint32)
    counts = {"interpolation": 0, "prorated": 0, "like_day": 0}
    if not missing.any():
        return Estimation(value, quality, missing, counts)
    rows, cols = np.nonzero(missing)
    first, length, pos = gap_runs(missing)
    short = length * grid.interval_s <= cfg.max_interpolation_s
    value[rows[short], cols[short]] = np.rint(
        _interpolate(v, rows[short], cols[short], first[short], length[short], pos[short]))
    quality[rows[short], cols[short]] = EST_INTERP

    long_ = np.zeros(v.shape, bool)
    long_[rows[~short], cols[~short]] = True
    # like days and prorating only concern the (few) meters with a long gap
    lrows = np.flatnonzero(long_.any(axis=1))
    if len(lrows):
        sub = Grid(grid.reading_type, grid.interval_s, grid.meter_idx[lrows], grid.t0, v[lrows],
                   grid.quality[lrows], grid.expected[lrows])
        sub_long = long_[lrows]
        good = sub.present & ((sub.quality & POWER_FAIL) == 0)
        if suspect is not None:
            good &= ~suspect[lrows]
        like = _like_day_profile(sub, cal, cfg, good, sub_long)
        sub_val = value[lrows]
        sub_q = quality[lrows]
        has_like = sub_long & ~np.isnan(like)
        sub_val[has_like] = like[has_like]
        sub_q[has_like] = EST_LIKE
        rt = codes.READING_TYPES[grid.reading_type]
        if spans is not None and len(spans) and rt.cumulative:
            pos = np.searchsorted(lrows, spans.row)
            hit = (pos < len(lrows)) & (lrows[np.minimum(pos, len(lrows) - 1)] == spans.row)
            sub_spans = RegisterSpans(pos[hit], spans.lo[hit], spans.hi[hit], spans.advance[hit])
            if len(sub_spans):
                _prorate(sub, sub_spans, sub_long, like, sub_val, sub_q)
        value[lrows] = sub_val
        quality[lrows] = sub_q

    rest = long_ & np.isnan(value)
    if rest.any():
        sel = rest[rows, cols]
        value[rows[sel], cols[sel]] = _interpolate(v, rows[sel], cols[sel], first[sel],
                                                   length[sel], pos[sel])
        quality[rows[sel], cols[sel]] = EST_INTERP
    value[missing] = np.rint(value[missing])
    est_bits = quality[missing]
    counts["interpolation"] = int((est_bits == EST_INTERP).sum())
    counts["like_day"] = int((est_bits == EST_LIKE).sum())
    counts["prorated"] = int((est_bits == EST_PRORATE).sum())
    return Estimation(value, quality, missing, counts, lrows)


def _prorate(grid: Grid, spans: RegisterSpans, long_: B, like: F64, value: F64,
             quality: U32) -> None:
    """Spread each register span's unexplained advance over its long-gap cells."""
    v = grid.value
    m, n = v.shape
    present = grid.present
    vz = np.where(present, v, 0.0)
    cs = np.concatenate([np.zeros((m, 1)), np.cumsum(vz, axis=1)], axis=1)
    lc = np.concatenate([np.zeros((m, 1), np.int64), np.cumsum(long_, axis=1)], axis=1)
    # short gaps already estimated count as known
    known_est = np.where(~present & ~long_ & ~np.isnan(value), value, 0.0)
    ck = np.concatenate([np.zeros((m, 1)), np.cumsum(known_est, axis=1)], axis=1)
    r, lo, hi = spans.row, spans.lo, spans.hi
    n_long = lc[r, hi + 1] - lc[r, lo]
    use = n_long > 0
    if not use.any():
        return
    r, lo, hi = r[use], lo[use], hi[use]
    residual = np.maximum(spans.advance[use] - (cs[r, hi + 1] - cs[r, lo])
                          - (ck[r, hi + 1] - ck[r, lo]), 0.0)
    cover = span_mask(v.shape, RegisterSpans(r, lo, hi, residual)) & long_
    # which span each covered cell belongs to (spans of one row do not overlap)
    sid = np.full((m, n + 1), -1, dtype=np.int64)
    sid[r, lo] = np.arange(len(r))
    sid = np.maximum.accumulate(np.where(sid >= 0, sid, -1), axis=1)[:, :n]
    cr, cc = np.nonzero(cover)
    span_of = sid[cr, cc]
    shape = np.nan_to_num(like[cr, cc], nan=0.0).clip(min=0.0)
    tot_shape = np.bincount(span_of, weights=shape, minlength=len(r))
    cnt = np.bincount(span_of, minlength=len(r)).astype(np.float64)
    even = tot_shape[span_of] <= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(even, 1.0 / cnt[span_of], shape / tot_shape[span_of])
    est = _round_preserving_sum(residual[span_of] * share, span_of)
    value[cr, cc] = est
    quality[cr, cc] = EST_PRORATE
