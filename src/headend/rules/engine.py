"""The rule engine: an ingest listener that runs the rules in event time.

Flow::

    on_stored(batch) ──► late? (event time <= watermark) ──yes──► <data>/rules/late/*.arrow
                               │ no
                               ▼
                         pending buffer (durable: <data>/rules/pending/*.arrow)
    on_watermark(t) ──► watermark := t - allowed_lateness
                               │ rows with event time <= watermark, as one Chunk
                               ▼
                 rules (outage first, then the others) ──► Output (outages, alarms)
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
from headend.rules.config import RuleSet, RuleSpec, default_ruleset, load_ruleset
from headend.rules.outage import EvidencePinger, OutageRule, Pinger
from headend.rules.topology import Topology

__all__ = ["RULES_DIR", "RULE_FACTORIES", "RuleEngine", "build_rule", "register_kind"]

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
    "water_leak": flow.LeakRule,
    "gas_flow": flow.GasFlowRule,
    "threshold": flow.ThresholdRule,
    "event_count": flow.EventCountRule,
}


def register_kind(kind: str, config_cls: type[Any], factory: Callable[[str, Any], Rule]) -> None:
    """Add a Python rule kind (its config model and runtime factory)."""
    from headend.rules.config import CONFIG_BY_KIND

    CONFIG_BY_KIND[kind] = config_cls
    RULE_FACTORIES[kind] = factory


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
        src = self.registry.table() if hasattr(self.registry, "table") else self.registry
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

    def _take(self, w: int) -> list[Chunk]:
        reads = pa.concat_tables(self._buf_reads) if self._buf_reads else schema.READS.empty_table()
        events = (pa.concat_tables(self._buf_events) if self._buf_events
                  else schema.EVENTS.empty_table())
        rt, et = _ts(reads.column("interval_end")), _ts(events.column("event_time"))
        rn, en = rt <= w, et <= w
        rest_r, rest_e = reads.filter(pa.array(~rn)), events.filter(pa.array(~en))
        self._buf_reads = [rest_r] if len(rest_r) else []
        self._buf_events = [rest_e] if len(rest_e) else []
        self._buf_rows = len(rest_r) + len(rest_e)

        rm = reads.column("meter_idx").to_numpy()[rn].astype(np.int32)
        rty = reads.column("reading_type").to_numpy()[rn].astype(np.uint8)
        rtt = rt[rn]
        rv = reads.column("value").to_numpy()[rn].astype(np.int32)
        rq = reads.column("quality").to_numpy()[rn].astype(np.uint32)
        em = events.column("meter_idx").to_numpy()[en].astype(np.int32)
        ett = et[en]
        ec = events.column("event_code").to_numpy()[en].astype(np.uint32)
        # slices of tick_s event time (aligned to the epoch), each sorted by key
        tick = self.config.engine.tick_s
        r_sl = np.minimum(-(-rtt // tick) * tick, w)
        e_sl = np.minimum(-(-ett // tick) * tick, w)
        o = np.argsort(schema.read_key(rm, rty, rtt), kind="stable")
        o = o[np.argsort(r_sl[o], kind="stable")]
        eo = np.argsort((em.astype(np.int64) << 32) | ett, kind="stable")
        eo = eo[np.argsort(e_sl[eo], kind="stable")]
        rm, rty, rtt, rv, rq, r_sl = rm[o], rty[o], rtt[o], rv[o], rq[o], r_sl[o]
        em, ett, ec, e_sl = em[eo], ett[eo], ec[eo], e_sl[eo]
        bounds = np.unique(np.concatenate([r_sl, e_sl, [w]]))
        rb = np.searchsorted(r_sl, bounds, side="right")
        ebd = np.searchsorted(e_sl, bounds, side="right")
        chunks = []
        r0 = e0 = 0
        prev = self.watermark
        for b, r1, e1 in zip(bounds.tolist(), rb.tolist(), ebd.tolist(), strict=True):
            chunks.append(Chunk(wm_prev=prev, wm=b, r_meter=rm[r0:r1], r_type=rty[r0:r1],
                                r_time=rtt[r0:r1], r_value=rv[r0:r1], r_quality=rq[r0:r1],
                                e_meter=em[e0:e1], e_time=ett[e0:e1], e_code=ec[e0:e1]))
            r0, e0, prev = r1, e1, b
        return chunks

    def _flush(self, w: int) -> None:
        chunks = self._take(w)
        topo = self.topology()
        n = max([topo.n] + [int(c.r_meter.max(initial=-1)) + 1 for c in chunks]
                + [int(c.e_meter.max(initial=-1)) + 1 for c in chunks])
        if n > topo.n:  # rows of meters newer than our topology snapshot: refresh
            self._topo_src = None
            topo = self.topology()
        pinger = self._pinger or (EvidencePinger(self.outage, topo) if self.outage else None)
        ctx = Context(topology=topo, pinger=pinger, ratings=self._ratings_now(),
                      outage=self.outage)
        alerts: list[Alert] = []
        for chunk in chunks:
            outs: list[tuple[Rule, Output]] = []
            for rule in self.rules:
                outs.append((rule, rule.process(chunk, ctx)))
            self.items_processed += chunk.n_items
            self.watermark = chunk.wm
            alerts += self._apply(outs, chunk.wm)
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
