"""Wire formats: the collector binary frame and the canonical CSVs.

Decoders hand ingest :mod:`headend.wire.batch` units (decoded columns) and quarantine
rows (:mod:`headend.wire.csvfmt.rejects`); wire imports nothing of ingest.
"""
