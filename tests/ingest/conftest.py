"""Fixtures for ingest tests: a tiny utility written as canonical CSV, and frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from headend.ingest.pipeline import Ingestor
from headend.model import codes
from headend.wire.frame import encode_frame

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
KEY = bytes(range(32))
COLLECTOR = 501

METERS_CSV = (
    "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,substation_id\n"
    "100000001,electric,rf,true,501,T1,F1,S1\n"
    "100000002,electric,rf,true,501,T1,F1,S1\n"
    "100000003,electric,plc,false,501,T2,F1,S1\n"
    "200000001,water,rf,false,501,,F1,S1\n"
)
COLLECTORS_CSV = f"collector_id,hmac_key\n{COLLECTOR},{KEY.hex()}\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("meters.csv", METERS_CSV), ("collectors.csv", COLLECTORS_CSV)):
        p = tmp_path / name
        p.write_text(text)
        out[name] = p
    return out


@pytest.fixture
def ingestor(root: Path, files: dict[str, Path]) -> Iterator[Ingestor]:
    ing = Ingestor.open(root)
    ing.ingest_paths([files["collectors.csv"], files["meters.csv"]])
    yield ing
    ing.close()


def interval_frame(
    serials: list[int] | np.ndarray,
    n_intervals: int,
    *,
    seq: int = 1,
    start: int = T0,
    value: int = 250,
    key: bytes = KEY,
    collector: int = COLLECTOR,
    rt: int = 0,
    flags: int = 0,
) -> bytes:
    """A frame with kwh_del reads of ``serials`` x ``n_intervals`` 15-minute intervals."""
    s = np.repeat(np.asarray(serials, dtype=np.uint64), n_intervals)
    t = np.tile(start + 900 * np.arange(1, n_intervals + 1), len(serials))
    v = np.full(len(s), value, dtype=np.int32) + (np.arange(len(s)) % 7).astype(np.int32)
    return encode_frame(
        key, collector, seq, start + 900 * (n_intervals + 1),
        interval=(s, t, v, np.zeros(len(s), np.uint32), np.full(len(s), rt, np.uint8)),
        flags=flags,
    )


def event_frame(serials: list[int], times: list[int], event: str, *, seq: int = 99) -> bytes:
    code = codes.pack_event_code(event)
    return encode_frame(
        KEY, COLLECTOR, seq, max(times) + 60,
        event=(np.asarray(serials, np.uint64), np.asarray(times), np.full(len(times), code)),
    )
