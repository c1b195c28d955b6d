"""Verb group ``export``: stored data as canonical CSV on stdout.

Rows are sorted by meter_id, then reading type name (or event time), then time, one
row per key, timestamps in UTC. ``--from`` is inclusive and ``--to`` exclusive.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import typer

from headend.cli.common import DEFAULT_DATA_PATH, DataOption, fail, parse_range, verb_group
from headend.model import codes

export_app = verb_group("Export stored data as canonical CSV (outages and alarms: JSON lines) on stdout.")

#: meters per scan when exporting everything: bounds memory for any store size
CHUNK_METERS = 20_000

# sort rank of each reading type code by its CSV name (the export is sorted by name)
_RT_NAME_RANK = np.argsort(np.argsort([rt.name for rt in codes.READING_TYPES])).astype(np.uint8)


def _meter_order(dd: object, meter_ids: list[str] | None) -> np.ndarray:
    """meter_idx values to export, in meter_id order."""
    reg = dd.registry  # type: ignore[attr-defined]
    table = reg.table()
    if meter_ids:
        unique_ids = sorted(set(meter_ids))
        idx = np.asarray(reg.idx_for_id(pa.array(unique_ids, pa.string())))
        if (idx < 0).any():
            fail(f"unknown meter: {unique_ids[int(np.argmax(idx < 0))]}")
        return idx
    order = pc.sort_indices(table.column("meter_id"))
    sorted_t = table.take(order)
    return np.asarray(sorted_t.column("meter_idx").to_numpy())


class _Counted:
    """Record batches passed through, counting rows, so that an export that matched
    nothing says so on stderr (stdout keeps the header alone: a valid, empty CSV)."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches, self.rows = batches, 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for b in self._batches:
            self.rows += b.num_rows
            yield b

    def note_if_empty(self, what: str, data: Path) -> None:
        if self.rows == 0:
            sys.stderr.write(f"no {what} in {data} match the options given\n")


def _chunks(idx: np.ndarray) -> list[np.ndarray]:
    return [idx[i : i + CHUNK_METERS] for i in range(0, len(idx), CHUNK_METERS)]


@export_app.command("reads")
def export_reads(
    data: DataOption = DEFAULT_DATA_PATH,
    meter: Annotated[list[str] | None, typer.Option("--meter", help="Only this meter (repeatable).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Interval ends from this time (ISO 8601, inclusive; UTC if no offset).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Interval ends before this time (ISO 8601, exclusive; after --from).")] = None,
    reading_type: Annotated[list[str] | None, typer.Option("--reading-type", help="Only this reading type (repeatable).")] = None,
    no_estimated: Annotated[bool, typer.Option("--no-estimated", help="Leave out estimated values (quality category 8).")] = False,
    version: Annotated[str, typer.Option("--version", help="current (after VEE and edits) or original (as received).")] = "current",
) -> None:
    """Canonical interval-read CSV: meter_id,reading_type,interval_end,value,quality.

    Sorted by meter_id, reading type and interval end; times in ISO 8601 UTC.

    \b
    Example:
      headend export reads --data ./headend-data --meter M-1 --from 2026-01-05 --to 2026-01-06
    """
    from headend.store import DataDir
    from headend.wire.csvfmt import write_reads_csv

    start, end = parse_range(from_, to)
    if version not in ("current", "original"):
        fail(f"--version must be current or original, not {version!r}")
    rts = None
    if reading_type:
        try:
            rts = np.array([codes.reading_type(n).code for n in reading_type], dtype=np.uint8)
        except KeyError as exc:
            fail(f"unknown reading type: {exc.args[0]}")
    with DataDir.open(data) as dd:
        overlay = _vee_overlay(dd) if version == "current" else None
        idx = _meter_order(dd, meter)

        def batches() -> Iterator[pa.RecordBatch]:
            for chunk in _chunks(idx):
                raw = dd.store.scan_reads(meters=chunk.astype(np.int32), start=start, end=end,
                                          reading_types=rts)
                if overlay is not None:
                    raw = overlay(raw, start, end, rts)
                if no_estimated and raw.num_rows:
                    q = raw.column("quality")
                    est = pc.not_equal(
                        pc.bit_wise_and(q, pa.scalar(codes.ESTIMATED_MASK, pa.uint32())), 0)
                    raw = raw.filter(pc.invert(est))
                yield from _with_meter_ids(dd, raw).to_batches()

        rows = _Counted(batches())
        write_reads_csv(rows, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    rows.note_if_empty("reads", data)


def _with_meter_ids(dd: object, raw: pa.Table) -> pa.Table:
    """Add meter_id and sort by (meter_id, reading type name, interval_end)."""
    reg = dd.registry  # type: ignore[attr-defined]
    ids = reg.ids(raw.column("meter_idx").to_numpy())
    t = raw.append_column("meter_id", ids)
    rank = _RT_NAME_RANK[raw.column("reading_type").to_numpy()] if raw.num_rows else np.empty(0, np.uint8)
    t = t.append_column("_rank", pa.array(rank, pa.uint8()))
    t = t.sort_by([("meter_id", "ascending"), ("_rank", "ascending"), ("interval_end", "ascending")])
    return t.drop_columns(["_rank"])


def _vee_overlay(dd: object):  # type: ignore[no-untyped-def]
    """The VEE overlay (current versions, estimates) if VEE has run on this data dir."""
    try:
        from headend.vee import current_reads
    except ImportError:
        return None
    root: Path = dd.root  # type: ignore[attr-defined]
    reg = dd.registry  # type: ignore[attr-defined]

    def apply(raw: pa.Table, start: int | None, end: int | None, rts: np.ndarray | None) -> pa.Table:
        return current_reads(root, raw, reg, start=start, end=end)

    return apply


@export_app.command("events")
def export_events(
    data: DataOption = DEFAULT_DATA_PATH,
    meter: Annotated[list[str] | None, typer.Option("--meter", help="Only this meter (repeatable).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Events from this time (ISO 8601, inclusive; UTC if no offset).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Events before this time (exclusive; after --from).")] = None,
) -> None:
    """Canonical event CSV: meter_id,event_time,event_code.

    \b
    Example:
      headend export events --data ./headend-data --from 2026-01-05T06:00:00Z
    """
    _export_simple("events", data, meter, from_, to)


@export_app.command("registers")
def export_registers(
    data: DataOption = DEFAULT_DATA_PATH,
    meter: Annotated[list[str] | None, typer.Option("--meter", help="Only this meter (repeatable).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Reads from this time (ISO 8601, inclusive; UTC if no offset).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Reads before this time (exclusive; after --from).")] = None,
) -> None:
    """Canonical register-read CSV: meter_id,register,read_time,value.

    \b
    Example:
      headend export registers --data ./headend-data --meter M-1
    """
    _export_simple("registers", data, meter, from_, to)


@export_app.command("meters")
def export_meters(data: DataOption = DEFAULT_DATA_PATH) -> None:
    """The meter registry as canonical meters CSV, then interval_minutes (declared or
    learned; empty while unknown), critical_care (true|false), interval_source
    (declared|learned|empty) and switch_state (connected|disconnected|unknown).

    \b
    Example:
      headend export meters --data ./headend-data > meters.csv
    """
    from headend.store import DataDir
    from headend.store.intervals import SOURCE_NAMES
    from headend.wire.csvfmt import write_meters_csv

    with DataDir.open(data) as dd:
        t = dd.registry.table()
        src = dd.registry.interval_source(t.column("meter_idx").to_numpy())
        names = pa.array(SOURCE_NAMES, pa.string())
        t = t.append_column("interval_source", names.take(pa.array(src)))
        t = t.sort_by([("meter_id", "ascending")])
        write_meters_csv(t, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def _export_simple(kind: Literal["events", "registers"], data: Path, meter: list[str] | None,
                   from_: str | None, to: str | None) -> None:
    from headend.store import DataDir
    from headend.wire import csvfmt

    start, end = parse_range(from_, to)
    time_col = "event_time" if kind == "events" else "read_time"
    second = "event_code" if kind == "events" else "register"
    writer = csvfmt.write_events_csv if kind == "events" else csvfmt.write_registers_csv
    with DataDir.open(data) as dd:
        idx = _meter_order(dd, meter)
        scan = dd.store.scan_events if kind == "events" else dd.store.scan_registers
        keys = [("meter_id", "ascending"), (time_col, "ascending"), (second, "ascending")]
        if kind == "registers":
            keys = [("meter_id", "ascending"), (second, "ascending"), (time_col, "ascending")]

        def batches() -> Iterator[pa.RecordBatch]:
            for chunk in _chunks(idx):
                raw = scan(meters=chunk.astype(np.int32), start=start, end=end)
                ids = dd.registry.ids(raw.column("meter_idx").to_numpy())
                yield from raw.append_column("meter_id", ids).sort_by(keys).to_batches()

        rows = _Counted(batches())
        writer(rows, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    rows.note_if_empty(kind, data)


def register(app: typer.Typer) -> None:
    try:
        from headend.cli.rules import register_export
    except ImportError:
        pass
    else:
        register_export(export_app)
    app.add_typer(export_app, name="export")
