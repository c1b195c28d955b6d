"""Decoded batches, kept for compatibility: their home is :mod:`headend.wire.batch`.

The decoders (in :mod:`headend.wire`) build them and ingest consumes them, so they live
beside the decoders; ingest imports wire, never the other way round.
"""

from headend.wire.batch import Decoded, DecodedEvents, DecodedReads, DecodedRegisters, MeterKey

__all__ = ["Decoded", "DecodedEvents", "DecodedReads", "DecodedRegisters", "MeterKey"]
