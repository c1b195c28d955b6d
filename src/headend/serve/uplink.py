"""Uplink: accept an upload, route it to ingest partitions, wait for durable results.

:meth:`Uplink.submit` is the store behind the uplink sources (HTTP ``POST /v1/uploads``,
MQTT), whose :class:`~headend.serve.sources.Intake` :meth:`Uplink.intake` builds. With
``wait=True`` it returns the summed :class:`~headend.ingest.pipeline.IngestResult`
counts of every part once each part's worker has stored it (the acknowledgement
contract); ``wait=False`` returns as soon as the parts are durable on the bus (MQTT
QoS 1: the broker's PUBACK then means "durable in the queue").
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headend.bus import Bus
from headend.errors import DecodeError, ServiceUnavailable
from headend.model import reasons
from headend.serve.router import CSV_CT, FRAME_CT, PARTITIONED_KINDS, Part, Router, csv_kind
from headend.serve.sources import Intake, QuarantineAppend, Upload
from headend.serve.subjects import RESULT_PREFIX, ingest_subject
from headend.serve.worker import (
    H_CT,
    H_REPLY,
    H_SOURCE,
    H_UPLOAD,
    REGISTRY_BUCKET,
    RESULT_STREAM,
    ensure_streams,
)
from headend.wire import frame as wf

__all__ = ["Uplink", "UploadAck"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UploadAck:
    """Counts of one upload (the HTTP reply body)."""

    accepted: int = 0
    duplicate: int = 0
    quarantined: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    parts: int = 0
    meters_loaded: int = 0
    collectors_loaded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicate": self.duplicate,
                "quarantined": self.quarantined, "by_reason": dict(sorted(self.by_reason.items())),
                "parts": self.parts, "meters_loaded": self.meters_loaded,
                "collectors_loaded": self.collectors_loaded}


@dataclass(slots=True)
class _Waiter:
    parts: int
    ack: UploadAck
    done: threading.Event
    seen: set[int]


class Uplink:
    """The uplink stage of one serve process.

    Parameters
    ----------
    bus : Bus
    router : Router
    local_ingest : callable
        ``(data, source, content_type) -> IngestResult`` for registry CSV (meters,
        collectors, weather), ingested here because it changes shared files.
    on_registry_change : callable
        Called after a registry load (refresh the router's own registry view).
    timeout_s : float
        How long ``submit(wait=True)`` waits for the workers [s].
    """

    def __init__(
        self,
        bus: Bus,
        router: Router,
        local_ingest: Callable[[bytes, str, str | None], Any],
        *,
        on_registry_change: Callable[[], None] = lambda: None,
        timeout_s: float = 60.0,
        replicas: int = 1,
    ) -> None:
        self.bus = bus
        self.router = router
        self.local_ingest = local_ingest
        self.on_registry_change = on_registry_change
        self.timeout_s = timeout_s
        self.instance = uuid.uuid4().hex[:12]
        ensure_streams(bus, replicas)
        self._registry_kv = bus.kv(REGISTRY_BUCKET, ttl_s=0, replicas=replicas)
        self._waiters: dict[str, _Waiter] = {}
        self._lock = threading.Lock()
        self._local_lock = threading.Lock()
        self._stop = threading.Event()
        self._results = bus.consumer(RESULT_STREAM, None,
                                     filter_subject=f"{RESULT_PREFIX}.{self.instance}.>")
        self._thread = threading.Thread(target=self._collect, name="uplink-results", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- results

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = self._results.fetch(256, 0.2)
            except Exception:  # noqa: BLE001 - bus closing or reconnecting
                if self._stop.is_set():
                    return
                continue
            for m in msgs:
                upload = m.headers.get(H_UPLOAD, "")
                res = json.loads(m.data)
                with self._lock:
                    w = self._waiters.get(upload)
                    if w is not None and m.seq not in w.seen:
                        w.seen.add(m.seq)
                        w.ack.accepted += int(res["accepted"])
                        w.ack.duplicate += int(res["duplicate"])
                        w.ack.quarantined += int(res["quarantined"])
                        w.ack.by_reason.update(res.get("by_reason", {}))
                        w.ack.meters_loaded += int(res.get("meters_loaded", 0))
                        w.ack.collectors_loaded += int(res.get("collectors_loaded", 0))
                        if len(w.seen) >= w.parts:
                            w.done.set()
                m.ack()

    # ----------------------------------------------------------------- submit

    def split(self, body: bytes, content_type: str | None, source: str) -> list[Part] | None:
        """Parts of an upload; ``None`` for registry CSV (ingested locally)."""
        is_frame = wf.is_frame(body)
        ct = (content_type or "").split(";")[0].strip().lower()
        if ct == FRAME_CT and not is_frame:
            raise DecodeError("body is not a binary frame (bad magic)",
                              reason=reasons.BAD_FRAME, source=source)
        if ct in (CSV_CT, "text/plain") and is_frame:
            raise DecodeError("body is a binary frame, not CSV", reason=reasons.BAD_CSV,
                              source=source)
        if is_frame:
            return self.router.split_frames(body, source)
        kind = csv_kind(body)
        if kind in PARTITIONED_KINDS:
            return self.router.split_csv(body)
        if kind is None:  # unusable: one part, its worker quarantines it whole
            return [Part(0, body, CSV_CT, 0)]
        return None

    def submit(self, body: bytes, *, source: str, content_type: str | None = None,
               wait: bool = True) -> UploadAck:
        """Route one upload; see module docstring. Raises DecodeError on a
        content-type mismatch, ServiceUnavailable when workers do not answer in time."""
        parts = self.split(body, content_type, source)
        if parts is None:
            with self._local_lock:
                res = self.local_ingest(body, source, content_type)
                self._bump_registry()
            return UploadAck(res.accepted, res.duplicate, res.quarantined,
                             Counter(res.by_reason), 0, res.meters_loaded,
                             res.collectors_loaded)
        upload = uuid.uuid4().hex
        ack = UploadAck(parts=len(parts))
        waiter = _Waiter(len(parts), ack, threading.Event(), set())
        reply = f"{RESULT_PREFIX}.{self.instance}.{upload}"
        msgs = []
        for p in parts:
            headers = {H_CT: p.content_type, H_SOURCE: source, H_UPLOAD: upload,
                       "Nats-Msg-Id": f"{upload}.{p.partition}"}
            if wait:
                headers[H_REPLY] = reply
            msgs.append((ingest_subject(p.partition), p.data, headers))
        if wait:
            with self._lock:
                self._waiters[upload] = waiter
        try:
            self.bus.publish_many(msgs)
            if not wait or not parts:
                return ack
            if not waiter.done.wait(self.timeout_s):
                raise ServiceUnavailable(
                    f"no ingest worker acknowledged {len(parts) - len(waiter.seen)} of "
                    f"{len(parts)} parts within {self.timeout_s} s; the upload is queued "
                    "durably and will be stored; retrying is harmless")
            return ack
        finally:
            with self._lock:
                self._waiters.pop(upload, None)

    def intake(self, channel: str, quarantine: QuarantineAppend, *, wait: bool,
               on_upload: Callable[[], None] | None = None) -> Intake:
        """The :class:`~headend.serve.sources.Intake` of a source that feeds this uplink.

        ``wait=True``: an upload is durable once every part is stored (needed with the
        embedded bus, which keeps nothing across a crash); ``wait=False``: once its parts
        are in JetStream.
        """

        def store(upload: Upload) -> UploadAck:
            if not isinstance(upload.body, bytes):
                raise TypeError("the uplink takes uploads as bytes, not files")
            return self.submit(upload.body, source=upload.source,
                               content_type=upload.content_type, wait=wait)

        return Intake(channel, store, quarantine, on_upload=on_upload)

    def _bump_registry(self) -> None:
        self.on_registry_change()
        cur = self._registry_kv.get("version")
        if cur is None:
            self._registry_kv.create("version", b"1")
        else:
            self._registry_kv.update("version", str(int(cur[0] or b"0") + 1).encode(), cur[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._results.close()
