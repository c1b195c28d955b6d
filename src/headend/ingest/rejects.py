"""Quarantine rows, kept for compatibility: their home is :mod:`headend.wire.csvfmt.rejects`.

The CSV decoder builds them and their fields are canonical CSV text, so they live
beside the decoder; ingest imports wire, never the other way round.
"""

from headend.wire.csvfmt.rejects import (
    csv_header,
    make_rejects,
    rejects_from_events,
    rejects_from_reads,
    rejects_from_registers,
    rejects_to_csv_bytes,
)

__all__ = [
    "csv_header",
    "make_rejects",
    "rejects_from_events",
    "rejects_from_reads",
    "rejects_from_registers",
    "rejects_to_csv_bytes",
]
