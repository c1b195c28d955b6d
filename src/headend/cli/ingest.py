"""Verbs ``ingest``, ``quarantine`` and ``compact``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_STORAGE,
    EXIT_UNUSABLE,
    BucketBitsOption,
    DataOption,
    NewDataOption,
    RulesLatenessOption,
    apply_rules_lateness,
    fail,
    verb_group,
)
from headend.cli.rejections import Rejection, top_rejections
from headend.errors import StorageError
from headend.ingest.pipeline import IngestResult, iter_paths
from headend.model import reasons

err_console = Console(stderr=True)


def _print_summary(result: IngestResult, *, as_json: bool,
                   rejections: list[Rejection] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), sort_keys=True) + "\n")
        return
    t = Table(title="ingest summary", show_header=False, box=None)
    t.add_row("accepted", f"{result.accepted:,}")
    t.add_row("duplicate", f"{result.duplicate:,}")
    t.add_row("quarantined", f"{result.quarantined:,}")
    if result.released:
        t.add_row("released from quarantine", f"{result.released:,}")
    for kind, n in sorted(result.by_kind.items()):
        t.add_row(f"  {kind} rows seen", f"{n:,}")
    for reason, n in sorted(result.by_reason.items()):
        t.add_row(f"  quarantined: {reason}", f"{n:,}")
    if result.meters_loaded:
        t.add_row("meters loaded", f"{result.meters_loaded:,}")
    if result.collectors_loaded:
        t.add_row("collector keys loaded", f"{result.collectors_loaded:,}")
    for kind, n in sorted(result.reference_loaded.items()):
        t.add_row(f"{kind} rows loaded", f"{n:,}")
    if result.weather_loaded:
        t.add_row("weather rows loaded", f"{result.weather_loaded:,}")
    t.add_row("files", f"{result.files:,}")
    if result.seconds:
        t.add_row("seconds", f"{result.seconds:.2f}")
    err_console.print(t)
    if rejections:
        err_console.print("top reasons for quarantine (`headend quarantine list` has every "
                          "row):", markup=False, highlight=False)
        for r in rejections:
            err_console.print(f"  {r.describe()}", markup=False, highlight=False, soft_wrap=True)


def accepted_nothing(result: IngestResult) -> bool:
    """Whether an ingest refused every row it was given: nothing stored, nothing
    already stored, nothing released or loaded, and some rows quarantined."""
    loaded = (result.meters_loaded + result.collectors_loaded + result.weather_loaded
              + sum(result.reference_loaded.values()))
    return (result.quarantined > 0
            and result.accepted + result.duplicate + result.released + loaded == 0)


def _nothing_accepted_message(result: IngestResult) -> str:
    waiting = sum(n for r, n in result.by_reason.items() if r in reasons.RETRYABLE)
    msg = (f"no row accepted: {result.quarantined:,} quarantined "
           f"({', '.join(f'{r} {n:,}' for r, n in sorted(result.by_reason.items()))})")
    if waiting:
        msg += (f"; {waiting:,} of them are of meters or collectors not yet known: they wait "
                "in the quarantine and are released when these are loaded (ingest the "
                "meters or collectors CSV)")
    return msg + "; see `headend quarantine list`"


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Canonical CSV files, binary frame files, or directories (their .csv and .hef files), in any order.", metavar="FILE", show_default=False)],
    data: NewDataOption = DEFAULT_DATA_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    no_rules: Annotated[bool, typer.Option("--no-rules", help="Do not run the real-time rules on what is ingested.")] = False,
    no_vee: Annotated[bool, typer.Option("--no-vee", help="Do not run VEE (validation, estimation) when the ingest ends.")] = False,
    bucket_bits: BucketBitsOption = None,
    rules_lateness: RulesLatenessOption = None,
) -> None:
    """Ingest collector uploads (binary frames) and canonical CSV.

    Meters and collector keys are loaded first whatever the order given; reads of
    unknown meters wait in quarantine and are released once their meter is loaded.
    The summary goes to stderr (JSON on stdout with --json), with the top reasons for
    quarantine, each with one example row and its line. Exit 0 on success including
    partial acceptance; 2 for bad arguments; 3 if a file is unusable or no row was
    accepted; 4 on a storage failure. A new data directory records its layout
    (--bucket-bits, default 16); an existing one is read with its recorded layout (a
    different --bucket-bits exits 2).

    \b
    Example:
      headend ingest --data ./headend-data meters.csv reads.csv uploads/
    """
    from headend.ingest.hooks import open_ingestor
    from headend.serve.sources import FileSource, Intake, Upload
    from headend.store import StoreConfig

    files = list(iter_paths(str(p) for p in paths))
    missing = [p for p in files if not p.is_file()]
    if missing:
        fail(f"no such file: {missing[0]}")
    total_bytes = sum(p.stat().st_size for p in files)
    source = FileSource(files)  # acknowledged by the exit code, once durable
    rejections: list[Rejection] = []
    started = int(time.time())
    try:
        with open_ingestor(data, rules=not no_rules, vee=not no_vee,
                           store_config=StoreConfig(bucket_bits=bucket_bits)) as ing, Progress(
            TextColumn("[bold]ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeElapsedColumn(), console=err_console, transient=True,
            disable=not err_console.is_terminal,
        ) as bar:
            task = bar.add_task("files", total=total_bytes)

            def store(upload: Upload) -> IngestResult:
                assert isinstance(upload.body, tuple)
                return ing.ingest_paths(
                    upload.body, progress=lambda _p, size: bar.update(task, advance=size))

            apply_rules_lateness(ing.listeners, rules_lateness)
            source.start(Intake("file", store, ing.data.quarantine.append))
            result = source.outcome.result if source.outcome is not None else None
            if isinstance(result, IngestResult) and result.by_reason and not as_json:
                q = ing.data.quarantine.list()
                q = q.filter(pc.greater_equal(q.column("received_at").cast(pa.int64()),
                                              started))  # [s]
                rejections = top_rejections(q, result.by_reason, files)
    except StorageError as exc:
        fail(f"storage failure, nothing acknowledged: {exc}", EXIT_STORAGE)
    except OSError as exc:  # a listener's state (rules checkpoint, VEE runs) not written
        fail(f"storage failure, nothing acknowledged: {exc} (ingesting the same files "
             "again is safe: stored reads are not doubled)", EXIT_STORAGE)
    outcome = source.outcome
    assert outcome is not None
    if outcome.kind == "defer":
        fail(f"storage failure, nothing acknowledged: {outcome.error} (ingesting the same "
             "files again is safe: stored reads are not doubled)", EXIT_STORAGE)
    if outcome.kind == "reject":
        fail(f"unusable input, quarantined ({outcome.reason}): {outcome.detail}", EXIT_UNUSABLE)
    assert isinstance(outcome.result, IngestResult)
    _print_summary(outcome.result, as_json=as_json, rejections=rejections)
    if outcome.result.unusable:
        fail(f"unusable input: {outcome.result.unusable[0]}", EXIT_UNUSABLE)
    if accepted_nothing(outcome.result):
        fail(_nothing_accepted_message(outcome.result), EXIT_UNUSABLE)


quarantine_app = verb_group("List and re-process quarantined input.")


@quarantine_app.command("list")
def quarantine_list(
    data: DataOption = DEFAULT_DATA_PATH,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout instead of CSV.")] = False,
    counts: Annotated[bool, typer.Option("--counts", help="Only the count per reason.")] = False,
) -> None:
    """List quarantined rows and frames with their reason (CSV on stdout).

    Columns: quarantine_id,received_at,source,kind,reason,detail,meter_id,type,time,
    value,quality; received_at in ISO 8601 UTC (also with --json).

    \b
    Example:
      headend quarantine list --data ./headend-data --reason bad_value --limit 20
    """
    from headend.store import DataDir

    with DataDir.open(data) as dd:
        if counts:
            sys.stdout.write(json.dumps(dd.quarantine.counts(), sort_keys=True) + "\n")
            return
        table = dd.quarantine.list(reason=reason, limit=limit)
    cols = ["quarantine_id", "received_at", "source", "kind", "reason", "detail", "meter_id",
            "type", "time", "value", "quality"]
    table = table.select(cols)
    if as_json:
        for row in table.to_pylist():
            row["received_at"] = row["received_at"].isoformat().replace("+00:00", "Z")
            sys.stdout.write(json.dumps(row) + "\n")
        return
    import pyarrow.csv as pacsv

    table = table.set_column(
        1, "received_at",
        pc.strftime(table.column("received_at"), format="%Y-%m-%dT%H:%M:%SZ"),
    )
    buf = sys.stdout.buffer
    pacsv.write_csv(table, buf)
    buf.flush()


@quarantine_app.command("retry")
def quarantine_retry(
    data: DataOption = DEFAULT_DATA_PATH,
    reason: Annotated[list[str] | None, typer.Option(help="Only these reasons (repeatable); default: all.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Re-process quarantined input: what now passes is stored and leaves the quarantine.

    \b
    Example:
      headend quarantine retry --data ./headend-data --reason unknown_meter
    """
    from headend.ingest.hooks import open_ingestor

    with open_ingestor(data) as ing:
        result = ing.release_quarantine(reason or None)
    _print_summary(result, as_json=as_json)


def compact(data: DataOption = DEFAULT_DATA_PATH) -> None:
    """Merge small segments into sorted, compressed files (dedup holds across it).

    \b
    Example:
      headend compact --data ./headend-data
    """
    from headend.store import DataDir

    with DataDir.open(data) as dd:
        before = dd.store.stats()
        dd.store.compact()
        after = dd.store.stats()
    err_console.print(f"compacted: {before} -> {after}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.add_typer(quarantine_app, name="quarantine")
    app.command("compact")(compact)
