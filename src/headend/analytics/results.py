"""Result tables of the Liu benchmark tasks: one schema per task, shared by every engine.

Rows are sorted by ``meter_idx`` (then bucket, percentile, hour or rank). The CLI swaps
``meter_idx`` for ``meter_id`` when writing CSV (see docs/analytics.md for columns).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.analytics import liu

__all__ = [
    "ANOMALY",
    "HISTOGRAM",
    "PAR",
    "SIMILARITY",
    "THREELINE",
    "anomaly_table",
    "histogram_table",
    "par_table",
    "similarity_table",
    "threeline_table",
]

HISTOGRAM = pa.schema([("meter_idx", pa.int32()), ("bucket", pa.int32()),
                       ("lower_kwh", pa.float64()), ("upper_kwh", pa.float64()),
                       ("count", pa.int64())])
THREELINE = pa.schema([("meter_idx", pa.int32()), ("percentile", pa.float64()),
                       ("k1_c", pa.float64()), ("k2_c", pa.float64()),
                       ("intercept_kwh", pa.float64()), ("heating_slope_kwh_per_c", pa.float64()),
                       ("base_slope_kwh_per_c", pa.float64()),
                       ("cooling_slope_kwh_per_c", pa.float64()), ("sse", pa.float64()),
                       ("points", pa.int64())])
PAR = pa.schema([("meter_idx", pa.int32()), ("hour", pa.int32()), ("n_days", pa.int64()),
                 *((name, pa.float64()) for name in liu.PAR_TERMS), ("rmse_kwh", pa.float64())])
SIMILARITY = pa.schema([("meter_idx", pa.int32()), ("rank", pa.int32()),
                        ("other_meter_idx", pa.int32()), ("cosine", pa.float64())])
ANOMALY = pa.schema([("meter_idx", pa.int32()), ("day", pa.date32()), ("total_kwh", pa.float64()),
                     ("mean_kwh", pa.float64()), ("std_kwh", pa.float64()), ("z", pa.float64()),
                     ("anomaly", pa.bool_())])

I32 = npt.NDArray[np.int32]


def histogram_table(meter_idx: I32, counts: npt.NDArray[np.int64], lo: npt.NDArray[np.float64],
                    hi: npt.NDArray[np.float64]) -> pa.Table:
    h, nb = counts.shape
    b = np.tile(np.arange(nb), h)
    lo_r = np.repeat(lo, nb)
    w = np.repeat(hi - lo, nb)
    return pa.table({"meter_idx": np.repeat(meter_idx, nb).astype(np.int32),
                     "bucket": b.astype(np.int32),
                     "lower_kwh": lo_r + w * b / nb, "upper_kwh": lo_r + w * (b + 1) / nb,
                     "count": counts.ravel()}, schema=HISTOGRAM)


def threeline_table(meter_idx: I32, fits: dict[float, liu.ThreeLine]) -> pa.Table:
    parts = []
    for q, f in fits.items():
        parts.append(pa.table({"meter_idx": meter_idx.astype(np.int32),
                               "percentile": np.full(len(meter_idx), q),
                               "k1_c": f.k1, "k2_c": f.k2, "intercept_kwh": f.a,
                               "heating_slope_kwh_per_c": f.s1, "base_slope_kwh_per_c": f.s2,
                               "cooling_slope_kwh_per_c": f.s3, "sse": f.sse,
                               "points": f.points}, schema=THREELINE))
    t = pa.concat_tables(parts) if parts else THREELINE.empty_table()
    return t.sort_by([("meter_idx", "ascending"), ("percentile", "ascending")])


def par_table(meter_idx: I32, p: liu.Par) -> pa.Table:
    h = len(meter_idx)
    cols: dict[str, object] = {"meter_idx": np.repeat(meter_idx, 24).astype(np.int32),
                               "hour": np.tile(np.arange(24, dtype=np.int32), h),
                               "n_days": p.n.ravel()}
    for i, name in enumerate(liu.PAR_TERMS):
        cols[name] = p.coef[..., i].ravel()
    cols["rmse_kwh"] = p.rmse.ravel()
    return pa.table(cols, schema=PAR)


def similarity_table(meter_idx: I32, rows: npt.NDArray[np.int64], other: npt.NDArray[np.int64],
                     cosine: npt.NDArray[np.float64], all_meters: I32) -> pa.Table:
    k = other.shape[1]
    return pa.table({"meter_idx": np.repeat(meter_idx[rows], k).astype(np.int32),
                     "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows)),
                     "other_meter_idx": all_meters[other.ravel()].astype(np.int32),
                     "cosine": cosine.ravel()}, schema=SIMILARITY)


def anomaly_table(meter_idx: I32, day_start: int, total: npt.NDArray[np.float64],
                  mean: npt.NDArray[np.float64], std: npt.NDArray[np.float64],
                  z: npt.NDArray[np.float64], flag: npt.NDArray[np.bool_]) -> pa.Table:
    day = np.full(len(meter_idx), day_start // 86_400, dtype=np.int32)
    return pa.table({"meter_idx": meter_idx.astype(np.int32),
                     "day": pa.array(day, pa.int32()).cast(pa.date32()), "total_kwh": total,
                     "mean_kwh": mean, "std_kwh": std, "z": z, "anomaly": flag},
                    schema=ANOMALY)
