"""Prometheus metrics of a serve or worker process (``GET /metrics``).

=======================================  =========  ===================================
name                                     type       labels
=======================================  =========  ===================================
headend_uploads_total                    counter    channel (http, mqtt)
headend_ingest_rows_total                counter    outcome (accepted, duplicate, quarantined)
headend_quarantine_rows_total            counter    reason (model.reasons)
headend_bus_redeliveries_total           counter
headend_consumer_lag_messages            gauge      consumer
headend_published_messages_total         counter    family
headend_published_rows_total             counter    family
headend_webhook_attempts_total           counter    subscriber, outcome
headend_bus_dropped_total                counter    stream, consumer (durable)
=======================================  =========  ===================================

``headend_bus_dropped_total`` counts the messages a stream's limits (age, size, count)
removed before the durable consumer acknowledged them (:meth:`headend.bus.Bus.dropped`;
kept by the embedded bus across restarts, not known on NATS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from headend.ingest.result import IngestResult

__all__ = ["Metrics"]

log = logging.getLogger(__name__)

#: ``(stream, durable consumer) -> messages dropped`` (``Bus.dropped``)
DroppedSource = Callable[[], Mapping[tuple[str, str], int]]


class _Dropped(Collector):
    """``headend_bus_dropped_total``, read from the bus at each scrape."""

    def __init__(self) -> None:
        self.sources: list[DroppedSource] = []

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            "headend_bus_dropped", "Messages removed by stream limits before the durable "
            "consumer acknowledged them", labels=["stream", "consumer"])
        for fn in self.sources:
            try:
                counts = fn()
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one source
                log.debug("dropped messages: %s", exc)
                continue
            for (stream, consumer), n in sorted(counts.items()):
                fam.add_metric([stream, consumer], n)
        yield fam


class Metrics:
    """The metrics of one process, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.uploads = Counter("headend_uploads", "Uploads received", ["channel"], registry=r)
        self.rows = Counter("headend_ingest_rows", "Rows ingested by outcome", ["outcome"],
                            registry=r)
        self.quarantine = Counter("headend_quarantine_rows", "Rows quarantined by reason",
                                  ["reason"], registry=r)
        self.redeliveries = Counter("headend_bus_redeliveries",
                                    "Messages delivered more than once", registry=r)
        self.lag = Gauge("headend_consumer_lag_messages", "Messages not yet delivered",
                         ["consumer"], registry=r)
        self.published = Counter("headend_published_messages", "Third-party messages",
                                 ["family"], registry=r)
        self.published_rows = Counter("headend_published_rows", "Rows in third-party messages",
                                      ["family"], registry=r)
        self.webhook = Counter("headend_webhook_attempts", "Webhook attempts by outcome",
                               ["subscriber", "outcome"], registry=r)
        self._lag_sources: dict[str, Callable[[], int]] = {}
        self._dropped = _Dropped()
        r.register(self._dropped)

    def on_ingest(self, res: IngestResult, messages: int = 1, redelivered: int = 0) -> None:
        """Count an ingest result."""
        for k, n in (("accepted", res.accepted), ("duplicate", res.duplicate),
                     ("quarantined", res.quarantined)):
            if n:
                self.rows.labels(k).inc(n)
        for reason, n in res.by_reason.items():
            self.quarantine.labels(reason).inc(n)
        if redelivered:
            self.redeliveries.inc(redelivered)

    def on_published(self, family: str, messages: int, rows: int) -> None:
        self.published.labels(family).inc(messages)
        self.published_rows.labels(family).inc(rows)

    def on_webhook(self, subscriber: str, outcome: str) -> None:
        self.webhook.labels(subscriber, outcome).inc()

    def watch_lag(self, name: str, fn: Callable[[], int]) -> None:
        """Sample ``fn`` (pending messages) into the lag gauge at each scrape."""
        self._lag_sources[name] = fn

    def watch_dropped(self, fn: DroppedSource) -> None:
        """Report ``fn()`` (a bus's :meth:`~headend.bus.Bus.dropped`) as
        ``headend_bus_dropped_total`` at each scrape."""
        self._dropped.sources.append(fn)

    def render(self) -> bytes:
        for name, fn in list(self._lag_sources.items()):
            try:
                self.lag.labels(name).set(fn())
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one source
                log.debug("lag of %s: %s", name, exc)
        return generate_latest(self.registry)
