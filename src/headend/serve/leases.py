"""Partition leases of one worker, kept in a key-value bucket, and the in-progress
heartbeat of the batch it is working on.

A lease is the key ``p.<p>`` (value: the worker id) in the bucket ``headend_leases``,
whose TTL is the lease time; it is refreshed every TTL/3 with compare-and-set on its
revision. Workers heartbeat ``w.<id>``, count the living and each aims at
``ceil(P / workers)`` partitions (docs/scaling.md).

:class:`PartitionLeases` does the key-value work only (heartbeat, refresh, take, decide
what to give back) and is thread-safe, so it can run on its own thread: a refresh that
takes a while (a slow round trip, a leader election) then never holds up the fetch and
ingest loop. The loop asks :meth:`PartitionLeases.changes` between rounds what to stop
fetching, and calls :meth:`PartitionLeases.give_back` once it has finished and
acknowledged its batch and handed the store's bucket locks back. Ingest workers keep
their leases in ``headend_leases``, rules workers in ``headend_rules_leases`` (the same
keys, another bucket: the two kinds never count or take each other's partitions).

:class:`InProgress` sends :meth:`Message.in_progress <headend.bus.base.Message.in_progress>`
for the messages of the batch being worked, from its own thread, every ``interval_s``.
Consumers then run with a short ``ack_wait`` (a few seconds): a live worker busy with a
long batch keeps its messages, a dead one's messages are delivered again a few seconds
after its last heartbeat (docs/scaling.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from headend.bus import KeyValue, Message

__all__ = ["InProgress", "LeaseKeeper", "PartitionLeases", "work_until"]

log = logging.getLogger(__name__)


class PartitionLeases:
    """The leases one worker holds.

    Parameters
    ----------
    kv : KeyValue
        The lease bucket (TTL = lease time).
    worker_id : str
    partitions : int
        Partitions P.
    only : set of int, optional
        Take these partitions and no others (a worker pinned to them: it waits for
        their leases, so it never works a partition another worker holds).
    """

    def __init__(self, kv: KeyValue, worker_id: str, partitions: int,
                 only: set[int] | None = None) -> None:
        self.kv = kv
        self.worker_id = worker_id
        self.partitions = partitions
        self.only = None if only is None else frozenset(only)
        self._me = worker_id.encode()
        self._mutex = threading.Lock()
        self._owned: dict[int, int] = {}  # partition -> lease revision
        self._lost: set[int] = set()  # a refresh failed: stop fetching, release
        self._leaving: set[int] = set()  # to give back once the loop let go of it
        self._hb_rev: int | None = None

    @property
    def owned(self) -> set[int]:
        """Partitions held now (including those about to be given back)."""
        with self._mutex:
            return set(self._owned)

    def round(self) -> None:
        """Heartbeat, refresh the held leases, mark the surplus for giving back, take
        free partitions up to the target. Key-value calls only (blocking)."""
        kv, me = self.kv, self._me
        hb = f"w.{self.worker_id}"
        rev = None if self._hb_rev is None else kv.update(hb, me, self._hb_rev)
        self._hb_rev = rev if rev is not None else kv.create(hb, me)
        workers = [k for k in kv.keys() if k.startswith("w.")]  # noqa: SIM118 - KV, not a dict
        target = math.ceil(self.partitions / max(len(workers), 1)) if self.only is None \
            else len(self.only)
        with self._mutex:
            held = dict(self._owned)
        for p, rev in held.items():
            new = kv.update(f"p.{p}", me, rev)
            with self._mutex:
                if p not in self._owned:  # given back meanwhile
                    continue
                if new is None:
                    log.warning("worker %s lost the lease of partition %d", self.worker_id, p)
                    del self._owned[p]
                    self._leaving.discard(p)
                    self._lost.add(p)
                else:
                    self._owned[p] = new
        with self._mutex:
            staying = sorted(p for p in self._owned if p not in self._leaving)
            self._leaving.update(staying[target:])
            room = target - len(staying[:target])
        start = zlib.crc32(me) % self.partitions
        for i in range(self.partitions):
            if room <= 0:
                break
            p = (start + i) % self.partitions
            with self._mutex:
                if p in self._owned or (self.only is not None and p not in self.only):
                    continue
            got = kv.create(f"p.{p}", me)
            if got is not None:
                with self._mutex:
                    self._owned[p] = got
                room -= 1

    def changes(self) -> tuple[set[int], set[int]]:
        """``(lost, leaving)``: partitions to stop fetching now. Lost ones are no longer
        held; leaving ones are held until :meth:`give_back`."""
        with self._mutex:
            lost, self._lost = self._lost, set()
            return lost, set(self._leaving)

    def give_back(self, partitions: set[int]) -> None:
        """Delete the leases of ``partitions`` (the loop let go of them)."""
        for p in sorted(partitions):
            with self._mutex:
                held = self._owned.pop(p, None) is not None
                self._leaving.discard(p)
            if held:
                self.kv.delete(f"p.{p}")

    def release_all(self) -> None:
        """Give every lease and the heartbeat back (clean shutdown)."""
        self.give_back(self.owned)
        self.kv.delete(f"w.{self.worker_id}")


class InProgress:
    """The in-progress heartbeat of one worker's current batch.

    Parameters
    ----------
    interval_s : float
        Time between two heartbeats [s]; a fraction of the consumers' ``ack_wait``
        (a quarter: three heartbeats may be late before a live batch is redelivered).
    name : str
        Thread name.

    Notes
    -----
    The thread starts with the first batch and sends nothing while no batch is worked.
    A heartbeat that fails (bus reconnecting) is logged and retried at the next
    interval; the worst outcome is a redelivery, which the store's dedup absorbs.
    """

    def __init__(self, interval_s: float, name: str = "in-progress") -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.name = name
        self.beats = 0  # heartbeats sent (batches x intervals), for tests and metrics
        self._mutex = threading.Lock()
        self._batch: dict[int, Message] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def working(self, msgs: Iterable[Message]) -> Iterator[None]:
        """Heartbeat ``msgs`` until the block ends (or :meth:`forget`)."""
        with self._mutex:
            self._batch = {id(m): m for m in msgs}
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._mutex:
                self._batch = {}

    def forget(self, msgs: Iterable[Message]) -> None:
        """Stop heartbeating ``msgs`` (acknowledged, or left for redelivery)."""
        with self._mutex:
            for m in msgs:
                self._batch.pop(id(m), None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._mutex:
                batch = list(self._batch.values())
            for m in batch:
                try:
                    m.in_progress()
                except Exception as exc:  # noqa: BLE001 - next interval tries again
                    log.debug("in-progress heartbeat failed: %s", exc)
                    break
            else:
                self.beats += 1 if batch else 0

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(self.interval_s + 1.0)


class LeaseKeeper:
    """Runs a worker's lease rounds: on their own thread every ``period_s`` once
    :meth:`start`\\ ed (the worker's :meth:`run`), else inline from the work loop
    (a worker driven by ``step()`` alone, as in tests) via :meth:`inline_due`.

    Parameters
    ----------
    lease_round : callable
        The key-value work of one period (blocking); a failure is logged and the next
        period tries again.
    period_s : float
        A third of the lease time [s].
    name : str
        For the thread and the log.
    """

    def __init__(self, lease_round: Callable[[], None], period_s: float, name: str) -> None:
        self.lease_round = lease_round
        self.period_s = period_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = -1e18

    def inline_due(self) -> bool:
        """True (and the period restarts) when no thread runs and a round is due."""
        if self._thread is not None or time.monotonic() - self._last < self.period_s:
            return False
        self._last = time.monotonic()
        return True

    def _round(self) -> None:
        try:
            self.lease_round()
        except Exception as exc:  # noqa: BLE001 - the next period tries again
            log.warning("%s: lease round failed (%s)", self.name, exc)

    def start(self) -> None:
        """One round now, then one every ``period_s`` on a daemon thread."""
        self._round()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"leases-{self.name}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._round()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3 * self.period_s)


def work_until(stop: threading.Event, step: Callable[[], object], name: str) -> None:
    """Call ``step`` until ``stop`` is set; a failed round is logged and retried after
    0.5 s."""
    while not stop.is_set():
        try:
            step()
        except Exception:
            log.exception("%s: round failed; retrying", name)
            stop.wait(0.5)
