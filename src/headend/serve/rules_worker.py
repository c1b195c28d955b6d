"""Rules workers: the real-time rules as topology-partitioned consumers of the streams.

Ingest workers own meter-bucket partitions, which split feeders, so the rules cannot run
there. A rules worker owns the substations ``s`` with ``s % partitions == partition``
(substation index as :func:`headend.rules.topology.partition_of` defines it, from the
meter registry) and reads, for each of them, the third-party stream ``OUT_STREAM``
through two durable consumers filtered broker-side::

    rules-reads-<substation>   headend.reads.raw.*.<substation>.*.*.*.*
    rules-events-<substation>  headend.events.device.*.<substation>.*.*.*.*

(``...<substation>.>`` in effect: JetStream requires a consumer filter to be a subset of
the stream's nine-token subjects, which a trailing ``>`` is not.)

Each round fetches every owned consumer, decodes the JSON-lines payloads back into
``READS`` / ``EVENTS`` tables (vectorised: one ``pyarrow.json`` parse per family and
round), feeds them to its :class:`~headend.rules.engine.RuleEngine` (``on_stored`` then
``on_watermark(max event time seen)``) and acknowledges the messages once ``on_stored``
returned: by then the rows are in the engine's pending buffer on disk, so a crash
replays them from there (or JetStream redelivers them; the engine's ids are
deterministic, alerts are at least once). Alerts go to the bus (``BusAlertSink``).
The engine state of partition ``K`` of ``N`` lives in ``<data>/rules/partitions/K-of-N``.
While a round is worked its messages get in-progress heartbeats, so ``ack_wait`` is
short (4 s) and a dead worker's messages come back within seconds.

**Rows of meters not yet known wait.** A message holding a row whose meter the
registry does not know (the registry is reloaded when its file changes, at every
lookup) is neither fed nor acknowledged: it comes back after ``ack_wait`` and is tried
again. Once it waited ``unknown_wait_s`` since the stream stored it, its known rows are
fed, its unknown rows go to the quarantine (``rules_unknown_meter``) and it is
acknowledged. Nothing is dropped silently.

**Leases.** :class:`LeasedRulesWorker` (``headend rules-worker``) takes partitions by
lease like the ingest workers (:class:`~headend.serve.leases.PartitionLeases`, bucket
``headend_rules_leases``): it opens a :class:`RulesWorker` on each partition it takes
(the engine resumes from the partition's checkpoint and pending files) and closes it
(checkpoint) before giving the lease back; a dead worker's leases expire and another
worker takes its partitions over and resumes from what it last wrote.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import numpy as np
import pyarrow as pa

from headend.bus import Bus, Consumer, Message, ack_all
from headend.serve.leases import InProgress, LeaseKeeper, PartitionLeases, work_until
from headend.serve.rules_payloads import (
    FAMILY_JSON,
    decode_events,
    decode_reads,
    meter_idx,
    parse_messages,
    unknown_rejects,
)
from headend.serve.streams import OUT_STREAM, out_stream_spec
from headend.serve.subjects import MISSING, PREFIX, token

__all__ = ["RULES_LEASE_BUCKET", "LeasedRulesWorker", "RulesWorker", "decode_events",
           "decode_reads"]

log = logging.getLogger(__name__)

FAMILIES: Final = {"reads": "raw", "events": "device"}
RULES_LEASE_BUCKET: Final = "headend_rules_leases"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _durable(family: str, tok: str) -> str:
    """Consumer name of one substation token and family (tokens outside
    ``[A-Za-z0-9_-]`` are hashed: consumer names forbid some of them)."""
    if _SAFE_NAME.match(tok):
        return f"rules-{family}-{tok}"
    return f"rules-{family}-h{hashlib.sha1(tok.encode()).hexdigest()[:16]}"


class RulesWorker:
    """One topology partition of the real-time rules on a shared bus.

    Parameters
    ----------
    bus : Bus
    root : Path
        Data directory (meter registry, ``rules/rules.yaml``, engine state, quarantine).
    partition, partitions : int
        Owns the substations whose index ``% partitions == partition``.
    ruleset : RuleSet, optional
        Default: ``<root>/rules/rules.yaml`` if present, else the default rule set.
    allowed_lateness_s : int
        The engine's watermark trails the newest event time by this much [s].
    batch : int
        Most messages per round (over all owned consumers).
    ack_wait_s : float
        The bus redelivers a message not acknowledged within this [s] of its delivery
        or last in-progress heartbeat (every ``ack_wait_s / 4`` while a round is worked);
        also the retry period of messages holding unknown meters.
    unknown_wait_s : float
        Longest wait of a row whose meter the registry does not know [s], counted from
        when the stream stored it; then it is quarantined (``rules_unknown_meter``).
    clock : callable
        Wall clock [Unix s] (tests advance it).
    beat : InProgress, optional
        The heartbeat thread to use (a :class:`LeasedRulesWorker` shares one between
        its partitions); default: one of its own.
    """

    def __init__(self, bus: Bus, root: Path | str, partition: int, partitions: int, *,
                 ruleset: Any = None, allowed_lateness_s: int = 900, batch: int = 2048,
                 idle_fetch_s: float = 0.2, ack_wait_s: float = 4.0,
                 unknown_wait_s: float = 300.0, replicas: int = 1,
                 clock: Callable[[], float] = time.time, beat: InProgress | None = None
                 ) -> None:
        from headend.rules import RuleEngine, default_ruleset, load_ruleset
        from headend.rules.engine import RULES_DIR
        from headend.serve.oms import BusAlertSink
        from headend.store import MeterRegistry

        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} not in [0, {partitions})")
        self.bus = bus
        self.root = Path(root)
        self.partition, self.partitions = partition, partitions
        self.batch, self.idle_fetch_s, self.ack_wait_s = batch, idle_fetch_s, ack_wait_s
        self.unknown_wait_s = unknown_wait_s
        self._clock = clock
        self._own_beat = beat is None
        self._beat = beat if beat is not None else InProgress(
            ack_wait_s / 4, name=f"in-progress-rules-{partition}")
        bus.ensure_stream(out_stream_spec(replicas))
        self.registry = MeterRegistry(self.root)
        if ruleset is None:
            yml = self.root / RULES_DIR / "rules.yaml"
            ruleset = load_ruleset(yml) if yml.exists() else default_ruleset()
        eng = ruleset.engine.model_copy(update={
            "partitions": partitions, "partition": partition,
            "allowed_lateness_s": allowed_lateness_s})
        ruleset = ruleset.model_copy(update={"engine": eng})
        self.engine = RuleEngine.open(
            self.root, self.registry, ruleset, sink=BusAlertSink(bus, self.registry.table),
            state_dir=self.root / RULES_DIR / "partitions" / f"{partition}-of-{partitions}")
        self.substations: list[str] = []  # owned substation tokens
        self._owned = np.zeros(0, dtype=np.bool_)  # per meter_idx
        self._consumers: dict[tuple[str, str], Consumer] = {}
        self._src: Any = None
        self._quarantine: Any = None
        self._stop = threading.Event()
        self.rows = 0
        self.waiting = 0  # messages left for redelivery in the last round (unknown meters)
        self.quarantined = 0  # rows quarantined (meters unknown after unknown_wait_s)
        self._refresh()

    # ----------------------------------------------------------------- topology

    def _refresh(self) -> None:
        """Owned substations and meters from the registry (when it changed)."""
        from headend.rules.topology import SUBSTATION, Topology, partition_of

        table = self.registry.table()
        if table is self._src:
            return
        topo = Topology.from_meters(table)
        sub = topo.device[SUBSTATION]
        mine = partition_of(sub, self.partitions) == self.partition
        mine &= np.isin(np.arange(topo.n), table.column("meter_idx").to_numpy())
        names = topo.names[SUBSTATION]
        toks = {token(names[s]) for s in np.unique(sub[mine & (sub >= 0)]).tolist()}
        if bool((mine & (sub < 0)).any()):
            toks.add(MISSING)  # meters without a substation (rows filtered by meter)
        self._owned, self._src = mine, table
        self.substations = sorted(toks)
        for tok in self.substations:
            for family, stage in FAMILIES.items():
                if (family, tok) not in self._consumers:
                    self._consumers[(family, tok)] = self.bus.consumer(
                        OUT_STREAM, _durable(family, tok),
                        filter_subject=f"{PREFIX}.{family}.{stage}.*.{tok}.*.*.*.*",
                        ack_wait_s=self.ack_wait_s)
        for key in [k for k in self._consumers if k[1] not in toks]:
            self._consumers.pop(key).close()  # substation moved away: stop reading it

    # ----------------------------------------------------------------- work

    def step(self) -> int:
        """One round: fetch every owned consumer (until drained or ``batch``), feed the
        engine, acknowledge. Returns the number of messages acknowledged."""
        self._refresh()
        if not self._consumers:
            self._stop.wait(self.idle_fetch_s)
            return 0
        got: dict[str, list[Message]] = {f: [] for f in FAMILIES}
        wait = max(self.idle_fetch_s / len(self._consumers), 0.002)
        while True:
            n = 0
            for (family, _tok), c in list(self._consumers.items()):
                room = self.batch - sum(len(v) for v in got.values())
                if room <= 0:
                    break
                part = c.fetch(room, wait)
                got[family].extend(part)
                n += len(part)
            wait = 0.002
            if n == 0 or sum(len(v) for v in got.values()) >= self.batch:
                break
        msgs = got["reads"] + got["events"]
        if not msgs:
            return 0
        with self._beat.working(msgs):
            return self._process(got)

    def _process(self, got: dict[str, list[Message]]) -> int:
        """Decode, hold back messages with meters not known yet, quarantine the unknown
        rows of those that waited too long, feed the engine, acknowledge."""
        now = self._clock()
        tables: dict[str, pa.Table] = {}
        held: list[Message] = []
        rejects: list[pa.Table] = []
        for family, msgs in got.items():
            sch, build = FAMILY_JSON[family]
            t, msg_of_row = parse_messages([m.data for m in msgs], sch)
            idx = meter_idx(t, self.registry)  # the registry reloads if its file changed
            unknown = idx < 0
            if unknown.any():
                bad = np.zeros(len(msgs), dtype=np.bool_)
                bad[msg_of_row[unknown]] = True
                waited = np.array([self._waited(m, now) for m in msgs])
                expired = bad & (waited >= self.unknown_wait_s)
                hold = bad & ~expired
                held += [m for m, h in zip(msgs, hold.tolist(), strict=True) if h]
                q_rows = unknown & expired[msg_of_row]
                if q_rows.any():
                    rejects.append(unknown_rejects(
                        family, t.filter(pa.array(q_rows)),
                        f"rules-worker {self.partition}-of-{self.partitions}",
                        f"meter not in the registry of rules worker {self.partition} of "
                        f"{self.partitions} after waiting {self.unknown_wait_s:g} s"))
                keep = ~hold[msg_of_row]
                t, idx = t.filter(pa.array(keep)), idx[keep]
            tables[family] = build(t, idx)
        if held:  # neither fed nor acknowledged: delivered again after ack_wait
            self._beat.forget(held)
            log.info("rules worker %d/%d: %d messages hold meters not in the registry yet; "
                     "retried after %g s", self.partition, self.partitions, len(held),
                     self.ack_wait_s)
        if rejects:
            if self._quarantine is None:
                from headend.store import QuarantineStore

                self._quarantine = QuarantineStore(self.root)
            self.quarantined += self._quarantine.append(pa.concat_tables(rejects))
            log.warning("rules worker %d/%d: quarantined %d rows of meters unknown after "
                        "%g s", self.partition, self.partitions, self.quarantined,
                        self.unknown_wait_s)
        self.waiting = len(held)
        skip = {id(m) for m in held}
        ready = [m for m in got["reads"] + got["events"] if id(m) not in skip]
        if not ready:
            return 0
        reads, events = self._mine(tables["reads"]), self._mine(tables["events"])
        self.engine.on_stored(SimpleNamespace(reads=reads, events=events))
        # on_stored returned: the rows are in the engine's pending files (or its late
        # output), so acknowledging cannot lose them
        ack_all(ready)
        self._beat.forget(ready)
        self.rows += reads.num_rows + events.num_rows
        self.engine.on_watermark(self.engine.max_seen)
        return len(ready)

    def _waited(self, m: Message, now: float) -> float:
        """How long a message has waited since the stream stored it [s] (estimated from
        its deliveries if the bus does not say)."""
        return now - m.stored_at if m.stored_at else m.num_delivered * self.ack_wait_s

    def _mine(self, t: pa.Table) -> pa.Table:
        idx = t.column("meter_idx").to_numpy()
        if len(self._owned) <= (int(idx.max()) if len(idx) else -1):
            self._src = None  # meters newer than our snapshot
            self._refresh()
        owned = np.zeros(len(idx), dtype=np.bool_)
        known = idx < len(self._owned)
        owned[known] = self._owned[idx[known]]
        return t if bool(owned.all()) else t.filter(pa.array(owned))

    def lag(self) -> int:
        return sum(c.pending() for c in list(self._consumers.values()))

    def run(self) -> None:
        """Work until :meth:`stop`; then checkpoint the engine."""
        try:
            work_until(self._stop, self.step,
                       f"rules worker {self.partition}/{self.partitions}")
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def abandon(self) -> None:
        """Stop reading without a checkpoint (the lease was lost: another worker may
        have opened the partition's state already; what was acknowledged is in the
        pending files it loaded or will load)."""
        for c in self._consumers.values():
            try:
                c.close()
            except Exception as exc:  # noqa: BLE001 - the bus may be gone
                log.debug("consumer close failed: %s", exc)
        self._consumers.clear()
        if self._own_beat:
            self._beat.close()

    def close(self) -> None:
        """Stop reading (unacknowledged messages go back to the bus), checkpoint."""
        self.abandon()
        self.engine.checkpoint()


class LeasedRulesWorker:
    """A rules worker that takes its partitions by lease (``headend rules-worker``).

    Every rules worker heartbeats in the bucket ``headend_rules_leases`` and aims at
    ``ceil(N / workers)`` partitions (or only ``only``). For each partition it takes it
    opens a :class:`RulesWorker` (the engine resumes from the partition's state); before
    giving a partition back it closes it (checkpoint); a partition whose lease was lost
    is abandoned without a checkpoint. A worker killed with SIGKILL stops refreshing:
    its leases expire after ``lease_ttl_s`` and the living take its partitions over
    within about ``lease_ttl_s * 4/3``, resuming from its last checkpoint and pending
    files; its unacknowledged messages come back ``ack_wait_s`` after its last
    heartbeat.

    Parameters
    ----------
    bus : Bus
    root : Path
    partitions : int
        Rules partitions N (the same for every rules worker).
    lease_ttl_s : float
        Lease time [s] (the first worker to create the bucket sets it).
    only : set of int, optional
        Pinned to these partitions (waits for their leases).
    **options
        Passed to each :class:`RulesWorker` (``ack_wait_s``, ``unknown_wait_s``, ...).
    """

    def __init__(self, bus: Bus, root: Path | str, partitions: int, *,
                 lease_ttl_s: float = 4.0, replicas: int = 1, worker_id: str | None = None,
                 only: set[int] | None = None, **options: Any) -> None:
        if only is not None and not all(0 <= k < partitions for k in only):
            raise ValueError(f"partitions {sorted(only)} not all in [0, {partitions})")
        self.bus, self.root, self.partitions = bus, Path(root), partitions
        self.lease_ttl_s = lease_ttl_s
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.options = {"replicas": replicas, **options}
        self.leases = PartitionLeases(
            bus.kv(RULES_LEASE_BUCKET, ttl_s=lease_ttl_s, replicas=replicas),
            self.worker_id, partitions, only)
        self._beat = InProgress(float(options.get("ack_wait_s", 4.0)) / 4,
                                name=f"in-progress-rules-{self.worker_id}")
        self.parts: dict[int, RulesWorker] = {}
        self._stop = threading.Event()
        self._keeper = LeaseKeeper(self.leases.round, lease_ttl_s / 3,
                                   f"rules worker {self.worker_id}")

    @property
    def owned(self) -> set[int]:
        """Partitions open here."""
        return set(self.parts)

    @property
    def rows(self) -> int:
        return sum(w.rows for w in self.parts.values())

    def _apply_leases(self) -> None:
        """Between rounds: abandon lost partitions, close (checkpoint) and give back
        surplus ones, open newly taken ones."""
        if self._keeper.inline_due():  # no keeper thread (step() driven alone)
            self.leases.round()
        lost, leaving = self.leases.changes()
        for k in lost:
            w = self.parts.pop(k, None)
            if w is not None:
                log.warning("rules worker %s lost partition %d", self.worker_id, k)
                w.abandon()
        for k in leaving:
            w = self.parts.pop(k, None)
            if w is not None:
                w.close()
        self.leases.give_back(leaving)
        for k in sorted(self.leases.owned - set(self.parts) - leaving):
            try:
                self.parts[k] = RulesWorker(self.bus, self.root, k, self.partitions,
                                            beat=self._beat, **self.options)
            except Exception:  # the next round tries again
                log.exception("rules worker %s: cannot open partition %d", self.worker_id, k)
            else:
                log.info("rules worker %s took partition %d of %d", self.worker_id, k,
                         self.partitions)

    def step(self) -> int:
        """Apply the leases, then one round on every open partition; returns the
        messages acknowledged."""
        self._apply_leases()
        if not self.parts:
            self._stop.wait(self.options.get("idle_fetch_s", 0.2))
            return 0
        return sum(w.step() for w in list(self.parts.values()))

    def lag(self) -> int:
        return sum(w.lag() for w in list(self.parts.values()))

    def run(self) -> None:
        """Work until :meth:`stop`; then close every partition and give the leases
        back."""
        self._keeper.start()
        try:
            work_until(self._stop, self.step, f"rules worker {self.worker_id}")
        finally:
            self._stop.set()
            self._keeper.stop()
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Close (checkpoint) every partition, then give every lease back."""
        for k in list(self.parts):
            self.parts.pop(k).close()
        self._beat.close()
        try:
            self.leases.release_all()
        except Exception:  # noqa: BLE001 - the bus may be gone; leases then expire
            log.warning("could not release rules leases; they expire after the TTL")
