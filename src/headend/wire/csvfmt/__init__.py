"""Canonical CSV: detect the kind, decode to columns and rejects, write exports.

The formats are documented for outside users in ``docs/formats.md``; the column names
of each kind are :data:`headend.model.schema.CSV_HEADERS`. Refused rows become
quarantine rows (:mod:`headend.wire.csvfmt.rejects`), which rebuild a canonical CSV.

Examples
--------
>>> detect_kind("meter_id,event_time,event_code")
'events'
"""

from __future__ import annotations

from headend.wire.csvfmt._decode import DEFAULT_BLOCK_SIZE, decode_csv
from headend.wire.csvfmt._detect import KINDS, detect_kind
from headend.wire.csvfmt._encode import (
    DEFAULT_CHUNK_ROWS,
    write_events_csv,
    write_meters_csv,
    write_reads_csv,
    write_registers_csv,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_CHUNK_ROWS",
    "KINDS",
    "decode_csv",
    "detect_kind",
    "write_events_csv",
    "write_meters_csv",
    "write_reads_csv",
    "write_registers_csv",
]
