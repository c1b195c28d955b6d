"""Verb group ``dr``: demand response. For now ``dr measure``, the measured shed (M&V)
of an event given on the command line; programs, stored events and ``dr report`` come
later (docs/dr.md, "Not yet")."""

from __future__ import annotations

import csv
import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import typer

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_STORAGE,
    DataOption,
    fail,
    parse_time,
    verb_group,
)
from headend.errors import StorageError

dr_app = verb_group("Demand response: measured shed of events (docs/dr.md).")


def _dates(values: list[str] | None, option: str) -> tuple[date, ...]:
    out = []
    for v in values or []:
        try:
            out.append(date.fromisoformat(v))
        except ValueError:
            fail(f"{option}: not a date YYYY-MM-DD: {v!r}")
    return tuple(out)


def _read_csv(path: Path, columns: list[str], option: str) -> pa.Table:
    from pyarrow import csv as pacsv

    try:
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}))
    except (OSError, pa.ArrowInvalid) as exc:
        fail(f"{option} {path}: {str(exc).splitlines()[0]}")
    missing = [c for c in columns if c not in t.column_names]
    if missing:
        fail(f"{option} {path}: needs the columns {','.join(columns)} (missing "
             f"{','.join(missing)})")
    return t


def _opt_outs(path: Path | None, registry: Any) -> pa.Table | None:
    if path is None:
        return None
    t = _read_csv(path, ["meter_id", "at"], "--opt-outs")
    at = [parse_time(v, option="--opt-outs at") for v in t.column("at").to_pylist()]
    idx = registry.idx_for_id(t.column("meter_id"))
    keep = idx >= 0
    return pa.table({"meter_idx": pa.array(idx[keep], pa.int32()),
                     "at": pa.array(np.array(at, np.int64)[keep], pa.int64())})


@dr_app.command("measure")
def dr_measure(
    start: Annotated[str, typer.Option("--start", help="Event start (ISO 8601; UTC "
                                       "without offset).", show_default=False)],
    minutes: Annotated[int, typer.Option("--minutes", min=1, help="Event duration [min].",
                                         show_default=False)],
    data: DataOption = DEFAULT_DATA_PATH,
    meter: Annotated[list[str] | None, typer.Option(
        "--meter", help="A target meter id (repeatable).", show_default=False)] = None,
    meters_file: Annotated[Path | None, typer.Option(
        "--meters-file", help="A CSV of target meters with the header meter_id.",
        show_default=False)] = None,
    feeder: Annotated[list[str] | None, typer.Option(
        "--feeder", help="Every meter of this feeder is a target (repeatable).",
        show_default=False)] = None,
    opt_outs: Annotated[Path | None, typer.Option(
        "--opt-outs", help="A CSV meter_id,at of opt-outs (at: ISO 8601); one at or after "
        "the event's end does not count.", show_default=False)] = None,
    method: Annotated[str, typer.Option(
        "--method", help="Baseline: 10of10 or high5of10.")] = "10of10",
    tz: Annotated[str, typer.Option(
        "--tz", envvar="HEADEND_TZ", help="Utility time zone: local days and hours.")] = "UTC",
    holiday: Annotated[list[str] | None, typer.Option(
        "--holiday", help="A holiday, never a baseline day (YYYY-MM-DD, repeatable).",
        show_default=False)] = None,
    exclude_day: Annotated[list[str] | None, typer.Option(
        "--exclude-day", help="An earlier event day, never a baseline day (YYYY-MM-DD, "
        "repeatable).", show_default=False)] = None,
    slot_minutes: Annotated[int, typer.Option(
        "--slot-minutes", help="Slot length [min], a divisor of 60; the event's start "
        "and duration must be whole slots.")] = 60,
    by: Annotated[str, typer.Option(
        "--by", help="meter (one row per meter) or feeder (sums per feeder).")] = "meter",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of CSV.")] = False,
) -> None:
    """Measured shed of one event: per target meter
    meter_id,opted_out,baseline_kwh,actual_kwh,shed_kwh (CSV, empty where unknown), or
    with --by feeder feeder_id,meters,opted_out,measured,baseline_kwh,actual_kwh,shed_kwh.

    \b
    Example:
      headend dr measure --data ./headend-data --start 2026-07-22T18:00:00Z --minutes 240 --feeder F1 --tz America/New_York
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from headend.dr.measure import MVConfig, MVEvent, aggregate, measure
    from headend.model import dr
    from headend.store import DataDir

    if method not in dr.BASELINE_METHODS:
        fail(f"--method must be one of {', '.join(dr.BASELINE_METHODS)}, not {method!r}")
    if by not in ("meter", "feeder"):
        fail(f"--by must be meter or feeder, not {by!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"--tz: not an IANA time zone: {tz!r}")
    t0 = parse_time(start, option="--start")
    assert t0 is not None
    if slot_minutes < 1 or 60 % slot_minutes or t0 % (slot_minutes * 60) or \
            minutes % slot_minutes:
        fail(f"--start and --minutes must be whole slots of {slot_minutes} minutes "
             "(--slot-minutes, a divisor of 60)")
    cfg = MVConfig(method=method, timezone=tz, holidays=_dates(holiday, "--holiday"),
                   slot_s=slot_minutes * 60)
    try:
        with DataDir.open(data) as dd:
            reg = dd.registry
            ids = list(meter or [])
            if meters_file is not None:
                ids += _read_csv(meters_file, ["meter_id"], "--meters-file").column(
                    "meter_id").to_pylist()
            idx = reg.idx_for_id(pa.array(ids, pa.string())) if ids else np.zeros(0, np.int32)
            if (idx < 0).any():
                fail(f"unknown meter {ids[int(np.flatnonzero(idx < 0)[0])]!r}")
            parts = [idx.astype(np.int32)] + [reg.meters_of(feeder=f) for f in feeder or []]
            targets = np.unique(np.concatenate(parts)).astype(np.int32)
            if len(targets) == 0:
                fail("no target meter: give --meter, --meters-file or --feeder")
            ev = MVEvent("cli", t0, minutes, targets,
                         exclude_days=_dates(exclude_day, "--exclude-day"))
            n = len(reg)
            res = measure(dd.store, ev, cfg, reg.interval_s(np.arange(n, dtype=np.int32)),
                          _opt_outs(opt_outs, reg))
            m = res.column("meter_idx").to_numpy()
            if by == "feeder":
                fid = pc.fill_null(reg.feeder_of(m), "")
                out = aggregate(res.append_column("feeder_id", fid), ["feeder_id"])
            else:
                out = pa.table({"meter_id": reg.ids(m),
                                **{c: res.column(c) for c in dr.DR_RESULT.names[1:]}})
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    _write(out, as_json)


def _write(t: pa.Table, as_json: bool) -> None:
    if as_json:
        for row in t.to_pylist():
            sys.stdout.write(json.dumps(row) + "\n")
    else:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(t.column_names)
        cols = [pc.cast(c, pa.string()).to_pylist() if not pa.types.is_boolean(c.type)
                else ["true" if v else "false" for v in c.to_pylist()] for c in t.columns]
        w.writerows(("" if v is None else v for v in row) for row in zip(*cols, strict=True))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(dr_app, name="dr")
