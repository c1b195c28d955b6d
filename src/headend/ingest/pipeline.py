"""The ingest pipeline: decode -> resolve meters -> validate -> deduplicate and store -> ack.

::

    bytes ──► decode (frame | canonical CSV) ──► Decoded
                     │ undecodable                 │
                     ▼                             ▼
                 quarantine ◄── rejected rows ── validate (masks, no per-row Python)
                                                   │ accepted
                                                   ▼
                                   store.append_* (dedup on the key, durable)
                                                   │ new rows only
                                                   ▼
                                listeners.on_stored (rules, bus, VEE) ──► IngestResult (the ack)

Guarantees: an :class:`IngestResult` is returned only after every accepted row and every
quarantined row is durable; a read delivered twice (same upload or any later one) is
stored once; a rejected frame or row is quarantined with a reason, never dropped and
never fatal. Memory is bounded: CSV is decoded in blocks and frames are grouped into
batches of at most :attr:`IngestConfig.batch_reads` reads.
"""

from __future__ import annotations

import logging
import mmap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import DecodeError, FrameError
from headend.ingest._commit import Committer, timed
from headend.ingest.outbox import Outbox
from headend.ingest.result import STAGES, IngestConfig, IngestResult, Listener, StoredBatch
from headend.ingest.validate import ROW_REASONS, check_events, check_reads, check_registers
from headend.model import reasons, schema
from headend.store import DataDir
from headend.store.reference import upsert_reference
from headend.store.weather import WeatherStore
from headend.wire import frame as wf
from headend.wire.batch import Decoded, DecodedEvents, DecodedReads, DecodedRegisters
from headend.wire.csvfmt import decode_csv, detect_kind
from headend.wire.csvfmt import rejects as rj
from headend.wire.responses import responses_csv

__all__ = ["STAGES", "IngestConfig", "IngestResult", "Ingestor", "Listener", "StoredBatch"]

log = logging.getLogger(__name__)

#: a CSV kind handled outside the store (:attr:`Ingestor.side_csv`): ``(data, source)
#: -> (accepted, duplicate, quarantine rows, events it caused)``; the events (EVENTS,
#: e.g. a service switch a completed command moved) are stored and published as any
SideCsv = Callable[[bytes, str], tuple[int, int, pa.Table, pa.Table]]


# order in which file kinds are ingested when several are given at once
_KIND_ORDER = {"collectors": 0, "meters": 1, "transformers": 2, "customers": 2, "weather": 2,
               "frames": 3, "reads": 3, "registers": 3, "events": 3}


def _now() -> int:
    return int(time.time())


class Ingestor:
    """Ingests collector uploads and canonical CSV into a data directory.

    Not thread-safe: one ingesting thread per instance. Several processes may ingest
    into one data directory when they write disjoint meter buckets (see the store).
    """

    def __init__(
        self,
        data: DataDir,
        *,
        listeners: Sequence[Listener] = (),
        config: IngestConfig | None = None,
        clock: Callable[[], int] = _now,
        stages: Sequence[str] = (),
        side_csv: Mapping[tuple[str, ...], SideCsv] | None = None,
    ) -> None:
        self.data = data
        #: CSV kinds taken by a handler instead of the store (issue 12: the commands'
        #: ``command_responses``): header columns -> handler, see :meth:`_side_csv`
        self.side_csv = dict(side_csv or {})
        self.listeners = list(listeners)
        #: stage name of each listener in ``seconds_by_stage`` (default: its outbox name)
        self.stages = [stages[i] if i < len(stages) else _listener_name(li)
                       for i, li in enumerate(self.listeners)]
        self._redelivery = False
        self.config = config or IngestConfig()
        self.clock = clock
        self.outbox = Outbox(data.root)
        self._max_event_time: int | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def open(
        cls,
        root: Path | str,
        *,
        listeners: Sequence[Listener] = (),
        store_config: Any = None,
        config: IngestConfig | None = None,
    ) -> Ingestor:
        """Open (creating if needed) the data directory ``root``."""
        data = DataDir.open(Path(root), config=store_config)
        return cls(data, listeners=listeners, config=config)

    @property
    def registry(self) -> Any:
        return self.data.registry

    def close(self) -> None:
        """Let listeners persist their state (``close``), then release the data
        directory."""
        for listener in self.listeners:
            listener.close()
        self.data.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- entry points

    def ingest_paths(
        self,
        paths: Iterable[Path | str],
        *,
        progress: Callable[[Path, int], None] | None = None,
    ) -> IngestResult:
        """Ingest files in any order (registry files first, whatever the given order).

        Missing files raise ``FileNotFoundError`` before anything is ingested.
        ``progress(path, size_bytes)`` is called after each file has been read.
        """
        started = time.perf_counter()
        files = [Path(p) for p in paths]
        for p in files:
            if not p.is_file():
                raise FileNotFoundError(f"no such file: {p}")
        kinds = {p: _sniff_kind(p) for p in files}
        ordered = sorted(files, key=lambda p: _KIND_ORDER.get(kinds[p], 3))
        total = IngestResult()
        pending = _PendingFrames(committer=Committer(self))
        try:
            self._ingest_ordered(ordered, kinds, pending, total, progress)
        finally:
            total.add(self._flush(pending))
            total.add(pending.committer.close())  # type: ignore[union-attr]
        self._finish(total)
        total.seconds = time.perf_counter() - started
        return total

    def _ingest_ordered(self, ordered: list[Path], kinds: dict[Path, str],
                        pending: _PendingFrames, total: IngestResult,
                        progress: Callable[[Path, int], None] | None) -> None:
        for p in ordered:
            if kinds[p] == "frames":
                # frames of consecutive files are stored together in batches of
                # ~batch_reads reads: far fewer, larger appends than one per file
                total.add(self._ingest_frame_file(p, pending))
            else:
                total.add(self._flush(pending))
                total.add(pending.committer.wait())  # type: ignore[union-attr]
                res = self._ingest_csv(p, str(p), committer=pending.committer)
                res.files = 1
                total.add(res)
                pending.keys.clear()  # the file may have brought collector keys
            if progress is not None:
                progress(p, p.stat().st_size)

    def ingest_bytes(
        self, data: bytes | memoryview, *, source: str, content_type: str | None = None,
        redelivery: bool = False,
    ) -> IngestResult:
        """Ingest one upload held in memory: binary frame(s) or canonical CSV.

        ``content_type`` (``application/octet-stream`` or ``text/csv``) is checked
        against the content; without it the content decides (frame magic or CSV header).
        Returns once everything accepted or quarantined is durable.

        ``redelivery``: the bus delivers this upload again (its first worker may have
        died after storing it and before its listeners took it). Listeners with
        ``republish_on_redelivery`` then get every valid row of the upload, stored now
        or before, instead of only the new ones: at least once for them, never lost.
        """
        self._redelivery = redelivery
        try:
            return self._ingest_bytes(data, source=source, content_type=content_type)
        finally:
            self._redelivery = False

    def _ingest_bytes(
        self, data: bytes | memoryview, *, source: str, content_type: str | None
    ) -> IngestResult:
        started = time.perf_counter()
        result = IngestResult(files=1)
        is_frame = wf.is_frame(data)
        if content_type is not None:
            ct = content_type.split(";")[0].strip().lower()
            if ct == "application/octet-stream" and not is_frame:
                raise DecodeError("body is not a binary frame (bad magic)",
                                  reason=reasons.BAD_FRAME, source=source)
            if ct in ("text/csv", "text/plain") and is_frame:
                raise DecodeError("body is a binary frame, not CSV",
                                  reason=reasons.BAD_CSV, source=source)
        if is_frame:
            result.add(self._ingest_frames(data, source))
        else:
            result.add(self._ingest_csv(bytes(data), source))
        self._finish(result)
        result.seconds = time.perf_counter() - started
        return result

    def ingest_decoded(
        self,
        decoded: Decoded,
        *,
        now_s: int | tuple[npt.NDArray[np.int64], ...] | None = None,
        release: bool = True,
        committer: Committer | None = None,
    ) -> IngestResult:
        """Validate, store and acknowledge one decoded unit (the core step).

        Parameters
        ----------
        now_s : int or (reads, registers, events) arrays, optional
            Creation time of the upload [Unix s] that bounds how far in the future a
            record may lie; per row for binary frames; the ingest clock if omitted.
        release : bool
            Whether loading meters or keys re-processes what waited for them.
        committer : optional
            Store on the committer's thread (the caller waits on it before it
            acknowledges); the returned counts then exclude the stored rows.
        """
        result = IngestResult()
        if decoded.rejects:
            self._quarantine(pa.concat_tables(decoded.rejects), result)
        registry_changed = False
        if decoded.collectors is not None and decoded.collectors.num_rows:
            self.data.keys.upsert(decoded.collectors)
            result.collectors_loaded += decoded.collectors.num_rows
            registry_changed = True
        if decoded.meters is not None and decoded.meters.num_rows:
            self.data.registry.upsert(decoded.meters)
            result.meters_loaded += decoded.meters.num_rows
            registry_changed = True
        for kind, table in decoded.reference.items():
            if table.num_rows:
                upsert_reference(self.data.root, kind, table)
                result.reference_loaded[kind] += table.num_rows
        if decoded.weather is not None and decoded.weather.num_rows:
            self._store_weather(decoded.weather)
            result.weather_loaded += decoded.weather.num_rows
        now = self.clock() if now_s is None else now_s
        reads = regs = evs = None
        started = time.perf_counter()
        if decoded.reads is not None and len(decoded.reads):
            reads = self._validate_reads(decoded.reads, now, decoded.source, result)
        if decoded.registers is not None and len(decoded.registers):
            regs = self._validate_registers(decoded.registers, now, decoded.source, result)
        if decoded.events is not None and len(decoded.events):
            evs = self._validate_events(decoded.events, now, decoded.source, result)
        result.seconds_by_stage["decode"] += time.perf_counter() - started
        if committer is not None:
            committer.submit(decoded.source, reads, regs, evs)
        else:
            self._store(decoded.source, reads, regs, evs, result)
        if decoded.responses is not None and decoded.responses.num_rows:
            if committer is not None:  # the reads before the responses (issue 12)
                result.add(committer.wait())
            self._frame_responses(decoded.responses, decoded.source, result)
        if registry_changed and release and self.config.release_on_registry_change:
            if committer is not None:  # what waits in the committer is stored first
                result.add(committer.wait())
            result.add(self.release_quarantine(reasons.RETRYABLE))
        return result

    # ----------------------------------------------------------------- quarantine

    def release_quarantine(self, which: Iterable[str] | None = None) -> IngestResult:
        """Re-process quarantined rows and frames with the given reasons (all if None).

        Rows that now pass are stored and removed from the quarantine; rows that fail
        again are quarantined anew (with their current reason) and the old entries
        removed, so nothing is lost if the process dies midway (at worst an entry is
        listed twice; the store's dedup keeps the data single). An entry may have been
        stored by a process that died before its listeners took the rows, so listeners
        with ``republish_on_redelivery`` get every released row, stored now or before.
        """
        again, self._redelivery = self._redelivery, True
        try:
            return self._release_quarantine(which)
        finally:
            self._redelivery = again

    def _release_quarantine(self, which: Iterable[str] | None) -> IngestResult:
        result = IngestResult()
        wanted = None if which is None else set(which)
        table = self.data.quarantine.list()
        if table.num_rows == 0:
            return result
        if wanted is not None:
            keep = np.isin(np.asarray(table.column("reason").to_pylist(), dtype=object),
                           list(wanted))
            table = table.filter(pa.array(keep))
        if table.num_rows == 0:
            return result
        kinds = table.column("kind").to_pylist()
        payload_rows = [i for i, k in enumerate(kinds) if k in ("frame", "file")]
        row_kinds = sorted({k for k in kinds if k not in ("frame", "file")})
        sub = IngestResult()
        for kind in row_kinds:
            part = table.filter(pa.compute.equal(table.column("kind"), kind))
            if kind == "meters":
                continue  # invalid registry rows need a corrected file, not a retry
            csv_bytes = rj.rejects_to_csv_bytes(part, kind)
            for decoded in decode_csv(csv_bytes, source="quarantine"):
                sub.add(self.ingest_decoded(decoded, release=False))
            self.data.quarantine.remove(part.column("quarantine_id").to_pylist())
            result.released += part.num_rows
        for i in payload_rows:
            row = table.slice(i, 1)
            payload = row.column("payload")[0].as_py() or b""
            src = row.column("source")[0].as_py()
            if wf.is_frame(payload):
                sub.add(self._ingest_frames(payload, src, release=False))
            else:
                sub.add(self._ingest_csv(payload, src, release=False))
            self.data.quarantine.remove([row.column("quarantine_id")[0].as_py()])
            result.released += 1
        # what came back is counted as quarantined again; "released" is the net
        result.released -= sub.quarantined
        sub.released = 0
        accepted, dup = sub.accepted, sub.duplicate
        result.add(sub)
        result.accepted, result.duplicate = accepted, dup
        result.quarantined = sub.quarantined
        return result

    # ----------------------------------------------------------------- files

    def _ingest_frame_file(self, path: Path, pending: _PendingFrames) -> IngestResult:
        fh = path.open("rb")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        pending.open_files.append((fh, mm))
        result = self._collect_frames(memoryview(mm), str(path), pending, keep_last_file=True)
        result.files = 1
        return result

    def _collect_frames(self, data: bytes | memoryview, source: str, pending: _PendingFrames,
                        *, keep_last_file: bool = False) -> IngestResult:
        """Decode the frames of ``data`` into ``pending`` (quarantining bad ones), storing
        a batch whenever ``pending`` holds ``batch_reads`` reads."""
        result = IngestResult()
        keys = pending.keys  # one key-store look-up per collector per ingest call

        def key_for(collector_id: int) -> bytes | None:
            if collector_id not in keys:
                keys[collector_id] = self.data.keys.get(collector_id)
            return keys[collector_id]

        for item in timed(wf.iter_frames(data, key_for, source=source), result, "decode"):
            if isinstance(item, FrameError):
                start, end = item.span  # type: ignore[attr-defined]
                self._quarantine(
                    rj.make_rejects(source, "frame", item.reason, str(item),
                                    payload=[bytes(data[start:end])]),
                    result,
                )
                continue
            pending.frames.append(item)
            pending.sources.add(source)
            pending.n_reads += item.header.n_interval
            if pending.n_reads >= self.config.batch_reads:
                result.add(self._flush(pending, keep_last_file=keep_last_file))
        return result

    def _flush(self, pending: _PendingFrames, *, keep_last_file: bool = False) -> IngestResult:
        result = IngestResult()
        if pending.frames:
            sources = sorted(pending.sources)
            source = sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1})"
            result = self._ingest_frame_group(pending.frames, source, pending.release,
                                              pending.committer)
        pending.frames = []
        pending.sources = set()
        pending.n_reads = 0
        keep = pending.open_files[-1:] if keep_last_file else []
        for fh, mm in pending.open_files[: len(pending.open_files) - len(keep)]:
            try:
                mm.close()
            except BufferError:  # a view is still alive somewhere: leave it to the GC
                pass
            fh.close()
        pending.open_files = keep
        return result

    def _ingest_csv(self, data: bytes | Path, source: str, *, release: bool = True,
                    committer: Committer | None = None) -> IngestResult:
        """Decode ``data`` block by block; validated blocks are gathered into batches of
        about ``batch_reads`` rows and stored on the committer's thread while the next
        blocks decode (the caller waits on ``committer``; without one, this call does)."""
        result = IngestResult()
        own = committer is None
        commit = Committer(self) if committer is None else committer
        try:
            if self._side_csv(data, source, result):  # issue 12: command responses
                return result
            for decoded in timed(decode_csv(data, source=source), result, "decode"):
                result.add(self.ingest_decoded(decoded, release=release, committer=commit))
        except DecodeError as err:
            # the whole input is unusable (e.g. unknown header): quarantine it whole
            raw = data.read_bytes() if isinstance(data, Path) else data
            self._quarantine(rj.make_rejects(source, "file", err.reason, str(err),
                                             payload=[raw]), result)
            result.unusable.append(f"{source}: {err}")
        finally:
            if own:
                result.add(commit.close())
        return result

    def _side_csv(self, data: bytes | Path, source: str, result: IngestResult) -> bool:
        """Hand a CSV whose header starts with a :attr:`side_csv` key to its handler:
        ``(data, source) -> (accepted, duplicate, quarantine rows)``, counted in
        ``result``. False (nothing done) for any other input."""
        if not self.side_csv:
            return False
        if isinstance(data, Path):
            with data.open("rb") as fh:
                head = fh.read(4096)
        else:
            head = data[:4096]
        line = head.split(b"\n", 1)[0].removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
        cols = tuple(c.strip() for c in line.decode("utf-8", "replace").split(","))
        for header, handler in self.side_csv.items():
            if cols[:len(header)] == header:
                raw = data.read_bytes() if isinstance(data, Path) else data
                accepted, duplicate, rejects, events = handler(raw, source)
                result.accepted += accepted
                result.duplicate += duplicate
                result.by_kind["command_responses"] += accepted + duplicate + rejects.num_rows
                self._quarantine(rejects, result)
                if events.num_rows:  # caused, not uploaded: not counted as accepted
                    caused = IngestResult()
                    self._store(source, None, None, events, caused)
                    result.outboxed.update(caused.outboxed)
                return True
        return False

    def _frame_responses(self, responses: pa.Table, source: str, result: IngestResult
                         ) -> None:
        """Apply the command responses of a frame section through the hook of the
        ``command_responses`` CSV (written as that CSV); without one, quarantine them."""
        text = responses_csv(responses)
        if self._side_csv(text, source, result):
            return
        self._quarantine(rj.make_rejects(
            source, "command_responses", reasons.UNKNOWN_COMMAND,
            "this ingestor applies no command responses (no command store)",
            payload=text.splitlines()[1:]), result)

    def _ingest_frames(self, data: bytes | memoryview, source: str, *, release: bool = True
                       ) -> IngestResult:
        pending = _PendingFrames(release=release)
        result = self._collect_frames(data, source, pending)
        result.add(self._flush(pending))
        return result

    def _ingest_frame_group(self, frames: list[wf.Frame], source: str, release: bool,
                            committer: Committer | None = None) -> IngestResult:
        def cat(name: str, dtype: str) -> npt.NDArray[Any]:
            parts = [getattr(f, name) for f in frames]
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)

        created = np.array([f.header.created_at for f in frames], dtype=np.int64)
        n_i = np.array([f.header.n_interval for f in frames])
        n_r = np.array([f.header.n_register for f in frames])
        n_e = np.array([f.header.n_event for f in frames])
        decoded = Decoded(
            source=source,
            reads=DecodedReads(cat("i_meter", "u8"), cat("i_type", "u1"), cat("i_end", "i8"),
                               cat("i_value", "i8"), cat("i_quality", "u4")),
            registers=DecodedRegisters(cat("r_meter", "u8"), cat("r_type", "u1"),
                                       cat("r_time", "i8"), cat("r_value", "i8")),
            events=DecodedEvents(cat("e_meter", "u8"), cat("e_time", "i8"), cat("e_code", "u4")),
        )
        sections = [f for f in frames if f.responses is not None]
        if sections:  # issue 12: command responses in a frame section
            decoded.responses = pa.concat_tables([f.responses for f in sections
                                                  if f.responses is not None])
            decoded.rejects = [f.response_rejects for f in sections
                               if f.response_rejects is not None]
        # a record may not lie in the future of the frame that carries it
        now = (np.repeat(created, n_i), np.repeat(created, n_r), np.repeat(created, n_e))
        return self.ingest_decoded(decoded, now_s=now, release=release, committer=committer)

    @staticmethod
    def _row_now(now: Any, which: int) -> Any:
        return now[which] if isinstance(now, tuple) else now

    # ----------------------------------------------------------------- validation

    def _resolve(self, meter: Any) -> npt.NDArray[np.int32]:
        reg = self.data.registry
        if isinstance(meter, np.ndarray):
            return reg.idx_for_serial(meter)
        return reg.idx_for_id(meter)

    def _reject(self, codes_: npt.NDArray[np.uint8], decoded: Any, source: str,
                make: Callable[..., pa.Table], result: IngestResult) -> npt.NDArray[np.bool_]:
        ok: npt.NDArray[np.bool_] = codes_ == 0
        if not ok.all():
            present = np.unique(codes_[~ok])
            tables = []
            for c in present:
                reason = ROW_REASONS[int(c)]
                tables.append(make(decoded, codes_ == c, reason, reasons.REASONS[reason], source))
            self._quarantine(pa.concat_tables(tables), result)
        return ok

    def _validate_reads(self, d: DecodedReads, now: Any, source: str, result: IngestResult
                        ) -> pa.Table | None:
        idx = self._resolve(d.meter)
        reg = self.data.registry
        known = idx >= 0
        if known.all():
            commodity, interval_s = reg.commodity(idx), reg.interval_s(idx)
        else:  # attributes of unknown meters do not matter: they fail on the meter
            commodity = np.zeros(len(idx), np.uint8)
            interval_s = np.full(len(idx), 900, np.int32)
            if known.any():
                commodity[known] = reg.commodity(idx[known])
                interval_s[known] = reg.interval_s(idx[known])
        codes_ = check_reads(idx, commodity, interval_s, d.reading_type, d.interval_end,
                             d.value, d.quality, now_s=self._row_now(now, 0),
                             config=self.config.validation)
        ok = self._reject(codes_, d, source, rj.rejects_from_reads, result)
        result.by_kind["reads"] += len(ok)
        if not ok.any():
            return None
        keep: Any = slice(None) if ok.all() else ok  # all valid (the usual case): no copies
        return pa.table(
            [pa.array(idx[keep]), pa.array(d.reading_type[keep]),
             pa.array(d.interval_end[keep]).cast(schema.TS),
             pa.array(d.value[keep].astype(np.int32, copy=False)), pa.array(d.quality[keep])],
            schema=schema.READS,
        )

    def _validate_registers(self, d: DecodedRegisters, now: Any, source: str,
                            result: IngestResult) -> pa.Table | None:
        idx = self._resolve(d.meter)
        codes_ = check_registers(idx, d.register, d.read_time, d.value,
                                 now_s=self._row_now(now, 1), config=self.config.validation)
        ok = self._reject(codes_, d, source, rj.rejects_from_registers, result)
        result.by_kind["registers"] += len(ok)
        if not ok.any():
            return None
        return pa.table(
            [pa.array(idx[ok]), pa.array(d.register[ok]),
             pa.array(d.read_time[ok]).cast(schema.TS), pa.array(d.value[ok])],
            schema=schema.REGISTERS,
        )

    def _validate_events(self, d: DecodedEvents, now: Any, source: str, result: IngestResult
                         ) -> pa.Table | None:
        idx = self._resolve(d.meter)
        codes_ = check_events(idx, d.event_time, d.event_code,
                              now_s=self._row_now(now, 2), config=self.config.validation)
        ok = self._reject(codes_, d, source, rj.rejects_from_events, result)
        result.by_kind["events"] += len(ok)
        if not ok.any():
            return None
        return pa.table(
            [pa.array(idx[ok]), pa.array(d.event_time[ok]).cast(schema.TS),
             pa.array(d.event_code[ok])],
            schema=schema.EVENTS,
        )

    # ----------------------------------------------------------------- storing

    def _store(self, source: str, reads: pa.Table | None, regs: pa.Table | None,
               evs: pa.Table | None, result: IngestResult) -> None:
        store = self.data.store
        started = time.perf_counter()
        new = {"reads": schema.READS.empty_table(), "registers": schema.REGISTERS.empty_table(),
               "events": schema.EVENTS.empty_table()}
        for name, table, append in (("reads", reads, store.append_reads),
                                    ("registers", regs, store.append_registers),
                                    ("events", evs, store.append_events)):
            if table is None:
                continue
            r = append(table)
            result.accepted += r.accepted
            result.duplicate += r.duplicate
            if r.accepted:  # listeners get the new rows in key order (the store's sort)
                o = r.order
                in_order = len(o) == len(table) and bool(np.all(o[1:] > o[:-1]))
                new[name] = table if in_order else (
                    r.table if r.table is not None else table.take(pa.array(o)))
        new_reads, new_regs, new_evs = new["reads"], new["registers"], new["events"]
        result.seconds_by_stage["store"] += time.perf_counter() - started
        for t, col in ((new_reads, "interval_end"), (new_evs, "event_time")):
            if t.num_rows:
                mx = pa.compute.max(t.column(col).cast(pa.int64())).as_py()
                if self._max_event_time is None or mx > self._max_event_time:
                    self._max_event_time = mx
        if not self.listeners:
            return
        batch = StoredBatch(source, new_reads, new_regs, new_evs)
        again = None
        if self._redelivery:  # every valid row, for listeners that must not miss one
            again = StoredBatch(source, *(t if t is not None else e for t, e in (
                (reads, new_reads), (regs, new_regs), (evs, new_evs))))
        for listener, stage in zip(self.listeners, self.stages, strict=True):
            b = again if again is not None and listener.republish_on_redelivery else batch
            if b.reads.num_rows or b.registers.num_rows or b.events.num_rows:
                started = time.perf_counter()
                self._deliver(listener, b, result)
                result.seconds_by_stage[stage] += time.perf_counter() - started

    def deliver_pending(self) -> int:
        """Hand each listener what waits for it in the outbox (batches whose delivery
        failed, e.g. with the bus down), oldest first, without waiting for a new upload;
        a listener's first failure leaves the rest of its queue for the next call.
        Returns the number of batches handed over."""
        n = 0
        for listener in self.listeners:
            name = _listener_name(listener)
            try:
                for path, source, tables in self.outbox.pending(name):
                    listener.on_stored(StoredBatch(source, tables["reads"], tables["registers"],
                                                   tables["events"]))
                    self.outbox.done(path)
                    n += 1
            except Exception as exc:  # noqa: BLE001 - any listener failure: it waits
                log.warning("listener %s still failing (%s); its outbox waits", name, exc)
        return n

    def _deliver(self, listener: Listener, batch: StoredBatch, result: IngestResult) -> None:
        """Hand ``batch`` to ``listener`` after what it missed before; if it fails, keep
        the batch in the outbox (the data is durable: the ingest is still acknowledged)."""
        name = _listener_name(listener)
        try:
            for path, source, tables in self.outbox.pending(name):
                listener.on_stored(StoredBatch(source, tables["reads"], tables["registers"],
                                               tables["events"]))
                self.outbox.done(path)
            listener.on_stored(batch)
        except Exception as exc:  # noqa: BLE001 - any listener failure: keep the batch
            log.warning("listener %s failed (%s); batch kept in the outbox", name, exc)
            self.outbox.put(name, batch.source, {"reads": batch.reads,
                                                 "registers": batch.registers,
                                                 "events": batch.events})
            result.outboxed[name] += 1

    def _quarantine(self, table: pa.Table, result: IngestResult) -> None:
        if table.num_rows == 0:
            return
        self.data.quarantine.append(table)
        result.quarantined += table.num_rows
        for reason, n in Counter(table.column("reason").to_pylist()).items():
            result.by_reason[reason] += n

    def _store_weather(self, table: pa.Table) -> None:
        WeatherStore(self.data.root).append(table)

    def _finish(self, result: IngestResult) -> None:
        if self._max_event_time is not None:
            for listener, stage in zip(self.listeners, self.stages, strict=True):
                started = time.perf_counter()
                listener.on_watermark(self._max_event_time)
                result.seconds_by_stage[stage] += time.perf_counter() - started


@dataclass(slots=True)
class _PendingFrames:
    """Frames decoded from files but not yet stored (views into the files' mmaps)."""

    frames: list[wf.Frame] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    n_reads: int = 0
    open_files: list[tuple[Any, mmap.mmap]] = field(default_factory=list)
    keys: dict[int, bytes | None] = field(default_factory=dict)
    committer: Committer | None = None
    release: bool = True  # loading registry rows releases what waited in quarantine


def _listener_name(listener: Listener) -> str:
    """Outbox queue name of a listener (its ``name``; the class name if empty)."""
    return listener.name or type(listener).__name__


def _sniff_kind(path: Path) -> str:
    """Kind of a file from its first bytes: ``frames`` or the canonical CSV kind."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return "unknown"
    if head[:4] == wf.MAGIC:
        return "frames"
    line = head.split(b"\n", 1)[0]
    try:
        return detect_kind(line)
    except DecodeError:
        return "unknown"


#: file name endings taken from a directory given to ingest (files named one by one
#: are taken whatever their name)
INGEST_SUFFIXES: Final = (".csv", ".hef")


def iter_paths(paths: Iterable[str]) -> Iterator[Path]:
    """Expand directories into the ``.csv`` and ``.hef`` files below them (sorted);
    keep files named one by one as given."""
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file()
                              and q.name.endswith(INGEST_SUFFIXES))
        else:
            yield p
