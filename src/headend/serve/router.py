"""The uplink stage: split an upload by store meter bucket into ingest partitions.

Every interval read, register read and event is routed to partition
``bucket_of(meter_idx) % partitions`` (subject ``headend-ingest.<partition>``;
:func:`headend.store._storelayout.partition_of`), so a dedup key is only ever written by
the one worker that owns its bucket's partition. Consecutive buckets go to consecutive
partitions: a fleet spreads over all of them once it has ``partitions`` buckets, which
the smaller bucket bits of scale-out stores (``PARTITIONED_BUCKET_BITS``, 256 meters per
bucket) give from ``256 * partitions`` meters on. Both values are the data directory's
recorded layout.

* **Binary frames** are decoded and authenticated here, their rows split by partition
  (vectorised: one mask per partition present) and re-encoded as one frame per
  partition with the same header fields, signed with the same collector key. Frames
  that fail (bad HMAC, unknown collector, garbled) travel whole to partition 0, whose
  worker quarantines them (they write no store key).
* **Canonical CSV** of reads, registers and events is parsed as text with Arrow and
  its rows split the same way (rows whose meter is unknown go by a hash of the id:
  they will be quarantined, ``unknown_meter``); unparseable lines go to partition 0.
* **Registry CSV** (meters, collectors, weather) is not partitioned: the caller
  ingests it locally (it changes shared files) and tells workers to refresh.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.errors import FrameError
from headend.model import schema
from headend.store import partition_of
from headend.wire import frame as wf
from headend.wire.responses import encode_responses_section

__all__ = ["PARTITIONED_KINDS", "Part", "Router", "csv_kind"]

FRAME_CT = "application/octet-stream"
CSV_CT = "text/csv"
PARTITIONED_KINDS = ("reads", "registers", "events")


@dataclass(frozen=True, slots=True)
class Part:
    """One partition's share of an upload."""

    partition: int
    data: bytes
    content_type: str
    rows: int


def csv_kind(body: bytes) -> str | None:
    """Canonical CSV kind from the header line (``model.schema.CSV_HEADERS``), or None."""
    first = body.split(b"\n", 1)[0].strip(b"\r\n\xef\xbb\xbf").decode("utf-8", "replace")
    cols = tuple(c.strip().strip('"') for c in first.split(","))
    for kind, header in schema.CSV_HEADERS.items():
        if cols[: len(header)] == header:
            return kind
    return None


class Router:
    """Splits uploads into per-partition parts.

    Parameters
    ----------
    partitions : int
        Number of ingest partitions (any value keeps each bucket in exactly one
        partition, since the partition is ``bucket % P``).
    bucket_bits : int
        The store's bucket bits (its recorded layout, ``<data>/layout.json``).
    key_for : callable
        Collector id -> HMAC key or None.
    idx_for_serial, idx_for_id : callable
        Registry lookups (``meter_idx``, -1 when unknown).
    """

    def __init__(
        self,
        partitions: int,
        bucket_bits: int,
        key_for: Callable[[int], bytes | None],
        idx_for_serial: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.int32]],
        idx_for_id: Callable[[pa.Array], npt.NDArray[np.int32]],
    ) -> None:
        self.partitions = partitions
        self.bucket_bits = bucket_bits
        self.key_for = key_for
        self.idx_for_serial = idx_for_serial
        self.idx_for_id = idx_for_id

    def _part_of(self, idx: npt.NDArray[np.int32], fallback: npt.NDArray[np.uint64]
                 ) -> npt.NDArray[np.int64]:
        idx = np.asarray(idx, dtype=np.int64)
        known = partition_of(idx, self.bucket_bits, self.partitions)
        unknown = (fallback.astype(np.uint64) % np.uint64(self.partitions)).astype(np.int64)
        return np.where(idx >= 0, known, unknown)

    # ----------------------------------------------------------------- frames

    def split_frames(self, body: bytes, source: str = "") -> list[Part]:
        chunks: dict[int, list[bytes]] = {}
        rows: dict[int, int] = {}
        pos = 0
        for item in wf.iter_frames(body, self.key_for, source=source):
            if isinstance(item, FrameError):
                start, end = item.span  # type: ignore[attr-defined]
                chunks.setdefault(0, []).append(body[start:end])
                rows[0] = rows.get(0, 0) + 1
                pos = end
                continue
            h = item.header
            span = slice(pos, pos + h.frame_len)
            pos += h.frame_len
            key = self.key_for(h.collector_id)
            assert key is not None  # decode succeeded
            pi = self._part_of(self.idx_for_serial(item.i_meter), item.i_meter)
            pr = self._part_of(self.idx_for_serial(item.r_meter), item.r_meter)
            pe = self._part_of(self.idx_for_serial(item.e_meter), item.e_meter)
            sections = self._response_parts(item)  # issue 12: with their meters' reads
            present = np.unique(np.concatenate([pi, pr, pe, np.array(list(sections), np.int64)]))
            if len(present) <= 1:
                p = int(present[0]) if len(present) else 0
                chunks.setdefault(p, []).append(body[span])
                rows[p] = rows.get(p, 0) + h.n_interval + h.n_register + h.n_event
                continue
            for p in present.tolist():
                mi, mr, me = pi == p, pr == p, pe == p
                chunks.setdefault(p, []).append(wf.encode_frame(
                    key, h.collector_id, h.sequence, h.created_at, flags=h.flags,
                    interval=(item.i_meter[mi], item.i_end[mi], item.i_value[mi],
                              item.i_quality[mi], item.i_type[mi]),
                    register=(item.r_meter[mr], item.r_value[mr], item.r_time[mr],
                              item.r_type[mr]),
                    event=(item.e_meter[me], item.e_time[me], item.e_code[me]),
                    sections=sections.get(p, b""),
                ))
                rows[p] = rows.get(p, 0) + int(mi.sum() + mr.sum() + me.sum())
        return [Part(p, b"".join(c), FRAME_CT, rows[p]) for p, c in sorted(chunks.items())]

    def _response_parts(self, frame: wf.Frame) -> dict[int, bytes]:
        """The frame's ``command_responses`` section by partition: each response goes
        with the reads of its meter (so its worker stores them first). A section with
        refused responses goes whole to the partition of its first good one (or 0)."""
        if frame.responses is None:
            return {}
        t = frame.responses
        ids = t.column("meter_id").combine_chunks()
        part = self._part_of(self.idx_for_id(ids), np.zeros(len(ids), np.uint64))
        present = np.unique(part)
        if len(present) <= 1 or (frame.response_rejects is not None
                                 and frame.response_rejects.num_rows):
            return {int(part[0]) if len(part) else 0: frame.sections}
        out = {}
        for p in present.tolist():
            sub = t.filter(pa.array(part == p))
            out[p] = encode_responses_section(
                sub.column("command_id").to_pylist(), sub.column("meter_id").to_pylist(),
                sub.column("status").to_pylist(),
                sub.column("time").cast(pa.int64()).to_numpy(),
                sub.column("detail").to_pylist())
        return out

    # ----------------------------------------------------------------- CSV

    def split_csv(self, body: bytes) -> list[Part]:
        """Split canonical CSV of reads, registers or events by partition.

        Rows are kept byte for byte (the header is repeated in each part); the meter id
        is the first field of each line (canonical CSV has no quoted newlines).
        """
        lines = body.split(b"\n")
        header, rows = lines[0], [ln for ln in lines[1:] if ln.strip()]
        if not rows:
            return []
        arr = pa.array(rows, pa.binary()).cast(pa.string())
        first = pc.list_element(pc.split_pattern(arr, ",", max_splits=1), 0)
        ids = pc.utf8_trim(first, '" \r')
        idx = self.idx_for_id(ids)
        fallback = np.zeros(len(idx), dtype=np.uint64)
        unknown = np.flatnonzero(idx < 0)
        if len(unknown):  # only unknown meters need a stable hash of their id
            fallback[unknown] = [zlib.crc32(s.encode()) for s in
                                 ids.take(pa.array(unknown)).to_pylist()]
        part = self._part_of(idx, fallback)
        rows_arr = np.array(rows, dtype=object)
        out = []
        head = header.rstrip(b"\r") + b"\n"
        for p in np.unique(part).tolist():
            sel = rows_arr[part == p]
            out.append(Part(p, head + b"\n".join(sel) + b"\n", CSV_CT, len(sel)))
        return out


def _columns(header_line: bytes) -> list[str]:
    return [c.strip().strip('"') for c in
            header_line.strip(b"\r\n\xef\xbb\xbf").decode("utf-8", "replace").split(",")]
