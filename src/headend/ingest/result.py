"""What an ingest takes and gives: its settings, its acknowledgement, and the listener
port that reacts to newly stored rows."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import pyarrow as pa

from headend.ingest.validate import DEFAULT_VALIDATION, ValidationConfig

__all__ = ["STAGES", "BaseListener", "IngestConfig", "IngestResult", "Listener", "StoredBatch"]


@dataclass(slots=True)
class StoredBatch:
    """Rows that one append made durable for the first time (tables in model.schema);
    for a listener with ``republish_on_redelivery``, every valid row of an upload the
    bus delivered again (``Ingestor.ingest_bytes(redelivery=True)``)."""

    source: str
    reads: pa.Table  #: new reads in key order (meter, type, interval end)
    registers: pa.Table  #: new registers in key order (meter, register, read time)
    events: pa.Table  #: new events in key order (meter, event time, code)


class Listener(Protocol):
    """Something that reacts to newly stored data (rules engine, bus publisher, VEE).

    ``on_stored`` is called after the data is durable, with new rows only, in ingest
    order, from the ingesting thread; it must not block for long. ``on_watermark`` is
    called at the end of each ingest call with the largest event time seen [Unix s].
    ``close`` is called once when the ingestor closes (persist state, run what waits).
    ``name`` names the listener's outbox queue (``<data>/outbox/<name>``: keep it
    stable); with ``republish_on_redelivery`` the listener gets every valid row of an
    upload delivered again, not only the rows stored now (see :class:`StoredBatch`).
    """

    name: str
    republish_on_redelivery: bool

    def on_stored(self, batch: StoredBatch) -> None: ...

    def on_watermark(self, event_time_s: int) -> None: ...

    def close(self) -> None: ...


class BaseListener:
    """A :class:`Listener` with the defaults: named after its class, new rows only on a
    redelivery, nothing to do at a watermark or at close. Subclass and write
    ``on_stored``."""

    name: str = ""  # the outbox queue: the class name when empty
    republish_on_redelivery: bool = False

    def on_stored(self, batch: StoredBatch) -> None:
        raise NotImplementedError

    def on_watermark(self, event_time_s: int) -> None:
        del event_time_s

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Ingest settings.

    Attributes
    ----------
    batch_reads : int
        Frames are grouped until this many interval reads, then stored together.
    validation : ValidationConfig
        Structural limits.
    release_on_registry_change : bool
        After meters or collector keys are loaded, re-process quarantined rows that
        waited for them (``unknown_meter``, ``unknown_collector``).
    """

    batch_reads: int = 2_000_000
    validation: ValidationConfig = DEFAULT_VALIDATION
    release_on_registry_change: bool = True


@dataclass(slots=True)
class IngestResult:
    """The acknowledgement of an ingest call: counts of rows by outcome.

    ``accepted`` rows were new and are durable; ``duplicate`` rows were already stored;
    ``quarantined`` rows (or frames, or unreadable files) wait in the quarantine with a
    reason; ``released`` rows came out of quarantine and were accepted.
    """

    accepted: int = 0
    duplicate: int = 0
    quarantined: int = 0
    released: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    meters_loaded: int = 0
    collectors_loaded: int = 0
    weather_loaded: int = 0
    reference_loaded: Counter[str] = field(default_factory=Counter)
    files: int = 0
    unusable: list[str] = field(default_factory=list)
    #: batches a listener failed to take, kept in the outbox for it, by listener
    outboxed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    #: time spent per stage [s]: decode (decoding and validation), store (dedup and
    #: durable append), and each listener's stage (vee, rules, ...); stages on the
    #: committer thread overlap with decoding, so their sum may exceed ``seconds``
    seconds_by_stage: defaultdict[str, float] = field(
        default_factory=lambda: defaultdict(float))

    def add(self, other: IngestResult) -> None:
        self.accepted += other.accepted
        self.duplicate += other.duplicate
        self.quarantined += other.quarantined
        self.released += other.released
        self.by_kind.update(other.by_kind)
        self.by_reason.update(other.by_reason)
        self.meters_loaded += other.meters_loaded
        self.collectors_loaded += other.collectors_loaded
        self.weather_loaded += other.weather_loaded
        self.reference_loaded.update(other.reference_loaded)
        self.files += other.files
        self.unusable.extend(other.unusable)
        self.outboxed.update(other.outboxed)
        for stage, s in other.seconds_by_stage.items():
            self.seconds_by_stage[stage] += s

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "quarantined": self.quarantined,
            "released": self.released,
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "meters_loaded": self.meters_loaded,
            "collectors_loaded": self.collectors_loaded,
            "weather_loaded": self.weather_loaded,
            "reference_loaded": dict(sorted(self.reference_loaded.items())),
            "files": self.files,
            "unusable": list(self.unusable),
            "outboxed": dict(sorted(self.outboxed.items())),
            "seconds": round(self.seconds, 3),
            "seconds_by_stage": {k: round(self.seconds_by_stage.get(k, 0.0), 3)
                                 for k in sorted(set(STAGES) | set(self.seconds_by_stage))},
        }


#: stages always present in ``seconds_by_stage`` (0 when a stage did not run); other
#: listeners add their own
STAGES: Final = ("decode", "store", "vee", "rules")
