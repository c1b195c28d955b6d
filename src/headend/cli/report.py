"""Verb ``report``: an HTML operations report with plots, every table also as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_STORAGE,
    DataOption,
    fail,
    parse_range,
    require_extra,
)
from headend.errors import ConfigError, StorageError

err_console = Console(stderr=True)


def report(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory (created).")],
    data: DataOption = DEFAULT_DATA_PATH,
    from_: Annotated[str | None, typer.Option("--from", help="Report from this time (ISO 8601, inclusive).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Report to this time (exclusive; after --from).")] = None,
    tz: Annotated[str, typer.Option("--tz", envvar="HEADEND_TZ", help="Utility time zone.")] = "UTC",
    transformers: Annotated[Path | None, typer.Option("--transformers", help="transformers.csv with kva ratings.")] = None,
    tables: Annotated[str, typer.Option("--tables", help="Table files: csv, parquet or csv,parquet.")] = "csv",
) -> None:
    """Write index.html with feeder load curves, most loaded transformers, VEE statistics,
    data completeness per collector and technology, and outages with customer-minutes
    lost; every table also as CSV and/or Parquet (--tables).

    \b
    Example:
      headend report --data ./headend-data -o report/ --tz America/Chicago
    """
    from headend.report import build_report

    start, end = parse_range(from_, to)
    require_extra("report", "headend report")
    ratings: dict[str, float] = {}
    if transformers is not None:
        import pyarrow.csv as pacsv

        try:
            t = pacsv.read_csv(transformers)
            for k, v in zip(t.column("transformer_id").to_pylist(), t.column("kva").to_pylist(),
                            strict=True):
                ratings[str(k)] = float(v)
        except (OSError, KeyError, ValueError) as exc:
            fail(f"{transformers}: {exc}")
    try:
        res = build_report(data, out, start=start, end=end, tz=tz, ratings_kva=ratings,
                           table_formats=tuple(x.strip() for x in tables.split(",") if x.strip()))
    except ConfigError as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    err_console.print(f"report: {out / 'index.html'} ({len(res.files)} files)")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
