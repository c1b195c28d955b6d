"""M&V kernels: customer baselines and shed of one event, on meter x day x slot arrays.

Everything here is pure NumPy over a :class:`Window`: for each meter (row), each
candidate day (the baseline candidates in calendar order, then the event day last) and
each slot of the day's window (the day-of adjustment slots, the gap, then the event's
slots), the energy [kWh] of the slot, NaN when the slot's reads are incomplete. The
loader (:mod:`headend.dr.measure`) builds it from a store; tests build it by hand.

Rules (docs/dr.md, "Measured shed"):

* a candidate day is **eligible** for a meter when every slot of its window (adjustment
  and event slots) is complete; the caller has already left out weekends, holidays and
  earlier event days;
* ``10of10``: the mean, slot by slot, of the ``n_days`` (10) most recent eligible days;
  ``high5of10``: the mean of the ``top`` (5) of those days with the highest energy in
  the event slots (ties: the more recent day); a meter with fewer than ``min_days``
  eligible days among the ``n_days`` most recent has no baseline (NaN);
* **day-of adjustment**: ratio of the event day's energy in the adjustment slots to the
  baseline's in the same slots, clipped to ``[1 - cap, 1 + cap]`` (cap 0.2); 1 when the
  baseline's adjustment energy is 0 or the event day's adjustment slots are incomplete;
  the baseline's event slots are multiplied by it;
* a meter **participates** in the event's first ``participating`` slots (all of them
  unless it opted out: see :func:`participating_slots`); baseline and actual are
  summed over these slots, and ``shed = baseline - actual``; ``actual`` is NaN when
  one of these slots is incomplete on the event day.

The arrays are processed in blocks of meters so that temporaries stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headend.model import dr

__all__ = ["Shed", "Window", "compute_shed", "participating_slots"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """Energy of the event's window on each candidate day and on the event day.

    Attributes
    ----------
    kwh : ndarray of float, shape (M, D, K)
        Energy per slot [kWh]; NaN where incomplete. Day ``D - 1`` is the event day,
        days ``0 .. D - 2`` the candidate baseline days in calendar order.
    adjust : slice
        The slots of the day-of adjustment (before the event).
    event : slice
        The event's slots.
    """

    kwh: npt.NDArray[np.floating]
    adjust: slice
    event: slice

    def __post_init__(self) -> None:
        if self.kwh.ndim != 3 or self.kwh.shape[1] < 1:
            raise ValueError("kwh must be (meters, days, slots) with the event day last")
        for name, s in (("adjust", self.adjust), ("event", self.event)):
            a, b, step = s.indices(self.kwh.shape[2])
            if step != 1 or a > b or s.stop is None or s.stop > self.kwh.shape[2]:
                raise ValueError(f"{name} must be a slice of the slots")
        if self.event.start == self.event.stop:
            raise ValueError("the event has no slot")


@dataclass(frozen=True, slots=True, eq=False)
class Shed:
    """Per meter: baseline, actual and shed [kWh] over its participating slots, the
    number of baseline days used and the day-of adjustment ratio applied."""

    baseline_kwh: F64
    actual_kwh: F64
    shed_kwh: F64
    baseline_days: npt.NDArray[np.int16]
    adjustment: F64


def participating_slots(start: int, slot_s: int, n_slots: int,
                        opted_out_at: npt.NDArray[np.int64]) -> I64:
    """Event slots each meter takes part in, from the start.

    A slot counts when it ends at or before the opt-out: ``clip(floor((o - start) /
    slot_s), 0, n_slots)``. An opt-out at or before the start leaves no slot; one at or
    after the event's end (``start + n_slots * slot_s``), or none (``opted_out_at`` =
    int64 max), leaves every slot.
    """
    o = np.asarray(opted_out_at, np.int64)
    out: I64 = np.clip(np.floor_divide(o - start, slot_s), 0, n_slots)
    return out


def _select(elig: npt.NDArray[np.bool_], n_days: int) -> npt.NDArray[np.bool_]:
    """The ``n_days`` most recent eligible days of each row."""
    recent = np.cumsum(elig[:, ::-1], axis=1, dtype=np.int32)[:, ::-1]
    out: npt.NDArray[np.bool_] = elig & (recent <= n_days)
    return out


def _top(sel: npt.NDArray[np.bool_], energy: F64, top: int) -> npt.NDArray[np.bool_]:
    """Of the selected days, the ``top`` with the highest energy (ties: more recent)."""
    e = np.where(sel, energy, -np.inf)[:, ::-1]  # most recent first: stable sort keeps it
    order = np.argsort(-e, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(e.shape[1])[None, :], axis=1)
    out: npt.NDArray[np.bool_] = sel & (rank[:, ::-1] < top)
    return out


def compute_shed(w: Window, participating: I64, *, method: str = "10of10",
                 n_days: int = 10, top: int = 5, min_days: int = 5, cap: float = 0.2,
                 block: int = 65_536) -> Shed:
    """Baseline, actual and shed of every meter of ``w`` (see the module docstring).

    Parameters
    ----------
    w : Window
        The energy arrays.
    participating : ndarray of int
        Per meter, the event slots it takes part in from the start
        (:func:`participating_slots`).
    method : str
        A key of :data:`headend.model.dr.BASELINE_METHODS`.
    n_days, top, min_days : int
        Days averaged (10), kept by ``high5of10`` (5), needed for a baseline (5).
    cap : float
        Bound of the day-of adjustment, as a fraction (0.2 = +/-20 %).
    block : int
        Meters per block of work (bounds the temporaries to ``block x D x K``).
    """
    if method not in dr.BASELINE_METHODS:
        raise ValueError(f"unknown baseline method {method!r} "
                         f"(known: {', '.join(dr.BASELINE_METHODS)})")
    if not 0 <= cap < 1:
        raise ValueError("cap must be in [0, 1)")
    m = w.kwh.shape[0]
    part = np.asarray(participating, np.int64)
    if part.shape != (m,):
        raise ValueError("one participating count per meter")
    out = Shed(np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.nan),
               np.zeros(m, np.int16), np.ones(m))
    for a in range(0, m, block):
        b = min(a + block, m)
        _block(w, slice(a, b), part[a:b], out, method, n_days, top, min_days, cap)
    return out


def _block(w: Window, rows: slice, part: I64, out: Shed, method: str, n_days: int,
           top: int, min_days: int, cap: float) -> None:
    x = np.asarray(w.kwh[rows], np.float64)  # (B, D, K)
    hist, day = x[:, :-1, :], x[:, -1, :]
    ev, adj = w.event, w.adjust
    used = np.zeros(x.shape[2], np.bool_)
    used[ev] = True
    used[adj] = True
    elig = np.asarray(~np.isnan(hist[:, :, used]).any(axis=2), np.bool_)  # (B, D-1)
    sel = _select(elig, n_days)
    enough = sel.sum(axis=1) >= min_days  # of the (up to) n_days eligible days
    if method == "high5of10":
        sel = _top(sel, np.nansum(hist[:, :, ev], axis=2), top)
    count = sel.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = np.where(sel[:, :, None], hist, 0.0).sum(axis=1) / count[:, None]  # (B, K)
        base_adj = base[:, adj].sum(axis=1)
        day_adj = day[:, adj].sum(axis=1)
        ratio = np.where((base_adj > 0) & ~np.isnan(day_adj), day_adj / base_adj, 1.0)
    ratio = np.clip(ratio, 1.0 - cap, 1.0 + cap)
    base_ev = base[:, ev] * ratio[:, None]
    n_ev = base_ev.shape[1]
    # sums over each meter's first ``part`` event slots: cumulative sums, then one take
    csb = np.concatenate([np.zeros((len(part), 1)), np.cumsum(base_ev, axis=1)], axis=1)
    act = np.concatenate([np.zeros((len(part), 1)), np.cumsum(day[:, ev], axis=1)], axis=1)
    k = np.clip(part, 0, n_ev)[:, None]
    baseline = np.take_along_axis(csb, k, axis=1)[:, 0]
    actual = np.take_along_axis(act, k, axis=1)[:, 0]
    baseline = np.where(enough, baseline, np.nan)
    out.baseline_kwh[rows] = baseline
    out.actual_kwh[rows] = actual
    out.shed_kwh[rows] = baseline - actual
    out.baseline_days[rows] = count
    out.adjustment[rows] = np.where(enough, ratio, np.nan)
