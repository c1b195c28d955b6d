"""Uplink sources: one port for HTTP, MQTT and files, with one acknowledgement rule.

**Acknowledge only what is durable.** A source (an :class:`UplinkSource` adapter)
receives uploads, hands each to the :class:`Intake` as an :class:`Upload` ``(body,
source, content_type)`` and is told, through the upload's :class:`Receipt`, exactly
one of:

``ack(result)``
    The upload is durable: its rows are stored (or, if invalid, quarantined); the
    counts are in ``result``. HTTP replies 200, MQTT sends the PUBACK, ``headend
    ingest`` exits 0 (3 if a file was unusable and quarantined whole).
``reject(reason, detail)``
    The upload as a whole could not be used (it is not decodable, or ingesting it
    raised): it is now in the quarantine with that reason, the error in ``detail`` and
    the upload in ``payload``. HTTP replies 400 with the reason; MQTT sends the PUBACK
    (the collector cannot do better by sending it again, and later uploads must not
    wait behind it); ``headend ingest`` exits 3.
``defer(error)``
    A transient failure (:data:`TRANSIENT`: the store, the bus or a broker is not
    available): nothing is acknowledged, so the upload comes again. HTTP replies 503
    (the client retries), MQTT sends no PUBACK (the adapter retries and the broker
    redelivers on reconnect), ``headend ingest`` exits 4.

Redelivery is harmless: the store keeps one row per (meter, reading type, interval
end) and counts a second delivery as ``duplicate`` (docs/ingest.md). The contract of
:meth:`Intake.take` is blocking: it returns once the outcome is durable, so a source
may tell its client from the thread that called it.

Adapters: :class:`MemorySource` here (tests, examples), the HTTP route
(:class:`headend.serve.app.HttpUplink`), MQTT (:class:`headend.serve.mqtt.MqttUplink`)
and files (:class:`FileSource`, used by ``headend ingest``). One conformance suite runs
over all of them (``tests/serve/test_uplink_port.py``).

**Test hook.** ``HEADEND_TEST_CRASH=<channel>:<point>:<n>`` (``point`` is
``before_store`` or ``after_store``) makes the process kill itself with SIGKILL when the
``n``-th upload of that channel (``http``, ``mqtt``, ``file``) has been received and is
not stored yet, or is stored and not acknowledged yet.
``HEADEND_TEST_CRASH=publish:before_publish:<n>`` kills it when the ``n``-th stored
batch with new rows is durable in the store and not yet published for third parties
(:class:`~headend.serve.streams.StreamPublisher`). It exists for the crash tests
(``tests/serve/test_uplink_crash.py``, ``tests/faults/``) and must never be set in
production.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol

import pyarrow as pa

from headend.errors import DecodeError, PublishError, ServiceUnavailable, StorageError
from headend.model import reasons
from headend.wire.csvfmt.rejects import make_rejects
from headend.wire.frame import is_frame

__all__ = [
    "CRASH_ENV",
    "TRANSIENT",
    "Counts",
    "FileSource",
    "Intake",
    "MemorySource",
    "Outcome",
    "Receipt",
    "UplinkSource",
    "Upload",
    "crash_now",
    "crash_plan",
]

log = logging.getLogger(__name__)

#: failures of the store, the bus or a broker: the upload is not acknowledged
TRANSIENT: Final = (StorageError, PublishError, ServiceUnavailable, OSError)
#: environment variable of the crash test hook (module docstring)
CRASH_ENV: Final = "HEADEND_TEST_CRASH"
#: a file whose ingest raised is quarantined with its bytes up to this size [bytes];
#: a larger one is quarantined without them (it stays where it is)
MAX_FILE_PAYLOAD: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload as a source received it.

    ``body`` is the upload's bytes, or, from :class:`FileSource`, the paths of the files
    (read by the ingestor, which orders and batches them). ``source`` names the sender
    (``http:<ip>``, ``mqtt:<collector>``, ``file:<path>``); ``content_type`` is
    ``application/octet-stream``, ``text/csv`` or None (the content decides).
    """

    body: bytes | tuple[Path, ...]
    source: str
    content_type: str | None = None


class Counts(Protocol):
    """What a store returns for a durable upload (``UploadAck``, ``IngestResult``)."""

    accepted: int
    duplicate: int
    quarantined: int


class Receipt(Protocol):
    """How a source is told what became of one upload (exactly one call)."""

    def ack(self, result: Counts) -> None: ...

    def reject(self, reason: str, detail: str) -> None: ...

    def defer(self, error: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of an upload: ``ack``, ``reject`` or ``defer`` (module docstring)."""

    kind: Literal["ack", "reject", "defer"]
    result: Counts | None = None
    reason: str = ""
    detail: str = ""
    error: BaseException | None = None

    def tell(self, receipt: Receipt) -> None:
        """Call the receipt's method of this outcome."""
        if self.kind == "ack":
            assert self.result is not None
            receipt.ack(self.result)
        elif self.kind == "reject":
            receipt.reject(self.reason, self.detail)
        else:
            assert self.error is not None
            receipt.defer(self.error)


#: ``upload -> counts``, returning once the upload is durable
Store = Callable[[Upload], Counts]
#: durably appends quarantine rows (``QuarantineStore.append``)
QuarantineAppend = Callable[[pa.Table], object]


def crash_plan(channel: str, points: tuple[str, ...] = ("before_store", "after_store")
               ) -> tuple[str, int] | None:
    """``(point, n)`` of the crash test hook (module docstring) if it names ``channel``
    and one of ``points``."""
    raw = os.environ.get(CRASH_ENV, "")
    parts = raw.split(":")
    if len(parts) != 3 or parts[0] != channel or parts[1] not in points:
        return None
    return parts[1], int(parts[2])


def crash_now() -> None:
    """Kill this process with SIGKILL (the crash test hook)."""
    log.critical("%s=%s: killing this process", CRASH_ENV, os.environ.get(CRASH_ENV, ""))
    os.kill(os.getpid(), signal.SIGKILL)


class Intake:
    """The one acknowledgement rule, between every source and the store.

    Parameters
    ----------
    channel : str
        ``http``, ``mqtt``, ``file`` (metrics, the crash test hook).
    store : callable
        ``upload -> counts``; returns once the upload is durable, raises otherwise.
    quarantine : callable
        Durably appends quarantine rows (whole uploads that could not be used).
    on_upload : callable, optional
        Called once per upload taken (metrics).
    """

    def __init__(self, channel: str, store: Store, quarantine: QuarantineAppend, *,
                 on_upload: Callable[[], None] | None = None) -> None:
        self.channel = channel
        self.store = store
        self.quarantine = quarantine
        self.on_upload = on_upload
        self._crash = crash_plan(channel)
        self._taken = 0
        self._lock = threading.Lock()

    def _maybe_crash(self, point: str, n: int) -> None:
        if self._crash == (point, n):
            crash_now()

    def take(self, upload: Upload) -> Outcome:
        """Store or quarantine one upload; returns once the outcome is durable."""
        with self._lock:
            self._taken += 1
            n = self._taken
        if self.on_upload is not None:
            self.on_upload()
        self._maybe_crash("before_store", n)
        try:
            result = self.store(upload)
        except TRANSIENT as exc:
            log.warning("%s upload from %s not stored, not acknowledged: %r", self.channel,
                        upload.source, exc)
            return Outcome("defer", error=exc)
        except DecodeError as exc:
            return self._reject(upload, exc.reason, str(exc))
        except Exception as exc:
            log.exception("%s upload from %s failed", self.channel, upload.source)
            return self._reject(upload, reasons.INGEST_FAILED, f"{type(exc).__name__}: {exc}")
        self._maybe_crash("after_store", n)
        return Outcome("ack", result=result)

    def deliver(self, upload: Upload, receipt: Receipt) -> None:
        """:meth:`take`, then tell ``receipt``."""
        self.take(upload).tell(receipt)

    def _reject(self, upload: Upload, reason: str, detail: str) -> Outcome:
        detail = f"{self.channel} upload: {detail}"
        try:
            self.quarantine(_whole_upload_rejects(upload, reason, detail))
        except Exception as exc:  # noqa: BLE001 - not quarantined: not acknowledged
            log.error("could not quarantine a %s upload from %s (%r); not acknowledged",
                      self.channel, upload.source, exc)
            return Outcome("defer", error=exc)
        return Outcome("reject", reason=reason, detail=detail)


def _whole_upload_rejects(upload: Upload, reason: str, detail: str) -> pa.Table:
    """Quarantine rows of a whole upload: one row, or one per file."""
    body = upload.body
    if isinstance(body, bytes):
        kind = "frame" if is_frame(body) else "file"
        return make_rejects(upload.source, kind, reason, detail, payload=body)
    sources, payloads, details = [], [], []
    for p in body:
        size = p.stat().st_size if p.is_file() else -1
        fits = 0 <= size <= MAX_FILE_PAYLOAD
        sources.append(f"file:{p}")
        payloads.append(p.read_bytes() if fits else None)
        details.append(detail if fits else f"{detail} (the file is not copied here: {p})")
    return make_rejects(sources, "file", reason, details, payload=pa.array(payloads, pa.binary()))


class UplinkSource(Protocol):
    """A channel that receives uploads (the port; see the module docstring).

    ``start`` begins handing uploads to ``intake`` (from the source's own threads or,
    for a one-shot source, before it returns); each upload is acknowledged to its sender
    only by the outcome :meth:`Intake.take` returns. ``close`` stops receiving; uploads
    not acknowledged by then come again (client retry, broker redelivery).
    """

    channel: str

    def start(self, intake: Intake) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Recorded:
    outcome: Outcome | None = None

    def ack(self, result: Counts) -> None:
        self.outcome = Outcome("ack", result=result)

    def reject(self, reason: str, detail: str) -> None:
        self.outcome = Outcome("reject", reason=reason, detail=detail)

    def defer(self, error: BaseException) -> None:
        self.outcome = Outcome("defer", error=error)


@dataclass
class MemorySource:
    """The in-memory adapter: :meth:`send` delivers one upload and returns its outcome."""

    channel: str = "memory"
    outcomes: list[Outcome] = field(default_factory=list)
    _intake: Intake | None = None

    def start(self, intake: Intake) -> None:
        self._intake = intake

    def send(self, body: bytes, *, source: str = "memory",
             content_type: str | None = None) -> Outcome:
        if self._intake is None:
            raise RuntimeError("MemorySource.send before start")
        rec = _Recorded()
        self._intake.deliver(Upload(body, source, content_type), rec)
        assert rec.outcome is not None
        self.outcomes.append(rec.outcome)
        return rec.outcome

    def close(self) -> None:
        self._intake = None


@dataclass
class FileSource:
    """Files given to ``headend ingest``: one upload of all of them, acknowledged by the
    process's exit code (the CLI maps :attr:`outcome`)."""

    paths: Sequence[Path]
    channel: str = "file"
    outcome: Outcome | None = None

    def start(self, intake: Intake) -> None:
        rec = _Recorded()
        first = str(self.paths[0]) if self.paths else "-"
        more = f" (+{len(self.paths) - 1})" if len(self.paths) > 1 else ""
        intake.deliver(Upload(tuple(Path(p) for p in self.paths), f"file:{first}{more}"), rec)
        self.outcome = rec.outcome

    def close(self) -> None:
        pass
