"""Verb ``simulate``: a seeded synthetic utility and what its collectors upload, and
``simulate collectors``: virtual collectors answering a running ``headend serve``.

``simulate`` is a group that runs on its own: ``headend simulate [options]`` simulates a
utility as it always did, ``headend simulate collectors --serve URL`` runs the fleet.
"""

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

from headend.cli.common import CONTEXT_SETTINGS, RICH_MARKUP_MODE, fail, require_extra
from headend.errors import ConfigError

err_console = Console(stderr=True)

_FORMATS = {"frames": ("frames",), "csv": ("csv",), "both": ("frames", "csv")}


def simulate(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        return
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


simulate_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                           rich_markup_mode=RICH_MARKUP_MODE, context_settings=CONTEXT_SETTINGS)
simulate_app.callback()(simulate)


def _latency(specs: list[str]) -> dict[str, tuple[float, float]]:
    from headend.sim.collectors import DEFAULT_LATENCY

    out = dict(DEFAULT_LATENCY)
    for spec in specs:
        tech, _, rng = spec.partition("=")
        lo, _, hi = rng.partition(":")
        try:
            out[tech.strip()] = (float(lo), float(hi or lo))
        except ValueError:
            fail(f"--latency: not TECH=LOW:HIGH (seconds): {spec!r}")
    return out


@simulate_app.command("collectors")
def collectors(
    serve: Annotated[str, typer.Option("--serve", help="Base URL of the running headend serve (its long poll and POST /v1/uploads).")],
    meters_file: Annotated[Path, typer.Option("--meters", help="Meters CSV of the fleet: the one serve's registry was loaded from (headend simulate writes OUT/meters.csv). Two-way meters with a collector_id are served.")] = Path("./headend-sim/meters.csv"),
    transport: Annotated[str, typer.Option("--transport", help="http: long poll GET /v1/collectors/ID/commands and POST /v1/uploads; mqtt: subscribe headend/downlink/ID (QoS 1) and publish on the uplink topic.")] = "http",
    mqtt: Annotated[str, typer.Option("--mqtt", help="Broker URL for --transport mqtt (the broker serve uses).")] = "mqtt://127.0.0.1:1883",
    uplink_root: Annotated[str, typer.Option("--uplink-root", help="serve's MQTT uplink root; answers go to ROOT/COLLECTOR_ID.")] = "headend/uplink",
    latency: Annotated[list[str] | None, typer.Option("--latency", help="Answer latency range of a technology, TECH=LOW:HIGH in seconds (repeatable); defaults rf=2:60, plc=10:180, gprs=1:5.")] = None,
    latency_scale: Annotated[float, typer.Option("--latency-scale", min=0.0, help="Multiplies every latency (0: answer at once).")] = 1.0,
    failure_rate: Annotated[float, typer.Option("--failure-rate", min=0.0, max=1.0, help="Share of commands answered with a failure reason.")] = 0.05,
    silent_rate: Annotated[float, typer.Option("--silent-rate", min=0.0, max=1.0, help="Share of commands never answered (resent, then expired by the head end).")] = 0.02,
    duplicate_rate: Annotated[float, typer.Option("--duplicate-rate", min=0.0, max=1.0, help="Share of answers sent twice.")] = 0.01,
    unpowered_file: Annotated[Path | None, typer.Option("--unpowered", help="File of meter ids without power, one a line: their pings (and other commands) fail meter_unreachable.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every draw (with each command id).")] = 0,
    duration: Annotated[float, typer.Option("--duration", min=0.0, help="Seconds to run; 0: until interrupted (Ctrl-C).")] = 0.0,
    truth_file: Annotated[Path | None, typer.Option("--truth", help="Write the ground truth here at the end: one JSON line per command received (what the collector did).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary on stdout as one JSON object.")] = False,
) -> None:
    """Run virtual collectors that answer a running headend serve's commands.

    Each collector of the meters CSV takes its commands (long poll or MQTT downlink),
    waits its technology's latency, and answers like a collector: an on-demand read
    uploads the meter's last interval reads, then a completed response; disconnect and
    connect switch the simulated meter; ping answers from the power ground truth.
    Failures, silence and duplicate answers come at the given rates, drawn from the
    seed and the command id (docs/cli.md).

    \b
    Example:
      headend simulate collectors --serve http://127.0.0.1:8080 --meters headend-sim/meters.csv --duration 60 --truth truth.jsonl
    """
    require_extra("serve", "headend simulate collectors")
    if transport == "mqtt":
        require_extra("mqtt", "headend simulate collectors --transport mqtt")
    from headend.sim.collectors import Behaviour, FleetMeters
    from headend.sim.fleet import TRANSPORTS, CollectorFleet

    if transport not in TRANSPORTS:
        fail(f"--transport must be http or mqtt, not {transport!r}")
    try:
        fm = FleetMeters.from_csv(meters_file)
        b = Behaviour(latency=_latency(latency or []), latency_scale=latency_scale,
                      failure_rate=failure_rate, silent_rate=silent_rate,
                      duplicate_rate=duplicate_rate)
        dark = (unpowered_file.read_text().split() if unpowered_file is not None else [])
    except (ConfigError, OSError) as exc:
        fail(str(exc))
    if not len(fm):
        fail(f"{meters_file}: no two-way meter with a collector")
    fleet = CollectorFleet(fm, url=serve, transport=transport, mqtt=mqtt,
                           uplink_root=uplink_root, behaviour=b, seed=seed, unpowered=dark)
    err_console.print(f"{len(fm.collectors):,} collectors, {len(fm):,} meters, "
                      f"over {transport}; {'Ctrl-C' if not duration else f'{duration:g} s'}")
    try:
        fleet.start()
        t0 = time.monotonic()
        while not duration or time.monotonic() - t0 < duration:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        fail(str(exc))
    finally:
        fleet.stop()
    from headend.sim.collectors import score

    truth = fleet.truth()
    summary = {"commands": len(truth), "by_action": score(truth, {})["by_action"],
               "answers": sum(t.answers for t in truth), "reads": sum(t.reads for t in truth),
               **fleet.stats}
    if truth_file is not None:
        fleet.write_truth(truth_file)
    if as_json:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    else:
        err_console.print(", ".join(f"{k} {v}" for k, v in summary.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(simulate_app, name="simulate")
