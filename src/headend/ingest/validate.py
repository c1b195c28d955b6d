"""Structural validation of decoded batches: pure functions, masks in, masks out.

Each check returns a boolean mask of the rows that fail it; :func:`check_reads` and
friends combine them into one *reason code per row* (0 = accepted), the first failing
check winning, in this order: unknown meter, unknown reading type, wrong commodity,
bad timestamp, bad quality, impossible value. No I/O and no per-row Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from headend.model import codes, reasons
from headend.model.schema import KEY_EPOCH_S

#: Reason codes per row: index into this tuple (0 = accepted).
ROW_REASONS: Final = (
    "",
    reasons.UNKNOWN_METER,
    reasons.UNKNOWN_READING_TYPE,
    reasons.WRONG_COMMODITY,
    reasons.BAD_TIMESTAMP,
    reasons.BAD_QUALITY,
    reasons.IMPOSSIBLE_VALUE,
    reasons.BAD_EVENT_CODE,
)
_R = {name: i for i, name in enumerate(ROW_REASONS)}

#: Earliest and latest accepted time [Unix s]: 2000-01-01 and 2100-01-01 UTC.
MIN_TIME_S: Final = KEY_EPOCH_S
MAX_TIME_S: Final = 4_102_444_800


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Limits of structural validation.

    Attributes
    ----------
    max_future_s : int
        How far past the upload's creation time [s] a read or event may lie
        (binary frames carry their creation time; CSV uses the ingest clock).
        ``None`` disables the check.
    time_resolution_s : int
        Interval ends must be a whole multiple of this [s].
    """

    max_future_s: int | None = 86_400
    time_resolution_s: int = 60


DEFAULT_VALIDATION: Final = ValidationConfig()


def _first_failure(checks: list[tuple[int, npt.NDArray[np.bool_]]], n: int) -> npt.NDArray[np.uint8]:
    code = np.zeros(n, dtype=np.uint8)
    # apply in reverse so that the first check in the list wins
    for reason_code, mask in reversed(checks):
        code[mask] = reason_code
    return code


def _time_bad(t: npt.NDArray[np.int64], now_s: Any, cfg: ValidationConfig) -> npt.NDArray[np.bool_]:
    bad = (t < MIN_TIME_S) | (t >= MAX_TIME_S)
    if now_s is not None and cfg.max_future_s is not None:
        bad |= t > now_s + cfg.max_future_s
    return bad


#: rows per chunk of the validation masks: a chunk's temporaries stay in the CPU cache
CHUNK_ROWS: Final = 1 << 16


def check_reads(
    meter_idx: npt.NDArray[np.int32],
    meter_commodity: npt.NDArray[np.uint8],
    meter_interval_s: npt.NDArray[np.int32],
    reading_type: npt.NDArray[np.uint8],
    interval_end: npt.NDArray[np.int64],
    value: npt.NDArray[np.int64],
    quality: npt.NDArray[np.uint32],
    *,
    now_s: int | npt.NDArray[np.int64] | None,
    config: ValidationConfig = DEFAULT_VALIDATION,
) -> npt.NDArray[np.uint8]:
    """Reason code per interval read (index into :data:`ROW_REASONS`).

    Parameters
    ----------
    meter_idx : int32, -1 where the meter is unknown
    meter_commodity, meter_interval_s : per-row registry attributes (any value where unknown)
    interval_end : [Unix s]
    value : in the reading type's resolution units
    now_s : creation time of the upload [Unix s], per row or one for all, or ``None``
        to skip the future check

    Notes
    -----
    The physical limit of a cumulative reading type is given per 15 minutes in
    :mod:`headend.model.codes` and scaled by the meter's interval length:
    ``max_raw * interval_s / 900``, compared exactly in integers.
    The masks are computed chunk by chunk (:data:`CHUNK_ROWS`) so that the dozen
    temporaries of a chunk stay in cache; a chunk without any failure costs one
    combined mask and no per-reason work.
    """
    n = len(reading_type)
    out = np.zeros(n, dtype=np.uint8)
    per_row_now = isinstance(now_s, np.ndarray)
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, n)
        now = now_s[lo:hi] if per_row_now else now_s  # type: ignore[index]
        out[lo:hi] = _check_reads_chunk(
            meter_idx[lo:hi], meter_commodity[lo:hi], meter_interval_s[lo:hi],
            reading_type[lo:hi], interval_end[lo:hi], value[lo:hi], quality[lo:hi], now, config)
    return out


_N_TYPES: Final = len(codes.READING_TYPES)
_UNKNOWN_QUALITY: Final = np.uint32(~codes.KNOWN_QUALITY_MASK & 0xFFFFFFFF)
_I32_MAX: Final = np.iinfo(np.int32).max


def _check_reads_chunk(
    meter_idx: npt.NDArray[np.int32],
    meter_commodity: npt.NDArray[np.uint8],
    meter_interval_s: npt.NDArray[np.int32],
    reading_type: npt.NDArray[np.uint8],
    interval_end: npt.NDArray[np.int64],
    value: npt.NDArray[np.int64],
    quality: npt.NDArray[np.uint32],
    now_s: Any,
    config: ValidationConfig,
) -> npt.NDArray[np.uint8]:
    unknown_meter = meter_idx < 0
    rt_known = reading_type < _N_TYPES
    rt_safe = reading_type if rt_known.all() else np.where(rt_known, reading_type, 0)
    wrong_commodity = rt_known & ~unknown_meter & (codes.RT_COMMODITY[rt_safe] != meter_commodity)
    bad_time = _time_bad(interval_end, now_s, config)
    bad_time |= interval_end % config.time_resolution_s != 0
    bad_quality = (quality & _UNKNOWN_QUALITY) != 0
    # limits in resolution units; cumulative types scale with the interval: compare
    # value * 900 against max_raw * interval_s (exact integers, no float rounding)
    interval = np.where(codes.RT_CUMULATIVE[rt_safe], np.maximum(meter_interval_s, 1), 900)
    impossible = value * 900 > codes.RT_MAX_RAW[rt_safe] * interval
    impossible |= value * 900 < codes.RT_MIN_RAW[rt_safe] * interval
    impossible |= value > _I32_MAX
    checks = [
        (_R[reasons.UNKNOWN_METER], unknown_meter),
        (_R[reasons.UNKNOWN_READING_TYPE], ~rt_known),
        (_R[reasons.WRONG_COMMODITY], wrong_commodity),
        (_R[reasons.BAD_TIMESTAMP], bad_time),
        (_R[reasons.BAD_QUALITY], bad_quality),
        (_R[reasons.IMPOSSIBLE_VALUE], impossible),
    ]
    any_bad = unknown_meter | ~rt_known | wrong_commodity | bad_time | bad_quality | impossible
    if not any_bad.any():
        return np.zeros(len(reading_type), dtype=np.uint8)
    return _first_failure(checks, len(reading_type))


def check_registers(
    meter_idx: npt.NDArray[np.int32],
    register: npt.NDArray[np.uint8],
    read_time: npt.NDArray[np.int64],
    value: npt.NDArray[np.int64],
    *,
    now_s: int | npt.NDArray[np.int64] | None,
    config: ValidationConfig = DEFAULT_VALIDATION,
) -> npt.NDArray[np.uint8]:
    """Reason code per register read: unknown meter or register, bad time, negative value."""
    return _first_failure(
        [
            (_R[reasons.UNKNOWN_METER], meter_idx < 0),
            (_R[reasons.UNKNOWN_READING_TYPE], register >= len(codes.REGISTER_TYPES)),
            (_R[reasons.BAD_TIMESTAMP], _time_bad(read_time, now_s, config)),
            (_R[reasons.IMPOSSIBLE_VALUE], value < 0),
        ],
        len(register),
    )


def check_events(
    meter_idx: npt.NDArray[np.int32],
    event_time: npt.NDArray[np.int64],
    event_code: npt.NDArray[np.uint32],
    *,
    now_s: int | npt.NDArray[np.int64] | None,
    config: ValidationConfig = DEFAULT_VALIDATION,
) -> npt.NDArray[np.uint8]:
    """Reason code per event: unknown meter, bad time, or an all-zero event code."""
    return _first_failure(
        [
            (_R[reasons.UNKNOWN_METER], meter_idx < 0),
            (_R[reasons.BAD_TIMESTAMP], _time_bad(event_time, now_s, config)),
            (_R[reasons.BAD_EVENT_CODE], event_code == 0),
        ],
        len(event_code),
    )
