"""Decoded batches: what the decoders (binary frame, canonical CSV) hand to ingest.

Decoders turn bytes into these column sets without knowing the meter registry; ingest
then resolves meters, validates, deduplicates and stores. ``meter`` is a ``uint64``
array of meter serials (binary frames) or a ``pyarrow.StringArray`` of meter ids (CSV);
the registry resolves either to ``meter_idx``. All times are Unix seconds (``int64``,
UTC); values are integers in the resolution of their reading/register type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa

MeterKey: TypeAlias = npt.NDArray[np.uint64] | pa.StringArray


@dataclass(slots=True)
class DecodedReads:
    meter: MeterKey
    reading_type: npt.NDArray[np.uint8]
    interval_end: npt.NDArray[np.int64]
    value: npt.NDArray[np.int64]
    quality: npt.NDArray[np.uint32]

    def __len__(self) -> int:
        return len(self.reading_type)


@dataclass(slots=True)
class DecodedRegisters:
    meter: MeterKey
    register: npt.NDArray[np.uint8]
    read_time: npt.NDArray[np.int64]
    value: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.register)


@dataclass(slots=True)
class DecodedEvents:
    meter: MeterKey
    event_time: npt.NDArray[np.int64]
    event_code: npt.NDArray[np.uint32]

    def __len__(self) -> int:
        return len(self.event_code)


@dataclass(slots=True)
class Decoded:
    """One decoded unit of input (a group of frames, or a block of CSV rows).

    ``rejects`` holds rows already refused by the decoder, in the
    :data:`headend.model.schema.QUARANTINE` schema. ``meters`` and ``collectors``
    carry registry rows (canonical CSV kinds ``meters`` and ``collectors``).
    """

    source: str
    reads: DecodedReads | None = None
    registers: DecodedRegisters | None = None
    events: DecodedEvents | None = None
    meters: pa.Table | None = None  # model.schema.CSV_HEADERS["meters"] columns, parsed
    collectors: pa.Table | None = None  # collector_id: uint32, hmac_key: binary
    weather: pa.Table | None = None  # time: timestamp[s, UTC], temperature_c: float64, zone
    #: reference data by kind: ``transformers`` (transformer_id, rating_kva [kVA]) and
    #: ``customers`` (meter_id, customer_class)
    reference: dict[str, pa.Table] = field(default_factory=dict)
    rejects: list[pa.Table] = field(default_factory=list)
    #: command responses a frame's section carried (:data:`headend.model.commands.
    #: RESPONSES`), applied after the unit's reads are stored
    responses: pa.Table | None = None
