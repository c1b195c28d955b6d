"""Arrow schemas of every table headend keeps or exchanges: the one source of truth.

Core batches are Arrow tables (or the NumPy arrays behind them) with these schemas.
Times are ``timestamp[s, UTC]``; values are integers in the resolution of their reading
or register type (see :mod:`headend.model.codes`), so the store compresses them well and
arithmetic is exact.

The deduplication key of an interval read is ``(meter_idx, reading_type, interval_end)``,
packed by :func:`read_key` into one ``uint64`` that sorts like the tuple.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

TS: Final = pa.timestamp("s", tz="UTC")

#: Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the key's time origin.
KEY_EPOCH_S: Final = 946_684_800
#: Largest meter index a key can hold (27 bits).
MAX_METER_IDX: Final = (1 << 27) - 1

METERS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("meter_id", pa.string(), nullable=False),
        pa.field("serial", pa.uint64(), nullable=False),  # frame address; 0 = CSV only
        pa.field("commodity", pa.uint8(), nullable=False),  # codes.Commodity
        pa.field("technology", pa.uint8(), nullable=False),  # codes.Technology
        pa.field("two_way", pa.bool_(), nullable=False),
        pa.field("collector_id", pa.string()),
        pa.field("transformer_id", pa.string()),
        pa.field("feeder_id", pa.string()),
        pa.field("substation_id", pa.string()),
        # declared interval [s]; 0 = not declared (learned from the reads, see INTERVALS)
        pa.field("interval_s", pa.int32(), nullable=False),
    ]
)

#: What the registry keeps of each meter (``<root>/meters.parquet``): :data:`METERS`, then
#: ``critical_care`` (a disconnect needs ``--force`` and a reason; from the meters CSV,
#: default false) and ``switch_state`` (the service switch,
#: :data:`headend.model.commands.SWITCH_STATES` index: 0 unknown, 1 connected,
#: 2 disconnected; set by commands, never by the meters CSV).
REGISTRY: Final = pa.schema(
    list(METERS) + [
        pa.field("critical_care", pa.bool_(), nullable=False),
        pa.field("switch_state", pa.uint8(), nullable=False),
    ]
)

#: History of the meters' service switch (``<root>/switch_history.parquet``): each state a
#: completed remote disconnect or connect set, when (head-end time of the completion)
#: and by which command; the registry's ``switch_state`` is the last one per meter.
SWITCH_HISTORY: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("switch_state", pa.uint8(), nullable=False),
        pa.field("at", TS, nullable=False),
        pa.field("command_id", pa.string(), nullable=False),
    ]
)

#: Interval lengths learned from the reads (``<root>/intervals.parquet``), a small
#: history per (meter, reading type): ``interval_s`` holds from ``effective_from`` on
#: (the first entry of a key also covers earlier reads). A declared interval
#: (``METERS.interval_s > 0``) wins over every entry here.
INTERVALS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("reading_type", pa.uint8(), nullable=False),
        pa.field("effective_from", TS, nullable=False),
        pa.field("interval_s", pa.int32(), nullable=False),
    ]
)

#: The canonical CSV header of each kind (contract; see docs/formats.md).
CSV_HEADERS: Final[dict[str, tuple[str, ...]]] = {
    "meters": ("meter_id", "commodity", "technology", "two_way", "collector_id",
               "transformer_id", "feeder_id", "substation_id"),
    "reads": ("meter_id", "reading_type", "interval_end", "value", "quality"),
    "registers": ("meter_id", "register", "read_time", "value"),
    "events": ("meter_id", "event_time", "event_code"),
    "collectors": ("collector_id", "hmac_key"),
    "transformers": ("transformer_id", "rating_kva"),
    "customers": ("meter_id", "customer_class"),
    "weather": ("time", "temperature_c"),
}
#: Optional extra columns a canonical CSV may carry after its required ones.
CSV_OPTIONAL: Final[dict[str, tuple[str, ...]]] = {
    "meters": ("interval_minutes", "critical_care"),
    "weather": ("zone",),
}

READS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("reading_type", pa.uint8(), nullable=False),
        pa.field("interval_end", TS, nullable=False),
        pa.field("value", pa.int32(), nullable=False),  # in the reading type's resolution
        pa.field("quality", pa.uint32(), nullable=False),  # codes.QUALITY_CODES bit mask
    ]
)

REGISTERS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("register", pa.uint8(), nullable=False),
        pa.field("read_time", TS, nullable=False),
        pa.field("value", pa.int64(), nullable=False),
    ]
)

EVENTS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        pa.field("event_code", pa.uint32(), nullable=False),  # codes.pack_event_code
    ]
)

#: A quarantined row or frame. Row-level rejects keep the fields as received (text);
#: frame-level rejects keep the raw bytes in ``payload``.
QUARANTINE: Final = pa.schema(
    [
        pa.field("quarantine_id", pa.string(), nullable=False),
        pa.field("received_at", TS, nullable=False),
        pa.field("source", pa.string(), nullable=False),  # file, upload or collector
        pa.field("kind", pa.string(), nullable=False),  # reads|registers|events|meters|frame
        pa.field("reason", pa.string(), nullable=False),  # model.reasons.REASONS
        pa.field("detail", pa.string()),
        pa.field("meter_id", pa.string()),
        pa.field("type", pa.string()),  # reading type, register or event code
        pa.field("time", pa.string()),
        pa.field("value", pa.string()),
        pa.field("quality", pa.string()),
        pa.field("payload", pa.binary()),
    ]
)


#: A version of an interval read kept by VEE (``<root>/vee/``). Version 0 is the read as
#: stored (never copied here); versions 1.. are VEE results and manual edits.
VEE_VERSIONS: Final = pa.schema(
    [
        pa.field("meter_idx", pa.int32(), nullable=False),
        pa.field("reading_type", pa.uint8(), nullable=False),
        pa.field("interval_end", TS, nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("value", pa.int32(), nullable=False),  # in the reading type's resolution
        pa.field("quality", pa.uint32(), nullable=False),  # codes.QUALITY_CODES bit mask
        pa.field("method", pa.string(), nullable=False),  # validate|interpolation|...|edit
        pa.field("author", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

#: Outdoor temperature per weather zone (``<root>/weather/``), key ``(zone, time)``.
WEATHER: Final = pa.schema(
    [
        pa.field("zone", pa.string(), nullable=False),  # "" when the CSV has no zone
        pa.field("time", TS, nullable=False),
        pa.field("temperature_c", pa.float64(), nullable=False),  # [degC]
    ]
)


def read_key(
    meter_idx: npt.NDArray[np.int32],
    reading_type: npt.NDArray[np.uint8],
    interval_end_s: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint64]:
    """Pack the dedup key ``(meter_idx, reading_type, interval_end)`` into ``uint64``.

    Bits 63-37 hold the meter index, 36-32 the reading type, 31-0 the seconds since
    2000-01-01T00:00:00Z; keys therefore sort as the tuple does. Callers validate
    the ranges first (meter_idx <= MAX_METER_IDX, reading_type < 32, 2000 <= t < 2136).
    """
    key: npt.NDArray[np.uint64] = meter_idx.astype(np.uint64) << np.uint64(37)
    key |= reading_type.astype(np.uint64) << np.uint64(32)
    key |= (interval_end_s - KEY_EPOCH_S).astype(np.uint64)
    return key


def split_key(
    key: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Inverse of :func:`read_key`."""
    meter = (key >> np.uint64(37)).astype(np.int32)
    rt = ((key >> np.uint64(32)) & np.uint64(31)).astype(np.uint8)
    t = (key & np.uint64(0xFFFFFFFF)).astype(np.int64) + KEY_EPOCH_S
    return meter, rt, t


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()
