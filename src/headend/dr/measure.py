"""An event's measured shed from a store: the window loaded, the kernels run, aggregated.

:class:`MVEvent` is what M&V needs of a demand-response event (the event store of a
later step hands it over); :class:`MVConfig` the method's settings. :func:`load_window`
streams the event meters' ``kwh_del`` reads through the store's planned scan
(:meth:`headend.store.ReadStore.plan_reads`) into a meter x day x slot
:class:`~headend.dr.baseline.Window` holding only the event window of each candidate
day (not whole days: a 4-hour event is 1M meters x 51 days x 8 hourly slots, 3.3 GB
of float64); :func:`measure` adds opt-outs and runs :func:`~headend.dr.baseline.compute_shed`;
:func:`aggregate` sums per event, feeder, program or any column.

Days and slots: candidate days are the local dates (``MVConfig.timezone``) of the
``lookback_days`` before the event day that are weekdays, not holidays and not in
``MVEvent.exclude_days``. Each day's window starts at the same local wall-clock time
(``adjust_hours + adjust_gap_hours`` before the event's local start) and has slots of
``slot_s`` seconds; an interval belongs to the slot in which it ends (as an hour in
:mod:`headend.analytics.hourly`). A slot is complete when its reads cover it:
``reads * interval_s >= slot_s`` (the meter's interval from the registry).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.dr.baseline import Shed, Window, compute_shed, participating_slots
from headend.model import codes
from headend.store.base import ReadStore

__all__ = ["MV_RESULT", "MVConfig", "MVEvent", "aggregate", "load_window", "measure",
           "opted_out_at"]

I64 = npt.NDArray[np.int64]
NEVER = np.iinfo(np.int64).max

#: per meter, what :func:`measure` returns (the CLI maps ``meter_idx`` to ``meter_id``:
#: :data:`headend.model.dr.DR_RESULT`)
MV_RESULT = pa.schema([
    pa.field("meter_idx", pa.int32(), nullable=False),
    pa.field("opted_out", pa.bool_(), nullable=False),
    pa.field("baseline_kwh", pa.float64()),
    pa.field("actual_kwh", pa.float64()),
    pa.field("shed_kwh", pa.float64()),
    pa.field("baseline_days", pa.int16(), nullable=False),
    pa.field("adjustment", pa.float64()),
])


@dataclass(frozen=True, slots=True, eq=False)
class MVEvent:
    """What M&V needs of one demand-response event.

    Attributes
    ----------
    event_id : str
        The event's id.
    start : int
        Start [Unix s]; a multiple of the slot length.
    minutes : int
        Duration [min].
    meter_idx : ndarray of int32
        The event's target meters (enrolled meters of its targets).
    program : str
        The program the event belongs to (for aggregation).
    exclude_days : tuple of date
        Local dates never used as baseline days (the program's earlier event days).
    """

    event_id: str
    start: int
    minutes: int
    meter_idx: npt.NDArray[np.int32]
    program: str = ""
    exclude_days: tuple[date, ...] = ()

    @property
    def end(self) -> int:
        return self.start + self.minutes * 60


@dataclass(frozen=True, slots=True)
class MVConfig:
    """Settings of the baseline (defaults: 10-of-10, hourly slots, CAISO's adjustment)."""

    method: str = "10of10"
    timezone: str = "UTC"
    holidays: tuple[date, ...] = ()
    slot_s: int = 3600
    lookback_days: int = 70
    n_days: int = 10
    top: int = 5
    min_days: int = 5
    cap: float = 0.2
    adjust_hours: int = 3
    adjust_gap_hours: int = 1
    reading_type: int = field(default=codes.READING_TYPE_BY_NAME["kwh_del"].code)


def _candidate_days(ev: MVEvent, cfg: MVConfig) -> list[date]:
    tz = ZoneInfo(cfg.timezone)
    day = datetime.fromtimestamp(ev.start, tz).date()
    skip = set(cfg.holidays) | set(ev.exclude_days)
    out = [day - timedelta(days=i) for i in range(cfg.lookback_days, 0, -1)]
    return [d for d in out if d.weekday() < 5 and d not in skip] + [day]


def _window_starts(ev: MVEvent, cfg: MVConfig, days: list[date]) -> I64:
    """UTC start of each day's window: the same local wall-clock time every day."""
    tz = ZoneInfo(cfg.timezone)
    lead = timedelta(hours=cfg.adjust_hours + cfg.adjust_gap_hours)
    local = datetime.fromtimestamp(ev.start, tz).replace(tzinfo=None) - lead
    first = local.date()
    out = [int((datetime.combine(first + (d - days[-1]), local.time()))
               .replace(tzinfo=tz).timestamp()) for d in days]
    return np.array(out, np.int64)


def _slots(ev: MVEvent, cfg: MVConfig) -> tuple[int, slice, slice]:
    s = cfg.slot_s
    if s <= 0 or 3600 % s or ev.start % s or (ev.minutes * 60) % s or ev.minutes <= 0:
        raise ValueError(f"the event's start and minutes must be whole slots of {s} s "
                         "(a divisor of an hour)")
    per_h = 3600 // s
    adj = slice(0, cfg.adjust_hours * per_h)
    e0 = (cfg.adjust_hours + cfg.adjust_gap_hours) * per_h
    event = slice(e0, e0 + ev.minutes * 60 // s)
    return event.stop, adj, event


class _Accumulator:
    """Sums and read counts of (meter row, day, slot), added chunk by chunk."""

    def __init__(self, meters: npt.NDArray[np.int32], w0: I64, k: int, slot_s: int) -> None:
        self.meters = np.asarray(meters, np.int64)
        self.w0, self.k, self.slot_s = w0, k, slot_s
        self.cells = len(w0) * k
        self.sums = np.zeros(len(meters) * self.cells)
        self.count = np.zeros(len(meters) * self.cells, np.uint16)
        self._lock = threading.Lock()

    def add(self, m: npt.NDArray[Any], t: I64, v: npt.NDArray[Any]) -> None:
        """Add reads (meter, interval end [Unix s], value in the resolution); reads of
        other meters or outside every day's window are skipped.

        Only the rows inside a window are touched: with the rows sorted by (meter,
        time) (a store chunk is; others are sorted here), each (meter, day) window is
        one run of rows, found by two binary searches of a packed key."""
        key = (m.astype(np.int64) << 32) | t
        if len(key) > 1 and bool((key[1:] < key[:-1]).any()):
            order = np.argsort(key, kind="stable")
            key, t, v = key[order], t[order], v[order]
        heads = np.flatnonzero(np.r_[True, key[1:] >> 32 != key[:-1] >> 32])
        um = key[heads] >> 32  # the chunk's meters, ascending
        pos = np.minimum(np.searchsorted(self.meters, um), len(self.meters) - 1)
        mine = self.meters[pos] == um
        um, pos = um[mine], pos[mine]
        if len(um) == 0:
            return
        span = self.k * self.slot_s
        first = ((um[:, None] << 32) | (self.w0[None, :] + 1)).ravel()  # ends > w0
        a = np.searchsorted(key, first, side="left")
        b = np.searchsorted(key, first + span, side="left")  # ends <= w0 + span
        n = b - a
        total = int(n.sum())
        if total == 0:
            return
        # the rows of every run, and the cell where each run's slot 0 is
        run_start = np.repeat(a - np.cumsum(n) + n, n)
        rows = run_start + np.arange(total)
        day = np.tile(np.arange(len(self.w0)), len(um))
        base = (np.repeat(pos, len(self.w0)) * self.cells + day * self.k)
        w0 = np.repeat(self.w0[day], n)
        flat = np.repeat(base, n) + (t[rows] - w0 - 1) // self.slot_s
        lo, hi = int(flat.min()), int(flat.max()) + 1
        s = np.bincount(flat - lo, weights=v[rows], minlength=hi - lo)
        c = np.bincount(flat - lo, minlength=hi - lo).astype(np.uint16)
        with self._lock:
            self.sums[lo:hi] += s
            self.count[lo:hi] += c


def load_window(store: ReadStore, ev: MVEvent, cfg: MVConfig,
                interval_s: npt.NDArray[np.int32]) -> tuple[Window, npt.NDArray[np.int32]]:
    """The event's :class:`Window` from a store, and its meters (sorted, unique).

    ``interval_s``: each meter's interval length [s], indexed by ``meter_idx``.
    """
    meters = np.unique(np.asarray(ev.meter_idx, np.int32))
    k, adj, event = _slots(ev, cfg)
    days = _candidate_days(ev, cfg)
    w0 = _window_starts(ev, cfg, days)
    acc = _Accumulator(meters, w0, k, cfg.slot_s)
    if len(meters):
        plan = store.plan_reads(meters=meters, start=int(w0[0]) + 1,
                                end=int(w0[-1]) + k * cfg.slot_s + 1,
                                reading_types=np.array([cfg.reading_type], np.uint8))

        def add(t: pa.Table) -> None:
            acc.add(_np(t.column("meter_idx")),
                    _np(t.column("interval_end").cast(pa.int64())), _np(t.column("value")))

        plan.run(add, columns=["meter_idx", "interval_end", "value"])
    res = codes.READING_TYPES[cfg.reading_type].resolution
    ivl = np.asarray(interval_s, np.int64)[meters].astype(np.float64)
    shape = (len(meters), len(days), k)
    kwh = acc.sums.reshape(shape)
    kwh *= res
    complete = acc.count.reshape(shape) * ivl[:, None, None] >= cfg.slot_s
    kwh[~complete] = np.nan
    return Window(kwh, adj, event), meters


def opted_out_at(meters: npt.NDArray[np.int32], opt_outs: pa.Table | None, end: int) -> I64:
    """Earliest opt-out that counts, per meter [Unix s]; :data:`NEVER` if none.

    ``opt_outs`` has ``meter_idx`` and ``at`` (timestamp or Unix s); an opt-out at or
    after the event's ``end`` does not count (it came too late).
    """
    out = np.full(len(meters), NEVER, np.int64)
    if opt_outs is None or opt_outs.num_rows == 0:
        return out
    at_col = opt_outs.column("at")
    at = (at_col.cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()) if pa.types.is_timestamp(
        at_col.type) else at_col.cast(pa.int64())).to_numpy()
    m = opt_outs.column("meter_idx").to_numpy().astype(np.int64)
    keep = at < end
    pos = np.searchsorted(meters, m[keep])
    pos_c = np.minimum(pos, max(len(meters) - 1, 0))
    hit = (len(meters) > 0) & (np.asarray(meters)[pos_c] == m[keep]) if len(meters) else \
        np.zeros(0, np.bool_)
    np.minimum.at(out, pos_c[hit], at[keep][hit])
    return out


def measure(store: ReadStore, ev: MVEvent, cfg: MVConfig, interval_s: npt.NDArray[np.int32],
            opt_outs: pa.Table | None = None) -> pa.Table:
    """Per meter of the event: :data:`MV_RESULT`, sorted by ``meter_idx``.

    ``opted_out`` is true when the meter opted out before the event's end (see
    :func:`opted_out_at`); its baseline, actual and shed cover the slots before the
    opt-out (:func:`headend.dr.baseline.participating_slots`).
    """
    w, meters = load_window(store, ev, cfg, interval_s)
    oo = opted_out_at(meters, opt_outs, ev.end)
    n_ev = w.event.stop - w.event.start
    part = participating_slots(ev.start, cfg.slot_s, n_ev, oo)
    shed = compute_shed(w, part, method=cfg.method, n_days=cfg.n_days, top=cfg.top,
                        min_days=cfg.min_days, cap=cfg.cap)
    return result_table(meters, oo != NEVER, shed)


def result_table(meters: npt.NDArray[np.int32], opted_out: npt.NDArray[np.bool_],
                 shed: Shed) -> pa.Table:
    """:data:`MV_RESULT` from the kernel's output (NaN -> null)."""
    def col(x: npt.NDArray[np.float64]) -> pa.Array:
        return pa.array(x, pa.float64(), mask=np.isnan(x))

    return pa.table({"meter_idx": pa.array(meters, pa.int32()),
                     "opted_out": pa.array(opted_out, pa.bool_()),
                     "baseline_kwh": col(shed.baseline_kwh), "actual_kwh": col(shed.actual_kwh),
                     "shed_kwh": col(shed.shed_kwh),
                     "baseline_days": pa.array(shed.baseline_days, pa.int16()),
                     "adjustment": col(shed.adjustment)}, schema=MV_RESULT)


def aggregate(results: pa.Table, by: list[str]) -> pa.Table:
    """Sums per group (e.g. ``["event_id"]``, ``["event_id", "feeder_id"]``,
    ``["program"]``): ``meters``, ``opted_out`` (meters), ``measured`` (meters with a
    shed), ``baseline_kwh``, ``actual_kwh``, ``shed_kwh`` over the measured meters,
    sorted by the group columns."""
    measured = pc.is_valid(results.column("shed_kwh"))
    t = results.append_column("_measured", measured)
    for c in ("baseline_kwh", "actual_kwh"):
        t = t.set_column(t.column_names.index(c), c,
                         pc.if_else(measured, t.column(c), pa.scalar(None, pa.float64())))
    t = t.append_column("_opted", pc.cast(t.column("opted_out"), pa.int64()))
    t = t.append_column("_meas", pc.cast(measured, pa.int64()))
    g = t.group_by(by).aggregate([
        ("meter_idx", "count"), ("_opted", "sum"), ("_meas", "sum"),
        ("baseline_kwh", "sum"), ("actual_kwh", "sum"), ("shed_kwh", "sum")])
    g = g.rename_columns({"meter_idx_count": "meters", "_opted_sum": "opted_out",
                          "_meas_sum": "measured", "baseline_kwh_sum": "baseline_kwh",
                          "actual_kwh_sum": "actual_kwh", "shed_kwh_sum": "shed_kwh"})
    g = g.select([*by, "meters", "opted_out", "measured", "baseline_kwh", "actual_kwh",
                  "shed_kwh"])
    return g.sort_by([(c, "ascending") for c in by])


def _np(col: pa.ChunkedArray | pa.Array) -> npt.NDArray[Any]:
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
