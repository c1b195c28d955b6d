"""Third-party streams: newly stored rows published, grouped by subject, on the bus.

:class:`StreamPublisher` is an ingest :class:`~headend.ingest.pipeline.Listener`. For
each stored batch it computes the subject of every row from the meter topology
(vectorised: subjects are a function of ``(group of meter_idx, type)``, one integer key
per row; the rows are put in key order once with a radix sort), and publishes **one
message per subject** (cut at :data:`MAX_PAYLOAD`) whose payload is JSON lines
(``Content-Type: application/x-ndjson``), built column-wise with Arrow compute and cut
out of one Arrow string buffer per batch (no per-row Python). The group is the meter,
the transformer or the feeder (``group_by``; docs/streams.md). The batch's messages go
out in one pipelined :meth:`~headend.bus.base.Bus.publish_many`. Payload fields, per
family (values in the unit of their type, times ISO 8601 UTC)::

    reads:     {"meter":"M1","type":"kwh_del","end":"2026-01-01T00:15:00Z","value":0.25,"quality":1}
    registers: {"meter":"M1","type":"kwh_del_total","time":"...Z","value":1234.5}
    events:    {"meter":"M1","type":"power_fail","code":"3.26.0.85","time":"...Z"}

Headers: ``Content-Type``, ``Headend-Rows`` (rows in the message), ``Headend-Source``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
from headend.serve.jsonlines import iso_text, meter_heads, read_lines, register_lines
from headend.serve.sources import crash_now, crash_plan
from headend.serve.subjects import OUT_SUBJECTS, PREFIX, event_token, token

__all__ = ["OUT_STREAM", "StreamPublisher", "Topology", "encode_groups", "out_stream_spec"]

log = logging.getLogger(__name__)

OUT_STREAM: Final = "HEADEND_OUT"
JSONL: Final = "application/x-ndjson"
GROUPINGS: Final = ("meter", "transformer", "feeder")
#: (meter ids, transformer ids) subscribers are scoped to (see ``Topology.groups``)
Fine = tuple[frozenset[str], frozenset[str]]
#: largest third-party payload [bytes]; bigger groups are cut (NATS max_payload is
#: 1 MiB by default)
MAX_PAYLOAD: Final = 512 * 1024


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
        #: ``{"meter":"<id>","type":"`` per meter_idx (the head of each JSON line;
        #: taken per batch, never rebuilt per read)
        self.line_head = meter_heads(pa.array(ids, type=pa.string())) if n else \
            pa.array([], pa.string())
        # coarser groups: the tokens below the group become "~" (one message per group
        # and type; finer filtering is then done by the consumer or server-side)
        self.transformer_group, self.transformer_prefix = _coarse(prefix, 1)
        self.feeder_group, self.feeder_prefix = _coarse(prefix, 2)
        self._fine_cache: dict[Any, tuple[npt.NDArray[np.int64], npt.NDArray[Any]]] = {}

    def ids_for(self, meter_idx: npt.NDArray[np.int32]) -> pa.Array:
        return pa.array(self.meter_id[meter_idx], type=pa.string())

    def groups(self, group_by: str, fine: Fine = (frozenset(), frozenset())
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """``(group of each meter_idx, subject prefix of each group)``.

        ``fine`` = (meter ids, transformer ids) some subscriber is scoped to: under a
        coarser grouping those meters get their own group on their full subject (and
        under ``feeder``, the meters of those transformers a transformer-level one),
        so a scope finer than the grouping still matches exactly its rows, and every
        row is in exactly one message.
        """
        if group_by == "meter":
            return np.arange(self.size, dtype=np.int64), self.prefix
        base = (self.transformer_group, self.transformer_prefix) if group_by == "transformer" \
            else (self.feeder_group, self.feeder_prefix)
        if not (fine[0] or fine[1]) or not self.size:
            return base
        key = (group_by, fine)
        hit = self._fine_cache.get(key)
        if hit is None:
            hit = self._fine_groups(group_by, fine, *base)
            self._fine_cache = {key: hit}  # one scope set at a time
        return hit

    def _fine_groups(self, group_by: str, fine: Fine, group: npt.NDArray[np.int64],
                     prefix: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64],
                                                        npt.NDArray[Any]]:
        meters = {token(m) for m in fine[0]}
        trafos = {token(t) for t in fine[1]} if group_by == "feeder" else set()
        toks = [p.split(".") for p in self.prefix]  # per meter, per scope change
        own = np.array([t[4] in meters for t in toks], bool)
        via_t = np.array([t[3] in trafos for t in toks], bool) & ~own
        group = group.copy()
        extra: list[Any] = []
        for i in np.flatnonzero(own):
            group[i] = len(prefix) + len(extra)
            extra.append(self.prefix[i])
        if via_t.any():
            tg = self.transformer_group[via_t]
            uniq, inv = np.unique(tg, return_inverse=True)
            group[via_t] = len(prefix) + len(extra) + inv
            extra.extend(self.transformer_prefix[uniq])
        return group, np.concatenate([prefix, np.array(extra, dtype=object)])


def _coarse(prefix: npt.NDArray[Any], cut: int
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Group meters whose prefixes agree but for the last ``cut`` tokens (set to ``~``)."""
    if not len(prefix):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
    tail = "." + ".".join([token(None)] * cut)
    coarse = np.array([p.rsplit(".", cut)[0] + tail for p in prefix], dtype=str)
    uniq, inv = np.unique(coarse, return_inverse=True)
    return inv.astype(np.int64), uniq.astype(object)


_READING_NAMES: Final = np.array([rt.name for rt in READING_TYPES], dtype=object)
_REGISTER_NAMES: Final = np.array([r.name for r in REGISTER_TYPES], dtype=object)


def _type_names(names: npt.NDArray[Any], t: npt.NDArray[np.int64]) -> pa.Array:
    """Per-row names by index: one Arrow take, no per-row Python objects."""
    return pa.array(names.tolist(), pa.string()).take(pa.array(t))


def encode_groups(
    group_key: npt.NDArray[np.int64], lines: pa.Array, max_bytes: int = 0, *,
    presorted: bool = False,
) -> tuple[npt.NDArray[np.int64], list[bytes], npt.NDArray[np.int64]]:
    """Cut JSON lines into one payload per distinct ``group_key``.

    Returns the distinct keys (sorted), each group's payload (its lines, in input order
    within the group, each ending in ``\\n``) and the row count of each group. The
    lines are sorted once and each payload is one slice of the Arrow data buffer. With
    ``max_bytes`` > 0 a bigger group becomes several consecutive payloads (its key
    repeated), each at most ``max_bytes`` [bytes] (the broker's message size limit).
    ``presorted``: the keys are already in order (rows permuted by the caller).
    """
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    order = None if presorted else _stable_order(group_key)
    if order is None:
        keys_sorted, sorted_lines = group_key, lines
    else:
        keys_sorted, sorted_lines = group_key[order], pc.take(lines, pa.array(order))
    if sorted_lines.offset != 0:  # pragma: no cover - take() returns offset 0
        sorted_lines = pa.concat_arrays([sorted_lines])
    # group boundaries of the sorted keys: O(rows), no second sort
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]]) \
        if len(keys_sorted) else np.empty(0, dtype=np.int64)
    uniq = keys_sorted[starts]
    counts = np.diff(np.r_[starts, len(keys_sorted)])
    offsets = np.frombuffer(sorted_lines.buffers()[1], dtype=np.int32,
                            count=len(sorted_lines) + 1, offset=sorted_lines.offset * 4)
    data = sorted_lines.buffers()[2]
    raw = memoryview(data) if data is not None else memoryview(b"")
    if max_bytes > 0:
        starts, counts, uniq = _cap(offsets, starts, counts, uniq, max_bytes)
    lo = offsets[starts].tolist()
    hi = offsets[starts + counts].tolist()
    payloads = [bytes(raw[s:e]) for s, e in zip(lo, hi, strict=True)]
    return uniq.astype(np.int64), payloads, counts.astype(np.int64)


def _stable_order(key: npt.NDArray[np.int64]) -> npt.NDArray[np.intp] | None:
    """Stable sorting permutation of non-negative integer keys, or None when they are
    sorted already. Keys below 2**32 use two 16-bit radix passes (NumPy's stable sort
    of 16-bit integers is a radix sort: ~10x faster than sorting int64)."""
    if len(key) < 2 or bool(np.all(key[1:] >= key[:-1])):
        return None
    top = int(key.max())
    if top < 1 << 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    if top < 1 << 32 and int(key.min()) >= 0:
        low = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
        high = np.argsort((key[low] >> 16).astype(np.uint16), kind="stable")
        return low[high]
    return np.argsort(key, kind="stable")


def _cap(offsets: npt.NDArray[np.int32], starts: npt.NDArray[Any], counts: npt.NDArray[Any],
         keys: npt.NDArray[Any], max_bytes: int
         ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Cut groups whose payload exceeds ``max_bytes`` into consecutive pieces (at line
    boundaries) so that no message exceeds the broker's payload limit."""
    size = offsets[starts + counts] - offsets[starts]
    if not len(size) or int(size.max()) <= max_bytes:
        return starts, counts, keys
    new_s, new_c, new_k = [], [], []
    for s, c, k, n in zip(starts.tolist(), counts.tolist(), keys.tolist(), size.tolist(),
                          strict=True):
        if n <= max_bytes:
            new_s.append(s)
            new_c.append(c)
            new_k.append(k)
            continue
        bounds = offsets[s:s + c + 1].astype(np.int64)  # line boundaries
        i = 0
        while i < c:  # one step per piece (greedy), not per row
            j = int(np.searchsorted(bounds, bounds[i] + max_bytes, side="right")) - 1
            j = max(j, i + 1)  # a single line longer than max_bytes goes alone
            new_s.append(s + i)
            new_c.append(j - i)
            new_k.append(k)
            i = j
    return np.asarray(new_s), np.asarray(new_c), np.asarray(new_k)


class StreamPublisher:
    """Ingest listener publishing new reads, registers and events for third parties.

    ``republish_on_redelivery``: the rows of an upload the bus delivers again are
    published again (its first worker may have died between storing and publishing).

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
    fine : callable, optional
        Returns the (meter ids, transformer ids) subscribers are scoped to; under a
        coarse ``group_by`` their rows go on their own finer subjects
        (:meth:`Topology.groups`). The serve process passes its subscribers' scopes.
    """

    #: ingest listener port: outbox queue name; every valid row of a redelivered upload
    name = "StreamPublisher"
    republish_on_redelivery = True

    def __init__(
        self,
        bus: Bus,
        meters: Callable[[], pa.Table],
        *,
        replicas: int = 1,
        max_msgs: int = -1,
        group_by: str = "meter",
        on_published: Callable[[str, int, int], None] | None = None,
        fine: Callable[[], Fine] | None = None,
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
        self._fine = fine
        bus.ensure_stream(out_stream_spec(replicas, max_msgs=max_msgs))
        # crash test hook: killed after the n-th stored batch, before its publish
        self._crash = crash_plan("publish", ("before_publish",))
        self._batches = 0

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
        started = time.monotonic()
        msgs: list[tuple[str, bytes, dict[str, str] | None]] = []
        for family, table in (("reads", batch.reads), ("registers", batch.registers),
                              ("events", batch.events)):
            if table is not None and table.num_rows:
                part = self.messages(family, table, source=batch.source)
                msgs.extend(part)
                if self._on_published is not None:
                    self._on_published(family, len(part), table.num_rows)
        if msgs:
            built = time.monotonic()
            self._batches += 1
            if self._crash == ("before_publish", self._batches):
                crash_now()
            self.bus.publish_many(msgs)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("published %d messages; built %.4f s, published %.4f s", len(msgs),
                          built - started, time.monotonic() - built)

    def on_watermark(self, event_time_s: int) -> None:
        return None

    def close(self) -> None:
        """Nothing to persist: what was handed over is on the bus."""

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
        if family == "reads":
            stage = stage or "raw"
            t = table.column("reading_type").to_numpy().astype(np.int64)
            type_tok = _READING_NAMES
        elif family == "registers":
            stage = stage or "raw"
            t = table.column("register").to_numpy().astype(np.int64)
            type_tok = _REGISTER_NAMES
        elif family == "events":
            stage = stage or "device"
            uniq, t = np.unique(table.column("event_code").to_numpy(), return_inverse=True)
            t = t.astype(np.int64)
            type_tok = np.array([event_token(int(c)) for c in uniq], dtype=object)
            dotted = np.array([event_code_str(int(c)) for c in uniq], dtype=object)
        else:
            raise ValueError(f"unknown family {family!r}")
        n_types = max(len(type_tok), 1)
        fine = self._fine() if self._fine is not None and self.group_by != "meter" else \
            (frozenset(), frozenset())
        group_of, prefixes = topo.groups(self.group_by, fine)
        key = group_of[idx] * n_types + t
        # rows sorted by subject once, on the integer key (radix sort); the numeric
        # columns are permuted, so the JSON lines come out already grouped
        order = _stable_order(key)
        if order is not None:
            perm = pa.array(order)
            table, idx, t, key = table.take(perm), idx[order], t[order], key[order]
        heads = topo.line_head
        if family == "reads":
            lines = read_lines(heads, idx, pa.array(type_tok.tolist(), pa.string()), t,
                               RT_RESOLUTION, table)
        elif family == "registers":
            lines = register_lines(heads, idx, pa.array(type_tok.tolist(), pa.string()), t,
                                   REG_RESOLUTION, table)
        else:
            lines = pc.binary_join_element_wise(
                heads.take(pa.array(idx)), _type_names(type_tok, t), '","code":"',
                _type_names(dotted, t), '","time":"', iso_text(table.column("event_time")),
                '"}\n', "")
        uniq_keys, payloads, counts = encode_groups(key, lines, MAX_PAYLOAD, presorted=True)
        m = uniq_keys // n_types
        ty = uniq_keys % n_types
        head = f"{PREFIX}.{family}.{stage}."
        subjects = [head + prefixes[mi] + "." + type_tok[ti]
                    for mi, ti in zip(m.tolist(), ty.tolist(), strict=True)]
        return [
            (subj, p, {"Content-Type": JSONL, "Headend-Source": source, "Headend-Rows": str(c)})
            for subj, p, c in zip(subjects, payloads, counts.tolist(), strict=True)
        ]
