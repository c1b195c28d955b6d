"""Outage detection, location and restoration (last gasp 3.26.0.85, restore 3.26.0.216).

Method
------
1. **Evidence** (vectorised per chunk, dense per-meter state): the last gasp, the last
   restoration event, the last read flagged *power failure* (quality 1.2.32), the last
   sign of power (an unflagged read or a non-gasp event), the last report of any kind,
   and the latest *reporting gap* (two
   successive signs of power further apart than the meter's interval + slack).
2. **Incidents**: gasps are clustered in event time (session windows, gap
   ``correlation_s``). An incident is located once the watermark passes its last gasp
   by ``confirm_s`` (so the next interval read of every meter is due), or its first
   gasp by ``max_delay_s``.
3. **Location**, top-down: a substation, feeder or transformer is out when the densest
   ``simultaneity_s`` window of its gasps holds ``coherence`` of them (a device fails at
   once) and at least its ``*_ratio`` of electric meters are *out at that start* ``a``:
   gasped, flagged a power failure since ``a``, silent since ``a`` and overdue, silent
   across ``a`` (reporting gap), already in an outage, or (two-way meters, ``use_pings``)
   not answering a ping. Lost gasps (30 % and more) are made up by the silence of
   sibling meters; a transformer whose every gasp was lost is found from all its meters
   falling silent at once (a pseudo-gasp at their last sign of power, located once the
   real gasps up to one interval later are). A gasp (or silence) of a meter already in
   an outage is explained by it only if that outage had begun by then; a transformer
   whose gasps all precede its feeder's median gasp by more than ``lead_s`` failed
   first (its own outage). Gasping meters under no out device get meter-level outages.
4. **Restoration**: a member is back at its first sign of power after ``a`` (restore
   event, first read after its gap, or the first interval read after ``a``). A device
   outage ends when ``restore_ratio`` of its members are back, at their median (lower)
   restoration time. Members still out ``confirm_s`` + one interval after that (not
   answering a ping, not covered by another outage in progress) or, under a feeder or
   substation, back only later (a restoration event more than ``simultaneity_s`` / 2
   after its end, or a power-fail flagged read at a later interval end) become
   **nested** outages (transformer or meter level; a meter level one only while still
   dark), starting at the parent's end (their own failure was masked by the parent).
5. **Clock tolerance** (:mod:`headend.rules.clock`): a lone gasp (none of its
   transformer's within ``simultaneity_s``) up to ``clock_tolerance_s`` off an out
   device's window above its meter belongs to it while another meter of its transformer
   had power until the start; incidents of lone gasps only wait for the gasps up to
   ``clock_tolerance_s`` after them and are located last; a lone restoration up to
   ``clock_tolerance_s`` late, while a transformer mate came back in time, is no nested
   outage. A meter failing again before an outage is located: its restoration is the
   last one before that gasp. A substation is out only when each of its feeders is.
6. **Verification by ping** (a verifying :class:`~headend.rules.pinger.Pinger`, e.g. real
   ping commands in ``headend serve``): silence with no gasp waits for the pings of up
   to ``ping_meters`` meters per transformer (at most ``ping_wait_s``) and is confirmed,
   refined or dropped from the answers; members dark one interval + slack after an
   outage's end are pinged then, and the answers are read when it is finished.
7. **Momentary** (<= ``momentary_s``, IEEE 1366-2012: momentary interruption <= 5 min)
   vs **sustained**.
   **Storm mode**: at ``storm_outages`` new outages within ``storm_window_s`` a storm
   alert is raised and the engine stops sending meter-level and momentary outages to
   the OMS (they are still recorded and exported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from headend.model.codes import Commodity
from headend.rules.alerts import Outage, record_id
from headend.rules.base import PF_BIT, POWER_FAIL, POWER_RESTORED, Chunk, Context, Output
from headend.rules.clock import (
    lone_gasps,
    lone_late_restorations,
    near_outage,
    transformer_key,
)
from headend.rules.config import OutageConfig
from headend.rules.grid import SCAN_S
from headend.rules.pinger import (
    CANNOT_PING,
    NO_ANSWER,
    PENDING,
    POWERED,
    EvidencePinger,
    Pinger,
)
from headend.rules.topology import FEEDER, LEVEL_NAMES, METER, SUBSTATION, TRANSFORMER, Topology
from headend.rules.windows import densest_window, session_ids, sort_by_key_time

__all__ = ["EvidencePinger", "OutageRule", "Pinger"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
_STATE = ("last_up", "gap_from", "gap_to", "last_gasp", "last_restore", "pf_at", "up_after",
          "last_report", "restore_before", "explained_to")
INPUTS = ("events:3.26.0.85", "events:3.26.0.216", "reads:interval_end",
          "reads:quality:1.2.32", "topology")


@dataclass(slots=True)
class _Open:
    """An outage in progress (runtime; snapshot as arrays)."""

    oid: str
    level: int
    dev: int
    start: int
    members: I32
    parent: str | None
    end: int | None = None
    pinged: bool = False
    ping_at: int = 0  # when the members still out at its end were pinged (0: not yet)
    asked: I32 = field(default_factory=lambda: np.zeros(0, np.int32))  # ... which


class OutageRule:
    """Runtime outage rule (see the module docstring). State: 9 int64 and 1 int32 per meter."""

    kind = "outage"

    def __init__(self, name: str, cfg: OutageConfig, n: int = 0) -> None:
        self.name, self.cfg = name, cfg
        z = np.zeros(n, np.int64)
        self.last_up, self.gap_from, self.gap_to = z.copy(), z.copy(), z.copy()
        self.last_gasp, self.last_restore, self.pf_at, self.up_after = (
            z.copy(), z.copy(), z.copy(), z.copy())
        self.last_report = z.copy()  # any read or event, flagged or not
        self.restore_before = z.copy()  # the last restoration before the last gasp
        # end of the interval in which the meter's last located outage was restored: its
        # flagged reads and reporting gap up to then are that outage's evidence
        self.explained_to = z.copy()
        self.member = np.full(n, -1, np.int32)
        self.p_meter = np.zeros(0, np.int32)
        self.p_time = np.zeros(0, np.int64)
        self.p_pseudo = np.zeros(0, np.bool_)  # pending gasp inferred from silence
        self.p_ping = np.zeros(0, np.bool_)  # ... and confirmed by a ping unanswered
        # silence waiting for ping answers (a verifying pinger): meter, its last sign of
        # power, when the pings were asked [s], pinged or not (a few per transformer)
        self.v_meter = np.zeros(0, np.int32)
        self.v_from = np.zeros(0, np.int64)
        self.v_at = np.zeros(0, np.int64)
        self.v_ping = np.zeros(0, np.bool_)
        # silent meters that answered a ping (sorted by meter, one entry each): silent
        # since k_from, powered at k_at: their silence there is no evidence of an outage
        self.k_meter = np.zeros(0, np.int32)
        self.k_from = np.zeros(0, np.int64)
        self.k_at = np.zeros(0, np.int64)
        # restorations with no gasp since the meter's last sign of power (its gasp lost):
        # meter, that sign of power, the restoration [s]; judged confirm_s later
        self.q_meter = np.zeros(0, np.int32)
        self.q_from = np.zeros(0, np.int64)
        self.q_time = np.zeros(0, np.int64)
        self.open: dict[int, _Open] = {}
        self.next_slot = 0
        self.recent = np.zeros(0, np.int64)  # starts of recent outages (storm mode)
        self.storm_until = 0
        self._closed: dict[int, _Open] = {}
        self._touched: set[int] = set()
        self._wm = 0
        self._scanned = 0  # watermark of the last silence scan
        self._fps: tuple[int, I64] = (-1, np.zeros(0, np.int64))

    # ------------------------------------------------------------------ state

    def grow(self, n: int) -> None:
        if n <= len(self.member):
            return
        pad = n - len(self.member)
        for f in _STATE:
            setattr(self, f, np.concatenate([getattr(self, f), np.zeros(pad, np.int64)]))
        self.member = np.concatenate([self.member, np.full(pad, -1, np.int32)])

    def snapshot(self) -> dict[str, Any]:
        s: dict[str, Any] = {f: getattr(self, f) for f in _STATE}
        o = list(self.open.items())
        s.update(member=self.member, p_meter=self.p_meter, p_time=self.p_time,
                 p_pseudo=self.p_pseudo, p_ping=self.p_ping, q_meter=self.q_meter,
                 q_from=self.q_from, q_time=self.q_time, v_meter=self.v_meter,
                 v_from=self.v_from, v_at=self.v_at, v_ping=self.v_ping,
                 k_meter=self.k_meter, k_from=self.k_from, k_at=self.k_at,
                 recent=self.recent, scalars=np.array([self.next_slot, self.storm_until, self._scanned]),
                 o_slot=np.array([k for k, _ in o], np.int64),
                 o_num=np.array([[x.level, x.dev, x.start, -1 if x.end is None else x.end,
                                  int(x.pinged), x.ping_at] for _, x in o],
                                np.int64).reshape(-1, 6),
                 o_id=np.array([x.oid for _, x in o], dtype="<U16"),
                 o_parent=np.array([x.parent or "" for _, x in o], dtype="<U16"),
                 o_len=np.array([len(x.members) for _, x in o], np.int64),
                 o_asked=np.concatenate([x.asked for _, x in o] or [np.zeros(0, np.int32)]),
                 o_asked_len=np.array([len(x.asked) for _, x in o], np.int64),
                 o_members=np.concatenate([x.members for _, x in o] or [np.zeros(0, np.int32)]))
        return s

    def restore(self, s: dict[str, Any]) -> None:
        for f in _STATE:  # a checkpoint from before restore_before: zeros
            setattr(self, f, np.array(s[f] if f in s else np.zeros(len(s["member"])), np.int64))
        self.member = np.array(s["member"], np.int32)
        self.p_meter, self.p_time = np.array(s["p_meter"]), np.array(s["p_time"])
        self.p_pseudo = np.array(s["p_pseudo"], np.bool_)
        # checkpoints from before verification by ping lack these: empty
        self.p_ping = np.array(s.get("p_ping", np.zeros(len(self.p_pseudo))), np.bool_)
        for f, dt in (("v_meter", np.int32), ("v_from", np.int64), ("v_at", np.int64),
                      ("v_ping", np.bool_), ("k_meter", np.int32), ("k_from", np.int64),
                      ("k_at", np.int64)):
            setattr(self, f, np.array(s.get(f, np.zeros(0)), dt))
        self.q_meter = np.array(s.get("q_meter", np.zeros(0)), np.int32)
        self.q_from = np.array(s.get("q_from", np.zeros(0)), np.int64)
        self.q_time = np.array(s.get("q_time", np.zeros(0)), np.int64)
        self.recent = np.array(s["recent"])
        self.next_slot, self.storm_until, self._scanned = (int(x) for x in s["scalars"])
        parts = np.split(np.array(s["o_members"], np.int32), np.cumsum(s["o_len"])[:-1])
        n_open = len(np.asarray(s["o_slot"]))
        asked = np.split(np.array(s.get("o_asked", np.zeros(0)), np.int32),
                         np.cumsum(s.get("o_asked_len", np.zeros(n_open, np.int64)))[:-1])
        self.open = {}
        for i, slot in enumerate(np.asarray(s["o_slot"]).tolist()):
            num = [int(x) for x in s["o_num"][i]] + [0]  # 5 columns before ping_at
            lv, dev, st, end, pg, p_at = num[:6]
            self.open[slot] = _Open(str(s["o_id"][i]), lv, dev, st, parts[i],
                                    str(s["o_parent"][i]) or None, None if end < 0 else end,
                                    bool(pg), p_at, asked[i] if n_open else np.zeros(0, np.int32))

    # ------------------------------------------------------------------ evidence

    def _evidence(self, c: Chunk, topo: Topology) -> None:
        pf = (c.r_quality & PF_BIT) != 0
        any_pf = bool(pf.any())
        if any_pf:
            np.maximum.at(self.pf_at, c.r_meter[pf], c.r_time[pf])
        np.maximum.at(self.last_report, c.r_meter, c.r_time)
        if len(c.e_time):
            # a disconnected meter's power events are the switch's, not the grid's
            live = ~topo.disconnected[c.e_meter]
            gasp = (c.e_code == POWER_FAIL) & live
            rest = (c.e_code == POWER_RESTORED) & live
            self._restore_before(c.e_meter[gasp | rest], c.e_time[gasp | rest],
                                 gasp[gasp | rest])
            for arr, m, t in ((self.last_gasp, c.e_meter[gasp], c.e_time[gasp]),
                              (self.last_restore, c.e_meter[rest], c.e_time[rest])):
                np.maximum.at(arr, m, t)
            np.maximum.at(self.last_report, c.e_meter, c.e_time)
            self.p_meter = np.concatenate([self.p_meter, c.e_meter[gasp]])
            self.p_time = np.concatenate([self.p_time, c.e_time[gasp]])
            self.p_pseudo = np.concatenate([self.p_pseudo,
                                            np.zeros(int(gasp.sum()), np.bool_)])
            self.p_ping = np.concatenate([self.p_ping, np.zeros(int(gasp.sum()), np.bool_)])
            # signs of power: reads not flagged power-fail and every event but a gasp (a
            # flagged read covers part of an outage and may be closed while still out)
            um = np.concatenate([c.r_meter[~pf], c.e_meter[~gasp]])
            ut = np.concatenate([c.r_time[~pf], c.e_time[~gasp]])
            is_rest: npt.NDArray[np.bool_] | None = np.concatenate(
                [np.zeros(len(um) - int((~gasp).sum()), np.bool_), rest[~gasp]])
        else:  # reads alone (most ticks): no events to merge in
            um, ut = (c.r_meter[~pf], c.r_time[~pf]) if any_pf else (c.r_meter, c.r_time)
            is_rest = None
        if len(ut) == 0:
            return
        o = sort_by_key_time(um, ut)
        um, ut = um[o], ut[o]
        first = np.ones(len(um), np.bool_)
        first[1:] = um[1:] != um[:-1]
        last = np.ones(len(um), np.bool_)
        last[:-1] = first[1:]
        prev = np.empty_like(ut)
        prev[1:] = ut[:-1]
        prev[first] = self.last_up[um[first]]
        iv = topo.interval_s[um].astype(np.int64) + self.cfg.slack_s
        g = np.flatnonzero((prev > 0) & (ut - prev > iv))
        if len(g):
            # after a restoration event the next read is flagged (no sign of power): the
            # next unflagged read is up to two intervals later, and no reporting gap
            after = np.zeros(len(g), np.bool_)
            fg = first[g]
            after[fg] = self.last_up[um[g[fg]]] == self.last_restore[um[g[fg]]]
            if is_rest is not None:
                after[~fg] = is_rest[o][g[~fg] - 1]
            g = g[~after | (ut[g] - prev[g] > iv[g] + topo.interval_s[um[g]])]
        if len(g):
            gl = g[np.r_[um[g][1:] != um[g][:-1], True]]  # last gap of each meter
            self.gap_from[um[gl]] = prev[gl]
            self.gap_to[um[gl]] = ut[gl]
        if is_rest is not None:  # a restoration with no gasp since the last sign of power
            kr = is_rest[o]
            ro = np.flatnonzero(kr & (prev > 0) & (self.last_gasp[um] <= prev))
            if len(ro):
                self.q_meter = np.concatenate([self.q_meter, um[ro].astype(np.int32)])
                self.q_from = np.concatenate([self.q_from, prev[ro]])
                self.q_time = np.concatenate([self.q_time, ut[ro]])
        self.last_up[um[last]] = np.maximum(self.last_up[um[last]], ut[last])
        # first sign of power of members still out, after their outage start
        mem = self.member[um]
        cand = np.flatnonzero((mem >= 0) & (self.up_after[um] == 0))
        if len(cand):
            starts = np.array([self.open[s].start for s in mem[cand].tolist()], np.int64)
            cand = cand[ut[cand] > starts]
            fc = cand[np.r_[True, um[cand][1:] != um[cand][:-1]]] if len(cand) else cand
            self.up_after[um[fc]] = ut[fc]

    def _restore_before(self, m: I32, t: I64, is_gasp: npt.NDArray[np.bool_]) -> None:
        """Keep the last restoration before each meter's last gasp (the restoration of an
        earlier outage when the meter fails again before that one is located)."""
        if not is_gasp.any():
            return
        o = sort_by_key_time(m, t)
        m, t, is_gasp = m[o], t[o], is_gasp[o]
        j = np.maximum.accumulate(np.where(is_gasp, -1, np.arange(len(t))))
        own = (j >= 0) & (m[np.maximum(j, 0)] == m)
        prev = np.where(own, t[np.maximum(j, 0)], self.last_restore[m])
        g = np.flatnonzero(is_gasp)
        last_g = g[np.r_[m[g][1:] != m[g][:-1], True]]  # each meter's last gasp here
        self.restore_before[m[last_g]] = prev[last_g]

    def _out_at(self, m: I32, a: I64, hi: int, wm: int, topo: Topology, ping: Any
                ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Which meters ``m`` were out at incident start ``a`` (per meter; the incident's
        last gasp at ``hi``), and which of those were out already, in an outage located
        before [bool, bool]."""
        s = self.cfg.slack_s
        iv = topo.interval_s[m].astype(np.int64)
        lu = self.last_up[m]
        gasped = (self.last_gasp[m] >= a - s) & (self.last_gasp[m] <= hi + s)
        # evidence an earlier outage explains (flagged reads up to the interval of its
        # restoration, the reporting gap across it) is not evidence of a new one
        ua = np.where(self.member[m] >= 0, self.up_after[m], 0)
        expl = np.maximum(self.explained_to[m], np.where(ua > 0, -(-ua // iv) * iv, 0))
        pf = (self.pf_at[m] >= a) & (self.pf_at[m] > expl)
        # ... but a meter with power after ``a`` (a sign of power past it) whose flagged
        # interval began since then failed later, not at ``a`` (a restoration event
        # carries the meter's clock: up to clock_tolerance_s off the reads' grid)
        lu_tol = lu + np.where(lu == self.last_restore[m], self.cfg.clock_tolerance_s, 0)
        pf &= ~((lu > a + s) & (self.pf_at[m] - iv >= lu_tol))
        silent_now = (lu <= a + s) & (wm - lu > iv + s)
        gap = (self.gap_from[m] <= a + s) & (self.gap_to[m] > a + s) & (a > expl + s)
        if len(self.k_meter):  # silent, but answered a ping since: not out by silence
            answered = self._answered(m, a)
            silent_now &= ~answered
            gap &= ~answered
        # in an outage in progress that had begun by ``a`` (one that began later says
        # the meter had power until then)
        still = (self.member[m] >= 0) & (self.up_after[m] == 0) & (
            self._slot_starts()[np.maximum(self.member[m], 0)] <= a + s)
        out = gasped | pf | silent_now | gap | still
        undecided = ~out & (lu <= a + s) & topo.two_way[m]
        # the evidence pinger answers at once; a network ping is asked where silence
        # begins (_silence_trigger), not here: location does not wait for one
        if ping is not None and self.cfg.use_pings and not ping.verifies and undecided.any():
            u = np.flatnonzero(undecided)
            out[u] = ping.answers(m[u], wm) == NO_ANSWER
        # out already: in an outage that began before ``a`` (not one located just now
        # above a device that failed first)
        before = still & (self._slot_starts()[np.maximum(self.member[m], 0)] < a)
        return out, before

    def _restored_at(self, m: I32, a: I64, topo: Topology) -> I64:
        """First sign of power after ``a`` per meter from the state (0: none yet)."""
        s = self.cfg.slack_s
        iv = topo.interval_s[m].astype(np.int64)
        big = np.iinfo(np.int64).max
        # the meter gasped again after this outage (beyond its clock tolerance): its
        # restoration is the one before that gasp
        again = self.last_gasp[m] > a + self.cfg.simultaneity_s + s + self.cfg.clock_tolerance_s
        ev = np.where(again, self.restore_before[m], self.last_restore[m])
        r = np.where(ev > a, ev, big)
        gap = (self.gap_from[m] <= a + s) & (self.gap_to[m] > a + s)
        r = np.minimum(r, np.where(gap, self.gap_to[m], big))
        grid = (a // iv + 1) * iv
        r = np.minimum(r, np.where(~gap & (self.last_up[m] >= grid), grid, big))
        out: I64 = np.where(r == big, 0, r)
        return out

    # ------------------------------------------------------------------ decisions

    def _new(self, level: int, dev: int, start: int, members: I32, parent: str | None,
             topo: Topology) -> _Open:
        oid = record_id(self.name, LEVEL_NAMES[level], topo.names[level][dev], start)
        o = _Open(oid, level, dev, start, members.astype(np.int32), parent)
        slot = self.next_slot
        self.next_slot += 1
        self.open[slot] = o
        self._touched.add(slot)
        self.member[members] = slot
        self.up_after[members] = self._restored_at(
            members, np.full(len(members), start, np.int64), topo)
        self.recent = np.append(self.recent, self._wm)  # when located (storm window)
        return o

    def _slot_starts(self) -> I64:
        """Start [s] of each open outage by slot (int64 max for closed slots)."""
        st = np.full(self.next_slot + 1, np.iinfo(np.int64).max, np.int64)
        for k, x in self.open.items():
            st[k] = x.start
        return st

    def _locate(self, m_g: I32, t_g: I64, wm: int, topo: Topology, ping: Any,
                levels: tuple[int, ...], lonely: npt.NDArray[np.bool_]) -> None:
        # gasps of meters already in an outage that had begun by then are explained by it;
        # an earlier gasp (or silence: its start is known to one interval) is a new fault
        tol = self.cfg.slack_s + (topo.interval_s[m_g].astype(np.int64) if levels == (
            TRANSFORMER,) else 0)
        # (also when located late, once that outage was restored after the gasp)
        ua = self.up_after[m_g]
        still = (self.member[m_g] >= 0) & ((ua == 0) | (ua > t_g)) & (
            self._slot_starts()[np.maximum(self.member[m_g], 0)] <= t_g + tol)
        if levels == (TRANSFORMER,):  # silence that an outage released since explained
            still |= self.explained_to[m_g] > t_g
        # a lone gasp near an outage of its meter or a device above it: a drifting clock
        if lonely.any():
            cfg = self.cfg
            # a gasp earlier than its transformer mates' by up to the reach of their
            # silence (one interval + slack), while the meter stayed dark in between (a
            # member of the outage they gasped for): the clock, not the power, is off
            # (the mates gasping later had power, so their transformer did not fail then)
            still[lonely] |= near_outage(
                m_g[lonely], t_g[lonely],
                [(o.start, o.members) for o in self.open.values() if o.level > METER],
                self.last_gasp, topo, cfg.simultaneity_s, cfg.slack_s, cfg.clock_tolerance_s,
                before_s=max(cfg.clock_tolerance_s,
                             topo.typical_interval_s + cfg.slack_s) if cfg.clock_tolerance_s else 0)
        m_g, t_g, lonely = m_g[~still], t_g[~still], lonely[~still]
        ctol = self.cfg.clock_tolerance_s
        remaining = np.ones(len(m_g), np.bool_)
        ratios = {SUBSTATION: self.cfg.substation_ratio, 2: self.cfg.feeder_ratio,
                  TRANSFORMER: self.cfg.transformer_ratio}
        for level in levels:
            dev_g = topo.device[level][m_g]
            ok = remaining & (dev_g >= 0)
            if not ok.any():
                continue
            devs, a_d, coherent = densest_window(dev_g[ok], t_g[ok], self.cfg.simultaneity_s)
            # a feeder or substation fails for many meters at once: it needs the gasps of
            # feeder_min_gasp_share of its meters (two at least) in its window; one
            # meter's gasp, its clock however wrong, locates no more than its transformer
            gasps_in = np.rint(coherent * np.bincount(
                np.searchsorted(devs, dev_g[ok]), minlength=len(devs))).astype(np.int64)
            enough = (gasps_in >= np.maximum(2, self.cfg.feeder_min_gasp_share * topo.size(
                level)[devs])) if level > TRANSFORMER else True
            if level == TRANSFORMER and ctol > 0 and lonely[ok].any():
                # a lone gasp within the clock tolerance of its transformer's window is a
                # skewed clock, not an independent failure: it does not break coherence
                pg, tg = np.searchsorted(devs, dev_g[ok]), t_g[ok]
                ag = a_d[pg]
                near = lonely[ok] & ((tg < ag) | (tg > ag + self.cfg.simultaneity_s)) & (
                    tg >= ag - ctol) & (tg <= ag + self.cfg.simultaneity_s + ctol)
                coherent = (gasps_in + np.bincount(pg, weights=near, minlength=len(devs))) / (
                    np.bincount(pg, minlength=len(devs)))
            mm, pos = topo.meters_of(level, devs.astype(np.int32))
            out, before = self._out_at(mm, a_d[pos], int(t_g.max()), wm, topo, ping)
            cnt = np.bincount(pos, weights=out, minlength=len(devs))
            size = topo.size(level)[devs]
            # the device's own failure: of its meters not in an outage already, the share
            # out now (meters dark under other outages do not make a device fail; else one
            # gasp amid a storm would take the substation down)
            fresh = np.bincount(pos, weights=out & ~before, minlength=len(devs))
            lit = np.bincount(pos, weights=~before, minlength=len(devs))
            # a substation with one feeder fails as that feeder (AMI cannot tell them apart;
            # the feeder's breaker is the one that operates)
            whole = (self._each_feeder_out(mm, pos, out, len(devs), topo)
                     & (self._feeders_per_substation(topo)[devs] >= 2)) if (
                level == SUBSTATION) else True
            # (a transformer: more than its ratio, as for nested outages: one of two meters
            # out while the other shows power is that meter's own outage)
            enough_out = (cnt > ratios[level] * size) if level == TRANSFORMER else (
                cnt >= ratios[level] * size)
            hit = np.flatnonzero(enough_out & (size >= self.cfg.min_meters)
                                 & (fresh >= ratios[level] * lit) & (fresh >= 1) & enough
                                 & (coherent >= self.cfg.coherence) & whole)
            if len(hit) == 0:
                continue
            # gasps explained by an out device (its simultaneous window) are consumed
            hd, a_hit = devs[hit], a_d[hit]
            where = np.minimum(np.searchsorted(hd, dev_g), len(hit) - 1)
            inside = ok & (hd[where] == dev_g) & (t_g >= a_hit[where]) & (
                t_g <= a_hit[where] + self.cfg.simultaneity_s)
            if level > TRANSFORMER and self.cfg.lead_s > 0:
                inside, a_hit = self._leading(m_g, t_g, where, inside, a_hit, topo)
            # lone gasps off the window by up to clock_tolerance_s, while another meter of
            # their transformer gasped in it (a drifting clock): explained too
            tx_g = topo.device[TRANSFORMER][m_g]
            agree = np.isin(tx_g, tx_g[inside & (tx_g >= 0)])
            inside = inside | (ok & lonely & agree & (hd[where] == dev_g) & (
                t_g >= a_hit[where] - ctol) & (t_g <= a_hit[where] + self.cfg.simultaneity_s + ctol))
            if ctol > 0:  # earlier by up to one interval + slack, dark since (out at the
                # device's start, a member): a skewed clock too (as near_outage)
                reach = max(ctol, topo.typical_interval_s + self.cfg.slack_s)
                memb = np.isin(m_g, mm[np.isin(pos, hit) & out])
                inside |= ok & lonely & agree & memb & (hd[where] == dev_g) & (
                    t_g >= a_hit[where] - reach) & (t_g < a_hit[where] - ctol)
            for i, d in enumerate(hit.tolist()):
                self._new(level, int(devs[d]), int(a_hit[i]), mm[(pos == d) & out], None, topo)
            remaining &= ~inside
        mr, tr = m_g[remaining], t_g[remaining]
        o = sort_by_key_time(mr, tr)
        mr, tr = mr[o], tr[o]
        firsts = np.r_[True, mr[1:] != mr[:-1]] if len(mr) else np.zeros(0, np.bool_)
        for m, t in zip(mr[firsts].tolist(), tr[firsts].tolist(), strict=True):
            self._new(METER, m, t, np.array([m], np.int32), None, topo)

    def _feeders_per_substation(self, topo: Topology) -> I64:
        """Feeders with meters per substation (cached per topology)."""
        if self._fps[0] != id(topo):
            sub, fdr = topo.device[SUBSTATION], topo.device[FEEDER]
            ok = (sub >= 0) & (fdr >= 0)
            pairs = np.unique((sub[ok].astype(np.int64) << 32) | fdr[ok])
            self._fps = (id(topo), np.bincount((pairs >> 32).astype(np.int64),
                                               minlength=topo.n_devices(SUBSTATION)))
        return self._fps[1]

    def _each_feeder_out(self, mm: I32, pos: I32, out: npt.NDArray[np.bool_], n_dev: int,
                         topo: Topology) -> npt.NDArray[np.bool_]:
        """Per substation: each of its feeders has ``feeder_ratio`` of its meters out (a
        substation fails as a whole; one big feeder alone can hold ``substation_ratio``)."""
        nf = topo.n_devices(FEEDER) + 1
        key = pos.astype(np.int64) * nf + topo.device[FEEDER][mm] + 1
        uk, inv = np.unique(key, return_inverse=True)
        share = np.bincount(inv, weights=out) / np.bincount(inv)
        worst = np.ones(n_dev)
        np.minimum.at(worst, uk // nf, share)
        return worst >= self.cfg.feeder_ratio

    def _leading(self, m_g: I32, t_g: I64, where: I64, inside: npt.NDArray[np.bool_],
                 a_hit: I64, topo: Topology) -> tuple[npt.NDArray[np.bool_], I64]:
        """Transformers under an out feeder/substation whose gasps in its window all
        precede the window's median gasp by more than ``lead_s`` failed first: their
        gasps are not explained by it (they go down to the transformer level). Returns
        the new ``inside`` mask and the devices' starts (earliest explained gasp)."""
        gi = np.flatnonzero(inside)
        gi = gi[np.lexsort((t_g[gi], where[gi]))]
        grp, tg = where[gi], t_g[gi]
        n_h = len(a_hit)
        cnt = np.bincount(grp, minlength=n_h)
        first = np.searchsorted(grp, np.arange(n_h))
        med = tg[np.minimum(first + np.maximum(cnt - 1, 0) // 2, max(len(tg) - 1, 0))]
        tx = topo.device[TRANSFORMER][m_g[gi]].astype(np.int64)
        key = grp.astype(np.int64) * (int(tx.max(initial=0)) + 2) + tx + 1
        uk, inv = np.unique(key, return_inverse=True)
        last = np.full(len(uk), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(last, inv, tg)
        early = (tx >= 0) & (last[inv] < med[grp] - self.cfg.lead_s)
        if not early.any():
            return inside, a_hit
        inside = inside.copy()
        inside[gi[early]] = False
        a = np.full(n_h, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(a, grp[~early], tg[~early])
        return inside, np.where(a == np.iinfo(np.int64).max, a_hit, a)

    def _silence_trigger(self, c: Chunk, topo: Topology, ping: Pinger | None) -> None:
        """Meters that fell silent of power with no gasp at all (every gasp lost).

        Without a verifying pinger: transformers all of whose meters fell silent at once
        get their silence as a pseudo-gasp at the last sign of power, so location
        proceeds as usual (start known to within one interval). With one (a network
        ping, ``use_pings``): those transformers' meters, and the two-way meters falling
        silent under other transformers, wait for the pings of up to ``ping_meters`` of
        them per transformer (:meth:`_verify_silence`)."""
        prev = self._scanned
        if c.wm // SCAN_S == prev // SCAN_S:  # an O(meters) scan: once per SCAN_S
            return
        self._scanned = c.wm
        if prev <= 0:
            return
        lu = self.last_up
        # after a restoration event the next read is flagged: the next sign of power is
        # up to two intervals later
        lim = topo.interval_s.astype(np.int64) * np.where(self.last_restore == lu, 2, 1) + (
            self.cfg.slack_s)
        # silent of power: a read flagged power-fail (sent for the interval in which the
        # power failed) is no sign of power, so this is the last unflagged read or event
        new = (lu > 0) & (c.wm - lu > lim) & (prev - lu <= lim) & (self.member < 0) & (
            self.last_gasp < lu)
        m = np.flatnonzero(new)
        if len(m) == 0:
            return
        tx = topo.device[TRANSFORMER][m]
        m, tx = m[tx >= 0], tx[tx >= 0]
        txs, cnt = np.unique(tx, return_counts=True)
        size = topo.size(TRANSFORMER)[txs]
        full = txs[(cnt >= np.maximum(size, self.cfg.min_meters)) & (size >= 1)]
        is_full = np.isin(tx, full)
        if ping is None or not ping.verifies or not self.cfg.use_pings:
            sel = m[is_full]
            self._pseudo(sel, lu[sel] + 1, np.zeros(len(sel), np.bool_))
            return
        # a verifying pinger: ask whether they have power
        ok = is_full | (topo.two_way[m] & topo.registered[m] & ~topo.disconnected[m]
                        & (topo.commodity[m] == Commodity.ELECTRIC))
        m, tx, is_full = m[ok], tx[ok], is_full[ok]
        o = np.lexsort((m, tx))
        m, tx, is_full = m[o], tx[o], is_full[o]
        first = np.r_[True, tx[1:] != tx[:-1]] if len(tx) else np.zeros(0, np.bool_)
        grp = np.cumsum(first) - 1
        tw = topo.two_way[m]
        cum = np.cumsum(tw)
        rank = cum - (cum - tw)[first][grp] - 1  # rank among the transformer's two-way
        asked = tw & (rank < self.cfg.ping_meters)
        has = np.bincount(grp, weights=asked, minlength=int(grp.max(initial=-1)) + 1) > 0
        # a transformer with no two-way meter falling silent: evidence only, as above
        now = ~has[grp] & is_full
        self._pseudo(m[now], lu[m[now]] + 1, np.zeros(int(now.sum()), np.bool_))
        q = has[grp]
        ping.request(m[q & asked].astype(np.int32), c.wm)
        self.v_meter = np.concatenate([self.v_meter, m[q].astype(np.int32)])
        self.v_from = np.concatenate([self.v_from, lu[m[q]]])
        self.v_at = np.concatenate([self.v_at, np.full(int(q.sum()), c.wm, np.int64)])
        self.v_ping = np.concatenate([self.v_ping, asked[q]])

    def _verify_silence(self, wm: int, topo: Topology, ping: Pinger | None) -> None:
        """Decide the silence waiting for pings, per transformer (and scan), once every
        answer is in or ``ping_wait_s`` passed (a ping still pending then is no answer):

        * a pinged meter did not answer: **confirmed** (every pinged meter dark) or
          **refined** (some answered): the silent meters but those that answered get a
          pseudo-gasp at their last sign of power, and those that answered are known to
          have power (their silence is no evidence of an outage, :meth:`_answered`);
        * every pinged meter that could be pinged answered: **dropped** (a silence of
          communication, not of power);
        * none could be pinged (one-way, unknown, no path): as without pings (a
          transformer all silent at once gets its pseudo-gasps, other silence nothing).

        A suspect that reported again meanwhile counts as answering."""
        if len(self.v_meter) == 0 or ping is None:
            return
        vm = self.v_meter
        ans = np.full(len(vm), CANNOT_PING, np.int8)
        pi = np.flatnonzero(self.v_ping)
        for at in np.unique(self.v_at[pi]).tolist():  # idempotent; after a restart the
            ping.request(vm[pi][self.v_at[pi] == at], at)  # adapter finds them again
        ans[pi] = ping.answers(vm[pi], wm)
        ans[(ans == PENDING) & (wm >= self.v_at + self.cfg.ping_wait_s)] = NO_ANSWER
        back = self.last_up[vm] > self.v_from
        ans[back & self.v_ping] = POWERED
        tx = topo.device[TRANSFORMER][vm].astype(np.int64)
        _, g = np.unique(np.stack([tx, self.v_at]), axis=1, return_inverse=True)
        g = g.ravel()
        n_g = int(g.max()) + 1

        def any_of(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
            return np.bincount(g, weights=mask, minlength=n_g) > 0

        done = ~any_of(ans == PENDING)[g]
        if not done.any():
            return
        dark = any_of(ans == NO_ANSWER)[g]
        lit = any_of(ans == POWERED)[g]
        tx_g = np.zeros(n_g, np.int64)
        tx_g[g] = tx
        full = (np.bincount(g, minlength=n_g) >= np.maximum(topo.size(TRANSFORMER)[tx_g], 1))[g]
        gasp = done & ((dark & (ans != POWERED) & ~back) | (~dark & ~lit & full))
        self._pseudo(vm[gasp], self.v_from[gasp] + 1, dark[gasp])
        up = done & (ans == POWERED)
        if up.any():  # known to have power: one entry per meter, the latest
            km = np.concatenate([self.k_meter, vm[up]])
            kf = np.concatenate([self.k_from, self.v_from[up]])
            ka = np.concatenate([self.k_at, np.full(int(up.sum()), wm, np.int64)])
            o = np.lexsort((ka, km))
            last = np.r_[km[o][1:] != km[o][:-1], True]
            self.k_meter, self.k_from, self.k_at = km[o][last], kf[o][last], ka[o][last]
        keep = ~done
        self.v_meter, self.v_from = self.v_meter[keep], self.v_from[keep]
        self.v_at, self.v_ping = self.v_at[keep], self.v_ping[keep]

    def _answered(self, m: I32, a: I64) -> npt.NDArray[np.bool_]:
        """Meters ``m`` silent at ``a`` that answered a ping after it [bool]."""
        j = np.minimum(np.searchsorted(self.k_meter, m), len(self.k_meter) - 1)
        out: npt.NDArray[np.bool_] = (self.k_meter[j] == m) & (
            self.k_from[j] <= a + self.cfg.slack_s) & (self.k_at[j] >= a)
        return out

    def _forget_answers(self, wm: int, topo: Topology) -> None:
        """Drop ping answers of meters that reported again, or older than
        ``max_delay_s`` + ``ping_wait_s`` (no incident that old is still located)."""
        if len(self.k_meter) == 0:
            return
        iv = topo.interval_s[self.k_meter].astype(np.int64) + self.cfg.slack_s
        keep = (self.last_up[self.k_meter] <= self.k_from + iv) & (
            self.k_at >= wm - self.cfg.max_delay_s - self.cfg.ping_wait_s)
        if not keep.all():
            self.k_meter, self.k_from, self.k_at = (self.k_meter[keep], self.k_from[keep],
                                                    self.k_at[keep])

    def _mark_pinged(self, first_slot: int, meters: I32) -> None:
        """Outages located from ``first_slot`` on with one of ``meters`` (whose silence
        a ping confirmed) name the ping among their inputs."""
        for slot in range(first_slot, self.next_slot):
            o = self.open.get(slot)
            if o is not None and np.isin(o.members, meters).any():
                o.pinged = True

    def _pseudo(self, m: npt.NDArray[np.integer[Any]], t: I64,
                pinged: npt.NDArray[np.bool_]) -> None:
        """Pending pseudo-gasps: silence at ``t`` (confirmed by an unanswered ping)."""
        if len(m) == 0:
            return
        self.p_meter = np.concatenate([self.p_meter, m.astype(np.int32)])
        self.p_time = np.concatenate([self.p_time, t])
        self.p_pseudo = np.concatenate([self.p_pseudo, np.ones(len(m), np.bool_)])
        self.p_ping = np.concatenate([self.p_ping, pinged])
        self.last_gasp[m] = t

    def _record(self, o: _Open, wm: int, topo: Topology) -> Outage:
        dur = (o.end if o.end is not None else wm) - o.start
        inputs = INPUTS + (("ping",) if o.pinged else ())
        return Outage(o.oid, LEVEL_NAMES[o.level], topo.names[o.level][o.dev],
                      o.start, o.end,
                      dur > self.cfg.momentary_s, len(o.members), self.name, inputs, o.parent)

    def process(self, c: Chunk, ctx: Context) -> Output:
        topo, cfg, wm = ctx.topology, self.cfg, c.wm
        self._wm = wm
        self.grow(topo.n)
        self._evidence(c, topo)
        self._silence_trigger(c, topo, ctx.pinger)
        self._verify_silence(wm, topo, ctx.pinger)
        self._forget_answers(wm, topo)
        # incidents ready to locate
        if len(self.p_time):
            order = np.argsort(self.p_time, kind="stable")
            pm, pt, pp = self.p_meter[order], self.p_time[order], self.p_pseudo[order]
            pg = self.p_ping[order]
            sid = session_ids(np.zeros(len(pt), np.int64), pt, cfg.correlation_s)
            n_s = int(sid[-1]) + 1
            lo = np.searchsorted(sid, np.arange(n_s))
            hi = np.r_[lo[1:], len(sid)]
            ready = (pt[hi - 1] + cfg.confirm_s <= wm) | (pt[lo] + cfg.max_delay_s <= wm)
            keep = np.ones(len(pt), np.bool_)
            # silence may be explained by an outage up to one interval + slack after the
            # last sign of power: wait for real gasps not ready yet within that reach
            lonely, lone_s = lone_gasps(pm, pt, pp, lo, ready, ~ready[sid] & ~pp, topo,
                                        cfg.simultaneity_s, cfg.clock_tolerance_s,
                                        topo.typical_interval_s + cfg.slack_s)
            waiting = ~ready[sid] & ~pp
            block = int(pt[waiting].min()) if waiting.any() else np.iinfo(np.int64).max
            reach = topo.interval_s[pm].astype(np.int64) + cfg.slack_s
            # real gasps first (incidents with a coherent gasp first, then those made of
            # lone gasps only); silence only for meters they did not explain
            for pseudo, lone in ((False, False), (False, True), (True, None)):
                for s in np.flatnonzero(ready).tolist():
                    if lone is not None and bool(lone_s[s]) != lone:
                        continue
                    sel = lo[s] + np.flatnonzero(pp[lo[s]:hi[s]] == pseudo)
                    if pseudo:
                        sel = sel[pt[sel] + reach[sel] < block]
                    if len(sel):
                        n0 = self.next_slot
                        self._locate(pm[sel], pt[sel], wm, topo, ctx.pinger,
                                     (TRANSFORMER,) if pseudo else (SUBSTATION, 2, TRANSFORMER),
                                     lonely[sel])
                        if pseudo and pg[sel].any():  # confirmed by unanswered pings
                            self._mark_pinged(n0, pm[sel][pg[sel]])
                    keep[sel] = False
            self.p_meter, self.p_time, self.p_pseudo = pm[keep], pt[keep], pp[keep]
            self.p_ping = pg[keep]
        self._restoration_only(wm, topo)
        out = Output()
        # restorations and nested outages
        for slot, o in list(self.open.items()):
            if o.end is None:
                ua = self.up_after[o.members]
                back = np.sort(ua[ua > 0])
                if len(back) and len(back) >= cfg.restore_ratio * len(o.members):
                    o.end = int(back[(len(back) - 1) // 2])
                    self._touched.add(slot)
            # members without a restore event show power at the first unflagged read,
            # up to two intervals after the restoration: wait for it before nesting
            iv_max = int(topo.interval_s[o.members].max(initial=0))
            if (o.end is not None and o.level > METER and o.ping_at == 0
                    and wm >= o.end + iv_max + cfg.slack_s and ctx.pinger is not None
                    and ctx.pinger.verifies and cfg.use_pings):
                self._ask_dark(slot, o, wm, topo, ctx.pinger)
            wait = cfg.confirm_s + iv_max
            if o.end is not None and (wm >= o.end + wait or o.level == METER):
                self._finish(slot, o, wm, topo, ctx.pinger)  # or waits for pings
        for slot in sorted(self._touched):
            rec = self.open.get(slot) or self._closed.get(slot)
            if rec is not None:
                out.outages.append(self._record(rec, wm, topo))
        self._touched.clear()
        # storm mode
        self.recent = self.recent[self.recent > wm - cfg.storm_window_s]
        if len(self.recent) >= cfg.storm_outages and wm > self.storm_until:
            out.storm.append((wm, len(self.recent), cfg.storm_window_s))
            self.storm_until = wm + cfg.storm_window_s
        self._closed.clear()
        return out

    def _ask_dark(self, slot: int, o: _Open, wm: int, topo: Topology, ping: Pinger) -> None:
        """One interval + slack after outage ``o`` ended: ping up to ``ping_meters``
        two-way members per transformer that reported nothing since (a meter back at the
        end has sent a read by now, flagged or not), so the answers tell who was dark
        just after the end (the nested outages are decided ``confirm_s`` later)."""
        end = o.end if o.end is not None else wm
        mine = o.members[(self.member[o.members] == slot) & (self.up_after[o.members] == 0)
                         & (self.last_report[o.members] <= end) & topo.two_way[o.members]]
        o.ping_at = wm
        if len(mine) == 0:
            return
        tx = transformer_key(mine, topo)
        k = np.lexsort((mine, tx))
        mine, tx = mine[k], tx[k]
        first = np.r_[True, tx[1:] != tx[:-1]]
        idx = np.arange(len(mine))
        rank = idx - np.maximum.accumulate(np.where(first, idx, 0))
        o.asked = mine[rank < self.cfg.ping_meters].astype(np.int32)
        ping.request(o.asked, wm)

    def _ping_left(self, o: _Open, left: I32, wm: int, topo: Topology, ping: Pinger
                   ) -> npt.NDArray[np.bool_] | None:
        """Members ``left`` dark at the end of outage ``o``: which are back, from the
        answers of the pings asked after its end (:meth:`_ask_dark`; None: not all in and
        ``ping_wait_s`` has not passed). A meter that answered is back; so are the other
        dark members of a transformer whose every pinged meter answered."""
        if len(o.asked) == 0:
            return np.zeros(len(left), np.bool_)
        ping.request(o.asked, o.ping_at)  # idempotent (found again after a restart)
        ans_a = ping.answers(o.asked, wm)
        if (ans_a == PENDING).any():
            if wm < o.ping_at + self.cfg.ping_wait_s:
                return None
            ans_a[ans_a == PENDING] = NO_ANSWER
        o.pinged = True
        srt = np.argsort(o.asked)
        j = np.minimum(np.searchsorted(o.asked[srt], left), len(srt) - 1)
        hit = o.asked[srt][j] == left
        ans = np.where(hit, ans_a[srt][j], CANNOT_PING)
        back = ans == POWERED
        # per transformer: every pinged meter answered -> its other dark meters too
        tx_a = transformer_key(o.asked, topo)
        dark_tx = tx_a[ans_a == NO_ANSWER]
        lit_tx = tx_a[ans_a == POWERED]
        tx = transformer_key(left, topo)
        out: npt.NDArray[np.bool_] = back | (np.isin(tx, lit_tx) & ~np.isin(tx, dark_tx))
        return out

    def _restoration_only(self, wm: int, topo: Topology) -> None:
        """Restorations whose gasp was lost, ``confirm_s`` after them: a meter no located
        outage explains (not a member of one, its evidence not explained up to then) had
        a meter-level outage from its last sign of power before the restoration (the
        start is known to within that span) to the restoration."""
        if len(self.q_time) == 0:
            return
        # gasps not located yet may explain it: wait for incidents up to the restoration
        first_pending = int(self.p_time.min()) if len(self.p_time) else np.iinfo(np.int64).max
        ready = (self.q_time + self.cfg.confirm_s <= wm) & (self.q_time < first_pending)
        if not ready.any():
            return
        m, f, t = self.q_meter[ready], self.q_from[ready], self.q_time[ready]
        self.q_meter, self.q_from, self.q_time = (self.q_meter[~ready], self.q_from[~ready],
                                                  self.q_time[~ready])
        # an outage located since the meter's last sign of power is the one it came back
        # from (late, or its clock off): no outage of its own
        # (unless the meter was back from that outage by then: the sign of power is its
        # restoration from it, and this restoration is of a new failure)
        ua = self.up_after[m]
        alone = np.flatnonzero((self.member[m] < 0) & (
            (self.explained_to[m] <= f) | ((ua > 0) & (ua <= f))))
        # an outage of its transformer or a device above over that span explains it (the
        # meter's read before the failure made it look up at the device's start)
        s = self.cfg.slack_s
        for o in self.open.values():
            if o.level == METER or len(alone) == 0:
                continue
            hit = (topo.device[o.level][m[alone]] == o.dev) & (o.start <= t[alone] + s) & (
                (o.end is None) | (np.int64(o.end if o.end is not None else 0) >= f[alone] - s))
            alone = alone[~hit]
        for mi, fi, ti in zip(m[alone].tolist(), f[alone].tolist(), t[alone].tolist(),
                              strict=True):
            if self.member[mi] < 0:  # two restorations of one meter: the first one
                self._new(METER, mi, fi, np.array([mi], np.int32), None, topo)
                self.up_after[mi] = ti  # back at this restoration (the state moved on)

    def _finish(self, slot: int, o: _Open, wm: int, topo: Topology, ping: Any) -> None:
        """Release a restored outage's members; those still out become nested outages.
        With a verifying pinger, up to ``ping_meters`` of the members still out per
        transformer are pinged first, and the outage waits for their answers (at most
        ``ping_wait_s``): this returns at once while it waits."""
        mine = o.members[self.member[o.members] == slot]
        # members back only after the parent's restoration: a restoration event clearly
        # after it, or a power-fail flagged read at a later interval end than the first
        end = o.end if o.end is not None else wm
        iv = topo.interval_s[mine].astype(np.int64)
        lr, pf = self.last_restore[mine], self.pf_at[mine]
        late_ev = (lr > end + self.cfg.simultaneity_s // 2) & (lr > o.start)
        # a lone restoration a little late is a drifting clock (headend.rules.clock)
        late_ev &= ~lone_late_restorations(mine, lr, late_ev, o.start, end, topo,
                                           self.cfg.simultaneity_s, self.cfg.clock_tolerance_s)
        late = late_ev | (pf > (end // iv + 1) * iv + self.cfg.slack_s)
        late &= (self.up_after[mine] > 0) & (o.level > TRANSFORMER)
        left = mine[self.up_after[mine] == 0]
        if len(left) and ping is not None and self.cfg.use_pings:
            if ping.verifies:
                got = self._ping_left(o, left, wm, topo, ping)
                if got is None:
                    return  # waiting for the answers
                # answering says powered now: one whose read flags a power failure in a
                # later interval than the end's was dark after it (back since)
                iv_l = topo.interval_s[left].astype(np.int64)
                back = got & ~(self.pf_at[left] > (end // iv_l + 1) * iv_l + self.cfg.slack_s)
            else:
                ans = ping.answers(left, wm)
                if (ans != CANNOT_PING).any():
                    o.pinged = True
                back = ans == POWERED
            if o.pinged:
                self._touched.add(slot)
            self.up_after[left[back]] = np.maximum(self.last_up[left[back]], 1)
            left = left[~back]
        left = np.concatenate([left, mine[late]])
        # still covered by another outage in progress (e.g. the feeder above): hand over
        for s2, x in self.open.items():
            if len(left) == 0:
                break
            if s2 != slot and (x.end is None or x.end > end + self.cfg.slack_s):
                hit = np.isin(left, x.members)
                self.member[left[hit]] = s2
                left = left[~hit]
        rel = o.members[self.member[o.members] == slot]
        ua, iv_rel = self.up_after[rel], topo.interval_s[rel].astype(np.int64)
        self.explained_to[rel] = np.maximum(self.explained_to[rel],
                                            np.where(ua > 0, -(-ua // iv_rel) * iv_rel, 0))
        self.member[rel] = -1
        del self.open[slot]
        self._closed[slot] = o
        if len(left) == 0 or o.level == METER:
            return
        back_at = end
        if o.level == SUBSTATION:  # a feeder still dark (its ratio) is one nested outage
            fd = topo.device[FEEDER][left]
            fds, fcnt = np.unique(fd[fd >= 0], return_counts=True)
            fsize = topo.size(FEEDER)[fds] if len(fds) else np.zeros(0, np.int64)
            dark_f = fds[(fcnt >= self.cfg.feeder_ratio * fsize) & (fsize >= self.cfg.min_meters)]
            for d in dark_f.tolist():
                self._new(FEEDER, d, back_at, left[fd == d], o.oid, topo)
            left = left[~np.isin(fd, dark_f)]
            if len(left) == 0:
                return
        tx = topo.device[TRANSFORMER][left]
        txs, cnt = np.unique(tx[tx >= 0], return_counts=True)
        size = topo.size(TRANSFORMER)[txs] if len(txs) else np.zeros(0, np.int64)
        # the others came back (a sign of power each): a transformer outage needs more
        # than its ratio still dark (half of two meters is one meter's own outage)
        full = txs[(cnt > self.cfg.transformer_ratio * size) & (size >= self.cfg.min_meters)]
        # a nested outage is observed from the parent's restoration: its meters' own gasps
        # (if any) were masked by the parent's, so that is its start
        for d in full.tolist():
            if o.level == TRANSFORMER and d == o.dev:
                continue
            self._new(TRANSFORMER, d, back_at, left[tx == d], o.oid, topo)
        single = ~np.isin(tx, full) | ((o.level == TRANSFORMER) & (tx == o.dev))
        # a lone meter back late may just have lost its restoration and first read:
        # meter-level nested outages only for meters still dark
        single &= self.up_after[left] == 0
        for m in left[single].tolist():
            self._new(METER, m, back_at, np.array([m], np.int32), o.oid, topo)
