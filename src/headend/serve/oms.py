"""Outage and alarm delivery to the OMS and diagnostics: on the bus, then pushed.

::

    RuleEngine --alerts--> BusAlertSink --publish--> headend.outages.<level>.<...>.<start|end>
                                                     headend.alarms.<rule>.<...>.<kind>
                                                          |
                                    OmsDelivery (one per endpoint, durable consumer)
                                                          |
                     POST IEC 61968-100 EventMessage / EndDeviceEvents XML, or JSON lines

The rules engine never waits on an OMS: :class:`BusAlertSink` makes each alert durable
on the bus (third-party subject scheme of :mod:`headend.serve.subjects`, so subscribers
filter outages and alarms by commodity, substation, feeder, transformer, meter broker-side
like any other stream), and :class:`OmsDelivery` pushes them to each configured endpoint
with retries and exponential backoff, then a dead-letter file. Delivery is at least
once; every alert carries a deterministic ``id`` for the receiver to deduplicate on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import pyarrow as pa

from headend.bus import Bus, Message
from headend.errors import PublishError
from headend.model import codes
from headend.rules.alerts import Alert
from headend.serve.subjects import MISSING, token
from headend.serve.webhooks import sign

__all__ = ["BusAlertSink", "OmsDelivery", "OmsEndpoint", "alert_from_json", "alert_subject"]

log = logging.getLogger(__name__)

#: Content type of the IEC 61968-100 XML message
XML_CONTENT_TYPE: Final = "application/xml"
JSON_CONTENT_TYPE: Final = "application/json"


@dataclass(frozen=True, slots=True)
class OmsEndpoint:
    """An OMS or diagnostics system that receives outages and alarms.

    Attributes
    ----------
    name : str
        Names its durable consumer and its dead-letter file.
    url : str
        Where alerts are POSTed.
    format : {"cim", "json"}
        ``cim``: one IEC 61968-100 ``EventMessage`` (Verb created, Noun EndDeviceEvents)
        per delivery; ``json``: JSON lines, one alert per line.
    families : tuple of {"outages", "alarms"}
    secret : str, optional
        If set, ``X-Headend-Signature: sha256=<hex HMAC of the body>``.
    max_attempts : int
        Attempts before the alert goes to ``<data>/dead-letter/oms-<name>.jsonl``.
    """

    name: str
    url: str
    format: Literal["cim", "json"] = "cim"
    families: tuple[str, ...] = ("outages", "alarms")
    secret: str | None = None
    max_attempts: int = 8


class _Places:
    """Topology of devices from the registry: device -> (commodity, substation, feeder,
    transformer) tokens, for subjects of alerts above meter level."""

    def __init__(self, meters: pa.Table) -> None:
        cols = {c: meters.column(c).to_pylist() for c in
                ("meter_id", "commodity", "substation_id", "feeder_id", "transformer_id")}
        self.meter: dict[str, tuple[str, str, str, str]] = {}
        self.transformer: dict[str, tuple[str, str, str, str]] = {}
        self.feeder: dict[str, tuple[str, str, str, str]] = {}
        self.substation: dict[str, tuple[str, str, str, str]] = {}
        for mid, com, sub, fdr, tx in zip(*cols.values(), strict=True):
            c = codes.COMMODITIES[com]
            self.meter[mid] = (c, token(sub), token(fdr), token(tx))
            if tx:
                self.transformer.setdefault(tx, (c, token(sub), token(fdr), token(tx)))
            if fdr:
                self.feeder.setdefault(fdr, (c, token(sub), token(fdr), MISSING))
            if sub:
                self.substation.setdefault(sub, (c, token(sub), MISSING, MISSING))

    def of(self, level: str, device_id: str) -> tuple[str, str, str, str]:
        table = {"meter": self.meter, "transformer": self.transformer, "feeder": self.feeder,
                 "substation": self.substation}.get(level, {})
        return table.get(device_id, (MISSING, MISSING, MISSING, MISSING))


def alert_subject(alert: Alert, places: _Places) -> str:
    """The nine-token subject of an alert (see :mod:`headend.serve.subjects`)."""
    com, sub, fdr, tx = places.of(alert.level, alert.device_id)
    meter = token(alert.device_id) if alert.level == "meter" else MISSING
    if alert.kind in ("outage", "restoration"):
        kind = "start" if alert.kind == "outage" else "end"
        return f"headend.outages.{alert.level}.{com}.{sub}.{fdr}.{tx}.{meter}.{kind}"
    return f"headend.alarms.{token(alert.rule)}.{com}.{sub}.{fdr}.{tx}.{meter}.{token(alert.kind)}"


def alert_from_json(doc: dict[str, Any]) -> Alert:
    """Inverse of ``Alert.to_json`` (times back to Unix seconds)."""
    from datetime import datetime

    t = doc["time"]
    ts = int(datetime.fromisoformat(t).timestamp()) if t else 0
    return Alert(doc["kind"], doc["id"], doc["rule"], doc["level"], doc["device_id"], ts,
                 doc.get("record", {}))


class BusAlertSink:
    """:class:`~headend.rules.alerts.AlertSink` that publishes alerts on the bus.

    One message per alert (alerts are few: one per outage or alarm, not per read),
    JSON (``Alert.to_json``), published together and durable when ``emit`` returns.
    """

    def __init__(self, bus: Bus, meters: Callable[[], pa.Table]) -> None:
        self.bus = bus
        self._meters = meters
        self._places: _Places | None = None
        self._places_of: pa.Table | None = None

    def _place(self) -> _Places:
        t = self._meters()
        if t is not self._places_of or self._places is None:
            self._places, self._places_of = _Places(t), t
        return self._places

    def emit(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        places = self._place()
        msgs = [(alert_subject(a, places), json.dumps(a.to_json(), sort_keys=True).encode(),
                 {"Content-Type": JSON_CONTENT_TYPE, "Headend-Alert-Id": a.id})
                for a in alerts]
        try:
            self.bus.publish_many(msgs)
        except Exception as exc:  # adapters raise their own errors: translate
            raise PublishError(f"could not publish {len(msgs)} alerts: {exc}") from exc

    def close(self) -> None:
        pass


class OmsDelivery:
    """Pushes outages and alarms from the bus to one endpoint (run in a thread)."""

    def __init__(self, bus: Bus, stream: str, endpoint: OmsEndpoint, root: Path | str, *,
                 base_delay_s: float = 0.5, max_delay_s: float = 60.0,
                 timeout_s: float = 5.0, batch: int = 200) -> None:
        self.endpoint = endpoint
        self.root = Path(root)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.batch = batch
        self.delivered = 0
        self.dead = 0
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout_s)
        self._consumers = [
            bus.consumer(stream, f"oms-{token(endpoint.name)}-{fam}",
                         filter_subject=f"headend.{fam}.>", ack_wait_s=3600.0)
            for fam in endpoint.families
        ]

    def _body(self, alerts: list[Alert]) -> tuple[bytes, str]:
        from headend.rules import cim

        if self.endpoint.format == "cim":
            return cim.render_xml(alerts), XML_CONTENT_TYPE
        return cim.render_json(alerts).encode(), "application/x-ndjson"

    def _post(self, body: bytes, content_type: str, attempt: int) -> bool:
        headers = {"Content-Type": content_type, "X-Headend-Attempt": str(attempt)}
        if self.endpoint.secret:
            headers["X-Headend-Signature"] = sign(self.endpoint.secret, body)
        try:
            r = self._client.post(self.endpoint.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("oms %s attempt %d: %s", self.endpoint.name, attempt, exc)
            return False
        return 200 <= r.status_code < 300

    def deliver(self, messages: list[Message]) -> bool:
        """POST one batch with retries; ack it once delivered or dead-lettered."""
        alerts = [alert_from_json(json.loads(m.data)) for m in messages]
        body, ctype = self._body(alerts)
        for attempt in range(1, self.endpoint.max_attempts + 1):
            if self._post(body, ctype, attempt):
                for m in messages:
                    m.ack()
                self.delivered += len(alerts)
                return True
            if attempt < self.endpoint.max_attempts:
                delay = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
                if self._stop.wait(delay):
                    return False  # stopping: not acked, delivered again after restart
        self._dead_letter(alerts)
        for m in messages:
            m.ack()
        self.dead += len(alerts)
        return False

    def _dead_letter(self, alerts: list[Alert]) -> None:
        d = self.root / "dead-letter"
        d.mkdir(parents=True, exist_ok=True)
        failed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with (d / f"oms-{self.endpoint.name}.jsonl").open("a") as fh:
            for a in alerts:
                fh.write(json.dumps({"failed_at": failed, "url": self.endpoint.url,
                                     "alert": a.to_json()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # durable before the message is acknowledged

    def step(self, timeout_s: float = 0.5) -> int:
        """Fetch and deliver what is waiting; returns the alerts handled."""
        n = 0
        for c in self._consumers:
            msgs = c.fetch(self.batch, timeout_s / len(self._consumers))
            if msgs and not self._stop.is_set():
                self.deliver(msgs)
                n += len(msgs)
        return n

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # keep delivering; the consumer redelivers what was not acked
                log.exception("oms %s", self.endpoint.name)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        for c in self._consumers:
            c.close()
        self._client.close()
