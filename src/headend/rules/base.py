"""What a rule sees and returns: :class:`Chunk`, :class:`Context`, :class:`Output`, :class:`Rule`.

The engine hands each rule one :class:`Chunk` per watermark advance: every read and
event with event time in ``(wm_prev, wm]``, as NumPy columns. Reads are sorted by
``(meter_idx, reading_type, interval_end)`` (the store's key order), events by
``(meter_idx, event_time)`` (the built-in per-tick rules, outage and silent meter, which
need no order, get a tick's reads in arrival order; see ``RuleEngine._take``). A rule answers with an :class:`Output` of new or updated
outages and alarms; it keeps its own state in dense arrays indexed by ``meter_idx``
(or device index) and exposes it through ``snapshot``/``restore``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from headend.model import codes
from headend.rules.alerts import Alarm, Outage, record_id
from headend.rules.topology import LEVEL_NAMES, Topology
from headend.rules.windows import Runs

__all__ = ["Chunk", "Context", "Output", "Rule", "alarms_from_runs"]

Arr = npt.NDArray[Any]


@dataclass(slots=True)
class Chunk:
    """Reads and events with event time in ``(wm_prev, wm]`` [Unix s]."""

    wm_prev: int
    wm: int
    r_meter: npt.NDArray[np.int32]
    r_type: npt.NDArray[np.uint8]
    r_time: npt.NDArray[np.int64]
    r_value: npt.NDArray[np.int32]
    r_quality: npt.NDArray[np.uint32]
    e_meter: npt.NDArray[np.int32]
    e_time: npt.NDArray[np.int64]
    e_code: npt.NDArray[np.uint32]
    _by_type: dict[int, tuple[Arr, Arr, Arr, Arr]] = field(default_factory=dict)

    def reads_of(self, rt: int) -> tuple[Arr, Arr, Arr, Arr]:
        """``(meter, interval_end, value, quality)`` of one reading type, sorted by
        ``(meter, interval_end)``; one binary search on the sorted type column."""
        if rt not in self._by_type:
            # reads are sorted by (meter, type, time): select by mask, order is kept
            m = self.r_type == rt
            self._by_type[rt] = (self.r_meter[m], self.r_time[m], self.r_value[m],
                                 self.r_quality[m])
        return self._by_type[rt]

    def events_of(self, packed_codes: npt.ArrayLike) -> tuple[Arr, Arr, Arr]:
        m = np.isin(self.e_code, np.asarray(packed_codes, dtype=np.uint32))
        return self.e_meter[m], self.e_time[m], self.e_code[m]

    @property
    def n_items(self) -> int:
        return len(self.r_time) + len(self.e_time)


@dataclass(slots=True)
class Context:
    """What the engine lends a rule: topology and (for outages) a pinger."""

    topology: Topology
    pinger: Any = None
    ratings: dict[str, float] = field(default_factory=dict)  # transformer_id -> [kVA]
    outage: Any = None  # the engine's OutageRule, if any (for "in an outage" queries)

    def out_meters(self) -> npt.NDArray[np.bool_] | None:
        """Meters in an outage in progress (None without an outage rule) [bool]."""
        o = self.outage
        if o is None:
            return None
        return (o.member >= 0) & (o.up_after == 0)  # type: ignore[no-any-return]


@dataclass(slots=True)
class Output:
    """New or updated records of one rule for one chunk (ids deterministic)."""

    outages: list[Outage] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    #: storm mode entered: (time [s], outages located in the window, window [s])
    storm: list[tuple[int, int, int]] = field(default_factory=list)


class Rule(Protocol):
    """A runtime rule: built from a config, consumes chunks, snapshots its state."""

    name: str
    kind: str

    def process(self, chunk: Chunk, ctx: Context) -> Output: ...

    def snapshot(self) -> dict[str, Arr]: ...

    def restore(self, state: dict[str, Arr]) -> None: ...


def alarms_from_runs(
    rule: str,
    level: int,
    topo: Topology,
    runs: Runs,
    step: Arr | int,
    min_duration_s: Arr | int,
    detail: str,
    inputs: tuple[str, ...],
    id_extra: str = "",
) -> list[Alarm]:
    """Alarms for runs lasting at least ``min_duration_s`` [s].

    A run of samples ``start..last`` on a grid of ``step`` [s] covers
    ``(start - step, last]``; the alarm's start is ``start - step`` and its end is
    ``last`` once the run is closed (``None`` while open); ``id_extra`` joins the id
    (e.g. the side of a voltage excursion). Only runs that reached the
    duration produce alarms, so the loop below is over alarms, not samples.
    """
    st = np.broadcast_to(np.asarray(step, dtype=np.int64), runs.key.shape)
    begin = runs.start - st
    keep = np.flatnonzero(runs.last - begin >= np.asarray(min_duration_s, dtype=np.int64))
    out: list[Alarm] = []
    names = topo.names[level]
    for i in keep.tolist():
        k = int(runs.key[i])
        dev = names[k] if k < len(names) else str(k)
        b = int(begin[i])
        out.append(Alarm(
            alarm_id=record_id(rule, LEVEL_NAMES[level], dev, b, id_extra),
            rule=rule, level=LEVEL_NAMES[level], device_id=dev,
            start=b, end=int(runs.last[i]) if runs.closed[i] else None,
            detail=f"{detail}; {int(runs.last[i] - begin[i]) // 60} min",
            inputs=inputs,
        ))
    return out


POWER_FAIL: int = codes.EVENT.power_fail
POWER_RESTORED: int = codes.EVENT.power_restored
PF_BIT: int = 1 << codes.QUALITY_BIT["1.2.32"]
