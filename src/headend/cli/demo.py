"""Verb ``demo``: simulate a utility for a day, ingest it, write a summary report."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console

from headend.cli.common import DATA_ENV, EXIT_STORAGE, apply_rules_lateness, fail

err_console = Console(stderr=True)

#: what the demo writes in its output folder; it removes nothing else
DEMO_ENTRIES: Final = ("sim", "data", "report.md", "report.json")
#: the file that marks an output folder as the demo's
MARKER: Final = ".headend-demo"


def made_by_demo(out: Path) -> bool:
    """Whether ``out`` holds only what a demo writes (or carries its marker)."""
    if (out / MARKER).exists():
        return True
    return all(p.name in DEMO_ENTRIES for p in out.iterdir())


def prepare_output(out: Path, *, keep: bool, force: bool) -> None:
    """Make ``out`` ready for the demo: create it, or clear what an earlier demo wrote
    there (unless ``keep``). A non-empty folder the demo did not make is refused (exit
    2) unless ``force``; even then only the demo's own entries are replaced."""
    if out.exists() and not out.is_dir():
        fail(f"-o {out}: exists and is not a folder")
    if out.is_dir() and not force and not made_by_demo(out):
        fail(f"-o {out}: the folder is not empty and was not made by headend demo; give "
             "another -o, or --force to write the demo's sim/, data/ and report files "
             "there (nothing else in it is touched)")
    out.mkdir(parents=True, exist_ok=True)
    if not keep:
        for name in DEMO_ENTRIES:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    (out / MARKER).write_text("written by headend demo; it may replace sim/, data/, "
                              "report.md and report.json here\n")


def next_steps(data_dir: Path, day: dt.date) -> str:
    """What to try after the demo, with the demo's store as ``--data``."""
    d = shlex.quote(str(data_dir))
    return "\n".join([
        (f"the demo's store is {data_dir} (not the default ./headend-data): give --data, "
         f"or export {DATA_ENV}={d}"),
        "try next:",
        f"  headend export outages --data {d}",
        f"  headend export reads --data {d} --from {day}T06:00:00Z --to {day}T07:00:00Z",
        f"  headend quarantine list --data {d} --counts",
        f"  headend rules status --data {d}",
        f"  headend analytics profile --data {d}",
        f"  headend serve --data {d}   (needs pip install 'headend[serve]')",
    ])


def demo(
    meters: Annotated[int, typer.Option("--meters", min=10, help="Meters in the simulated utility.")] = 20_000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days to simulate.")] = 1,
    start: Annotated[str, typer.Option("--start", help="First day, YYYY-MM-DD (UTC).")] = "2026-01-05",
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed.")] = 7,
    faults: Annotated[str, typer.Option("--faults", help="Fault scenarios (see `headend simulate --help`).")] = "all",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: sim/ (uploads), data/ (the store) and the report. A non-empty folder the demo did not make is refused unless --force.", show_default="./headend-demo")] = Path("./headend-demo"),
    keep: Annotated[bool, typer.Option("--keep", help="Keep what an earlier demo wrote in the output folder (ingest into its store) instead of starting afresh.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Use a non-empty output folder the demo did not make: its sim/, data/, report.md and report.json are replaced, nothing else.")] = False,
) -> None:
    """Simulate a utility, ingest its uploads on the embedded default, write a report.

    Everything runs in this process with no servers. The report (report.md and
    report.json in the output folder) gives what was simulated, what was stored,
    duplicates and quarantine by reason, throughput, store size per read, and the
    outages the rules found against the simulator's ground truth. The store is
    <out>/data: give it as --data to the other verbs (the demo ends by saying how).

    \b
    Example:
      headend demo --meters 2000 -o ./headend-demo
    """
    from headend.ingest.hooks import open_ingestor
    from headend.sim import Faults, build_utility
    from headend.sim.writers import simulate as run_sim

    try:
        day = dt.date.fromisoformat(start)
    except ValueError:
        fail(f"--start: not a YYYY-MM-DD date: {start!r}")
    prepare_output(out, keep=keep, force=force)
    sim_dir, data_dir = out / "sim", out / "data"
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
            lateness = os.environ.get("HEADEND_RULES_LATENESS")  # the one setting
            apply_rules_lateness(ing.listeners, int(lateness) if lateness else None)
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
    err_console.print(f"report: {out / 'report.md'}  store: {data_dir}", markup=False,
                      highlight=False)
    err_console.print(next_steps(data_dir, day), markup=False, highlight=False, soft_wrap=True)


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
