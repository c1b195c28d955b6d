"""Ingest: decoded batches in, validated rows stored once, rejects quarantined.

The pipeline lives in :mod:`headend.ingest.pipeline` (``Ingestor``); structural checks
in :mod:`headend.ingest.validate`; the listener registry in :mod:`headend.ingest.hooks`.
What it consumes comes from the decoders: decoded batches (:mod:`headend.wire.batch`)
and quarantine rows (:mod:`headend.wire.csvfmt.rejects`); ingest imports wire, never
the other way round.
"""
