"""Verb ``demo``: simulate a utility for a day, ingest it, write a summary report."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from headend.cli.common import EXIT_STORAGE, fail

err_console = Console(stderr=True)


def demo(
    meters: Annotated[int, typer.Option("--meters", min=10, help="Meters in the simulated utility.")] = 20_000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days to simulate.")] = 1,
    start: Annotated[str, typer.Option("--start", help="First day, YYYY-MM-DD (UTC).")] = "2026-01-05",
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed.")] = 7,
    faults: Annotated[str, typer.Option("--faults", help="Fault scenarios (see `headend simulate --help`).")] = "all",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: sim/ (uploads), data/ (the store) and the report.")] = Path("./headend-demo"),
    keep: Annotated[bool, typer.Option("--keep", help="Keep an existing output folder instead of starting afresh.")] = False,
) -> None:
    """Simulate a utility, ingest its uploads on the embedded default, write a report.

    Everything runs in this process with no servers. The report (report.md and
    report.json in the output folder) gives what was simulated, what was stored,
    duplicates and quarantine by reason, throughput, store size per read, and the
    outages the rules found against the simulator's ground truth.
    """
    from headend.ingest.hooks import open_ingestor
    from headend.sim import Faults, build_utility
    from headend.sim.writers import simulate as run_sim

    if out.exists() and not keep:
        shutil.rmtree(out)
    sim_dir, data_dir = out / "sim", out / "data"
    try:
        day = dt.date.fromisoformat(start)
    except ValueError:
        fail(f"--start: not a YYYY-MM-DD date: {start!r}")
    t0 = time.perf_counter()
    utility = build_utility(meters, seed=seed, start=day, days=days)
    with err_console.status(f"simulating {meters:,} meters for {days} day(s)"):
        summary = run_sim(utility, Faults.from_names(faults), sim_dir, formats=("frames",))
    t_sim = time.perf_counter() - t0
    static = [sim_dir / n for n in ("collectors.csv", "meters.csv", "transformer_ratings.csv",
                                    "customers.csv", "weather.csv")
              if (sim_dir / n).exists()]
    uploads = sorted((sim_dir / "uploads").glob("*.hef"))
    t1 = time.perf_counter()
    from headend.errors import StorageError

    try:
        with open_ingestor(data_dir) as ing, err_console.status(
            f"ingesting {len(uploads)} upload cycles"
        ):
            result = ing.ingest_paths(static + uploads)
            t_ingest = time.perf_counter() - t1
            t2 = time.perf_counter()
            ing.data.store.compact()
            t_compact = time.perf_counter() - t2
            stats = ing.data.store.stats()
            quarantine = ing.data.quarantine.counts()
    except StorageError as exc:
        fail(f"storage failure: {exc}", EXIT_STORAGE)
    report = _report(summary, result.to_dict(), stats, quarantine, t_sim, t_ingest, t_compact,
                     data_dir, sim_dir)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(_markdown(report))
    sys.stdout.write(_markdown(report))
    err_console.print(f"report: {out / 'report.md'}  store: {data_dir}")


def _report(summary: dict[str, Any], ingest: dict[str, Any], stats: Any, quarantine: dict[str, int],
            t_sim: float, t_ingest: float, t_compact: float, data_dir: Path, sim_dir: Path
            ) -> dict[str, Any]:
    rows = summary.get("rows", {})
    n_reads = int(rows.get("reads", 0)) if isinstance(rows, dict) else 0
    stored = int(stats.rows.get("reads", 0))
    reads_bytes = int(stats.bytes_on_disk.get("reads", 0))
    rep: dict[str, Any] = {
        "utility": {k: summary.get(k) for k in ("meters", "collectors", "transformers", "feeders",
                                                "substations", "days", "interval_s") if k in summary},
        "simulated_rows": rows,
        "ingest": ingest,
        "quarantine_by_reason": quarantine,
        "store": {"interval_reads": stored, "bytes_on_disk_reads": reads_bytes,
                  "bytes_per_read": round(reads_bytes / stored, 3) if stored else None},
        "seconds": {"simulate": round(t_sim, 2), "ingest": round(t_ingest, 2),
                    "compact": round(t_compact, 2)},
        "ingest_rows_per_s": round((ingest["accepted"] + ingest["duplicate"]) / t_ingest)
        if t_ingest else None,
        "simulated_interval_reads": n_reads,
    }
    rep["outages"] = _outage_check(data_dir, sim_dir)
    return rep


def _outage_check(data_dir: Path, sim_dir: Path) -> dict[str, Any]:
    """Outages the rules reported, held against the simulator's ground truth."""
    import pyarrow.parquet as pq

    from headend.rules import RuleEngine
    from headend.rules.testing import observable_truth, score_outages
    from headend.store import DataDir

    # what AMI can observe: outages wholly inside an enclosing outage are invisible
    truth = observable_truth(pq.read_table(sim_dir / "ground_truth.parquet"),
                             gasp_spread_s=3, restore_spread_s=30)
    with DataDir.open(data_dir) as dd:
        found = list(RuleEngine.open(dd.root, dd.registry).outages)
    score = score_outages(found, truth, tol_s=900)
    return {"injected_observable": len(truth.faults), "unobservable": len(truth.unobservable),
            "reported": len(found),
            "precision": round(score["precision"], 3), "recall": round(score["recall"], 3),
            "max_start_error_s": score["max_start_error_s"]}


def _markdown(rep: dict[str, Any]) -> str:
    ing = rep["ingest"]
    lines = [
        "# headend demo report",
        "",
        "## Utility",
        "",
        *[f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}"
          for k, v in rep["utility"].items()],
        "",
        "## Ingest",
        "",
        f"- accepted: {ing['accepted']:,}",
        f"- duplicate (retransmissions and duplicates, stored once): {ing['duplicate']:,}",
        f"- quarantined: {ing['quarantined']:,}",
        f"- throughput: {rep['ingest_rows_per_s']:,} rows/s (wall, one process)"
        if rep["ingest_rows_per_s"] else "- throughput: n/a",
        "",
        "| quarantine reason | rows |",
        "| --- | --- |",
        *[f"| {r} | {n:,} |" for r, n in sorted(rep["quarantine_by_reason"].items())],
        "",
        "## Store",
        "",
        f"- interval reads stored: {rep['store']['interval_reads']:,}",
        f"- bytes per stored interval read (after compaction): {rep['store']['bytes_per_read']}",
        "",
        "## Timings [s]",
        "",
        *[f"- {k}: {v}" for k, v in rep["seconds"].items()],
    ]
    if rep.get("outages"):
        lines += ["", "## Outages (rules vs simulator ground truth)", ""]
        lines += [f"- {k}: {v}" for k, v in rep["outages"].items()]
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
