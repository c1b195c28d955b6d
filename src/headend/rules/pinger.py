"""Verification pings of two-way meters: the :class:`Pinger` port, its answer codes and
its default adapter :class:`EvidencePinger` (answers at once from the outage rule's
evidence).

A real ping goes down through the meter's collector and its answer comes back seconds
to minutes later (RF mesh; longer on PLC), so the port is asynchronous: the outage rule
*requests* pings at one watermark and *reads their answers* at later ones, deciding
once every answer is in or ``ping_wait_s`` of event time has passed (docs/rules.md,
"Verification by ping"). The adapter of ``headend serve`` sends ``ping`` commands
(``headend.serve.pinger.CommandPinger``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from headend.rules.outage import OutageRule
    from headend.rules.topology import Topology

__all__ = ["CANNOT_PING", "NO_ANSWER", "PENDING", "POWERED", "EvidencePinger", "Pinger"]

I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

#: the meter answered: it has power
POWERED: Final = 1
#: asked, and no answer came (the meter is dark, or its radio is)
NO_ANSWER: Final = 0
#: the meter cannot be pinged: one-way, unknown, no path to it (no answer tells nothing)
CANNOT_PING: Final = -1
#: asked, the answer is not in yet (an asynchronous adapter only)
PENDING: Final = 2


class Pinger(Protocol):
    """Port: ask two-way meters whether they have power.

    ``request(meters, at_s)`` asks for one ping of each meter at watermark ``at_s``
    [Unix s]; asking again for a meter whose ping is still pending changes nothing, and a
    new request of a meter asked before replaces the old one (its answer is the new
    ping's). ``answers(meters, at_s)`` gives per meter the answer of its latest ping:
    :data:`POWERED`, :data:`NO_ANSWER`, :data:`CANNOT_PING` or :data:`PENDING` (also for
    a meter never asked). Both are cheap and non-blocking; a request may be lost with a
    crash (the rule asks again after a restart), and the same ``(meter, at_s)`` asked
    twice is one ping (an adapter makes it idempotent).

    ``verifies``: whether the answers come from the meters themselves (True: a network
    ping) or from the data the rule has already seen (False: :class:`EvidencePinger`).
    The rule asks a pinger that does not verify only where its evidence is undecided
    (it could tell nothing new of a silent meter).
    """

    verifies: bool

    def request(self, meters: I32, at_s: int) -> None: ...

    def answers(self, meters: I32, at_s: int) -> I8: ...


class EvidencePinger:
    """Default adapter (``headend ingest``, no network): answers at once from the data
    seen so far, never :data:`PENDING`.

    A two-way meter "answers" at ``at_s`` when its latest sign of power is newer than
    its latest gasp and no older than one interval + slack; otherwise it does not; a
    one-way meter cannot be pinged. ``request`` does nothing.
    """

    verifies = False

    def __init__(self, rule: OutageRule, topology: Topology) -> None:
        self.rule, self.topo = rule, topology

    def request(self, meters: I32, at_s: int) -> None:
        return None

    def answers(self, meters: I32, at_s: int) -> I8:
        r = self.rule
        iv = self.topo.interval_s[meters].astype(np.int64)
        up = (r.last_up[meters] > r.last_gasp[meters]) & (
            at_s - r.last_up[meters] <= iv + r.cfg.slack_s)
        out = np.where(up, POWERED, NO_ANSWER).astype(np.int8)
        out[~self.topo.two_way[meters]] = CANNOT_PING
        return out
