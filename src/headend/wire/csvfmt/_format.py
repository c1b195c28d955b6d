"""Codes and integers back to canonical CSV text, vectorised (exports and quarantine)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import codes
from headend.wire.csvfmt import _text as tx

__all__ = [
    "REG_DECIMALS",
    "REG_NAMES",
    "RT_DECIMALS",
    "RT_NAMES",
    "decimals_for",
    "format_event_codes",
    "format_meter",
    "format_names",
    "format_quality",
]

#: decimals of each reading type's resolution in its unit (kWh 0.001 -> 3)
RT_DECIMALS: Final = tx.decimals_of(codes.RT_RESOLUTION)
#: decimals of each register type's resolution in its unit
REG_DECIMALS: Final = tx.decimals_of(codes.REG_RESOLUTION)
RT_NAMES: Final = tuple(r.name for r in codes.READING_TYPES)
REG_NAMES: Final = tuple(r.name for r in codes.REGISTER_TYPES)


def decimals_for(code: npt.ArrayLike, decimals: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Decimals of each row's type code (0 for a code without a type)."""
    c = np.asarray(code, dtype=np.int64)
    known = (c >= 0) & (c < len(decimals))
    return np.where(known, decimals[np.clip(c, 0, len(decimals) - 1)], 0)


def format_meter(meter: Any, sel: npt.NDArray[np.bool_]) -> pa.Array:
    """Meter ids as text: string arrays filtered, ``uint64`` serials in decimal."""
    if isinstance(meter, (pa.Array, pa.ChunkedArray)):
        return pc.filter(meter, pa.array(sel)).cast(pa.string())
    return pa.array(np.asarray(meter)[sel]).cast(pa.string())


def by_distinct(
    values: npt.ArrayLike, fmt: Callable[[npt.NDArray[Any]], pa.Array], dtype: Any
) -> pa.Array:
    """Format each distinct value once (hash-based, no sort) and spread the texts."""
    enc = pc.dictionary_encode(pa.array(np.asarray(values, dtype=dtype)))
    return fmt(np.asarray(enc.dictionary)).take(enc.indices)


def format_names(code: npt.ArrayLike, names: Sequence[str]) -> pa.Array:
    """Codes as names; a code with no name is written as its decimal number."""
    c = np.asarray(code, dtype=np.int64)
    known = (c >= 0) & (c < len(names))
    if known.all():
        return pa.array(list(names), pa.string()).take(pa.array(c))
    named = pa.array(list(names), pa.string()).take(pa.array(np.where(known, c, 0)))
    return pc.if_else(pa.array(known), named, pa.array(c).cast(pa.string()))


def format_quality(masks: npt.ArrayLike) -> pa.Array:
    """Quality masks as ``;``-joined IEC 61968-9 codes (empty for 0)."""
    return by_distinct(
        masks, lambda u: pa.array(codes.quality_str_array(u).tolist(), pa.string()), np.uint32)


def format_event_codes(packed: npt.ArrayLike) -> pa.Array:
    """Packed event codes as dotted EndDeviceEventType text."""
    return by_distinct(
        packed, lambda u: pa.array([codes.event_code_str(int(x)) for x in u], pa.string()),
        np.uint32)


def format_times(seconds: npt.ArrayLike) -> pa.Array:
    """Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``, each distinct time formatted once."""
    return by_distinct(seconds, tx.format_time, np.int64)
