"""Verbs ``vee`` (validate and estimate stored reads) and ``edit`` (a manual edit)."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_STORAGE,
    DataOption,
    fail,
    parse_range,
    parse_time,
)
from headend.errors import ConfigError, StorageError, ValidationError

err_console = Console(stderr=True)


def vee(
    data: DataOption = DEFAULT_DATA_PATH,
    from_: Annotated[str | None, typer.Option("--from", help="Only intervals ending from this time (ISO 8601, inclusive; UTC if no offset).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Only intervals ending before this time (exclusive; after --from).")] = None,
    tz: Annotated[str, typer.Option("--tz", envvar="HEADEND_TZ", help="Utility time zone (IANA) for local days: like days, daily totals.")] = "UTC",
    holiday: Annotated[list[str] | None, typer.Option("--holiday", help="Local date (YYYY-MM-DD) treated like a weekend day for like days (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Validate, estimate and record versions of stored interval reads (VEE).

    Every expected interval between a meter's first and last read gets a value:
    reads carry 3.0.1 (validated) or 3.6.x (suspect), missing intervals are estimated
    (3.8.x). Originals are kept; see `headend export reads --version original`.

    \b
    Example:
      headend vee --data ./headend-data --tz America/Chicago --holiday 2026-01-19
    """
    from headend.vee import VeeConfig, run_vee

    start, end = parse_range(from_, to)
    try:
        days = tuple(dt.date.fromisoformat(h) for h in holiday or ())
    except ValueError:
        fail(f"--holiday: not a YYYY-MM-DD date: {holiday}")
    try:
        cfg = VeeConfig(tz=tz, holidays=days)
        summary = run_vee(data, start=start, end=end, config=cfg,
                          now=int(__import__("time").time()))
    except ConfigError as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    if as_json:
        sys.stdout.write(json.dumps(summary.as_dict(), sort_keys=True) + "\n")
        return
    t = Table(title="VEE summary", show_header=False, box=None)
    for k in ("reads", "expected", "validated", "suspect", "estimated", "versions_written"):
        t.add_row(k, f"{getattr(summary, k):,}")
    for k, n in sorted(summary.rules.items()):
        t.add_row(f"  rule {k}", f"{n:,}")
    for k, n in sorted(summary.methods.items()):
        t.add_row(f"  estimated by {k}", f"{n:,}")
    err_console.print(t)


def edit(
    meter: Annotated[str, typer.Option("--meter", help="Meter id.")],
    reading_type: Annotated[str, typer.Option("--reading-type", help="Reading type name (kwh_del, ...).")],
    interval_end: Annotated[str, typer.Option("--interval-end", help="Interval end (ISO 8601; UTC if no offset).")],
    value: Annotated[float, typer.Option("--value", help="New value in the reading type's unit (kWh, m3, V).")],
    reason: Annotated[str, typer.Option("--reason", help="Why the value is edited (kept with the version).")],
    author: Annotated[str | None, typer.Option("--author", help="Who edits (default: the login name).")] = None,
    data: DataOption = DEFAULT_DATA_PATH,
) -> None:
    """Record a manual edit of one interval value (quality 3.7.0); the original is kept.

    \b
    Example:
      headend edit --data ./headend-data --meter M-1 --reading-type kwh_del --interval-end 2026-01-05T10:15:00Z --value 0.42 --reason "meter test"
    """
    import pyarrow as pa

    from headend.model import codes
    from headend.store import DataDir
    from headend.vee import VersionStore

    t = parse_time(interval_end, option="--interval-end")
    assert t is not None
    try:
        rt = codes.reading_type(reading_type)
    except KeyError:
        fail(f"unknown reading type: {reading_type}")
    who = author or getpass.getuser()
    with DataDir.open(data) as dd:
        idx = int(dd.registry.idx_for_id(pa.array([meter], pa.string()))[0])
        if idx < 0:
            fail(f"unknown meter: {meter}")
        import numpy as np

        ivl = int(dd.registry.intervals().at(np.array([idx], np.int32),
                                             np.array([rt.code], np.uint8),
                                             np.array([t], np.int64))[0])
    if ivl and t % ivl:
        fail(f"--interval-end {interval_end} is not on the meter's {ivl} s grid")
    raw = round(value / rt.resolution)
    try:
        version = VersionStore(data).edit(idx, rt.code, t, raw, reason=reason, author=who)
    except ValidationError as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    err_console.print(f"edited {meter} {rt.name} {interval_end}: version {version} by {who}")


def register(app: typer.Typer) -> None:
    app.command("vee")(vee)
    app.command("edit")(edit)
