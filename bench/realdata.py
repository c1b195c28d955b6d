"""Real-shaped input that headend's simulator did not make: a utility export.

Writes, with NumPy and pyarrow only (no headend code), what a utility's old head end or
MDM exports:

* ``meters.csv`` in the canonical header **without** the optional ``interval_minutes``
  column (as such exports usually are), alphanumeric meter ids (``AB12-3F9C0``), some
  meters hourly (PLC), the rest 15- or 5-minute (RF);
* ``reads.csv``: ``kwh_del`` and ``volts`` per interval, times with a UTC offset, values
  with three decimals, sorted by time then meter (how a day or a year is exported).

Run: ``python bench/realdata.py OUT --meters 4000 --days 7 [--hourly 0.05]
[--five 0.0] [--start 2026-01-01] [--no-volts]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

_ALPHA = np.array(list("ABCDEFGHJKLMNPRSTUVWXYZ"))
_HEX = np.array(list("0123456789ABCDEF"))


def meter_ids(n: int, seed: int = 7) -> np.ndarray:
    """``n`` distinct alphanumeric ids like ``KX47-0A3F9`` (letters, digits, a dash)."""
    rng = np.random.default_rng(seed)
    a = _ALPHA[rng.integers(0, len(_ALPHA), (n, 2))]
    d = rng.integers(0, 100, n)
    serial = np.arange(n) * 7919 % (16**5)
    h = _HEX[(serial[:, None] >> (4 * np.arange(4, -1, -1))) & 15]
    ids = np.char.add(np.char.add(a[:, 0], a[:, 1]), np.char.zfill(d.astype(str), 2))
    return np.char.add(np.char.add(ids, "-"), np.array(["".join(r) for r in h]))


def intervals_for(n: int, hourly: float, five: float, seed: int = 7) -> np.ndarray:
    """Interval length [min] per meter: a share hourly, a share 5-minute, the rest 15."""
    rng = np.random.default_rng(seed + 1)
    u = rng.random(n)
    return np.where(u < hourly, 60, np.where(u < hourly + five, 5, 15)).astype(np.int64)


def write_meters(path: Path, ids: np.ndarray, minutes: np.ndarray) -> None:
    n = len(ids)
    feeder = np.arange(n) // 500
    t = pa.table({
        "meter_id": pa.array(ids.tolist()),
        "commodity": pa.array(["electric"] * n),
        "technology": pa.array(np.where(minutes == 60, "plc", "rf").tolist()),
        "two_way": pa.array(np.where(minutes == 60, "false", "true").tolist()),
        "collector_id": pa.array((1000 + np.arange(n) // 1000).astype(str).tolist()),
        "transformer_id": pa.array([f"TX-{i:05d}" for i in np.arange(n) // 8]),
        "feeder_id": pa.array([f"FD-{i:03d}" for i in feeder]),
        "substation_id": pa.array([f"SUB-{i:02d}" for i in feeder // 10]),
    })
    with open(path, "wb") as f:
        f.write((",".join(t.column_names) + "\n").encode())
        pacsv.write_csv(t, f, pacsv.WriteOptions(quoting_style="none", include_header=False))


def write_reads(path: Path, ids: np.ndarray, minutes: np.ndarray, start: dt.datetime,
                days: int, seed: int = 7, chunk_days: int = 7, volts: bool = True) -> int:
    """Write the reads CSV a chunk of days at a time (bounded memory); returns the row count."""
    rng = np.random.default_rng(seed + 2)
    t0 = int(start.timestamp())
    step = 300
    rows = 0
    base = rng.gamma(2.0, 0.25, len(ids))  # kWh per 15 min of each meter
    with open(path, "wb") as f:
        f.write(b"meter_id,reading_type,interval_end,value,quality\n")
    with open(path, "ab") as f, pacsv.CSVWriter(f, pa.schema([("meter_id", pa.string()), ("reading_type", pa.string()),
                                          ("interval_end", pa.string()), ("value", pa.string()),
                                          ("quality", pa.string())]),
                         write_options=pacsv.WriteOptions(quoting_style="none",
                                                                include_header=False)) as w:
        for d0 in range(0, days, chunk_days):
            d1 = min(days, d0 + chunk_days)
            ticks = np.arange(t0 + d0 * 86_400 + step, t0 + d1 * 86_400 + 1, step, dtype=np.int64)
            for tick in np.array_split(ticks, max(1, len(ticks) // 12)):
                # meters whose interval ends at these ticks (a meter reads on its own grid)
                due = (tick[:, None] % (minutes[None, :] * 60)) == 0
                ti, mi = np.nonzero(due)
                if len(ti) == 0:
                    continue
                end = tick[ti]
                hour = (end // 3600) % 24
                shape = 0.6 + 0.4 * np.sin((hour - 7) / 24 * 2 * np.pi) ** 2
                kwh = base[mi] * shape * minutes[mi] / 15 * rng.lognormal(0, 0.25, len(mi))
                v = 240 + rng.normal(0, 1.5, len(mi))
                ts = pc.strftime(pa.array(end, pa.timestamp("s", "UTC")),
                                 format="%Y-%m-%dT%H:%M:%SZ")
                n = len(mi)
                mid = pa.array(ids[mi].tolist())
                both = pa.table({
                    "meter_id": pa.concat_arrays([mid, mid]),
                    "reading_type": pa.array(["kwh_del"] * n + ["volts"] * n),
                    "interval_end": pa.concat_arrays([ts, ts]),
                    "value": pa.concat_arrays([pa.array(np.char.mod("%.3f", kwh).tolist()),
                                               pa.array(np.char.mod("%.1f", v).tolist())]),
                    "quality": pa.array([""] * (2 * n)),
                })
                # time, then meter, then type, as exports are ordered
                order = np.lexsort((np.r_[np.zeros(n), np.ones(n)], np.r_[mi, mi], np.r_[end, end]))
                if not volts:
                    order = order[order < n]
                w.write_table(both.take(pa.array(order)))
                rows += len(order)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--meters", type=int, default=4000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--hourly", type=float, default=0.05, help="share of hourly meters")
    ap.add_argument("--five", type=float, default=0.0, help="share of 5-minute meters")
    ap.add_argument("--start", default="2026-01-01")
    ap.add_argument("--no-volts", action="store_true", help="kwh_del only (one channel)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    ids = meter_ids(a.meters)
    minutes = intervals_for(a.meters, a.hourly, a.five)
    write_meters(a.out / "meters.csv", ids, minutes)
    start = dt.datetime.fromisoformat(a.start).replace(tzinfo=dt.UTC)
    n = write_reads(a.out / "reads.csv", ids, minutes, start, a.days, volts=not a.no_volts)
    print(f"{a.out}: {a.meters} meters ({int((minutes == 60).sum())} hourly, "
          f"{int((minutes == 5).sum())} 5-minute), {a.days} days, {n:,} reads")


if __name__ == "__main__":
    main()
