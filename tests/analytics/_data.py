"""A small utility for the analytics tests: hourly-ish reads and weather."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headend.model.schema import READS, TS

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def utility(households: int = 8, days: int = 21, seed: int = 3) -> tuple[pa.Table, pa.Table]:
    """15-minute kwh_del reads with daily and thermal structure, and hourly weather."""
    rng = np.random.default_rng(seed)
    n = days * 96
    t = T0 + 900 * np.arange(1, n + 1, dtype=np.int64)
    hours = (t - 900 - T0) / 3600.0
    temp_h = np.rint(8 + 12 * np.sin(2 * np.pi * np.arange(days * 24) / (24 * 9))
                     + 4 * np.sin(2 * np.pi * np.arange(days * 24) / 24))
    temp_q = np.repeat(temp_h, 4)
    base = rng.uniform(100, 300, households)[:, None]
    daily = 80 * (1 + np.sin(2 * np.pi * (hours % 24) / 24 - 1))[None, :]
    thermal = rng.uniform(5, 15, households)[:, None] * np.maximum(15 - temp_q, 0)[None, :]
    noise = rng.integers(0, 60, (households, n))
    v = (base + daily + thermal + noise).astype(np.int32)
    m = np.repeat(np.arange(households, dtype=np.int32), n)
    reads = pa.table({"meter_idx": m, "reading_type": pa.array(np.zeros(len(m), np.uint8)),
                      "interval_end": pa.array(np.tile(t, households)).cast(TS),
                      "value": v.ravel(), "quality": pa.array(np.zeros(len(m), np.uint32))},
                     schema=READS)
    wt = T0 + 3600 * np.arange(1, days * 24 + 1, dtype=np.int64)
    weather = pa.table({"zone": [""] * len(wt), "time": pa.array(wt).cast(TS),
                        "temperature_c": temp_h})
    return reads, weather
