"""A fleet of virtual collectors that answers a running ``headend serve`` (issue 12, 5).

:class:`CollectorFleet` takes its collectors' commands over HTTP (the long poll
``GET /v1/collectors/<id>/commands?wait=S``) or MQTT (``headend/downlink/<id>``, QoS 1),
acts on them as :mod:`headend.sim.collectors` decides (latency per technology,
failures, silence, duplicate answers, meters without power, the service switch) and
uploads the results like a collector: an on-demand read's interval reads first, then
the ``command_responses`` CSV, through ``POST /v1/uploads`` or the MQTT uplink topic
``<uplink_root>/<collector_id>``. :meth:`CollectorFleet.truth` says what it did with
every command, to score the head end's final states (:func:`~headend.sim.collectors.score`).

One background thread runs an asyncio loop: one long-poll task per collector (HTTP),
or one paho client subscribed to every collector's downlink topic (MQTT; a clean
session, so start the fleet before the commands are sent: what is handed over while it
is away is resent by serve after ``resend_after_s``); and one task that every
``flush_s`` uploads the answers that are due, per collector.

Needs ``httpx`` (``pip install 'headend[serve]'``) and, for MQTT, ``paho-mqtt``
(``headend[mqtt]``).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt

from headend.commands import iso_ms
from headend.errors import ConfigError
from headend.sim.collectors import (
    ACTIONS,
    Behaviour,
    FleetMeters,
    Truth,
    decide,
    delays,
    reads_csv,
    registers_csv,
    responses_csv,
)

__all__ = ["TRANSPORTS", "CollectorFleet"]

log = logging.getLogger(__name__)

TRANSPORTS: Final = ("http", "mqtt")
#: a duplicate answer goes this long [s] after the first one
DUPLICATE_AFTER_S: Final = 0.5
#: an upload refused as transient (503: retrying is harmless) or lost is tried again,
#: the pause doubling from 0.2 s to 5 s, for this long [s]; then it is dropped
UPLOAD_GIVE_UP_S: Final = 300.0

PoweredFn = Callable[[npt.NDArray[np.object_]], npt.NDArray[np.bool_]]


def _ms_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


class CollectorFleet:
    """Virtual collectors answering ``headend serve`` (module docstring).

    Parameters
    ----------
    meters : FleetMeters
        The meters (and through them the collectors) of the fleet: the same as serve's
        registry (``FleetMeters.from_csv(meters.csv)``).
    url : str
        serve's HTTP base URL (``http://127.0.0.1:8080``): long polls (transport
        ``http``) and uploads (transport ``http``).
    transport : str
        ``http`` (long poll and ``POST /v1/uploads``) or ``mqtt`` (downlink topic and
        uplink topic on ``mqtt``).
    mqtt : str or None
        Broker URL ``mqtt://host:port`` (transport ``mqtt``).
    uplink_root : str
        serve's MQTT uplink root (``headend/uplink``).
    behaviour : Behaviour
        Latency, failure, silence and duplicate rates.
    seed : int
        Seed of every draw (with the command id).
    unpowered : iterable of str
        Meters without power at start (:meth:`set_unpowered` changes them).
    powered : callable or None
        ``meter_ids (object array) -> bool array``: the ground truth of power, asked at
        the moment each command is executed; overrides ``unpowered``.
    collectors : iterable of str or None
        Only these collectors (default: every collector of ``meters``).
    poll_wait_s : float
        ``wait`` of each long poll [s].
    flush_s : float
        Period of the uploads of due answers [s].
    expiry_margin_s : float
        A command is not executed unless this long [s] is left before its
        ``expires_at`` (its answer would reach the head end after it gave up).
    mqtt_settle_s : float
        Over MQTT, how long [s] after its reads an on-demand read's ``completed`` goes.
    """

    def __init__(self, meters: FleetMeters, *, url: str | None = None,
                 transport: str = "http", mqtt: str | None = None,
                 uplink_root: str = "headend/uplink", behaviour: Behaviour | None = None,
                 seed: int = 0, unpowered: Iterable[str] = (), powered: PoweredFn | None = None,
                 collectors: Iterable[str] | None = None, poll_wait_s: float = 20.0,
                 flush_s: float = 0.1, expiry_margin_s: float = 1.0,
                 mqtt_settle_s: float = 1.0) -> None:
        if transport not in TRANSPORTS:
            raise ConfigError(f"transport must be http or mqtt, not {transport!r}")
        if transport == "http" and not url:
            raise ConfigError("the http transport needs serve's url")
        if transport == "mqtt" and not mqtt:
            raise ConfigError("the mqtt transport needs the broker's url (mqtt)")
        self.meters = meters
        self.url = url.rstrip("/") if url else None
        self.transport = transport
        self.mqtt_url = mqtt
        self.uplink_root = uplink_root.rstrip("/")
        self.behaviour = behaviour or Behaviour()
        self.seed = seed
        self.collectors = sorted(set(collectors)) if collectors is not None \
            else meters.collectors
        self.poll_wait_s = poll_wait_s
        self.flush_s = flush_s
        self.margin_ms = int(expiry_margin_s * 1000)
        self.mqtt_settle_s = mqtt_settle_s
        self._powered_fn = powered
        self._unpowered = set(unpowered)
        n = len(meters)
        #: service switch per meter row: open since / until [Unix s] (NaN: never opened)
        self.open_since = np.full(n, np.nan)
        self.open_until = np.full(n, np.nan)
        self._lock = threading.Lock()
        self._truth: dict[str, Truth] = {}
        self._due: list[tuple[int, int, str, bool]] = []  # (due ms, seq, id, duplicate)
        self._dup: set[str] = set()
        self._seq = 0
        #: downlink lines received, uploads made and failed, polls, commands answered
        self.stats = {"lines": 0, "uploads": 0, "upload_errors": 0, "polls": 0,
                      "answered": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._http: Any = None
        self._mqtt: Any = None
        self._send_sem: asyncio.Semaphore | None = None

    # ------------------------------------------------------------------ ground truth

    def set_unpowered(self, meter_ids: Iterable[str]) -> None:
        """The meters without power from now on (the others have power)."""
        with self._lock:
            self._unpowered = set(meter_ids)

    def powered(self, meter_ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Whether each meter has power now (the fleet's ground truth)."""
        ids = np.asarray(meter_ids, object)
        if self._powered_fn is not None:
            return np.asarray(self._powered_fn(ids), bool)
        with self._lock:
            dark = self._unpowered
            return np.array([m not in dark for m in ids.tolist()], bool)

    def switch_state(self, meter_id: str) -> str:
        """``disconnected``, ``connected`` (a connect completed) or ``unknown``."""
        r = int(self.meters.index([meter_id])[0])
        if r < 0 or (np.isnan(self.open_since[r]) and np.isnan(self.open_until[r])):
            return "unknown"
        return "disconnected" if np.isnan(self.open_until[r]) or \
            self.open_until[r] == np.inf else "connected"

    def truth(self) -> list[Truth]:
        """What the fleet did with every command it received, in order of receipt."""
        with self._lock:
            return [Truth(**t.to_json()) for t in self._truth.values()]

    def write_truth(self, path: str | Path) -> int:
        """Write :meth:`truth` as JSON lines (one :class:`Truth` per line); the count."""
        rows = self.truth()
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(t.to_json(), separators=(",", ":")) + "\n" for t in rows)
        return len(rows)

    def pending(self) -> int:
        """Answers still waiting for their latency (duplicates included)."""
        with self._lock:
            return len(self._due)

    def upload_reads(self, at_s: float, n_intervals: int = 1) -> int:
        """Upload every meter's last ``n_intervals`` interval reads at ``at_s`` [Unix s]
        (a periodic upload cycle, one upload per collector; a meter whose service switch
        is open reads zero energy). Call it from any thread while the fleet runs;
        returns the rows uploaded."""
        loop = self._loop
        if loop is None:
            raise ConfigError("the fleet is not started")
        return asyncio.run_coroutine_threadsafe(self._cycle(at_s, n_intervals),
                                                loop).result(120)

    async def _cycle(self, at_s: float, n_intervals: int) -> int:
        rows = np.arange(len(self.meters))
        coll = self.meters.collector_id
        sent = 0

        async def one(c: str) -> None:
            nonlocal sent
            mine = rows[coll == c]
            body, n = reads_csv(self.meters, mine, at_s, n_intervals, seed=self.seed,
                                open_since=self.open_since, open_until=self.open_until)
            if n and await self._upload(c, body):
                sent += n

        await asyncio.gather(*(one(c) for c in self.collectors))
        return sent

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start polling / subscribing; returns once every collector listens."""
        self._thread = threading.Thread(target=self._run, name="collector-fleet",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise ConfigError("the collector fleet did not start within 30 s")
        return self

    def stop(self) -> None:
        """Stop polling and uploading (answers not yet due are not sent)."""
        loop, ev = self._loop, self._stopping
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)
        if self._thread is not None:
            self._thread.join(30)
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
            self._mqtt = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import httpx

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._send_sem = asyncio.Semaphore(16)
        limits = httpx.Limits(max_connections=len(self.collectors) + 32,
                              max_keepalive_connections=len(self.collectors) + 32)
        async with httpx.AsyncClient(base_url=self.url or "http://invalid", limits=limits,
                                     timeout=self.poll_wait_s + 30) as client:
            self._http = client
            tasks = [asyncio.create_task(self._flusher())]
            if self.transport == "http":
                tasks += [asyncio.create_task(self._poller(c)) for c in self.collectors]
            else:
                await asyncio.to_thread(self._connect_mqtt)
            self._ready.set()
            await self._stopping.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ downlink

    async def _poller(self, collector: str) -> None:
        import httpx

        assert self._stopping is not None
        path = f"/v1/collectors/{collector}/commands"
        while not self._stopping.is_set():
            try:
                r = await self._http.get(path, params={"wait": self.poll_wait_s})
            except httpx.HTTPError as exc:  # the head end is away
                log.info("poll of %s: %s", collector, exc)
                await asyncio.sleep(0.5)
                continue
            self.stats["polls"] += 1
            if r.status_code == 200:
                self._receive(collector, r.content, int(time.time() * 1000))
            elif r.status_code != 204:
                log.warning("poll of %s: HTTP %s %s", collector, r.status_code, r.text[:200])
                await asyncio.sleep(0.5)

    def _connect_mqtt(self) -> None:
        import paho.mqtt.client as paho

        from headend.serve.mqtt import DOWNLINK_TOPIC

        assert self.mqtt_url is not None
        host, _, port = self.mqtt_url.split("://", 1)[-1].rpartition("@")[2].partition(":")
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                             client_id=f"headend-sim-{uuid.uuid4().hex[:12]}")
        topics = {DOWNLINK_TOPIC.format(collector_id=c): c for c in self.collectors}
        subscribed = threading.Event()
        loop = self._loop
        assert loop is not None

        def on_message(cl: Any, userdata: Any, msg: Any) -> None:
            coll = topics.get(msg.topic)
            if coll is not None:
                loop.call_soon_threadsafe(self._receive, coll, bytes(msg.payload),
                                          int(time.time() * 1000))

        client.on_message = on_message
        client.on_subscribe = lambda *a: subscribed.set()
        client.max_inflight_messages_set(100)
        client.connect(host, int(port or 1883))
        client.loop_start()
        client.subscribe([(t, 1) for t in topics])
        if not subscribed.wait(10):
            raise ConfigError(f"MQTT broker {self.mqtt_url}: no SUBACK within 10 s")
        self._mqtt = client

    def _receive(self, collector: str, body: bytes, now_ms: int) -> None:
        """Downlink lines of ``collector``: new commands get their fate and are
        scheduled; a resend of an answered one is answered again."""
        fresh: list[dict[str, Any]] = []
        with self._lock:
            for line in body.splitlines():
                if not line.strip():
                    continue
                cmd = json.loads(line)
                self.stats["lines"] += 1
                t = self._truth.get(cmd["command_id"])
                if t is not None:
                    t.receipts += 1
                    if t.action in ("completed", "failed"):
                        self._push(now_ms, t.command_id, True)
                    continue
                fresh.append(cmd)
            if not fresh:
                return
            ids = [c["command_id"] for c in fresh]
            rows = self.meters.index(c["meter_id"] for c in fresh)
            tech = np.where(rows >= 0, self.meters.technology[np.maximum(rows, 0)], "")
            delay = delays(self.seed, ids, tech.tolist(), self.behaviour)
            for c, d in zip(fresh, delay.tolist(), strict=True):
                due = now_ms + int(d * 1000)
                t = Truth(c["command_id"], c["kind"], c["meter_id"], collector, now_ms,
                          _ms_of(c["expires_at"]), due)
                t.issued_ms = _ms_of(c["issued_at"])
                self._truth[t.command_id] = t
                if now_ms > t.expires_ms - self.margin_ms:
                    t.action, t.reason = "none", "expired"
                else:
                    self._push(due, t.command_id, False)

    def _push(self, due_ms: int, command_id: str, duplicate: bool) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due_ms, self._seq, command_id, duplicate))

    # ------------------------------------------------------------------ uplink

    async def _flusher(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            await asyncio.sleep(self.flush_s)
            try:
                await self._flush()
            except Exception:
                log.exception("collector fleet: answers not uploaded")

    def _take_due(self, now_ms: int) -> tuple[list[Truth], list[Truth]]:
        """Under the lock: (commands executed now, answers sent again)."""
        first: list[Truth] = []
        again: list[Truth] = []
        while self._due and self._due[0][0] <= now_ms:
            _, _, cid, dup = heapq.heappop(self._due)
            t = self._truth[cid]
            (again if dup else first).append(t)
        return first, again

    async def _flush(self) -> None:
        now_ms = int(time.time() * 1000)
        with self._lock:
            first, again = self._take_due(now_ms)
        if not first and not again:
            return
        if first:
            self._execute(first, now_ms)
        by_coll: dict[str, tuple[list[Truth], list[Truth]]] = {}
        for t in first:
            if t.action != "none":
                by_coll.setdefault(t.collector_id, ([], []))[0].append(t)
        for t in again:
            by_coll.setdefault(t.collector_id, ([], []))[1].append(t)
        await asyncio.gather(*(self._answer(c, a, b, now_ms)
                               for c, (a, b) in by_coll.items()))

    def _execute(self, ts: list[Truth], now_ms: int) -> None:
        """Decide the fate of the commands due now and apply it to the simulated
        meters (switch)."""
        ids = [t.command_id for t in ts]
        rows = self.meters.index(t.meter_id for t in ts)
        ok = rows >= 0
        tech = np.where(ok, self.meters.technology[np.maximum(rows, 0)], "")
        powered = self.powered([t.meter_id for t in ts]) & ok
        d = decide(self.seed, ids, [t.kind for t in ts], tech.tolist(), powered,
                   self.behaviour)
        now_s = now_ms / 1000.0
        with self._lock:
            for i, t in enumerate(ts):
                action = ACTIONS[int(d.action[i])]
                if now_ms > t.expires_ms - self.margin_ms:
                    t.action, t.reason = "none", "expired"
                    continue
                t.action = action
                t.reason = str(d.reason[i] if action == "failed" else d.why_none[i])
                if action == "completed" and ok[i]:
                    r = int(rows[i])
                    if t.kind == "disconnect":
                        self.open_since[r], self.open_until[r] = now_s, np.inf
                    elif t.kind == "connect":
                        if np.isnan(self.open_since[r]):
                            self.open_since[r] = now_s
                        self.open_until[r] = now_s
                if action != "none" and bool(d.duplicate[i]):
                    self._push(now_ms + int(DUPLICATE_AFTER_S * 1000), t.command_id, True)

    async def _answer(self, collector: str, first: list[Truth], again: list[Truth],
                      now_ms: int) -> None:
        """Upload one collector's answers: the interval and register reads of its
        completed on-demand reads, then every response (answers sent again too). Over
        MQTT the completion of a read waits ``mqtt_settle_s`` after its reads (serve
        stores MQTT uploads in several threads: it could overtake them)."""
        reads = [t for t in first if t.kind == "read" and t.action == "completed"]
        if reads:
            rows = self.meters.index(t.meter_id for t in reads)
            body, n = reads_csv(self.meters, rows, now_ms / 1000.0,
                                self.behaviour.read_intervals, seed=self.seed,
                                open_since=self.open_since, open_until=self.open_until)
            regs, _ = registers_csv(self.meters, rows, now_ms / 1000.0, seed=self.seed)
            ok = await self._upload(collector, body) and await self._upload(collector, regs)
            with self._lock:
                for t in reads:
                    if not ok:  # no reads stored: no completed either
                        t.action, t.reason = "none", "upload_failed"
                    else:
                        t.reads = n // len(reads)  # each its read_intervals
                        if self.transport == "mqtt":
                            self._push(now_ms + int(self.mqtt_settle_s * 1000), t.command_id,
                                       True)
            first = [t for t in first if t.action != "none" and
                     not (self.transport == "mqtt" and t.kind == "read")]
        answer = first + again
        if not answer:
            return
        when = iso_ms(now_ms)
        body = responses_csv([t.command_id for t in answer], [t.meter_id for t in answer],
                             [t.action if t.action == "completed" else t.reason
                              for t in answer], [when] * len(answer))
        if await self._upload(collector, body):
            with self._lock:
                for t in answer:
                    t.answers += 1
                    if t.answered_ms is None:
                        t.answered_ms = now_ms
                        self.stats["answered"] += 1

    async def _upload(self, collector: str, body: bytes) -> bool:
        """One upload, as a collector sends it; tried again on a transient failure."""
        import httpx

        assert self._send_sem is not None
        async with self._send_sem:
            give_up = time.monotonic() + UPLOAD_GIVE_UP_S
            attempt = 0
            while time.monotonic() < give_up:
                attempt += 1
                try:
                    if self.transport == "mqtt":
                        ok = await asyncio.to_thread(self._publish, collector, body)
                    else:
                        r = await self._http.post("/v1/uploads", content=body,
                                                  headers={"Content-Type": "text/csv"})
                        ok = r.status_code == 200
                        if not ok:
                            log.warning("upload of %s: HTTP %s %s", collector, r.status_code,
                                        r.text[:200])
                            if r.status_code != 503:
                                break
                except (httpx.HTTPError, OSError, RuntimeError, ValueError) as exc:
                    log.info("upload of %s: %s", collector, exc)
                    ok = False
                if ok:
                    self.stats["uploads"] += 1
                    return True
                await asyncio.sleep(min(5.0, 0.1 * 2 ** attempt))
        self.stats["upload_errors"] += 1
        return False

    def _publish(self, collector: str, body: bytes) -> bool:
        info = self._mqtt.publish(f"{self.uplink_root}/{collector}", body, qos=1)
        info.wait_for_publish(10)
        return bool(info.is_published())
