"""The third-party stream's JSON lines read back into tables (for the rules workers).

Payloads of ``headend.reads.*`` and ``headend.events.*`` messages (built by
:mod:`headend.serve.jsonlines`: one JSON object per line) are parsed with one
``pyarrow.json`` read per family and round; :func:`parse_messages` also says which
message each row came from, so a worker can hold back or acknowledge whole messages.
"""

from __future__ import annotations

import io
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from headend.model import schema
from headend.model.codes import READING_TYPES, pack_event_code, quality_str_array
from headend.model.reasons import RULES_UNKNOWN_METER

__all__ = ["EVENTS_JSON", "FAMILY_JSON", "READS_JSON", "decode_events", "decode_reads",
           "events_table", "meter_idx", "parse_json", "parse_messages", "reads_table",
           "unknown_rejects"]

_TS = schema.READS.field("interval_end").type
READS_JSON = pa.schema([("meter", pa.string()), ("type", pa.string()), ("end", _TS),
                         ("value", pa.float64()), ("quality", pa.uint32())])
EVENTS_JSON = pa.schema([("meter", pa.string()), ("code", pa.string()), ("time", _TS)])
_RT_NAMES = pa.array([rt.name for rt in READING_TYPES], pa.string())
_RT_RES = np.array([rt.resolution for rt in READING_TYPES], dtype=np.float64)


def parse_json(payloads: list[bytes], sch: pa.Schema) -> pa.Table:
    """JSON lines (all of ``payloads``) as one table of schema ``sch``."""
    buf = b"".join(payloads)
    if not buf.strip():
        return sch.empty_table()
    return pj.read_json(io.BytesIO(buf), parse_options=pj.ParseOptions(
        explicit_schema=sch, unexpected_field_behavior="ignore"))


def parse_messages(payloads: list[bytes], sch: pa.Schema) -> tuple[pa.Table, np.ndarray]:
    """JSON lines of several messages as one table, and the message of each row."""
    counts = np.array([p.count(b"\n") + (0 if p.endswith(b"\n") or not p else 1)
                       for p in payloads], dtype=np.int64)
    t = parse_json(payloads, sch)
    if int(counts.sum()) != t.num_rows:  # blank lines: one parse per message
        parts = [parse_json([p], sch) for p in payloads]
        counts = np.array([x.num_rows for x in parts], dtype=np.int64)
        t = pa.concat_tables(parts) if parts else sch.empty_table()
    return t, np.repeat(np.arange(len(payloads)), counts)


def reads_table(t: pa.Table, idx: np.ndarray) -> pa.Table:
    """Parsed JSON reads with their ``meter_idx`` -> a ``READS`` table (rows of unknown
    meters or reading types left out)."""
    pos = pc.fill_null(pc.index_in(t.column("type"), value_set=_RT_NAMES), -1)
    pos = np.asarray(pos.to_numpy(), dtype=np.int64)
    ok = (idx >= 0) & (pos >= 0)
    p = np.where(ok, pos, 0)
    value = t.column("value").to_numpy(zero_copy_only=False)
    raw = np.rint(value / _RT_RES[p])
    keep = pa.array(ok)
    return pa.table({
        "meter_idx": pa.array(idx, pa.int32()).filter(keep),
        "reading_type": pa.array(p.astype(np.uint8)).filter(keep),
        "interval_end": t.column("end").filter(keep),
        "value": pa.array(raw.astype(np.int32)).filter(keep),
        "quality": t.column("quality").filter(keep),
    }, schema=schema.READS)


def events_table(t: pa.Table, idx: np.ndarray) -> pa.Table:
    """Parsed JSON events with their ``meter_idx`` -> an ``EVENTS`` table."""
    enc = pc.dictionary_encode(t.column("code")).combine_chunks() if len(t) else None
    if enc is None:
        return schema.EVENTS.empty_table()
    packed = []
    for c in enc.dictionary.to_pylist():  # distinct codes only
        try:
            packed.append(pack_event_code(c))
        except (ValueError, AttributeError):
            packed.append(-1)
    code = np.asarray(packed, dtype=np.int64)[enc.indices.to_numpy(zero_copy_only=False)]
    ok = (idx >= 0) & (code >= 0)
    keep = pa.array(ok)
    return pa.table({
        "meter_idx": pa.array(idx, pa.int32()).filter(keep),
        "event_time": t.column("time").filter(keep),
        "event_code": pa.array(code.astype(np.uint32)).filter(keep),
    }, schema=schema.EVENTS)


def meter_idx(t: pa.Table, registry: Any) -> np.ndarray:
    return np.asarray(registry.idx_for_id(t.column("meter")), dtype=np.int32)


def decode_reads(payloads: list[bytes], registry: Any) -> pa.Table:
    """JSON lines of ``headend.reads.*`` messages -> a ``READS`` table (rows of unknown
    meters or reading types dropped)."""
    t = parse_json(payloads, READS_JSON)
    return reads_table(t, meter_idx(t, registry))


def decode_events(payloads: list[bytes], registry: Any) -> pa.Table:
    """JSON lines of ``headend.events.*`` messages -> an ``EVENTS`` table."""
    t = parse_json(payloads, EVENTS_JSON)
    return events_table(t, meter_idx(t, registry))


#: family -> (JSON schema, table builder)
FAMILY_JSON: Final = {"reads": (READS_JSON, reads_table), "events": (EVENTS_JSON, events_table)}


def unknown_rejects(family: str, t: pa.Table, source: str, detail: str) -> pa.Table:
    """Quarantine rows (``rules_unknown_meter``) of parsed JSON rows, fields as
    canonical text."""
    from headend.wire.csvfmt.rejects import make_rejects

    ts = "end" if family == "reads" else "time"
    when = pc.strftime(t.column(ts), format="%Y-%m-%dT%H:%M:%SZ")
    if family == "reads":
        q = t.column("quality").to_numpy(zero_copy_only=False).astype(np.uint32)
        return make_rejects(source, family, RULES_UNKNOWN_METER, detail,
                            meter_id=t.column("meter"), type=t.column("type"), time=when,
                            value=pc.cast(t.column("value"), pa.string()),
                            quality=pa.array(quality_str_array(q).tolist(), pa.string()))
    return make_rejects(source, family, RULES_UNKNOWN_METER, detail,
                        meter_id=t.column("meter"), type=t.column("code"), time=when)
