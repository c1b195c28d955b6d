"""Which commands go down to which collector, now: in-flight limit, rate, priorities.

Pure: queued commands, what each collector has in flight, its rate budget and the time
in; the commands to hand over and the new budgets out. The serve downlink
(:mod:`headend.serve.commands`) calls :func:`plan` for MQTT collectors on every tick
and for a polling collector on each of its polls, and :func:`expiring` and
:func:`resend_due` for expiry and retries. The rules, per collector (docs/commands.md,
"Scheduling"):

* **In flight.** A collector has at most :attr:`SchedulerConfig.max_in_flight`
  commands ``sent`` or ``delivered`` (handed over, not yet completed, failed or
  expired). Only queued commands are planned; a command that goes back to ``queued`` to
  be resent leaves the in-flight count until it is sent again.
* **Rate.** A token bucket per collector: :attr:`~SchedulerConfig.rate_per_s` tokens a
  second, at most :attr:`~SchedulerConfig.burst`; a command handed over costs one.
* **Priority.** :data:`PRIORITY` (``connect`` and ``disconnect`` 0, ``ping`` 1,
  ``read`` 2), then creation time, then command id: a disconnect is never stuck behind
  10,000 reads of the same collector, since the in-flight room and the tokens go to it
  first.
* **Back-off.** A command whose hand-over failed (no PUBACK) waits ``not_before_ms``
  (:func:`handover_backoff_ms`); a command sent and not answered is resent after
  :func:`resend_delay_ms` (doubling from :attr:`~SchedulerConfig.resend_after_s`, at most
  :attr:`~SchedulerConfig.backoff_max_s`), at most :attr:`~SchedulerConfig.max_sends`
  times in all; then it waits for its expiry.
* **Expiry.** A command not completed by ``expires_ms`` is ``expired``; an expired
  command is never planned.

Times are Unix milliseconds [ms].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from headend.commands.lifecycle import Command
from headend.errors import ValidationError
from headend.model import commands as C

__all__ = [
    "PRIORITY",
    "Bucket",
    "Candidate",
    "Plan",
    "SchedulerConfig",
    "expiring",
    "handover_backoff_ms",
    "plan",
    "resend_delay_ms",
    "resend_due",
]

#: kind -> priority (lower goes first): switching before pings before reads
PRIORITY: Final[dict[str, int]] = {"connect": 0, "disconnect": 0, "ping": 1, "read": 2}
assert set(PRIORITY) == set(C.KIND_BY_NAME)

#: states that count against a collector's in-flight limit
IN_FLIGHT_STATES: Final = frozenset({"sent", "delivered"})


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Per-collector limits of the downlink (the same for every collector).

    Attributes
    ----------
    max_in_flight : int
        Commands ``sent`` or ``delivered`` at once per collector.
    rate_per_s : float
        Commands handed over per second per collector, sustained [1/s].
    burst : int
        Commands handed over at once after an idle spell (token bucket size).
    resend_after_s : float
        A sent command with no answer is resent after this long [s], then after twice
        as long, and so on.
    backoff_max_s : float
        Longest wait before a resend or a new hand-over attempt [s].
    max_sends : int
        Sends of one command in all (first send and resends).
    handover_retry_s : float
        Wait after a failed hand-over (no PUBACK), doubling per failure [s].
    max_handover_failures : int
        Failed hand-overs in a row before the command is ``failed``
        (``downlink_failed``).
    """

    max_in_flight: int = 16
    rate_per_s: float = 10.0
    burst: int = 16
    resend_after_s: float = 120.0
    backoff_max_s: float = 1800.0
    max_sends: int = 3
    handover_retry_s: float = 1.0
    max_handover_failures: int = 5

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.burst < 1 or self.max_sends < 1 \
                or self.max_handover_failures < 1:
            raise ValidationError("max_in_flight, burst, max_sends and "
                                  "max_handover_failures must be at least 1")
        if self.rate_per_s <= 0 or self.resend_after_s <= 0 or self.handover_retry_s <= 0:
            raise ValidationError("rate_per_s, resend_after_s and handover_retry_s must be "
                                  "positive")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued command as the scheduler sees it.

    ``not_before_ms``: it may not be handed over before (back-off after a failed
    hand-over or before a resend); 0: at once.
    """

    command_id: str
    collector_id: str
    kind: str
    created_ms: int
    expires_ms: int
    not_before_ms: int = 0

    @classmethod
    def of(cls, cmd: Command, not_before_ms: int = 0) -> Candidate:
        if cmd.collector_id is None:
            raise ValidationError(f"{cmd.command_id} has no collector")
        return cls(cmd.command_id, cmd.collector_id, cmd.kind, cmd.created_ms,
                   cmd.expires_ms, not_before_ms)

    @property
    def order(self) -> tuple[int, int, str]:
        return PRIORITY[self.kind], self.created_ms, self.command_id


@dataclass(frozen=True, slots=True)
class Bucket:
    """A collector's rate budget: ``tokens`` left at ``at_ms``."""

    tokens: float
    at_ms: int

    def refilled(self, now_ms: int, cfg: SchedulerConfig) -> Bucket:
        gained = max(0, now_ms - self.at_ms) * cfg.rate_per_s / 1000.0
        return Bucket(min(float(cfg.burst), self.tokens + gained), max(now_ms, self.at_ms))


@dataclass(frozen=True, slots=True)
class Plan:
    """What to hand over now: ``send`` collector -> command ids in hand-over order;
    ``buckets`` the collectors' budgets after it (pass them to the next call)."""

    send: dict[str, list[str]] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)

    @property
    def command_ids(self) -> list[str]:
        return [i for ids in self.send.values() for i in ids]


def plan(queued: Iterable[Candidate], in_flight: Mapping[str, int],
         buckets: Mapping[str, Bucket], now_ms: int, cfg: SchedulerConfig,
         *, collectors: frozenset[str] | None = None) -> Plan:
    """The commands to hand over now (see the module docstring).

    Parameters
    ----------
    queued : iterable of Candidate
        Queued commands (any order, any collectors).
    in_flight : mapping
        collector -> commands ``sent`` or ``delivered`` now (absent: 0).
    buckets : mapping
        collector -> its budget from the last plan (absent: a full bucket).
    now_ms : int
        Now [ms].
    cfg : SchedulerConfig
    collectors : frozenset of str, optional
        Plan for these collectors only (a poll); None: for all.

    Returns
    -------
    Plan
        Per collector, the ids by priority, creation time and id, as many as its
        in-flight room and tokens allow; expired commands and those whose
        ``not_before_ms`` is later than ``now_ms`` are left out. Buckets of the
        collectors planned for are refilled to ``now_ms`` and charged.

    Examples
    --------
    >>> cfg = SchedulerConfig(max_in_flight=2, rate_per_s=1, burst=5)
    >>> q = [Candidate("r1", "C1", "read", 0, 10**9), Candidate("r2", "C1", "read", 1, 10**9),
    ...      Candidate("d1", "C1", "disconnect", 2, 10**9)]
    >>> plan(q, {}, {}, 100, cfg).send
    {'C1': ['d1', 'r1']}
    >>> plan(q, {"C1": 1}, {}, 100, cfg).send
    {'C1': ['d1']}
    """
    by_coll: dict[str, list[Candidate]] = {}
    for c in queued:
        if collectors is not None and c.collector_id not in collectors:
            continue
        if c.expires_ms <= now_ms or c.not_before_ms > now_ms:
            continue
        by_coll.setdefault(c.collector_id, []).append(c)
    send: dict[str, list[str]] = {}
    out = dict(buckets)
    for coll in sorted(by_coll):
        b = buckets.get(coll, Bucket(float(cfg.burst), now_ms)).refilled(now_ms, cfg)
        room = min(cfg.max_in_flight - in_flight.get(coll, 0), int(b.tokens))
        if room > 0:
            cands = by_coll[coll]
            chosen = sorted(cands, key=lambda c: c.order)[:room]
            send[coll] = [c.command_id for c in chosen]
            b = Bucket(b.tokens - len(chosen), b.at_ms)
        out[coll] = b
    return Plan(send, out)


def expiring(commands: Iterable[Command], now_ms: int) -> list[str]:
    """Ids of the commands that must become ``expired`` at ``now_ms``: not in a final
    state and ``expires_ms`` reached."""
    return [c.command_id for c in commands
            if c.state not in C.TERMINAL_STATES and c.expires_ms <= now_ms]


def resend_delay_ms(sends: int, cfg: SchedulerConfig) -> int:
    """How long after its ``sends``-th send an unanswered command is resent [ms]:
    ``resend_after_s * 2^(sends-1)``, at most ``backoff_max_s``.

    >>> cfg = SchedulerConfig(resend_after_s=60, backoff_max_s=200)
    >>> [resend_delay_ms(k, cfg) for k in (1, 2, 3, 4)]
    [60000, 120000, 200000, 200000]
    """
    return int(1000 * min(cfg.backoff_max_s, cfg.resend_after_s * 2 ** max(0, sends - 1)))


def resend_due(sent: Sequence[tuple[Command, int, int]], now_ms: int,
               cfg: SchedulerConfig) -> list[str]:
    """Ids of ``sent`` commands to send again: ``(command, sends so far, last send
    [ms])`` with no answer for :func:`resend_delay_ms` and fewer than ``max_sends``
    sends, not expired."""
    return [c.command_id for c, sends, last in sent
            if c.state == "sent" and sends < cfg.max_sends and c.expires_ms > now_ms
            and now_ms - last >= resend_delay_ms(sends, cfg)]


def handover_backoff_ms(failures: int, cfg: SchedulerConfig) -> int:
    """Wait after the ``failures``-th failed hand-over in a row [ms]:
    ``handover_retry_s * 2^(failures-1)``, at most ``backoff_max_s``."""
    return int(1000 * min(cfg.backoff_max_s, cfg.handover_retry_s * 2 ** max(0, failures - 1)))
