"""Verb ``simulate``: a seeded synthetic utility and what its collectors upload."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from headend.cli.common import fail
from headend.errors import ConfigError

err_console = Console(stderr=True)

_FORMATS = {"frames": ("frames",), "csv": ("csv",), "both": ("frames", "csv")}


def simulate(
    meters: Annotated[int, typer.Option("--meters", min=1, help="Meters in the utility (electric + water + gas).")] = 1000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days to simulate.")] = 1,
    start: Annotated[str, typer.Option("--start", help="First day, YYYY-MM-DD (midnight UTC).")] = "2026-01-05",
    interval_minutes: Annotated[int, typer.Option("--interval-minutes", help="Interval length of every meter: 5, 15 or 60 minutes. Collectors upload after each interval boundary.")] = 15,
    network: Annotated[str, typer.Option("--network", help="AMI network technology: rf or plc (a few meters use GPRS either way).")] = "rf",
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw; the same seed and options give identical files.")] = 0,
    faults: Annotated[str, typer.Option("--faults", help="Comma-separated fault scenarios with default settings: outage, momentary, storm, cover_removed, magnetic_tamper, tamper, reverse_energy, under_voltage, over_voltage, voltage, water_leak, spike, flat_line, gap, duplicate, retransmission, late_upload, clock_skew, or all (every kind but storm). Ground truth goes to ground_truth.parquet.")] = "",
    fmt: Annotated[str, typer.Option("--format", help="What to write for uploads: frames (uploads/cycle-*.hef), csv (reads/registers/events.csv) or both.")] = "both",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory (created if missing).")] = Path("./headend-sim"),
    water_share: Annotated[float, typer.Option("--water-share", help="Share of water meters.")] = 0.05,
    gas_share: Annotated[float, typer.Option("--gas-share", help="Share of gas meters.")] = 0.03,
    solar_share: Annotated[float, typer.Option("--solar-share", help="Share of residential/commercial electric meters with PV (kwh_rec channel).")] = 0.08,
    utc_offset: Annotated[float, typer.Option("--utc-offset", help="Utility local time offset from UTC in hours; load shapes follow local time.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the utility.json summary on stdout.")] = False,
) -> None:
    """Simulate a utility's meters and collector uploads, with optional faults.

    Writes meters.csv, collectors.csv, weather.csv, customers.csv, transformer_ratings.csv,
    ground_truth.parquet and utility.json, plus uploads/cycle-<YYYYMMDDTHHMM>.hef
    (binary frames) and/or reads.csv, registers.csv, events.csv. Ingest them with
    `headend ingest --data DIR OUT`.

    \b
    Example:
      headend simulate --meters 1000 --days 2 --faults outage,tamper -o ./headend-sim
    """
    from headend.sim import Faults, build_utility
    from headend.sim.writers import simulate as run

    if fmt not in _FORMATS:
        fail(f"--format must be frames, csv or both, not {fmt!r}")
    try:
        day = dt.date.fromisoformat(start)
    except ValueError:
        fail(f"--start: not a YYYY-MM-DD date: {start!r}")
    t0 = time.perf_counter()
    try:
        u = build_utility(
            meters, seed=seed, network=network, interval_s=interval_minutes * 60,
            water_share=water_share, gas_share=gas_share, solar_share=solar_share,
            start=day, days=days, utc_offset_h=utc_offset,
        )
        fl = Faults.from_names(faults)
    except ConfigError as exc:
        fail(str(exc))
    with Progress(
        TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[when]}"), TextColumn("{task.fields[reads]} reads"),
        TimeElapsedColumn(), console=err_console, transient=as_json,
    ) as progress:
        task = progress.add_task("cycles", total=u.n_cycles, when="", reads="0")
        n = 0

        def tick(up: object) -> None:
            nonlocal n
            n += up.reads.num_rows  # type: ignore[attr-defined]
            progress.update(task, advance=1, reads=f"{n:,}",
                            when=f"{up.cycle_time:%Y-%m-%d %H:%M}")  # type: ignore[attr-defined]

        summary = run(u, fl, out, formats=_FORMATS[fmt], progress=tick)
    secs = time.perf_counter() - t0
    if as_json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        rows = summary["rows"]
        assert isinstance(rows, dict)
        err_console.print(
            f"{u.n_meters:,} meters, {u.n_cycles} cycles: {rows['reads']:,} reads, "
            f"{rows['registers']:,} registers, {rows['events']:,} events in {secs:.1f} s "
            f"-> {out}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
