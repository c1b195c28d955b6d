"""Outages, alarms and the :class:`AlertSink` port through which the OMS hears of them.

Records
    :class:`Outage` and :class:`Alarm` are the durable results of the rules, kept by
    :class:`RecordBook` under ``<data>/rules/`` (JSON lines, rewritten atomically at each
    checkpoint). Their ids are deterministic (a hash of rule, device and start), so
    replaying the same input never duplicates them; a later update of the same id (an
    outage restored, an alarm cleared) replaces the earlier version.

Alerts
    Each new or changed record is also sent to the :class:`AlertSink` as an
    :class:`Alert` (``outage``, ``restoration``, ``alarm``, ``alarm_cleared``, ``storm``).

Sink contract: ``emit`` is blocking and called from the engine's thread, in event-time
order within one batch; delivery is at least once (after a crash between emit and
checkpoint, alerts of the replayed batch are emitted again with the same ids, so
consumers deduplicate on ``id``). A sink raises :class:`~headend.errors.PublishError` if
it cannot deliver.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from headend.errors import PublishError

__all__ = [
    "Alarm",
    "Alert",
    "AlertSink",
    "JsonlSink",
    "MemorySink",
    "Outage",
    "RecordBook",
    "iso",
    "record_id",
]

Level = Literal["meter", "transformer", "feeder", "substation"]
AlertKind = Literal["outage", "restoration", "alarm", "alarm_cleared", "storm"]


def iso(t: int | None) -> str | None:
    """Unix seconds to ISO 8601 UTC (``2026-01-01T00:00:00Z``); ``None`` stays ``None``."""
    if t is None:
        return None
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_id(*parts: object) -> str:
    """Deterministic id: first 16 hex digits of SHA-256 over the ``|``-joined parts."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Outage:
    """One outage located at a device.

    Attributes
    ----------
    outage_id : str
        Deterministic id (rule, level, device, start).
    level : {"meter", "transformer", "feeder", "substation"}
    device_id : str
        The failed device (the meter id for a meter-level outage).
    start, end : int, int or None
        Event times [Unix s]; ``end`` is ``None`` while ongoing.
    sustained : bool
        Longer than the momentary limit (IEEE 1366: 5 min), or still ongoing past it.
    meters_affected : int
        Meters found out under the device.
    rule : str
        Rule instance that produced it.
    inputs : tuple of str
        Evidence used (``events:3.26.0.85``, ``reads:silence``, ``ping`` ...).
    parent_id : str or None
        For a nested outage: the outage whose restoration left it behind.
    """

    outage_id: str
    level: Level
    device_id: str
    start: int
    end: int | None
    sustained: bool
    meters_affected: int
    rule: str
    inputs: tuple[str, ...] = ()
    parent_id: str | None = None

    def export(self) -> dict[str, Any]:
        """The ``headend export outages`` JSON object (contract)."""
        return {
            "outage_id": self.outage_id,
            "level": self.level,
            "device_id": self.device_id,
            "start": iso(self.start),
            "end": iso(self.end),
            "sustained": self.sustained,
            "meters_affected": self.meters_affected,
        }


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm (power quality, revenue protection, leak, silent meter, overload ...).

    ``level`` is ``meter`` (then ``device_id`` is the meter id) or a device level;
    ``start``/``end`` are event times [Unix s], ``end`` ``None`` while active;
    ``detail`` is human-readable; ``inputs`` names the data the rule used.
    """

    alarm_id: str
    rule: str
    level: Level
    device_id: str
    start: int
    end: int | None
    detail: str
    inputs: tuple[str, ...] = ()

    def export(self) -> dict[str, Any]:
        """The ``headend export alarms`` JSON object (contract)."""
        out: dict[str, Any] = {"alarm_id": self.alarm_id, "rule": self.rule}
        if self.level == "meter":
            out["meter_id"] = self.device_id
        else:
            out["device_id"] = self.device_id
            out["level"] = self.level
        out.update(start=iso(self.start), end=iso(self.end), detail=self.detail,
                   inputs=list(self.inputs))
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """A notification for the OMS / diagnostics: what happened, to which record."""

    kind: AlertKind
    id: str
    rule: str
    level: Level
    device_id: str
    time: int
    record: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "rule": self.rule, "level": self.level,
                "device_id": self.device_id, "time": iso(self.time), "record": self.record}


@runtime_checkable
class AlertSink(Protocol):
    """Port: where alerts go (OMS, bus, file). See the module docstring for the contract."""

    def emit(self, alerts: Sequence[Alert]) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """In-memory sink for tests and examples: ``alerts`` keeps everything emitted."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alerts: Sequence[Alert]) -> None:
        self.alerts.extend(alerts)

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends alerts as JSON lines to ``path`` (one file; fsync'd per emit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                for a in alerts:
                    fh.write(json.dumps(a.to_json(), sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise PublishError(f"cannot write alerts to {self.path}: {exc}") from exc

    def close(self) -> None:
        pass


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RecordBook:
    """Outages or alarms keyed by id, persisted as JSON lines (``save`` is atomic)."""

    def __init__(self, path: Path | None, kind: type[Outage | Alarm]) -> None:
        self.path = path
        self.kind = kind
        self.records: dict[str, Any] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    d = json.loads(line)
                    d["inputs"] = tuple(d.get("inputs", ()))
                    self.records[d[self._key]] = kind(**d)
        self.dirty = False

    @property
    def _key(self) -> str:
        return "outage_id" if self.kind is Outage else "alarm_id"

    def put(self, rec: Outage | Alarm) -> bool:
        """Insert or replace; returns whether anything changed."""
        key = getattr(rec, self._key)
        if self.records.get(key) == rec:
            return False
        self.records[key] = rec
        self.dirty = True
        return True

    def get(self, key: str) -> Any:
        return self.records.get(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(sorted(self.records.values(), key=lambda r: (r.start, getattr(r, self._key))))

    def __len__(self) -> int:
        return len(self.records)

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        _atomic_write(self.path, (json.dumps(asdict(r), sort_keys=True) for r in self))
        self.dirty = False
