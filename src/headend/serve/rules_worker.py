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
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from headend.bus import Bus, Consumer, Message, ack_all
from headend.model import schema
from headend.model.codes import READING_TYPES, pack_event_code
from headend.serve.streams import OUT_STREAM, out_stream_spec
from headend.serve.subjects import MISSING, PREFIX, token

__all__ = ["RulesWorker", "decode_events", "decode_reads"]

log = logging.getLogger(__name__)

FAMILIES: Final = {"reads": "raw", "events": "device"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_TS = schema.READS.field("interval_end").type
_READS_JSON = pa.schema([("meter", pa.string()), ("type", pa.string()), ("end", _TS),
                         ("value", pa.float64()), ("quality", pa.uint32())])
_EVENTS_JSON = pa.schema([("meter", pa.string()), ("code", pa.string()), ("time", _TS)])
_RT_NAMES = pa.array([rt.name for rt in READING_TYPES], pa.string())
_RT_RES = np.array([rt.resolution for rt in READING_TYPES], dtype=np.float64)


def _json(payloads: list[bytes], sch: pa.Schema) -> pa.Table:
    buf = b"".join(payloads)
    if not buf.strip():
        return sch.empty_table()
    return pj.read_json(io.BytesIO(buf), parse_options=pj.ParseOptions(
        explicit_schema=sch, unexpected_field_behavior="ignore"))


def decode_reads(payloads: list[bytes], registry: Any) -> pa.Table:
    """JSON lines of ``headend.reads.*`` messages -> a ``READS`` table (rows of unknown
    meters or reading types dropped)."""
    t = _json(payloads, _READS_JSON)
    idx = np.asarray(registry.idx_for_id(t.column("meter")), dtype=np.int32)
    pos = pc.fill_null(pc.index_in(t.column("type"), value_set=_RT_NAMES), -1)
    pos = np.asarray(pos.to_numpy(), dtype=np.int64)
    ok = (idx >= 0) & (pos >= 0)
    p = np.where(ok, pos, 0)
    value = t.column("value").to_numpy(zero_copy_only=False)
    raw = np.rint(value / _RT_RES[p])
    keep = pa.array(ok)
    return pa.table({
        "meter_idx": pa.array(idx, pa.int32()).filter(keep),
        "reading_type": pa.array(p.astype(np.uint8)).filter(keep),
        "interval_end": t.column("end").filter(keep),
        "value": pa.array(raw.astype(np.int32)).filter(keep),
        "quality": t.column("quality").filter(keep),
    }, schema=schema.READS)


def decode_events(payloads: list[bytes], registry: Any) -> pa.Table:
    """JSON lines of ``headend.events.*`` messages -> an ``EVENTS`` table."""
    t = _json(payloads, _EVENTS_JSON)
    idx = np.asarray(registry.idx_for_id(t.column("meter")), dtype=np.int32)
    enc = pc.dictionary_encode(t.column("code")).combine_chunks() if len(t) else None
    if enc is None:
        return schema.EVENTS.empty_table()
    packed = []
    for c in enc.dictionary.to_pylist():  # distinct codes only
        try:
            packed.append(pack_event_code(c))
        except (ValueError, AttributeError):
            packed.append(-1)
    code = np.asarray(packed, dtype=np.int64)[enc.indices.to_numpy(zero_copy_only=False)]
    ok = (idx >= 0) & (code >= 0)
    keep = pa.array(ok)
    return pa.table({
        "meter_idx": pa.array(idx, pa.int32()).filter(keep),
        "event_time": t.column("time").filter(keep),
        "event_code": pa.array(code.astype(np.uint32)).filter(keep),
    }, schema=schema.EVENTS)


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
        Data directory (meter registry, ``rules/rules.yaml``, engine state).
    partition, partitions : int
        Owns the substations whose index ``% partitions == partition``.
    ruleset : RuleSet, optional
        Default: ``<root>/rules/rules.yaml`` if present, else the default rule set.
    allowed_lateness_s : int
        The engine's watermark trails the newest event time by this much [s].
    batch : int
        Most messages per round (over all owned consumers).
    """

    def __init__(self, bus: Bus, root: Path | str, partition: int, partitions: int, *,
                 ruleset: Any = None, allowed_lateness_s: int = 900, batch: int = 2048,
                 idle_fetch_s: float = 0.2, ack_wait_s: float = 60.0,
                 replicas: int = 1) -> None:
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
        self._stop = threading.Event()
        self.rows = 0
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
        reads = decode_reads([m.data for m in got["reads"]], self.registry)
        events = decode_events([m.data for m in got["events"]], self.registry)
        reads, events = self._mine(reads), self._mine(events)
        self.engine.on_stored(SimpleNamespace(reads=reads, events=events))
        # on_stored returned: the rows are in the engine's pending files (or its late
        # output), so acknowledging cannot lose them
        ack_all(msgs)
        self.rows += reads.num_rows + events.num_rows
        self.engine.on_watermark(self.engine.max_seen)
        return len(msgs)

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
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("rules worker %d/%d round failed; retrying",
                                  self.partition, self.partitions)
                    self._stop.wait(0.5)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for c in self._consumers.values():
            try:
                c.close()
            except Exception as exc:  # noqa: BLE001 - the bus may be gone
                log.debug("consumer close failed: %s", exc)
        self._consumers.clear()
        self.engine.checkpoint()
