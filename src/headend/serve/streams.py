"""Third-party streams: newly stored rows published, grouped by subject, on the bus.

:class:`StreamPublisher` is an ingest :class:`~headend.ingest.pipeline.Listener`. For
each stored batch it computes the subject of every row from the meter topology
(vectorised: subjects are a function of ``(meter_idx, type)``, so rows are grouped on
that integer key with NumPy), and publishes **one message per subject** whose payload
is JSON lines (``Content-Type: application/x-ndjson``), built column-wise with Arrow
compute and cut out of one Arrow string buffer per batch (no per-row Python). Payload
fields, per family (values in the unit of their type, times ISO 8601 UTC)::

    reads:     {"meter":"M1","type":"kwh_del","end":"2026-01-01T00:15:00Z","value":0.25,"quality":1}
    registers: {"meter":"M1","type":"kwh_del_total","time":"...Z","value":1234.5}
    events:    {"meter":"M1","type":"power_fail","code":"3.26.0.85","time":"...Z"}

Headers: ``Content-Type``, ``Headend-Rows`` (rows in the message), ``Headend-Source``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.bus import Bus, StreamSpec
from headend.model.codes import (
    COMMODITIES,
    READING_TYPES,
    REG_RESOLUTION,
    REGISTER_TYPES,
    RT_RESOLUTION,
    event_code_str,
)
from headend.serve.subjects import OUT_SUBJECTS, PREFIX, event_token, token

__all__ = ["OUT_STREAM", "StreamPublisher", "Topology", "encode_groups", "out_stream_spec"]

OUT_STREAM: Final = "HEADEND_OUT"
JSONL: Final = "application/x-ndjson"
GROUPINGS: Final = ("meter", "transformer", "feeder")
_ISO: Final = "%Y-%m-%dT%H:%M:%SZ"


def out_stream_spec(replicas: int = 1, max_age_s: float = 7 * 86_400.0,
                    max_msgs: int = -1) -> StreamSpec:
    """The stream that keeps third-party messages for replay (durable subscribers)."""
    return StreamSpec(OUT_STREAM, OUT_SUBJECTS, replicas=replicas, max_age_s=max_age_s,
                      max_msgs=max_msgs)


class Topology:
    """Subject tokens per ``meter_idx``, from a registry table (``model.schema.METERS``).

    ``prefix[i]`` is ``"<commodity>.<substation>.<feeder>.<transformer>.<meter>"`` for
    meter ``i`` (``~`` tokens for unknown meters); ``meter_id[i]`` its JSON-escaped id.
    Tokens are computed once per registry version, per meter, not per read.
    """

    def __init__(self, meters: pa.Table) -> None:
        n = int(pc.max(meters.column("meter_idx")).as_py() or -1) + 1 if meters.num_rows else 0
        idx = meters.column("meter_idx").to_numpy()
        prefix = np.full(n, ".".join([token(None)] * 5), dtype=object)
        ids = np.full(n, "", dtype=object)
        cols = [meters.column(c).to_pylist() for c in
                ("commodity", "substation_id", "feeder_id", "transformer_id", "meter_id")]
        # per meter (registry load time), not per read
        prefix[idx] = [
            ".".join((COMMODITIES[c], token(s), token(f), token(t), token(m)))
            for c, s, f, t, m in zip(*cols, strict=True)
        ]
        ids[idx] = cols[4]
        self.prefix = prefix
        self.meter_id = ids
        self.size = n
        #: JSON-quoted meter ids per meter_idx (taken per batch, never rebuilt per read)
        self.quoted_id = _json_str(pa.array(ids, type=pa.string())) if n else \
            pa.array([], pa.string())
        # coarser groups: the tokens below the group become "~" (one message per group
        # and type; finer filtering is then done by the consumer or server-side)
        self.transformer_group, self.transformer_prefix = _coarse(prefix, 1)
        self.feeder_group, self.feeder_prefix = _coarse(prefix, 2)

    def ids_for(self, meter_idx: npt.NDArray[np.int32]) -> pa.Array:
        return pa.array(self.meter_id[meter_idx], type=pa.string())

    def groups(self, group_by: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """``(group of each meter_idx, subject prefix of each group)``."""
        if group_by == "meter":
            return np.arange(self.size, dtype=np.int64), self.prefix
        if group_by == "transformer":
            return self.transformer_group, self.transformer_prefix
        return self.feeder_group, self.feeder_prefix


def _coarse(prefix: npt.NDArray[Any], cut: int
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Group meters whose prefixes agree but for the last ``cut`` tokens (set to ``~``)."""
    if not len(prefix):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    tail = "." + ".".join([token(None)] * cut)
    coarse = np.array([p.rsplit(".", cut)[0] + tail for p in prefix], dtype=str)
    uniq, inv = np.unique(coarse, return_inverse=True)
    return inv.astype(np.int64), uniq.astype(object)


def _iso(col: pa.ChunkedArray | pa.Array) -> Any:
    """ISO 8601 UTC text of a timestamp column. A batch holds few distinct times (one
    per interval end), so each distinct value is formatted once and taken per row."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count or len(arr) < 64:
        return pc.strftime(arr, format=_ISO)
    ints = arr.cast(pa.int64()).to_numpy()
    uniq, inv = np.unique(ints, return_inverse=True)
    if len(uniq) * 4 > len(ints):
        return pc.strftime(arr, format=_ISO)
    text = pc.strftime(pa.array(uniq, pa.int64()).cast(arr.type), format=_ISO)
    return text.take(pa.array(inv.astype(np.int32)))


def _json_str(arr: Any) -> Any:
    """Quote strings for JSON (ids are escaped for ``\\`` and ``"``)."""
    esc = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', esc, '"', "")


_READING_NAMES: Final = np.array([rt.name for rt in READING_TYPES], dtype=object)
_REGISTER_NAMES: Final = np.array([r.name for r in REGISTER_TYPES], dtype=object)


def _type_names(names: npt.NDArray[Any], t: npt.NDArray[np.int64]) -> pa.Array:
    """Per-row names by index: one Arrow take, no per-row Python objects."""
    return pa.array(names.tolist(), pa.string()).take(pa.array(t))


def _lines(parts: Sequence[Any]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def encode_groups(
    group_key: npt.NDArray[np.int64], lines: pa.Array
) -> tuple[npt.NDArray[np.int64], list[bytes], npt.NDArray[np.int64]]:
    """Cut JSON lines into one payload per distinct ``group_key``.

    Returns the distinct keys (sorted), each group's payload (its lines, in input order
    within the group, each ending in ``\\n``) and the row count of each group. The
    lines are sorted once and each payload is one slice of the Arrow data buffer.
    """
    order = np.argsort(group_key, kind="stable")
    keys_sorted = group_key[order]
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    sorted_lines = pc.take(lines, pa.array(order))
    if sorted_lines.offset != 0:  # pragma: no cover - take() returns offset 0
        sorted_lines = pa.concat_arrays([sorted_lines])
    uniq, starts, counts = np.unique(keys_sorted, return_index=True, return_counts=True)
    offsets = np.frombuffer(sorted_lines.buffers()[1], dtype=np.int32,
                            count=len(sorted_lines) + 1, offset=sorted_lines.offset * 4)
    data = sorted_lines.buffers()[2]
    raw = memoryview(data) if data is not None else memoryview(b"")
    ends = starts + counts
    payloads = [bytes(raw[offsets[s]:offsets[e]]) for s, e in zip(starts, ends, strict=True)]
    return uniq.astype(np.int64), payloads, counts.astype(np.int64)


class StreamPublisher:
    """Ingest listener publishing new reads, registers and events for third parties.

    Parameters
    ----------
    bus : Bus
        Where to publish (stream :data:`OUT_STREAM` is ensured).
    meters : callable
        Returns the current registry table (``model.schema.METERS`` columns); called
        when a batch names a meter the cached topology does not know.
    max_msgs : int
        Most messages the stream keeps (-1: only the 7-day age limit); bounds memory on
        the in-process bus.
    group_by : {"meter", "transformer", "feeder"}
        Subject granularity: one message per meter and type (broker-side filtering
        down to the meter), per transformer and type (meter token ``~``; far fewer
        messages when each meter has one read per batch, e.g. 5-minute uploads), or
        per feeder and type (transformer and meter tokens ``~``; fewest messages,
        broker-side filtering down to the feeder).
    on_published : callable, optional
        ``(family, messages, rows)`` after each publish (metrics).
    """

    def __init__(
        self,
        bus: Bus,
        meters: Callable[[], pa.Table],
        *,
        replicas: int = 1,
        max_msgs: int = -1,
        group_by: str = "meter",
        on_published: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {GROUPINGS}")
        self.group_by = group_by
        self.bus = bus
        self._meters = meters
        self._topology: Topology | None = None
        self._source: pa.Table | None = None
        self._lock = threading.Lock()
        self._on_published = on_published
        bus.ensure_stream(out_stream_spec(replicas, max_msgs=max_msgs))

    def topology(self, need: int = 0) -> Topology:
        """The topology of the current registry (rebuilt when the registry changed)."""
        table = self._meters()
        with self._lock:
            if self._topology is None or table is not self._source or \
                    self._topology.size < need:
                self._topology = Topology(table)
                self._source = table
            return self._topology

    def refresh(self) -> None:
        """Forget the cached topology (the registry changed)."""
        with self._lock:
            self._topology = None

    # -------------------------------------------------------------- Listener

    def on_stored(self, batch: Any) -> None:
        msgs: list[tuple[str, bytes, dict[str, str] | None]] = []
        for family, table in (("reads", batch.reads), ("registers", batch.registers),
                              ("events", batch.events)):
            if table is not None and table.num_rows:
                part = self.messages(family, table, source=batch.source)
                msgs.extend(part)
                if self._on_published is not None:
                    self._on_published(family, len(part), table.num_rows)
        if msgs:
            self.bus.publish_many(msgs)

    def on_watermark(self, event_time_s: int) -> None:
        return None

    # -------------------------------------------------------------- core

    def messages(
        self, family: str, table: pa.Table, *, source: str = "", stage: str | None = None
    ) -> list[tuple[str, bytes, dict[str, str] | None]]:
        """The messages (subject, payload, headers) for one table of one family.

        ``family`` is ``reads`` (schema READS; ``stage`` raw or validated),
        ``registers`` (REGISTERS) or ``events`` (EVENTS).
        """
        idx = table.column("meter_idx").to_numpy().astype(np.int64)
        topo = self.topology(int(idx.max()) + 1 if len(idx) else 0)
        take = pa.array(idx)
        ids = topo.quoted_id.take(take)
        if family == "reads":
            stage = stage or "raw"
            t = table.column("reading_type").to_numpy().astype(np.int64)
            type_tok = _READING_NAMES
            value = pc.multiply(table.column("value").cast(pa.float64()),
                                pa.array(RT_RESOLUTION[t]))
            parts = ['{"meter":', ids, ',"type":"', _type_names(type_tok, t),
                     '","end":"', _iso(table.column("interval_end")), '","value":',
                     pc.cast(pc.round(value, 6), pa.string()), ',"quality":',
                     pc.cast(table.column("quality"), pa.string()), "}\n"]
        elif family == "registers":
            stage = stage or "raw"
            t = table.column("register").to_numpy().astype(np.int64)
            type_tok = _REGISTER_NAMES
            value = pc.multiply(table.column("value").cast(pa.float64()),
                                pa.array(REG_RESOLUTION[t]))
            parts = ['{"meter":', ids, ',"type":"', _type_names(type_tok, t),
                     '","time":"', _iso(table.column("read_time")), '","value":',
                     pc.cast(pc.round(value, 6), pa.string()), "}\n"]
        elif family == "events":
            stage = stage or "device"
            code = table.column("event_code").to_numpy()
            uniq, t = np.unique(code, return_inverse=True)
            t = t.astype(np.int64)
            type_tok = np.array([event_token(int(c)) for c in uniq], dtype=object)
            dotted = np.array([event_code_str(int(c)) for c in uniq],
                              dtype=object)
            parts = ['{"meter":', ids, ',"type":"', _type_names(type_tok, t),
                     '","code":"', _type_names(dotted, t), '","time":"',
                     _iso(table.column("event_time")), '"}\n']
        else:
            raise ValueError(f"unknown family {family!r}")
        lines = _lines([pa.scalar(p, pa.string()) if isinstance(p, str) else p
                        for p in parts])
        n_types = max(len(type_tok), 1)
        group_of, prefixes = topo.groups(self.group_by)
        key = group_of[idx] * n_types + t
        uniq_keys, payloads, counts = encode_groups(key, lines)
        m = uniq_keys // n_types
        ty = uniq_keys % n_types
        head = f"{PREFIX}.{family}.{stage}."
        subjects = [head + prefixes[mi] + "." + type_tok[ti]
                    for mi, ti in zip(m.tolist(), ty.tolist(), strict=True)]
        return [
            (subj, p, {"Content-Type": JSONL, "Headend-Source": source, "Headend-Rows": str(c)})
            for subj, p, c in zip(subjects, payloads, counts.tolist(), strict=True)
        ]
