"""Wiring of one serve or worker process: bus, store, uplink, workers, deliveries.

Embedded (``bus = memory://``, the default): everything in one process, no server; the
bus is durable on disk in ``<data>/bus`` (``embedded_bus: disk``; ``ServeConfig.bus_url``)
or, for tests, in memory. With NATS: any number of serve processes (uplinks: HTTP,
MQTT) and worker processes share the bus; see docs/scaling.md.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headend.bus import Bus, open_bus
from headend.commands import open_command_store
from headend.commands.scheduler import SchedulerConfig
from headend.errors import ConfigError
from headend.ingest.hooks import CommandReads
from headend.ingest.pipeline import Ingestor, IngestResult, Listener, SideCsv
from headend.model.commands import COMMAND_RESPONSE_HEADER
from headend.serve.commands import CommandService, mqtt_downlink
from headend.serve.config import EMBEDDED_BUS_DIR, ServeConfig, with_store_layout
from headend.serve.metrics import Metrics
from headend.serve.oms import BusAlertSink, OmsDelivery, OmsEndpoint
from headend.serve.pinger import CommandPinger
from headend.serve.router import Router
from headend.serve.streams import OUT_STREAM, StreamPublisher, out_stream_spec
from headend.serve.subscribers import Subscriber, SubscriberStore
from headend.serve.uplink import Uplink
from headend.serve.webhooks import WebhookDelivery
from headend.serve.worker import IngestWorker, WorkerConfig
from headend.store import DataDir, QuarantineStore, StoreConfig

__all__ = ["EMBEDDED_BUS_DIR", "IngestHost", "Service", "open_service_bus"]

log = logging.getLogger(__name__)


def _command_service(cfg: ServeConfig, bus: Bus, registry: Any) -> CommandService:
    """The commands of a process: store ``<data>/commands/``, scheduler from ``cfg``."""
    c = cfg.commands
    sched = SchedulerConfig(**c.model_dump(exclude={"poll_max_wait_s", "poller_ttl_s",
                                                    "tick_s"}))
    return CommandService(open_command_store(cfg.data), registry, bus, cfg=sched,
                          poller_ttl_s=c.poller_ttl_s, tick_s=c.tick_s)


def open_service_bus(cfg: ServeConfig) -> Bus:
    """The bus of a serve or worker process: NATS (``cfg.bus``), or embedded: durable
    on local disk in ``<data>/bus`` (``embedded_bus: disk``, the default) or in memory.
    The embedded bus's third-party stream is bounded by ``outbound_max_age_s`` and
    ``outbound_max_bytes`` (set when the stream is created; docs/streams.md)."""
    if not cfg.embedded:
        return open_bus(cfg.bus, user=cfg.nats_user, password=cfg.nats_password)
    bus = open_bus(cfg.bus_url)
    try:
        bus.ensure_stream(dataclasses.replace(out_stream_spec(max_age_s=cfg.outbound_max_age_s),
                                              max_bytes=cfg.outbound_max_bytes))
    except BaseException:
        bus.close()
        raise
    return bus


class IngestHost:
    """An :class:`Ingestor` behind a lock that can be reopened (to give the store's
    bucket locks back when partitions move to another worker)."""

    def __init__(self, root: Path, store_config: StoreConfig, listeners: list[Listener],
                 side_csv: Mapping[tuple[str, ...], SideCsv] | None = None) -> None:
        self.root = Path(root)
        self.store_config = store_config
        self.listeners = listeners
        self.side_csv = side_csv
        self.lock = threading.RLock()
        self.ingestor = self._open()

    def _open(self) -> Ingestor:
        return Ingestor(DataDir.open(self.root, config=self.store_config),
                        listeners=self.listeners, side_csv=self.side_csv)

    @property
    def data(self) -> DataDir:
        return self.ingestor.data

    def ingest(self, data: bytes, source: str, content_type: str | None, *,
               redelivery: bool = False) -> IngestResult:
        with self.lock:
            return self.ingestor.ingest_bytes(data, source=source, content_type=content_type,
                                              redelivery=redelivery)

    def reopen(self) -> None:
        with self.lock:
            self.ingestor.close()
            self.ingestor = self._open()

    def deliver_pending(self) -> int:
        """What waits in the listeners' outbox, handed over now (see the Ingestor)."""
        with self.lock:
            return self.ingestor.deliver_pending()

    def close(self) -> None:
        with self.lock:
            self.ingestor.close()


#: how often serve retries the listeners' outbox when no upload comes to do it [s]
OUTBOX_RETRY_S = 30.0


class Service:
    """One process: HTTP/MQTT uplinks (``uplink=True``), in-process ingest workers
    (``cfg.workers``), third-party publishing, webhooks and metrics."""

    def __init__(self, cfg: ServeConfig, *, uplink: bool = True) -> None:
        if not cfg.embedded and cfg.replicas > 1:
            log.info("streams at replication %d", cfg.replicas)
        if cfg.embedded and not uplink:
            raise ConfigError("a worker needs a shared bus: set HEADEND_NATS_URL or --nats")
        if cfg.embedded and cfg.workers == 0:
            raise ConfigError("the embedded bus needs its in-process worker (workers: 1)")
        self.cfg = cfg
        self.metrics = Metrics()
        self.bus = open_service_bus(cfg)
        self.metrics.watch_dropped(self.bus.dropped)
        try:
            self._build(cfg, uplink)
        except BaseException:
            self.bus.close()
            raise

    def _build(self, cfg: ServeConfig, uplink: bool) -> None:
        # the data directory's recorded bucket bits and partitions (recorded now for a
        # new store; given values that differ are refused): router, workers and store
        cfg = self.cfg = with_store_layout(cfg)
        self.subscribers = SubscriberStore(cfg.data)
        store_config = StoreConfig(bucket_bits=cfg.bucket_bits)
        self.publisher = StreamPublisher(self.bus, self._meters, replicas=cfg.replicas,
                                         group_by=cfg.stream_group,
                                         on_published=self.metrics.on_published,
                                         fine=self.subscribers.fine_scopes)
        listeners: list[Listener] = [self.publisher]
        self.rules: Any = None
        if cfg.run_rules:
            listeners.append(self._rule_engine(cfg))
        self.commands = _command_service(cfg, self.bus, self._registry)
        # on-demand reads: the reads of a meter with a read command open, on the command
        store = self.commands.store
        listeners.append(CommandReads(lambda: store, self._registry, owned=False))
        self.host = IngestHost(cfg.data, store_config, listeners,
                               {COMMAND_RESPONSE_HEADER: self.commands.take_responses})
        self.oms: list[OmsDelivery] = []
        self.uplink: Uplink | None = None
        if uplink:
            data = self.host.data
            router = Router(cfg.partitions, data.store.config.bits, self._key_for,
                            self._idx_for_serial, self._idx_for_id)
            self.uplink = Uplink(self.bus, router, self.host.ingest,
                                 timeout_s=cfg.upload_timeout_s, replicas=cfg.replicas)
            _ = data
        self.workers: list[IngestWorker] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.webhooks: dict[str, WebhookDelivery] = {}
        self.mqtt: Any = None
        wcfg = WorkerConfig(partitions=cfg.partitions, lease_ttl_s=cfg.lease_ttl_s,
                            ack_wait_s=cfg.ack_wait_s, replicas=cfg.replicas,
                            max_deliveries=cfg.max_deliveries)
        # poison messages go to the quarantine (docs/scaling.md), in serve as in worker
        quarantine = QuarantineStore(cfg.data)
        for _i in range(cfg.workers if uplink else max(cfg.workers, 1)):
            w = IngestWorker(self.bus, self.host.ingest, config=wcfg, lock=self.host.lock,
                             on_release=self.host.reopen, on_result=self.metrics.on_ingest,
                             quarantine=quarantine)
            self.workers.append(w)
            self.metrics.watch_lag(f"ingest-{w.worker_id}", w.lag)

    def _rule_engine(self, cfg: ServeConfig) -> Listener:
        """The rules engine as an ingest listener; its alerts go to the bus."""
        from headend.rules import RuleEngine, default_ruleset, load_ruleset
        from headend.rules.engine import RULES_DIR
        from headend.serve.config import LIVE_RULES_LATENESS_S, rules_lateness
        from headend.store import MeterRegistry

        yml = Path(cfg.data) / RULES_DIR / "rules.yaml"
        ruleset = load_ruleset(yml) if yml.exists() else default_ruleset()
        lateness = rules_lateness(ruleset, cfg.rules_lateness_s, default=LIVE_RULES_LATENESS_S)
        engine_cfg = ruleset.engine.model_copy(update={"allowed_lateness_s": lateness})
        ruleset = ruleset.model_copy(update={"engine": engine_cfg})
        # the outage rule verifies by ping: real ping commands (docs/rules.md)
        # (the command service is made next: these look it up when called)
        pinger = CommandPinger(lambda req: self.commands.submit(req),
                               lambda cid: self.commands.store.get(cid),
                               lambda cid: self.commands.store.history(cid),
                               lambda idx: self._registry().ids(idx).to_pylist())
        self.rules = RuleEngine.open(cfg.data, MeterRegistry(cfg.data), ruleset,
                                     sink=BusAlertSink(self.bus, self._meters), pinger=pinger)
        return self.rules  # type: ignore[no-any-return]

    # registry views for the router (the registry reloads itself when files change)
    def _registry(self) -> Any:
        return self.host.data.registry

    def _meters(self) -> Any:
        return self.host.data.registry.table()

    def _key_for(self, cid: int) -> bytes | None:
        return self.host.data.keys.get(cid)

    def _idx_for_serial(self, s: Any) -> Any:
        return self.host.data.registry.idx_for_serial(s)

    def _idx_for_id(self, ids: Any) -> Any:
        return self.host.data.registry.idx_for_id(ids)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self.uplink is None:
            # a worker process: what exists now lives as long as the process; out of
            # the collector's sight, full collections stay short (fewer latency spikes)
            gc.collect()
            gc.freeze()
        for ep in self.cfg.oms:
            d = OmsDelivery(self.bus, OUT_STREAM,
                            OmsEndpoint(ep.name, ep.url, ep.format, tuple(ep.families),
                                        ep.secret, ep.max_attempts),
                            self.cfg.data, base_delay_s=self.cfg.webhook_base_delay_s)
            self.oms.append(d)
            t = threading.Thread(target=d.run, name=f"oms-{ep.name}", daemon=True)
            t.start()
            self._threads.append(t)
        for w in self.workers:
            t = threading.Thread(target=w.run, name=f"worker-{w.worker_id}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.cfg.webhooks and self.uplink is not None:
            self.sync_subscribers()
            t = threading.Thread(target=self._watch_subscribers, name="subscribers",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        if self.cfg.mqtt and self.uplink is not None:
            from headend.serve.mqtt import MqttBridge, MqttUplink, default_client_id

            # PUBACK once durable: stored (the embedded bus keeps nothing across a
            # crash) or, on NATS, in JetStream (docs/ingest.md, "MQTT uplink")
            intake = self.uplink.intake(
                "mqtt", lambda rows: self.host.data.quarantine.append(rows),
                wait=self.cfg.embedded, on_upload=self.metrics.uploads.labels("mqtt").inc)
            source = MqttUplink(self.cfg.mqtt,
                                client_id=self.cfg.mqtt_client_id or default_client_id(self.cfg.data),
                                root=self.cfg.mqtt_uplink_root)
            self.mqtt = MqttBridge(self.cfg.mqtt, self.bus, uplink=source, intake=intake,
                                   out=self.cfg.mqtt_out)
            self.commands.mqtt_send = mqtt_downlink(self.mqtt.client)
        self.commands.start(downlink=self.uplink is not None)
        # a publish that failed waits in the outbox until the next upload delivers it;
        # after a restart, or when no upload comes, this thread does
        t = threading.Thread(target=self._retry_outbox, name="outbox", daemon=True)
        t.start()
        self._threads.append(t)

    def _retry_outbox(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = OUTBOX_RETRY_S
            try:
                n = self.host.deliver_pending()
                if n:
                    log.info("handed %d outbox batches over", n)
            except Exception:
                log.exception("outbox retry failed")

    def sync_subscribers(self) -> None:
        """Start webhook deliveries of new subscribers and create the scoped durable
        consumers NATS subscribers pull from (``sub_<name>``)."""
        for sub in self.subscribers.list():
            self.ensure_broker_consumer(sub)
            if sub.webhook and sub.name not in self.webhooks:
                d = WebhookDelivery(self.bus, sub, self.cfg.data,
                                    base_delay_s=self.cfg.webhook_base_delay_s,
                                    on_outcome=self.metrics.on_webhook)
                self.webhooks[sub.name] = d
                t = threading.Thread(target=d.run, name=f"webhook-{sub.name}", daemon=True)
                t.start()
                self._threads.append(t)

    def _watch_subscribers(self) -> None:
        """Pick up subscribers added while running (``headend subscribers add``)."""
        path = self.subscribers.path
        seen = path.stat().st_mtime_ns if path.exists() else 0
        while not self._stop.wait(2.0):
            now = path.stat().st_mtime_ns if path.exists() else 0
            if now != seen:
                seen = now
                try:
                    self.sync_subscribers()
                except Exception:
                    log.exception("could not start deliveries of new subscribers")

    def ensure_broker_consumer(self, sub: Subscriber) -> None:
        c = self.bus.consumer(OUT_STREAM, sub.durable, filter_subject=sub.filter_subject)
        c.close()

    def close(self) -> None:
        self.commands.stop()  # the downlink uses the MQTT client
        # MQTT first: an upload in hand waits for the workers, which are still running
        if self.mqtt is not None:
            self.mqtt.close()
        self._stop.set()
        for w in self.workers:
            w.stop()
        for d in self.webhooks.values():
            d.stop()
        for o in self.oms:
            o.stop()
        for t in self._threads:
            t.join(5)
        for d in self.webhooks.values():
            d.close()
        for o in self.oms:
            o.close()
        if self.uplink is not None:
            self.uplink.close()
        self.host.close()
        self.commands.close()
        self.bus.close()
