"""Verification pings of two-way meters: the :class:`Pinger` port and its default
adapter :class:`EvidencePinger` (answers from the outage rule's evidence)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from headend.rules.outage import OutageRule
    from headend.rules.topology import Topology

__all__ = ["EvidencePinger", "Pinger"]

I32 = npt.NDArray[np.int32]


class Pinger(Protocol):
    """Port: ask two-way meters whether they have power.

    ``ping(meters, at_s)`` returns per meter 1 (answered: powered), 0 (no answer) or
    -1 (cannot be pinged: one-way meter or unknown). Blocking; may be slow in real
    networks, so the engine pings only meters whose state is undecided.
    """

    def ping(self, meters: I32, at_s: int) -> npt.NDArray[np.int8]: ...


class EvidencePinger:
    """Default adapter until a command path exists: answers from the data seen so far.

    A two-way meter "answers" at ``at_s`` when its latest sign of power is newer than
    its latest gasp and no older than one interval + slack; otherwise it does not.
    """

    def __init__(self, rule: OutageRule, topology: Topology) -> None:
        self.rule, self.topo = rule, topology

    def ping(self, meters: I32, at_s: int) -> npt.NDArray[np.int8]:
        r = self.rule
        iv = self.topo.interval_s[meters].astype(np.int64)
        up = (r.last_up[meters] > r.last_gasp[meters]) & (
            at_s - r.last_up[meters] <= iv + r.cfg.slack_s)
        out = np.where(up, 1, 0).astype(np.int8)
        out[~self.topo.two_way[meters]] = -1
        return out
