"""Ingest: decoded batches in, validated rows stored once, rejects quarantined.

The pipeline lives in :mod:`headend.ingest.pipeline` (``Ingestor``); structural checks
in :mod:`headend.ingest.validate`; quarantine rows in :mod:`headend.ingest.rejects`;
the listener registry in :mod:`headend.ingest.hooks`.
"""
