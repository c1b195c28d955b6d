"""Writers: binary collector frames, canonical CSV, ground truth and the summary.

All formatting is vectorised with Arrow compute (one pass per column, no Python loop
per row). Frames are written one file per upload cycle, each holding every collector's
frames back to back (``uploads/cycle-<YYYYMMDDTHHMM>.hef``), so a 4-million-meter day
at 15-minute intervals is 96 files.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from headend.model.codes import (
    COMMODITIES,
    READING_TYPES,
    REGISTER_TYPES,
    TECHNOLOGIES,
    event_code_str,
    quality_to_str,
)
from headend.model.schema import CSV_HEADERS, CSV_OPTIONAL
from headend.sim.engine import TAG_RETRANSMISSION, Upload, iter_uploads
from headend.sim.faults import FaultPlan, Faults
from headend.sim.utility import CUSTOMER_CLASSES, Utility
from headend.wire.frame import FLAG_RETRANSMISSION, encode_frame

__all__ = [
    "CsvWriter",
    "FrameWriter",
    "cycle_file_name",
    "simulate",
    "write_csv",
    "write_frames",
    "write_static",
]

I64 = npt.NDArray[np.int64]
#: transformer ratings for the rules (same contract as ``headend.rules.grid.RATINGS_*``,
#: checked by tests/sim/test_writers.py)
TRANSFORMER_RATINGS: Final = "transformer_ratings"
RATINGS_HEADER: Final = ("transformer_id", "rating_kva")
_OPTS: Final = pacsv.WriteOptions(include_header=False, quoting_style="none")
_RT_NAMES: Final = pa.array([rt.name for rt in READING_TYPES])
_RT_DIGITS: Final = np.array([round(-np.log10(rt.resolution)) for rt in READING_TYPES], np.int64)
_REG_NAMES: Final = pa.array([r.name for r in REGISTER_TYPES])
_REG_DIGITS: Final = np.array([round(-np.log10(r.resolution)) for r in REGISTER_TYPES],
                              np.int64)


def cycle_file_name(cycle_time: dt.datetime) -> str:
    """``cycle-20260105T0015.hef`` for the upload cycle at ``cycle_time`` (UTC)."""
    return f"cycle-{cycle_time.astimezone(dt.UTC):%Y%m%dT%H%M}.hef"


# --------------------------------------------------------------------------- formatting


def iso_times(seconds: I64) -> pa.Array:
    """Unix seconds -> ``2026-01-05T00:15:00+00:00`` strings (each distinct time once)."""
    enc = pc.dictionary_encode(pa.array(np.asarray(seconds, np.int64)))
    text = pa.array([dt.datetime.fromtimestamp(int(s), dt.UTC).isoformat()
                     for s in enc.dictionary.to_numpy()], pa.string())
    return pc.take(text, enc.indices)


def _decimal(v: I64, digits: int) -> pa.Array:
    """Integers as decimals with ``digits`` fraction digits (Arrow decimal128 -> text)."""
    n = len(v)
    words = np.empty((n, 2), np.int64)  # little-endian 128-bit two's complement
    words[:, 0] = v
    words[:, 1] = v >> 63
    arr = pa.Array.from_buffers(pa.decimal128(38, digits), n, [None, pa.py_buffer(words)])
    return pc.cast(arr, pa.string())


def decimal_text(raw: npt.NDArray[np.integer], codes: npt.NDArray[np.uint8] | None,
                 digits: npt.NDArray[np.int64]) -> pa.Array:
    """Integers in a resolution of ``10**-digits`` -> exact decimal strings.

    ``digits[codes]`` gives each row's fraction digits (``codes=None``: ``digits[0]`` for
    all), e.g. 1234 with 3 digits -> ``1.234``, 2404 with 1 digit -> ``240.4``.
    """
    v = np.asarray(raw, np.int64)
    if codes is None:
        return _decimal(v, int(digits[0]))
    per_row = digits[codes]
    present = np.flatnonzero(np.bincount(per_row, minlength=1))
    if len(present) == 1:
        return _decimal(v, int(present[0]))
    idx = [np.flatnonzero(per_row == d) for d in present]
    text = pa.concat_arrays([_decimal(v[i], int(d)) for i, d in zip(idx, present, strict=True)])
    where = np.empty(len(v), np.int64)
    where[np.concatenate(idx)] = np.arange(len(v))
    return pc.take(text, pa.array(where))


def quality_text(masks: npt.NDArray[np.uint32]) -> pa.Array:
    """Quality masks -> ``;``-joined codes, null for 0 (each distinct mask formatted once)."""
    nz = np.flatnonzero(masks)
    if len(nz) == 0:
        return pa.nulls(len(masks), pa.string())
    uniq, inv = np.unique(masks[nz], return_inverse=True)
    idx = np.zeros(len(masks), np.int32)
    idx[nz] = inv + 1
    table = pa.array([None] + [quality_to_str(int(m)) for m in uniq], pa.string())
    return pc.take(table, pa.array(idx))


def _seconds(col: pa.ChunkedArray) -> I64:
    out: I64 = col.cast(pa.int64()).to_numpy()
    return out


def _write_header(f: IO[bytes], names: Iterable[str]) -> None:
    f.write((",".join(names) + "\n").encode())


def _write(f: IO[bytes], cols: dict[str, pa.Array]) -> None:
    pacsv.write_csv(pa.table(cols), f, _OPTS)


# --------------------------------------------------------------------------- CSV


class CsvWriter:
    """Appends each upload's reads, registers and events to the canonical CSVs."""

    def __init__(self, utility: Utility, out_dir: str | Path) -> None:
        self.u = utility
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.ids = utility.meters.column("meter_id").combine_chunks()
        self.files = {k: open(out / f"{k}.csv", "wb")  # noqa: SIM115 (closed by close())
                      for k in ("reads", "registers", "events")}
        for k, f in self.files.items():
            _write_header(f, CSV_HEADERS[k])
        self.rows = {k: 0 for k in self.files}

    def write(self, up: Upload) -> None:
        # one chunk per column: Arrow's CSV writer wrote NUL bytes for a table whose
        # columns were chunked differently (events with empty chunks, faults "all")
        r, g, e = (t.combine_chunks() for t in (up.reads, up.registers, up.events))
        if r.num_rows:
            _write(self.files["reads"], {
                "meter_id": pc.take(self.ids, r.column("meter_idx")),
                "reading_type": pc.take(_RT_NAMES, r.column("reading_type")),
                "interval_end": iso_times(_seconds(r.column("interval_end"))),
                "value": decimal_text(r.column("value").to_numpy(),
                                      r.column("reading_type").to_numpy(), _RT_DIGITS),
                "quality": quality_text(r.column("quality").to_numpy()),
            })
        if g.num_rows:
            _write(self.files["registers"], {
                "meter_id": pc.take(self.ids, g.column("meter_idx")),
                "register": pc.take(_REG_NAMES, g.column("register")),
                "read_time": iso_times(_seconds(g.column("read_time"))),
                "value": decimal_text(g.column("value").to_numpy(),
                                      g.column("register").to_numpy(), _REG_DIGITS),
            })
        if e.num_rows:
            codes = e.column("event_code").to_numpy()
            uniq, inv = np.unique(codes, return_inverse=True)
            _write(self.files["events"], {
                "meter_id": pc.take(self.ids, e.column("meter_idx")),
                "event_time": iso_times(_seconds(e.column("event_time"))),
                "event_code": pc.take(pa.array([event_code_str(int(c)) for c in uniq]),
                                      pa.array(inv.astype(np.int32))),
            })
        for k, t in (("reads", r), ("registers", g), ("events", e)):
            self.rows[k] += t.num_rows

    def close(self) -> None:
        for f in self.files.values():
            f.close()


# --------------------------------------------------------------------------- frames


def _runs(keys: npt.NDArray[np.integer]) -> tuple[I64, I64]:
    """Start and end of each run of equal values in ``keys``."""
    if len(keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])
    return starts, np.concatenate([starts[1:], [len(keys)]])


class FrameWriter:
    """Writes each upload as one file of back-to-back frames, one per collector and tag.

    A collector's normal frame has sequence ``cycle * 4`` and ``created_at`` = the cycle
    time; delayed frames keep the sequence and time of the cycle that created them
    (late, out of order: newest first); duplicates and retransmissions get sequence
    ``created_cycle * 4 + 2`` / ``+ 1``, the latter with ``FLAG_RETRANSMISSION``.
    """

    def __init__(self, utility: Utility, out_dir: str | Path) -> None:
        self.u = utility
        self.dir = Path(out_dir) / "uploads"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.serial = utility.meters.column("serial").to_numpy()
        self.coll_num = utility.collectors.column("collector_num").to_numpy()
        self.keys = [bytes(k) for k in utility.collectors.column("hmac_key").to_pylist()]
        self.frames = 0
        self.bytes = 0
        self.files = 0

    @staticmethod
    def _cols(t: pa.Table, kind: str) -> list[np.ndarray]:
        """Zero-copy column views in frame block order, meter_idx first."""
        names = {"reads": ("meter_idx", "interval_end", "value", "quality", "reading_type"),
                 "registers": ("meter_idx", "value", "read_time", "register"),
                 "events": ("meter_idx", "event_time", "event_code")}[kind]
        return [_seconds(t.column(n)) if pa.types.is_timestamp(t.schema.field(n).type)
                else t.column(n).to_numpy() for n in names]

    def write(self, up: Upload) -> Path | None:
        """Write ``up`` to its cycle file; returns the path, or None when no collector
        has anything to send in this cycle (small utilities with delayed uploads): a
        collector with nothing to send uploads nothing, not an empty file."""
        tag0 = up.cycle * 4
        # per table: group rows by (tag, collector). The normal rows come first and are
        # already collector-sorted (engine layout): one pass finds their runs; only the
        # few delayed/re-sent rows after them are sorted.
        groups: dict[tuple[int, int], list[tuple[np.ndarray, ...] | None]] = {}
        mc = self.u.meter_collector
        for k, (t, tags) in enumerate(((up.reads, up.reads_tag),
                                      (up.registers, up.registers_tag),
                                      (up.events, up.events_tag))):
            if t.num_rows == 0:
                continue
            cols = self._cols(t, ("reads", "registers", "events")[k])
            n_main = int(np.argmin(tags == tag0)) if (tags != tag0).any() else len(tags)
            coll = mc[cols[0][:n_main]]
            if np.any(coll[1:] < coll[:-1]):  # not the engine's layout (events): sort
                order = np.argsort(coll, kind="stable")
                coll = coll[order]
                cols = [np.concatenate([c[:n_main][order], c[n_main:]]) for c in cols]
            for a, b in zip(*_runs(coll), strict=True):
                g = groups.setdefault((tag0, int(coll[a])), [None, None, None])
                g[k] = tuple(c[a:b] for c in cols)
            if n_main < len(tags):
                key = tags[n_main:] * (1 << 32) + mc[cols[0][n_main:]]
                order = np.argsort(key, kind="stable")
                key = key[order]
                rest = [c[n_main:][order] for c in cols]
                for a, b in zip(*_runs(key), strict=True):
                    g = groups.setdefault((int(key[a] >> 32), int(key[a] & 0xFFFFFFFF)),
                                          [None, None, None])
                    g[k] = tuple(c[a:b] for c in rest)
        # normal frames first (by collector), then the others by tag descending
        frames = sorted(groups, key=lambda tc: (tc[0] != tag0, -tc[0], tc[1]))
        if not frames:
            return None
        path = self.dir / cycle_file_name(up.cycle_time)
        d, t0 = self.u.interval_s, self.u.start_s
        with open(path, "wb") as f:
            for tag, c in frames:
                i, r, e = (None if x is None else (self.serial[x[0]], *x[1:])
                           for x in groups[(tag, c)])
                fr = encode_frame(
                    self.keys[c], int(self.coll_num[c]), tag, t0 + (tag // 4) * d,
                    interval=i, register=r, event=e,
                    flags=FLAG_RETRANSMISSION if tag % 4 == TAG_RETRANSMISSION else 0)
                f.write(fr)
                self.bytes += len(fr)
                self.frames += 1
        self.files += 1
        return path

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- static files


def write_static(utility: Utility, plan: FaultPlan, out_dir: str | Path) -> list[str]:
    """Write meters, collectors, customers, transformer ratings, weather CSVs and the ground
    truth (``ground_truth.parquet``); returns the file names."""
    u, out = utility, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = u.meters
    files = {
        "meters": (CSV_HEADERS["meters"] + CSV_OPTIONAL["meters"], {
            "meter_id": m.column("meter_id"),
            "commodity": pc.take(pa.array(COMMODITIES), m.column("commodity")),
            "technology": pc.take(pa.array(TECHNOLOGIES), m.column("technology")),
            "two_way": m.column("two_way"),
            "collector_id": m.column("collector_id"),
            "transformer_id": m.column("transformer_id"),
            "feeder_id": m.column("feeder_id"),
            "substation_id": m.column("substation_id"),
            "interval_minutes": pa.array(m.column("interval_s").to_numpy() // 60),
            "critical_care": pa.array(np.zeros(m.num_rows, np.bool_)),
        }),
        "collectors": (CSV_HEADERS["collectors"], {
            "collector_id": u.collectors.column("collector_id"),
            "hmac_key": pa.array(
                [bytes(k).hex() for k in u.collectors.column("hmac_key").to_pylist()]),
        }),
        "customers": (("meter_id", "customer_class"), {
            "meter_id": m.column("meter_id"),
            "customer_class": pc.take(pa.array(CUSTOMER_CLASSES),
                                      pa.array(u.customer_class)),
        }),
        TRANSFORMER_RATINGS: (RATINGS_HEADER, {
            "transformer_id": u.transformers.column("transformer_id"),
            "rating_kva": u.transformers.column("kva"),
        }),
        "weather": (("time", "temperature_c"), {
            "time": iso_times(_seconds(u.weather.column("time"))),
            "temperature_c": u.weather.column("temperature_c"),
        }),
    }
    names = []
    for name, (header, cols) in files.items():
        with open(out / f"{name}.csv", "wb") as f:
            _write_header(f, header)
            _write(f, cols)
        names.append(f"{name}.csv")
    pq.write_table(plan.ground_truth(), out / "ground_truth.parquet")
    names.append("ground_truth.parquet")
    return names


# --------------------------------------------------------------------------- drivers


def write_frames(utility: Utility, uploads: Iterable[Upload], out_dir: str | Path) -> int:
    """Write every upload as a cycle file of frames; returns the number of frames."""
    w = FrameWriter(utility, out_dir)
    for up in uploads:
        w.write(up)
    return w.frames


def write_csv(utility: Utility, uploads: Iterable[Upload], out_dir: str | Path) -> dict[str, int]:
    """Append every upload to reads/registers/events CSVs; returns row counts per file."""
    w = CsvWriter(utility, out_dir)
    try:
        for up in uploads:
            w.write(up)
    finally:
        w.close()
    return w.rows


def simulate(
    utility: Utility,
    faults: Faults | None,
    out_dir: str | Path,
    *,
    formats: Iterable[str] = ("frames",),
    progress: Callable[[Upload], None] | None = None,
) -> dict[str, object]:
    """Run the whole simulation into ``out_dir``; returns the ``utility.json`` summary.

    Parameters
    ----------
    formats : iterable of {"frames", "csv"}
        What to write for the uploads (static files and ground truth are always written).
    progress : callable, optional
        Called with each :class:`Upload` after it is written.
    """
    out = Path(out_dir)
    fmts = set(formats)
    plan = (faults or Faults()).resolve(utility)
    files = write_static(utility, plan, out)
    fw = FrameWriter(utility, out) if "frames" in fmts else None
    cw = CsvWriter(utility, out) if "csv" in fmts else None
    counts = {"reads": 0, "registers": 0, "events": 0}
    try:
        for up in iter_uploads(utility, plan):
            if fw is not None:
                fw.write(up)
            if cw is not None:
                cw.write(up)
            counts["reads"] += up.reads.num_rows
            counts["registers"] += up.registers.num_rows
            counts["events"] += up.events.num_rows
            if progress is not None:
                progress(up)
            del up  # free this cycle before the next one is built
    finally:
        if cw is not None:
            cw.close()
    if cw is not None:
        files += ["reads.csv", "registers.csv", "events.csv"]
    summary = summarise(utility, plan, counts)
    summary["formats"] = sorted(fmts)
    summary["files"] = sorted(files)
    if fw is not None:
        summary["frames"] = {"files": fw.files, "frames": fw.frames, "bytes": fw.bytes,
                             "dir": "uploads"}
    (out / "utility.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def summarise(utility: Utility, plan: FaultPlan, counts: dict[str, int]) -> dict[str, object]:
    """The ``utility.json`` summary: parameters, sizes and counts."""
    u = utility
    comm = np.bincount(u.meters.column("commodity").to_numpy(), minlength=3)
    tech = np.bincount(u.meters.column("technology").to_numpy(), minlength=3)
    cls = np.bincount(u.customer_class, minlength=3)
    kinds: dict[str, int] = {}
    for inc in plan.incidents:
        kinds[inc.kind] = kinds.get(inc.kind, 0) + 1
    return {
        "seed": u.seed, "network": u.network, "interval_s": u.interval_s,
        "start": u.start.isoformat(), "days": u.days, "utc_offset_h": u.utc_offset_h,
        "meters": u.n_meters,
        "commodity": {n: int(c) for n, c in zip(COMMODITIES, comm, strict=True)},
        "technology": {n: int(c) for n, c in zip(TECHNOLOGIES, tech, strict=True)},
        "customer_class": {n: int(c) for n, c in zip(CUSTOMER_CLASSES, cls, strict=True)},
        "two_way": int(np.sum(u.meters.column("two_way").to_numpy(zero_copy_only=False))),
        "solar": len(u.solar_idx),
        "substations": u.substations.num_rows, "feeders": u.feeders.num_rows,
        "transformers": u.transformers.num_rows, "collectors": u.collectors.num_rows,
        "cycles": u.n_cycles,
        "incidents": kinds,
        "rows": counts,
        "temperature_c": {"min": float(pc.min(u.weather.column("temperature_c")).as_py()),
                          "max": float(pc.max(u.weather.column("temperature_c")).as_py())},
    }
