"""Verb group ``tariff``: tariffs kept in the data directory, and bills from stored reads.

``tariff load FILE`` validates one tariff version (docs/dr.md) and stores it durably in
``<data>/tariffs/``; ``tariff list`` and ``tariff show`` read them back; ``tariff bill``
prices the stored ``kwh_del`` reads of a time range and prints billing determinants per
meter as CSV. Sending prices to displays is a later step (docs/dr.md, "Not yet").
"""

from __future__ import annotations

import csv
import json
import sys
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
    parse_range,
    verb_group,
)
from headend.errors import ConfigError, StorageError

tariff_app = verb_group("Tariffs: flat, time-of-use, critical peak, real-time, with tiers; "
                        "versioned, effective by date (docs/dr.md).")

JsonOption = Annotated[bool, typer.Option("--json", help="JSON output, one object per line.")]


def _store(data: Path) -> Any:
    from headend.dr.tariffs import TariffStore

    return TariffStore(data)


def _summary(t: Any) -> dict[str, Any]:
    return {"tariff_id": t.tariff_id, "version": t.version,
            "effective_from": t.effective_from.isoformat(), "kind": t.kind,
            "timezone": t.timezone, "currency": t.currency, "name": t.name}


@tariff_app.command("load")
def tariff_load(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A tariff YAML file (one "
                                         "version of one tariff; docs/dr.md).",
                                         show_default=False)],
    data: DataOption = DEFAULT_DATA_PATH,
    as_json: JsonOption = False,
) -> None:
    """Validate a tariff version and store it durably (earlier versions are kept; a new
    version must be effective later). Loading a stored version again changes nothing.

    \b
    Example:
      headend tariff load --data ./headend-data residential-tou.yaml
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read tariff file {file}: {exc}")
    try:
        res = _store(data).load(text, source=str(file))
    except ConfigError as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    if as_json:
        sys.stdout.write(json.dumps({**_summary(res.tariff), "status": res.status}) + "\n")
    else:
        t = res.tariff
        sys.stdout.write(f"{res.status}: tariff {t.tariff_id} version {t.version} ({t.kind}), "
                         f"effective from {t.effective_from}\n")


@tariff_app.command("list")
def tariff_list(data: DataOption = DEFAULT_DATA_PATH, as_json: JsonOption = False) -> None:
    """Every stored tariff version (tariff_id, version, effective_from, kind, name;
    tab-separated, or JSON lines).

    \b
    Example:
      headend tariff list --data ./headend-data --json
    """
    st = _store(data)
    rows = [_summary(t) for i in st.ids() for t in st.versions(i)]
    if not rows:
        sys.stderr.write(f"no tariffs in {data}\n")
    for r in rows:
        if as_json:
            sys.stdout.write(json.dumps(r) + "\n")
        else:
            sys.stdout.write("\t".join(str(r[k]) for k in ("tariff_id", "version",
                                                           "effective_from", "kind",
                                                           "name")) + "\n")


@tariff_app.command("show")
def tariff_show(
    tariff_id: Annotated[str, typer.Argument(metavar="TARIFF_ID", help="The tariff's id.",
                                             show_default=False)],
    data: DataOption = DEFAULT_DATA_PATH,
    version: Annotated[int | None, typer.Option(
        "--version", help="Which version (default: the latest).", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a stored tariff version: the YAML as loaded, or with --json the validated
    content with every default filled in.

    \b
    Example:
      headend tariff show residential-tou --data ./headend-data
    """
    st = _store(data)
    try:
        text = st.text(tariff_id, version)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if as_json:
        import yaml

        from headend.dr.tariff import parse_tariff

        sys.stdout.write(json.dumps(parse_tariff(yaml.safe_load(text)).canonical()) + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@tariff_app.command("bill")
def tariff_bill(
    tariff_id: Annotated[str, typer.Option("--tariff", help="The tariff's id.",
                                           show_default=False)],
    data: DataOption = DEFAULT_DATA_PATH,
    from_: Annotated[str | None, typer.Option(
        "--from", help="First interval end (ISO 8601; UTC without offset).",
        show_default=False)] = None,
    to: Annotated[str | None, typer.Option(
        "--to", help="Interval ends before this (exclusive).", show_default=False)] = None,
    energy: Annotated[bool, typer.Option(
        "--energy", help="Print kWh and cost per TOU period and tier instead of the "
        "summary.")] = False,
) -> None:
    """Billing determinants of the stored kwh_del reads (current VEE values) priced with
    every version of a tariff, per meter and billing period (local calendar month), as
    CSV: meter_id,billing_period,version,kwh,max_kw,max_interval_end,energy_cost,
    demand_cost,fixed_cost,total_cost; with --energy
    meter_id,billing_period,period,tier,kwh,cost.

    \b
    Example:
      headend tariff bill --tariff residential-tou --data ./headend-data --from 2026-01-01 --to 2026-02-01
    """
    from headend.dr import determinants, interval_kwh
    from headend.model import codes
    from headend.store import DataDir
    from headend.vee import current_reads

    start, end = parse_range(from_, to)
    versions = _store(data).versions(tariff_id)
    if not versions:
        fail(f"--tariff: no tariff {tariff_id!r} in {data} (headend tariff list)")
    rt = codes.READING_TYPE_BY_NAME["kwh_del"].code
    try:
        with DataDir.open(data) as dd:
            raw = dd.store.scan_reads(start=start, end=end,
                                      reading_types=np.array([rt], np.uint8))
            reads = current_reads(data, raw, dd.registry, start=start, end=end)
            n = len(dd.registry)
            ivl = dd.registry.interval_s(np.arange(n, dtype=np.int32)) if n else \
                np.zeros(0, np.int32)
            e, s = determinants(versions, interval_kwh(reads, ivl, reading_type=rt))
            out = e if energy else s
            ids = dd.registry.ids(out.column("meter_idx").to_numpy())
    except StorageError as exc:
        fail(str(exc), EXIT_STORAGE)
    if out.num_rows == 0:
        sys.stderr.write(f"no priced reads in {data} match the options given\n")
    _write_csv(out.set_column(0, "meter_id", ids))


def _write_csv(t: pa.Table) -> None:
    cols = []
    for c in t.columns:
        if pa.types.is_timestamp(c.type):
            c = pc.strftime(c, format="%Y-%m-%dT%H:%M:%SZ")
        cols.append(pc.cast(c, pa.string()).to_pylist())
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(t.column_names)
    w.writerows(("" if v is None else v for v in row) for row in zip(*cols, strict=True))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(tariff_app, name="tariff")
