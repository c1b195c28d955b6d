"""Verification pings of ``headend serve``: the rules' :class:`~headend.rules.Pinger` port
as real ``ping`` commands (issue 12, point 4; docs/rules.md, "Verification by ping").

:class:`CommandPinger` turns the outage rule's ping requests into ``ping`` commands
through the command service (admission, per-collector throttling, expiry, audit and bus
states as for any command; ``headend command list --meter M`` shows them), and reads
each command's outcome from the command store:

========================================  ===========================================
command                                   answer to the rule
========================================  ===========================================
``completed``                             ``POWERED``
``failed`` ``meter_refused``              ``POWERED`` (the meter answered)
``failed`` ``meter_unreachable``,         ``NO_ANSWER``
``switch_failed``
``expired`` after it reached the          ``NO_ANSWER``
collector (``sent`` in its history)
``expired`` never sent, ``failed``        ``CANNOT_PING`` (no path to the meter: its
``downlink_failed``, ``collector_error``, silence tells nothing)
``not_supported``; ``rejected``
``queued``, ``sent``, ``delivered``       ``PENDING``
========================================  ===========================================

Command ids are deterministic, ``rules-ping-<at_s>:<meter_id>`` (``at_s``: the
watermark [Unix s] of the request), so a request repeated after a crash or restart is
the same command (idempotent ids), and the rule, which asks again with the original
``at_s`` before reading answers, finds the pings it asked before the restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from headend.commands import Command, CommandRequest, HistoryEntry
from headend.errors import HeadendError
from headend.rules.pinger import CANNOT_PING, NO_ANSWER, PENDING, POWERED

__all__ = ["ACTOR", "REASON", "CommandPinger", "ping_answer"]

log = logging.getLogger(__name__)

#: who sends the rules' pings (the commands' actor in the audit log)
ACTOR: Final = "rules"
#: why (the commands' reason)
REASON: Final = "outage verification"
_OPEN: Final = frozenset({"queued", "sent", "delivered"})
_POWERED_FAILURES: Final = frozenset({"meter_refused"})
_DARK_FAILURES: Final = frozenset({"meter_unreachable", "switch_failed"})


def ping_answer(c: Command, reached_collector: Callable[[Command], bool]) -> int:
    """The rules' answer code of one ping command (module docstring's table);
    ``reached_collector(c)``: whether an expired command had been sent."""
    if c.state in _OPEN:
        return PENDING
    if c.state == "completed":
        return POWERED
    if c.state == "failed":
        if c.reason in _POWERED_FAILURES:
            return POWERED
        return NO_ANSWER if c.reason in _DARK_FAILURES else CANNOT_PING
    if c.state == "expired":
        return NO_ANSWER if reached_collector(c) else CANNOT_PING
    return CANNOT_PING  # rejected


class CommandPinger:
    """The :class:`~headend.rules.Pinger` port over the command service (verifying).

    Parameters
    ----------
    submit : callable
        ``CommandService.submit``: admits and stores a :class:`CommandRequest`, answers
        its commands.
    get, history : callable
        The command store's ``get`` and ``history`` (:class:`CommandStore`): where the
        commands' states are read.
    meter_ids : callable
        ``meter_idx`` array -> the meters' ids (the registry's).
    expires_in_s : int or None
        Expiry of each ping [s of wall time]; None: the ping kind's default (300 s).

    Notes
    -----
    A request the command service refuses with an error (its store failing) is logged
    and its meters answer ``CANNOT_PING`` (their silence is then judged as without
    pings, never confirmed by a ping that was not sent). One store read per pending ping and call of :meth:`answers` (the rule pings a few
    meters per transformer, only where verification is needed); a final answer is
    kept and not read again.
    """

    verifies = True

    def __init__(self, submit: Callable[[CommandRequest], list[Command]],
                 get: Callable[[str], Command | None],
                 history: Callable[[str], Sequence[HistoryEntry]],
                 meter_ids: Callable[[npt.NDArray[np.int32]], Sequence[str]], *,
                 expires_in_s: int | None = None) -> None:
        self.submit, self.get, self.history, self.meter_ids = submit, get, history, meter_ids
        self.expires_in_s = expires_in_s
        self._cmd: dict[int, str] = {}  # meter_idx -> its latest ping's command id
        self._final: dict[str, int] = {}  # command id -> final answer

    @staticmethod
    def command_id(at_s: int, meter_id: str) -> str:
        return f"rules-ping-{at_s}:{meter_id}"

    def request(self, meters: npt.NDArray[np.int32], at_s: int) -> None:
        """Send a ping to each meter not asked at ``at_s`` already (one command each)."""
        m = np.unique(np.asarray(meters, np.int32))
        if len(m) == 0:
            return
        ids = list(self.meter_ids(m))
        todo = [(int(i), mid) for i, mid in zip(m.tolist(), ids, strict=True)
                if self._cmd.get(int(i)) != self.command_id(at_s, mid)]
        if not todo:
            return
        mids = [mid for _, mid in todo]
        # one meter: the request's id is the command's; several: <id>:<meter_id>
        base = self.command_id(at_s, mids[0]) if len(mids) == 1 else f"rules-ping-{at_s}"
        try:
            made = self.submit(CommandRequest("ping", mids, ACTOR, REASON, command_id=base,
                                              expires_in_s=self.expires_in_s))
        except HeadendError as exc:  # no command path now: these meters cannot be pinged
            log.warning("rules' pings of %d meters not sent: %s", len(mids), exc)
            for i, mid in todo:
                cid = self.command_id(at_s, mid)
                self._cmd[i] = cid
                self._final[cid] = CANNOT_PING
            return
        by_meter = {c.meter_id: c for c in made}
        for i, mid in todo:
            c = by_meter.get(mid)
            if c is None:
                continue
            old = self._cmd.get(i)
            if old is not None and old != c.command_id:
                self._final.pop(old, None)
            self._cmd[i] = c.command_id
            if c.state not in _OPEN:
                self._final[c.command_id] = ping_answer(c, self._reached)

    def answers(self, meters: npt.NDArray[np.int32], at_s: int) -> npt.NDArray[np.int8]:
        out = np.full(len(meters), PENDING, np.int8)
        for j, i in enumerate(np.asarray(meters).tolist()):
            cid = self._cmd.get(int(i))
            if cid is None:
                continue
            ans = self._final.get(cid)
            if ans is None:
                try:
                    c = self.get(cid)
                except HeadendError as exc:
                    log.warning("ping %s not read: %s", cid, exc)
                    continue
                if c is None:
                    continue
                ans = ping_answer(c, self._reached)
                if ans != PENDING:
                    self._final[cid] = ans
            out[j] = ans
        return out

    def _reached(self, c: Command) -> bool:
        return any(h.state in ("sent", "delivered") for h in self.history(c.command_id))
