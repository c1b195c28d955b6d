"""The rule engine: an ingest listener that runs the rules in event time.

Flow::

    on_stored(batch) ──► late? (event time <= watermark) ──yes──► <data>/rules/late/*.arrow
                               │ no
                               ▼
                         pending buffer (durable: <data>/rules/pending/*.arrow)
    on_watermark(t) ──► watermark := t - allowed_lateness
                               │ rows with event time <= watermark, in chunks
                               ▼                             (headend.rules.chunking)
       outage location, silent meters: one chunk per tick (tick_s of event time)
       the other rules (TICK_FREE_KINDS): one chunk per batch of <= batch_rows rows
                               ▼
                      Output (outages, alarms)
                               ▼
           RecordBook (outages.jsonl, alarms.jsonl) ──► AlertSink (new or changed only)
                               ▼
                  checkpoint (<data>/rules/checkpoint/state-<seq>.npz + meta.json)

Rows wait in the buffer until the watermark passes them, so the order in which files or
uploads arrive inside one ingest call does not matter (replaying files behaves like
the live stream). Items at or before the watermark when they arrive are *late*: they
go to the late output (and are counted), never silently dropped. At the end of an
ingest call the ingestor calls ``on_watermark(max event time seen)``, which finalises
every window up to there; outages still in progress stay open (``end`` null).

Crash safety: records, rule state and the remaining buffer are written atomically at
each watermark advance; a crash in between replays the chunk, which re-derives the
same deterministic ids (the sink is at-least-once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import schema
from headend.rules import flow, grid, revenue
from headend.rules.alerts import Alarm, Alert, AlertSink, JsonlSink, Outage, RecordBook
from headend.rules.base import Chunk, Context, Output, Rule
from headend.rules.chunking import Cols, chunk_of, column, group_rows
from headend.rules.config import RuleSet, RuleSpec, default_ruleset, load_ruleset
from headend.rules.outage import EvidencePinger, OutageRule, Pinger
from headend.rules.topology import Topology, meters_table

__all__ = ["RULES_DIR", "RULE_FACTORIES", "TICK_FREE_KINDS", "RuleEngine", "build_rule",
           "register_kind"]

RULES_DIR = "rules"

#: kind -> factory(name, params) of the runtime rule; one dispatcher, unknown kinds rejected
RULE_FACTORIES: dict[str, Callable[[str, Any], Rule]] = {
    "outage": OutageRule,
    "voltage": grid.VoltageRule,
    "transformer_overload": grid.OverloadRule,
    "silent_meter": grid.SilentRule,
    "tamper": revenue.TamperRule,
    "reverse_energy": revenue.ReverseEnergyRule,
    "zero_consumption": revenue.ZeroConsumptionRule,
    "disconnected_use": revenue.DisconnectedUseRule,
    "water_leak": flow.LeakRule,
    "gas_flow": flow.GasFlowRule,
    "threshold": flow.ThresholdRule,
    "event_count": flow.EventCountRule,
}


#: Kinds whose records do not depend on how event time is stepped: given the same rows
#: in key order, one chunk of many ticks gives the same alarms as one chunk per tick
#: (their windows close on data time and carry state across chunks). The engine runs
#: them over up to ``engine.batch_rows`` rows at once; every other kind (outage
#: location, silence, which decide "as of the watermark") runs once per tick.
#: ``tests/rules/test_engine_batching.py`` checks the claim on simulated faults.
TICK_FREE_KINDS: set[str] = {
    "voltage", "transformer_overload", "tamper", "reverse_energy", "zero_consumption",
    "disconnected_use",
    "water_leak", "gas_flow", "threshold", "event_count",
}


#: per-tick kinds whose rules read a tick's reads in any order (np.maximum.at, own sorts)
_ORDER_FREE_TICK_KINDS: frozenset[str] = frozenset({"outage", "silent_meter"})


def register_kind(kind: str, config_cls: type[Any], factory: Callable[[str, Any], Rule],
                  *, tick_free: bool = False) -> None:
    """Add a Python rule kind (its config model and runtime factory).

    ``tick_free``: the kind's records do not depend on how event time is stepped (see
    :data:`TICK_FREE_KINDS`); it then runs over large chunks. Default: once per tick.
    """
    from headend.rules.config import CONFIG_BY_KIND

    CONFIG_BY_KIND[kind] = config_cls
    RULE_FACTORIES[kind] = factory
    if tick_free:
        TICK_FREE_KINDS.add(kind)
    else:
        TICK_FREE_KINDS.discard(kind)


def build_rule(spec: RuleSpec) -> Rule:
    return RULE_FACTORIES[spec.kind](spec.name, spec.params)


def _ts(col: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    return np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), np.int64)


class RuleEngine:
    """Runs a :class:`RuleSet` over stored reads and events (an ingest ``Listener``).

    Parameters
    ----------
    root : Path or None
        Data directory; state lives in ``<root>/rules/``. ``None``: in memory only.
    registry : object
        Meter registry (``table()`` returning a METERS table) or a METERS table.
    config : RuleSet, optional
        Default: ``<root>/rules/rules.yaml`` if present, else :func:`default_ruleset`.
    sink : AlertSink, optional
        Default: :class:`JsonlSink` on ``<root>/rules/alerts.jsonl`` (memory: none).
    pinger : Pinger, optional
        Default: :class:`EvidencePinger` answering from the data seen so far.
    state_dir : Path, optional
        Where the state lives instead of ``<root>/rules/`` (one engine per partition
        sharing a data directory: ``headend.serve.rules_worker``).
    """

    #: ingest listener port (``headend.ingest.result.Listener``): outbox queue name,
    #: and new rows only on a redelivered upload (the rules must not see a read twice)
    name = "RuleEngine"
    republish_on_redelivery = False

    def __init__(self, root: Path | None, registry: Any, config: RuleSet | None = None,
                 sink: AlertSink | None = None, pinger: Pinger | None = None, *,
                 state_dir: Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.dir = (Path(state_dir) if state_dir is not None else
                    Path(root) / RULES_DIR if root is not None else None)
        self.registry = registry
        if config is None:
            yml = self.dir / "rules.yaml" if self.dir is not None else None
            config = load_ruleset(yml) if yml is not None and yml.exists() else default_ruleset()
        self.config = config
        self.sink = sink if sink is not None else (
            JsonlSink(self.dir / "alerts.jsonl") if self.dir is not None else None)
        self.rules: list[Rule] = [build_rule(s) for s in config.enabled()]
        self.rules.sort(key=lambda r: r.kind != "outage")  # outage state feeds silent meters
        self.outage = next((r for r in self.rules if isinstance(r, OutageRule)), None)
        self._pinger = pinger
        self.outages = RecordBook(self.dir / "outages.jsonl" if self.dir else None, Outage)
        self.alarms = RecordBook(self.dir / "alarms.jsonl" if self.dir else None, Alarm)
        self.watermark = 0
        self.max_seen = 0
        self.late_rows = 0
        self.late: list[tuple[pa.Table, pa.Table]] = []  # in-memory late output (root None)
        self.items_processed = 0
        self.storm_until = 0
        self._seq = 0
        self._last_ck = -1e18
        self._buf_reads: list[pa.Table] = []
        self._buf_events: list[pa.Table] = []
        self._buf_rows = 0
        self._topo_src: Any = None
        self._topo: Topology | None = None
        self._ratings: tuple[float, dict[str, float]] = (-1.0, {})
        self._restore()

    @classmethod
    def open(cls, root: Path | str, registry: Any, config: RuleSet | None = None,
             sink: AlertSink | None = None, pinger: Pinger | None = None, *,
             state_dir: Path | str | None = None) -> RuleEngine:
        """Open the engine on a data directory (resuming from its checkpoint)."""
        return cls(Path(root), registry, config, sink, pinger,
                   state_dir=Path(state_dir) if state_dir is not None else None)

    # ------------------------------------------------------------------ listener

    def on_stored(self, batch: Any) -> None:
        """Buffer new reads and events; route late ones to the late output."""
        reads, events = batch.reads, batch.events
        rt, et = _ts(reads.column("interval_end")), _ts(events.column("event_time"))
        if len(rt) or len(et):
            self.max_seen = max(self.max_seen, int(rt.max(initial=0)), int(et.max(initial=0)))
        late_r, late_e = rt <= self.watermark, et <= self.watermark
        if late_r.any() or late_e.any():
            self._late(reads.filter(pa.array(late_r)), events.filter(pa.array(late_e)))
            reads, events = reads.filter(pa.array(~late_r)), events.filter(pa.array(~late_e))
        if len(reads) == 0 and len(events) == 0:
            return
        self._buf_reads.append(reads.select(schema.READS.names))
        self._buf_events.append(events.select(schema.EVENTS.names))
        self._buf_rows += len(reads) + len(events)
        self._write_pending(reads, events)
        if self._buf_rows > self.config.engine.max_buffer_rows:
            self.on_watermark(self.max_seen)

    def on_watermark(self, event_time_s: int) -> None:
        """Advance event time to ``event_time_s - allowed_lateness`` and run the rules."""
        target = int(event_time_s) - self.config.engine.allowed_lateness_s
        if target <= self.watermark:
            return
        self._flush(target)

    def process(self, reads: pa.Table, events: pa.Table, watermark: int | None = None) -> None:
        """Convenience for tests and benchmarks: ``on_stored`` then ``on_watermark``."""
        from types import SimpleNamespace

        self.on_stored(SimpleNamespace(reads=reads, events=events))
        self.on_watermark(self.max_seen if watermark is None else watermark)

    # ------------------------------------------------------------------ core

    def topology(self) -> Topology:
        src = meters_table(self.registry)  # the registry's table of now (or the table)
        if src is not self._topo_src or self._topo is None:
            eng = self.config.engine
            self._topo = Topology.from_registry(src, (eng.partition, eng.partitions))
            self._topo_src = src
        return self._topo

    def _ratings_now(self) -> dict[str, float]:
        if self.root is None:
            return {}
        p = self.root / grid.RATINGS_FILE
        mt = p.stat().st_mtime if p.exists() else 0.0
        if mt != self._ratings[0]:
            self._ratings = (mt, grid.load_ratings(p))
        return self._ratings[1]

    def _take(self, w: int) -> list[tuple[Chunk, list[Chunk]]]:
        """Buffered rows with event time ``<= w``, cut for the two kinds of rules.

        Returns ``[(batch chunk, its tick chunks)]``: tick chunks are slices of
        ``tick_s`` event time (ends aligned to the epoch, the last one ending at ``w``);
        a batch chunk spans whole ticks, at most ``batch_rows`` rows (or one tick).
        Rows are sorted by key within every chunk (reads of a tick chunk stay in arrival
        order when the only per-tick rules are the built-in outage and silent-meter
        rules, which need no order). The ingestor hands over batches in
        key order, so a stable radix sort by tick (or batch) number keeps each batch's
        rows sorted, and only a tick or batch whose rows come from several batches is
        sorted again (a merge of sorted runs).
        """
        reads = pa.concat_tables(self._buf_reads) if self._buf_reads else schema.READS.empty_table()
        events = (pa.concat_tables(self._buf_events) if self._buf_events
                  else schema.EVENTS.empty_table())
        rt, et = _ts(reads.column("interval_end")), _ts(events.column("event_time"))
        rn, en = rt <= w, et <= w
        if not (rn.all() and en.all()):
            rest_r, rest_e = reads.filter(pa.array(~rn)), events.filter(pa.array(~en))
            reads, events = reads.filter(pa.array(rn)), events.filter(pa.array(en))
            rt, et = rt[rn], et[en]
        else:
            rest_r, rest_e = schema.READS.empty_table(), schema.EVENTS.empty_table()
        self._buf_reads = [rest_r] if len(rest_r) else []
        self._buf_events = [rest_e] if len(rest_e) else []
        self._buf_rows = len(rest_r) + len(rest_e)
        r = Cols(column(reads, "meter_idx", np.int32), column(reads, "reading_type", np.uint8), rt,
                  column(reads, "value", np.int32), column(reads, "quality", np.uint32))
        e = Cols(column(events, "meter_idx", np.int32), np.zeros(len(et), np.uint8), et,
                  column(events, "event_code", np.uint32), np.zeros(len(et), np.uint32))
        # tick number of each row: the slice ending at min(k * tick, w)
        tick = self.config.engine.tick_s
        rk, ek = -(-rt // tick), -(-et // tick)
        if len(rk) == 0 and len(ek) == 0:
            return []
        k0 = int(min(rk.min(initial=1 << 62), ek.min(initial=1 << 62)))
        kw = -(-w // tick)
        rk -= k0
        ek -= k0
        n_ticks = kw - k0 + 1
        bounds = np.minimum((np.arange(n_ticks, dtype=np.int64) + k0) * tick, w)
        per_tick = (np.bincount(rk, minlength=n_ticks) + np.bincount(ek, minlength=n_ticks))
        # batch number of each tick: cut where the rows so far pass a multiple of batch_rows
        before = np.cumsum(per_tick) - per_tick
        batch_of_tick = before // self.config.engine.batch_rows
        used = per_tick > 0
        out: list[tuple[Chunk, list[Chunk]]] = []
        nb = int(batch_of_tick[-1]) + 1
        rb, eb = batch_of_tick[rk], batch_of_tick[ek]
        r_key, e_key = r.key(), e.key()
        r_by_b, r_cut_b = group_rows(rb, nb, r_key)
        e_by_b, e_cut_b = group_rows(eb, nb, e_key)
        rb_s, eb_s = r.take(r_by_b), e.take(e_by_b)
        per_tick_rules = any(rule.kind not in TICK_FREE_KINDS for rule in self.rules)
        if per_tick_rules:
            # the built-in per-tick rules (outage evidence, silence) need no read order
            # inside a tick; a Python kind registered without tick_free gets key order
            unordered = all(rule.kind in _ORDER_FREE_TICK_KINDS for rule in self.rules
                            if rule.kind not in TICK_FREE_KINDS)
            r_by_t, r_cut_t = group_rows(rk, n_ticks, None if unordered else r_key)
            e_by_t, e_cut_t = group_rows(ek, n_ticks, e_key)
            rt_s, et_s = r.take(r_by_t), e.take(e_by_t)
        prev = self.watermark
        ticks = np.flatnonzero(used | (np.arange(n_ticks) == n_ticks - 1))
        t_of_b = np.searchsorted(batch_of_tick[ticks], np.arange(nb + 1))
        for b in range(nb):
            tb = ticks[t_of_b[b]:t_of_b[b + 1]]
            if len(tb) == 0:
                continue
            wm = int(bounds[tb[-1]])
            tick_chunks = []
            if per_tick_rules:
                p = prev
                for k in tb.tolist():
                    tick_chunks.append(chunk_of(p, int(bounds[k]), rt_s, r_cut_t[k], r_cut_t[k + 1],
                                              et_s, e_cut_t[k], e_cut_t[k + 1]))
                    p = int(bounds[k])
            out.append((chunk_of(prev, wm, rb_s, r_cut_b[b], r_cut_b[b + 1],
                               eb_s, e_cut_b[b], e_cut_b[b + 1]), tick_chunks))
            prev = wm
        return out

    def _flush(self, w: int) -> None:
        batches = self._take(w)
        topo = self.topology()
        n = max([topo.n] + [int(c.r_meter.max(initial=-1)) + 1 for c, _ in batches]
                + [int(c.e_meter.max(initial=-1)) + 1 for c, _ in batches])
        if n > topo.n:  # rows of meters newer than our topology snapshot: refresh
            self._topo_src = None
            topo = self.topology()
        pinger = self._pinger or (EvidencePinger(self.outage, topo) if self.outage else None)
        ctx = Context(topology=topo, pinger=pinger, ratings=self._ratings_now(),
                      outage=self.outage)
        alerts: list[Alert] = []
        per_tick = [rule for rule in self.rules if rule.kind not in TICK_FREE_KINDS]
        batched = [rule for rule in self.rules if rule.kind in TICK_FREE_KINDS]
        for batch, ticks in batches:
            for chunk in ticks:  # outage rule first: its state feeds silent meters
                outs = [(rule, rule.process(chunk, ctx)) for rule in per_tick]
                self.watermark = chunk.wm
                alerts += self._apply(outs, chunk.wm)
            outs = [(rule, rule.process(batch, ctx)) for rule in batched]
            self.items_processed += batch.n_items
            self.watermark = batch.wm
            alerts += self._apply(outs, batch.wm)
        now = time.monotonic()
        if now - self._last_ck >= self.config.engine.checkpoint_interval_s:
            self.checkpoint()
            self._last_ck = now
        if self.sink is not None and alerts:
            self.sink.emit(alerts)

    def _apply(self, outs: list[tuple[Rule, Output]], w: int) -> list[Alert]:
        alerts: list[Alert] = []
        for rule, out in outs:
            for t, n, window_s in out.storm:
                self.storm_until = t + window_s
                alerts.append(Alert("storm", f"storm-{rule.name}-{t}", rule.name, "substation",
                                    "*", t, {"outages_in_window": n}))
            for o in out.outages:
                old = self.outages.get(o.outage_id)
                if not self.outages.put(o):
                    continue
                quiet = w < self.storm_until and (o.level == "meter" or not o.sustained)
                if old is None and not quiet:
                    alerts.append(Alert("outage", o.outage_id, o.rule, o.level, o.device_id,
                                        o.start, o.export()))
                if o.end is not None and (old is None or old.end is None) and not quiet:
                    alerts.append(Alert("restoration", o.outage_id, o.rule, o.level,
                                        o.device_id, o.end, o.export()))
            for a in out.alarms:
                old_a = self.alarms.get(a.alarm_id)
                if not self.alarms.put(a):
                    continue
                if old_a is None:
                    alerts.append(Alert("alarm", a.alarm_id, a.rule, a.level, a.device_id,
                                        a.start, a.export()))
                if a.end is not None and a.end != a.start and (old_a is None or
                                                               old_a.end is None):
                    alerts.append(Alert("alarm_cleared", a.alarm_id, a.rule, a.level,
                                        a.device_id, a.end, a.export()))
        return alerts

    # ------------------------------------------------------------------ persistence

    def _late(self, reads: pa.Table, events: pa.Table) -> None:
        self.late_rows += len(reads) + len(events)
        if self.dir is None:
            self.late.append((reads, events))
            return
        for kind, t in (("reads", reads), ("events", events)):
            if len(t):
                _write_arrow(self.dir / "late" / f"{time.time_ns():020d}-{kind}.arrow", t)
        meta_p = self.dir / "checkpoint" / "meta.json"
        if meta_p.exists():  # the count of late rows survives a restart; the state's
            meta = json.loads(meta_p.read_text())  # watermark stays the checkpoint's
            meta["late_rows"] += len(reads) + len(events)
            _write_text(meta_p, json.dumps(meta, sort_keys=True))

    def _write_pending(self, reads: pa.Table, events: pa.Table) -> None:
        if self.dir is None:
            return
        self._seq += 1
        for kind, t in (("reads", reads), ("events", events)):
            if len(t):
                _write_arrow(self.dir / "pending" / f"{self._seq:012d}-{kind}.arrow", t)

    def close(self) -> None:
        """The ingest listener's close: checkpoint the state (the engine stays usable)."""
        self.checkpoint()

    def checkpoint(self) -> None:
        """Persist records, rule state and the remaining buffer.

        Protocol: write ``state-<seq>.npz`` and the remaining buffer as
        ``pending/<seq>-*.arrow``, then atomically replace ``meta.json``, which names
        them; only then delete older state and pending files. A crash at any point
        leaves either the old or the new checkpoint complete; pending files newer than
        the checkpoint (rows stored since) are replayed on restart.
        """
        if self.dir is None:
            return
        self.outages.save()
        self.alarms.save()
        ck = self.dir / "checkpoint"
        ck.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        seq = self._seq
        arrays: dict[str, Any] = {}
        for r in self.rules:
            for k, v in r.snapshot().items():
                arrays[f"{r.name}.{k}"] = np.asarray(v)
        state = f"state-{seq:012d}.npz"
        tmp = ck / (state + ".tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, ck / state)
        pend = self.dir / "pending"
        pending = []
        for kind, parts in (("reads", self._buf_reads), ("events", self._buf_events)):
            if parts:
                name = f"{seq:012d}-{kind}.arrow"
                _write_arrow(pend / name, pa.concat_tables(parts))
                pending.append(name)
        self._write_meta(state, pending)
        for p in ck.glob("state-*.npz"):
            if p.name != state:
                p.unlink(missing_ok=True)
        for p in pend.glob("*.arrow") if pend.exists() else ():
            if p.name not in pending and int(p.name[:12]) <= seq:
                p.unlink(missing_ok=True)

    def _write_meta(self, state: str, pending: list[str]) -> None:
        assert self.dir is not None
        meta = {"watermark": self.watermark, "max_seen": self.max_seen, "seq": self._seq,
                "late_rows": self.late_rows, "items_processed": self.items_processed,
                "storm_until": self.storm_until, "state": state, "pending": pending,
                "rules": {r.name: r.kind for r in self.rules}}
        _write_text(self.dir / "checkpoint" / "meta.json", json.dumps(meta, sort_keys=True))

    def _restore(self) -> None:
        if self.dir is None:
            return
        ck = self.dir / "checkpoint"
        meta = json.loads((ck / "meta.json").read_text()) if (ck / "meta.json").exists() else {}
        if meta:
            self.watermark, self.max_seen = meta["watermark"], meta["max_seen"]
            self._seq, self.late_rows = meta["seq"], meta["late_rows"]
            self.items_processed = meta["items_processed"]
            self.storm_until = meta.get("storm_until", 0)
            with np.load(ck / meta["state"], allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            for r in self.rules:
                if meta["rules"].get(r.name) != r.kind:
                    continue  # new or re-kinded rule: starts fresh
                pre = r.name + "."
                r.restore({k[len(pre):]: v for k, v in data.items() if k.startswith(pre)})
        self._load_pending(int(meta.get("seq", 0)), set(meta.get("pending", ())))

    def _load_pending(self, seq: int, listed: set[str]) -> None:
        """Rows of the checkpoint's buffer, then rows stored after it, in order."""
        pend = self.dir / "pending" if self.dir is not None else None
        if pend is None or not pend.exists():
            return
        for p in sorted(pend.glob("*.arrow")):
            if p.name not in listed and int(p.name[:12]) <= seq:
                continue  # already processed (a crash before their deletion)
            with pa.memory_map(str(p)) as src:
                t = pa.ipc.open_file(src).read_all()
            (self._buf_reads if p.stem.endswith("reads") else self._buf_events).append(t)
            self._buf_rows += len(t)
            self._seq = max(self._seq, int(p.name[:12]))


def _write_arrow(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
