"""Clock tolerance of the outage rule: gasps and restorations of drifting meter clocks.

A meter stamps its last gasp (3.26.0.85) and restoration (3.26.0.216) with its own clock;
interval ends stay on the grid. A meter whose clock is minutes off sends a gasp minutes
away from its siblings'. Such a gasp is *lone*: no other gasp of its transformer lies
within ``simultaneity_s`` of it, while the meters of a failed device gasp together. A
lone gasp within ``clock_tolerance_s`` [s] of an outage of a device above its meter
belongs to that outage when another meter of its transformer still had power at the
outage's start (gasped then or later); a lone late restoration likewise, when another
meter of its transformer came back with the outage. Coherent gasps are never merged.
Lone gasps are few, so :func:`near_outage` loops over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from headend.rules.topology import SUBSTATION, TRANSFORMER, Topology
from headend.rules.windows import isolated

__all__ = ["lone_gasps", "lone_late_restorations", "near_outage", "transformer_key"]

B = npt.NDArray[np.bool_]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


def transformer_key(meters: I32, topo: Topology) -> I64:
    """Transformer index of each meter; a meter without one is alone by itself."""
    tx = topo.device[TRANSFORMER][meters].astype(np.int64)
    return np.where(tx >= 0, tx, topo.n_devices(TRANSFORMER) + meters.astype(np.int64))


def lone_gasps(pm: I32, pt: I64, pseudo: B, lo: I64, ready: B, waiting: B, topo: Topology,
               simultaneity_s: int, tol_s: int, wait_s: int | None = None) -> tuple[B, B]:
    """Lone gasps and the incidents made of lone gasps only.

    Parameters
    ----------
    pm, pt, pseudo : pending gasps (meter, time [s], inferred from silence), sorted by time
    lo : first gasp of each incident (session)
    ready : incidents ready to locate; *updated*: an incident of lone gasps waits while a
        real gasp of its substation not yet ready lies up to ``wait_s`` (default
        ``tol_s``) after one of them (the outage it may belong to is located first)
    waiting : real gasps of incidents not ready

    Returns
    -------
    (lone per gasp, lone-only per incident)
    """
    if tol_s <= 0:
        return np.zeros(len(pt), np.bool_), np.zeros(len(lo), np.bool_)
    # lone among the real gasps: silence (a pseudo-gasp at the last sign of power, known
    # to one interval) does not make a gasp coherent
    real = ~pseudo
    lonely = np.zeros(len(pt), np.bool_)
    lonely[real] = isolated(transformer_key(pm[real], topo), pt[real], simultaneity_s)
    lone_s = np.logical_and.reduceat(lonely | pseudo, lo) & np.logical_or.reduceat(lonely, lo)
    cand = lonely & ready[np.repeat(np.arange(len(lo)), np.diff(np.r_[lo, len(pt)]))]
    if cand.any() and waiting.any():
        sub = topo.device[SUBSTATION][pm].astype(np.int64) + 1
        later = np.sort((sub[waiting] << 32) | pt[waiting])
        c = np.flatnonzero(cand)
        k = (sub[c] << 32) | pt[c]
        w = tol_s if wait_s is None else max(tol_s, wait_s)
        held = np.searchsorted(later, k + w, "right") > np.searchsorted(later, k, "right")
        held_s = np.zeros(len(lo), np.bool_)
        held_s[np.searchsorted(lo, c[held], "right") - 1] = True
        ready &= ~(held_s & lone_s)
    return lonely, lone_s


def near_outage(m: I32, t: I64, outages: Sequence[tuple[int, I32]], last_gasp: I64,
                topo: Topology, simultaneity_s: int, slack_s: int, tol_s: int,
                before_s: int | None = None) -> B:
    """Lone gasps (meter ``m`` at ``t``) that belong to an open device outage
    ``(start, members)`` of which the meter is a member: within ``start - before_s``
    (default ``tol_s``) .. ``start + simultaneity_s + tol_s`` while another meter of the
    transformer gasped at ``start - slack_s`` or later (so the transformer did not fail
    on its own before)."""
    hit = np.zeros(len(m), np.bool_)
    if not outages:
        return hit
    st = np.array([a for a, _ in outages], np.int64)
    early = tol_s if before_s is None else before_s
    for i, (mi, ti) in enumerate(zip(m.tolist(), t.tolist(), strict=True)):
        for k in np.flatnonzero((ti >= st - early) & (ti <= st + simultaneity_s + tol_s)).tolist():
            a, members = outages[k]
            if not (members == mi).any():
                continue
            tx = int(topo.device[TRANSFORMER][mi])
            if tx < 0:
                continue
            mates, _ = topo.meters_of(TRANSFORMER, np.array([tx], np.int32))
            if (last_gasp[mates[mates != mi]] >= a - slack_s).any():
                hit[i] = True
                break
    return hit


def lone_late_restorations(meters: I32, restored: I64, late: B, start: int, end: int,
                           topo: Topology, simultaneity_s: int, tol_s: int) -> B:
    """Of the members restored ``late`` after an outage ``start..end``, those whose
    restoration is lone and at most ``tol_s`` late while another meter of the transformer
    came back with the outage: a drifting clock, not a nested outage."""
    if tol_s <= 0 or not late.any():
        return np.zeros(len(meters), np.bool_)
    key = transformer_key(meters, topo)
    tx = topo.device[TRANSFORMER][meters]
    agree = np.isin(key, key[(restored > start) & ~late & (tx >= 0)])
    return late & agree & isolated(key, restored, simultaneity_s) & (restored <= end + tol_s)
