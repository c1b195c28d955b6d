"""Benchmark: the default ``headend ingest`` command on real-shaped data.

What users run: ``headend ingest meters.csv reads.csv`` with no flags (VEE and rules
on), as a separate process, on files headend's simulator did not make
(``bench/realdata.py``: alphanumeric meter ids, a meters CSV without
``interval_minutes``, hourly, 15- and 5-minute meters, times with an offset). Each case
reports the median over ``--repeat`` runs of wall time and CPU seconds (user + sys of
the ingest process, robust to other load on the shared machine), reads per
CPU-second, the process's peak memory, and ``seconds_by_stage`` from ``--json``.

Cases:

* ``week``: ``--meters`` meters x 2 channels x ``--days`` days, default command; the
  same with ``--no-vee --no-rules`` (labelled so); PostgreSQL ``COPY`` of the same CSV
  file into a table keyed on (meter, reading type, interval end), in the same run;
* ``frames``: binary frames of ``headend simulate`` (a day, ``--frame-meters``),
  default command;
* ``day`` and ``year``: ``--year-meters`` 15-minute meters, one channel, one day and
  365 days in one file, and one day of ``365 x --year-meters`` meters (as many reads as
  the year), default command, per-read rates compared;
* ``history``: the day after the year, ingested into the store that holds the year.

Usage::

    python bench/bench_default.py [--repeat 3] [--meters 4000] [--days 7]
        [--year-meters 500] [--skip year] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pg_baseline
import realdata
from _common import report

#: the command users run (the console script of the installed package)
HEADEND = [shutil.which("headend") or "headend"]


def _cpu_of(cmd: list[str]) -> tuple[float, float, float, str]:
    """Run ``cmd``; wall [s], CPU user+sys [s], peak RSS [MB], stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    _pid, status, ru = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {err.decode()[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, out.decode()


def ingest(data: Path, files: list[Path], *flags: str, fresh: bool = True) -> dict[str, Any]:
    if fresh:
        shutil.rmtree(data, ignore_errors=True)
    cmd = [*HEADEND, "ingest", "--data", str(data), "--json",
           *flags, *map(str, files)]
    wall, cpu, rss, out = _cpu_of(cmd)
    s = json.loads(out)
    return {"wall": wall, "cpu": cpu, "rss_mb": rss, "accepted": s["accepted"],
            "quarantined": s["quarantined"], "stages": s["seconds_by_stage"]}


def median_case(data: Path, files: list[Path], repeat: int, *flags: str) -> dict[str, Any]:
    runs = [ingest(data, files, *flags) for _ in range(repeat)]
    out: dict[str, Any] = {
        "reads": runs[0]["accepted"],
        "quarantined": runs[0]["quarantined"],
        "wall_s": statistics.median(r["wall"] for r in runs),
        "cpu_s": statistics.median(r["cpu"] for r in runs),
        "peak_rss_mb": max(r["rss_mb"] for r in runs),
        "walls": [round(r["wall"], 2) for r in runs],
    }
    out["reads_per_cpu_s"] = out["reads"] / out["cpu_s"]
    out["reads_per_s_wall"] = out["reads"] / out["wall_s"]
    out["stages"] = {k: round(statistics.median(r["stages"][k] for r in runs), 2)
                     for k in runs[0]["stages"]}
    return out


def pg_copy_csv(path: Path, repeat: int) -> dict[str, Any] | str:
    """COPY the canonical reads CSV as it is into a keyed table (text meter ids)."""
    why = pg_baseline.reachable()
    if why is not None:
        return f"PostgreSQL not reachable: {why}"
    import psycopg

    ddl = """
    DROP TABLE IF EXISTS bench_csv_read;
    CREATE TABLE bench_csv_read (
        meter_id text NOT NULL, reading_type text NOT NULL,
        interval_end timestamptz NOT NULL, value numeric(14, 3) NOT NULL, quality text,
        PRIMARY KEY (meter_id, reading_type, interval_end));
    """
    walls = []
    version = ""
    rows = 0
    with psycopg.connect(pg_baseline.DSN) as conn:
        version = str(conn.execute("show server_version").fetchone()[0])  # type: ignore[index]
        for _ in range(repeat):
            conn.execute(ddl)
            conn.commit()
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    "COPY bench_csv_read FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                    path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
            conn.commit()
            walls.append(time.perf_counter() - t0)
            rows = int(conn.execute("select count(*) from bench_csv_read").fetchone()[0])  # type: ignore[index]
        conn.execute("DROP TABLE bench_csv_read")
        conn.commit()
    w = statistics.median(walls)
    return {"server": version, "rows": rows, "wall_s": w, "rows_per_s": rows / w,
            "walls": [round(x, 2) for x in walls]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--meters", type=int, default=4000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--hourly", type=float, default=0.05)
    ap.add_argument("--five", type=float, default=0.05)
    ap.add_argument("--frame-meters", type=int, default=20_000)
    ap.add_argument("--year-meters", type=int, default=500)
    ap.add_argument("--skip", action="append", default=[],
                    choices=["week", "pg", "frames", "year"], help="skip a case")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="headend-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"load_average": os.getloadavg()[0],
                               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    data = work / "data"
    if "week" not in a.skip:
        src = work / f"week-{a.meters}"
        if not (src / "reads.csv").exists():
            ids = realdata.meter_ids(a.meters)
            minutes = realdata.intervals_for(a.meters, a.hourly, a.five)
            src.mkdir(parents=True, exist_ok=True)
            realdata.write_meters(src / "meters.csv", ids, minutes)
            realdata.write_reads(src / "reads.csv", ids, minutes,
                                 dt.datetime(2026, 1, 1, tzinfo=dt.UTC), a.days)
        files = [src / "meters.csv", src / "reads.csv"]
        # interleaved: default, then the flags that skip VEE and rules
        default = median_case(data, files, a.repeat)
        bare = median_case(data, files, a.repeat, "--no-vee", "--no-rules")
        figures["week_csv_default"] = default
        figures["week_csv_no_vee_no_rules (non-default flags)"] = bare
        if "pg" not in a.skip:
            pg = pg_copy_csv(src / "reads.csv", a.repeat)
            figures["week_csv_postgresql_keyed_copy"] = pg
            if isinstance(pg, dict):
                figures["week_csv_default_vs_postgresql_wall"] = pg["wall_s"] / default["wall_s"]
    if "frames" not in a.skip:
        sim = work / f"sim-{a.frame_meters}"
        if not (sim / "meters.csv").exists():
            subprocess.run([*HEADEND, "simulate", "--meters",
                            str(a.frame_meters), "--days", "1", "--format", "frames",
                            "-o", str(sim)], check=True, capture_output=True)
        figures["frames_default"] = median_case(data, [sim], a.repeat)
    if "year" not in a.skip:
        n = a.year_meters
        ids = realdata.meter_ids(n, seed=11)
        day, year, nxt = work / f"day-{n}", work / f"year-{n}", work / f"next-{n}"
        wide = work / f"day-{n * 365}"  # one day of as many reads as the year
        wide_ids = realdata.meter_ids(n * 365, seed=12)
        for d, ms, start, days in (
                (day, ids, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 1),
                (wide, wide_ids, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 1),
                (year, ids, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), 365),
                (nxt, ids, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 1)):
            if not (d / "reads.csv").exists():
                d.mkdir(parents=True, exist_ok=True)
                mm = np.full(len(ms), 15, np.int64)
                realdata.write_meters(d / "meters.csv", ms, mm)
                realdata.write_reads(d / "reads.csv", ms, mm, start, days, volts=False)
        figures["day_csv_default"] = median_case(data, [day / "meters.csv", day / "reads.csv"],
                                                 a.repeat)
        figures["day_same_reads_csv_default"] = dw = median_case(
            data, [wide / "meters.csv", wide / "reads.csv"], 1)
        figures["year_csv_default"] = y = median_case(
            data, [year / "meters.csv", year / "reads.csv"], 1)
        # the next day into the store that holds the year (no fresh directory)
        figures["day_after_year_csv_default"] = h = ingest(data, [nxt / "reads.csv"],
                                                           fresh=False)
        h["reads_per_cpu_s"] = h["accepted"] / h["cpu"]
        d1 = figures["day_csv_default"]["reads_per_cpu_s"]
        figures["year_vs_day_per_read_rate"] = y["reads_per_cpu_s"] / d1
        figures["year_vs_day_same_reads_per_read_rate"] = (y["reads_per_cpu_s"]
                                                           / dw["reads_per_cpu_s"])
        figures["day_into_year_store_vs_empty_rate"] = h["reads_per_cpu_s"] / d1
    flat = {k: (json.dumps(v, default=str) if isinstance(v, dict | list) else v)
            for k, v in figures.items()}
    report("bench_default", flat, a.out)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
