"""Build the operations report: tables (CSV), plots (matplotlib PNG) and ``index.html``.

Needs matplotlib (``pip install 'headend[report]'``). Everything is read from the data
directory: current reads (after VEE), the registry, VEE versions and the rule engine's
outages (``<root>/rules/outages.jsonl``) when they exist.
"""

from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headend.analytics import shapes
from headend.analytics.engine import EmbeddedEngine
from headend.errors import ConfigError
from headend.report import tables

__all__ = ["ReportResult", "build_report"]


@dataclass(slots=True)
class ReportResult:
    """Files written, and the headline figures."""

    out: Path
    files: list[str] = field(default_factory=list)
    customer_minutes_lost: float = 0.0


def _csv(path: Path, t: pa.Table) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(t.column_names)
        cols = []
        for c in t.columns:
            if pa.types.is_timestamp(c.type):
                c = pc.strftime(c, format="%Y-%m-%dT%H:%M:%SZ")
            cols.append(pc.cast(c, pa.string()).to_pylist())
        w.writerows(("" if v is None else v for v in row) for row in zip(*cols))


def _html_table(t: pa.Table, limit: int = 20) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.column_names)
    body = []
    for row in t.slice(0, limit).to_pylist():
        cells = []
        for v in row.values():
            s = f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))
            cells.append(f"<td>{html.escape(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>{t.num_rows - limit} more rows in the CSV.</p>" if t.num_rows > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _plots() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError("the report needs matplotlib: pip install 'headend[report]'") from exc
    return plt


TABLE_FORMATS = ("csv", "parquet")


def build_report(root: Path, out: Path, *, start: int | None = None, end: int | None = None,
                 tz: str = "UTC", ratings_kva: dict[str, float] | None = None,
                 top: int = 15, table_formats: tuple[str, ...] = ("csv",)) -> ReportResult:
    """Write the report for ``[start, end)`` into ``out``.

    Parameters
    ----------
    root : Path
        Data directory.
    out : Path
        Output directory (created).
    start, end : int, optional
        Window [Unix s]; default the span of the stored reads.
    ratings_kva : dict, optional
        Transformer ratings [kVA] by transformer id.
    table_formats : tuple of str
        Files written for every table: ``csv`` and/or ``parquet`` (the Arrow types:
        timestamps stay timestamps).
    """
    bad = [f for f in table_formats if f not in TABLE_FORMATS]
    if bad or not table_formats:
        from headend.errors import ConfigError

        raise ConfigError(f"table formats must be among {', '.join(TABLE_FORMATS)}, not "
                          f"{', '.join(bad) or 'none'}")
    from headend.model import codes
    from headend.store import DataDir
    from headend.vee import current_reads

    plt = _plots()
    out.mkdir(parents=True, exist_ok=True)
    res = ReportResult(out)
    with DataDir.open(root) as dd:
        raw = dd.store.scan_reads(start=start, end=end)
        registry = dd.registry
        meters = registry.table()
        cur = current_reads(root, raw, registry, start=start, end=end)
        t = raw.column("interval_end").cast(pa.int64()).to_numpy()
        lo = start if start is not None else (int(t.min()) if len(t) else 0)
        hi = end if end is not None else (int(t.max()) + 1 if len(t) else 1)
        kwh = cur.filter(pc.equal(cur.column("reading_type"),
                                  codes.READING_TYPE_BY_NAME["kwh_del"].code))
        eng = EmbeddedEngine()
        eng.load(kwh)
        eng.close()
        m = eng.matrix
        feeder = np.asarray(registry.attribute("feeder_id", m.meter_idx).to_pylist(), dtype=object)
        trafo = np.asarray(registry.attribute("transformer_id", m.meter_idx).to_pylist(),
                           dtype=object)
    feeder = np.where(feeder == None, "", feeder)
    trafo = np.where(trafo == None, "", trafo)
    sections: list[str] = []

    def save(name: str, table: pa.Table) -> None:
        if "csv" in table_formats:
            _csv(out / f"{name}.csv", table)
            res.files.append(f"{name}.csv")
        if "parquet" in table_formats:
            import pyarrow.parquet as pq

            pq.write_table(table, out / f"{name}.parquet", compression="zstd")
            res.files.append(f"{name}.parquet")

    def figure(name: str) -> str:
        plt.tight_layout()
        plt.savefig(out / f"{name}.png", dpi=90)
        plt.close()
        res.files.append(f"{name}.png")
        return f'<img src="{name}.png" alt="{name}">'

    # feeder load curves
    fl = tables.feeder_load(m, feeder)
    save("feeder_load", fl)
    plt.figure(figsize=(9, 3.5))
    if fl.num_rows:
        names, load = shapes.group_load(m, feeder)
        x = (m.t0 + 3600 * np.arange(load.shape[1])).astype("datetime64[s]")
        for n, row in zip(names, load, strict=True):
            plt.plot(x, row, label=str(n), linewidth=0.8)
        plt.legend(fontsize=7, ncol=4)
    plt.ylabel("kW")
    plt.title("Feeder load (hourly)")
    sections.append("<h2>Feeder load</h2>" + figure("feeder_load"))

    # most loaded transformers
    tl = shapes.asset_loading(m, trafo, ratings_kva or {})
    save("transformer_loading", tl)
    plt.figure(figsize=(9, 3.5))
    head = tl.slice(0, top)
    has_rating = bool(ratings_kva)
    val = head.column("peak_loading_pct" if has_rating else "peak_kw").to_numpy()
    plt.bar(head.column("asset_id").to_pylist(), np.nan_to_num(val))
    plt.xticks(rotation=60, fontsize=7)
    plt.ylabel("peak loading [%]" if has_rating else "peak [kW]")
    if has_rating:
        plt.axhline(100, color="red", linewidth=0.8)
    plt.title("Most loaded transformers")
    sections.append("<h2>Most loaded transformers</h2>" + figure("transformer_loading")
                    + _html_table(head))

    # VEE statistics
    vs = tables.vee_statistics(cur)
    save("vee_statistics", vs)
    plt.figure(figsize=(9, 3.5))
    plt.barh(vs.column("name").to_pylist(), vs.column("reads").to_numpy())
    plt.xscale("log")
    plt.title("Reads per quality code (current values)")
    sections.append("<h2>VEE statistics</h2>" + figure("vee_statistics") + _html_table(vs, 40))

    # completeness
    cp = tables.completeness(raw, meters, lo, hi)
    save("completeness", cp)
    plt.figure(figsize=(9, 3.5))
    labels = [f"{c}/{t}" for c, t in zip(cp.column("collector_id").to_pylist(),
                                         cp.column("technology").to_pylist(), strict=True)]
    plt.bar(labels, cp.column("completeness_pct").to_numpy())
    plt.ylim(0, 105)
    plt.xticks(rotation=60, fontsize=7)
    plt.ylabel("received / expected [%]")
    plt.title("Data completeness per collector and technology")
    sections.append("<h2>Data completeness</h2>" + figure("completeness") + _html_table(cp, 40))

    # outages (from the rule engine, if it has run)
    path = root / "rules" / "outages.jsonl"
    if path.exists():
        from headend.rules.alerts import Outage, RecordBook

        ot = tables.outage_table(RecordBook(path, Outage), lo, hi)
        save("outages", ot)
        res.customer_minutes_lost = float(np.sum(ot.column("customer_minutes").to_numpy()))
        plt.figure(figsize=(9, 3.5))
        s = ot.column("start").cast(pa.int64()).to_numpy()
        e = np.where(ot.column("end").is_null().to_numpy(zero_copy_only=False), hi,
                     np.nan_to_num(ot.column("end").cast(pa.int64()).to_numpy(
                         zero_copy_only=False).astype(np.float64), nan=hi))
        ys = [f"{lv}:{d}" for lv, d in zip(ot.column("level").to_pylist(),
                                          ot.column("device_id").to_pylist(), strict=True)]
        plt.barh(ys, (e - s) / 3600.0, left=(s - lo) / 3600.0)
        plt.xlabel("hours since report start")
        plt.title("Outage timeline")
        sections.append(f"<h2>Outages</h2><p>Customer-minutes lost: "
                        f"{res.customer_minutes_lost:,.0f}</p>" + figure("outages")
                        + _html_table(ot))
    else:
        sections.append("<h2>Outages</h2><p>No outage records (the rule engine has not run on "
                        "this data directory).</p>")

    from headend.rules.alerts import iso

    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>headend report</title>"
            f"<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}"
            f"table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;"
            f"padding:2px 6px}}</style></head><body><h1>headend report</h1>"
            f"<p>{iso(lo)} to {iso(hi)} (UTC, end exclusive); time zone {html.escape(tz)}; "
            f"{len(m.meter_idx):,} electricity meters, {raw.num_rows:,} reads stored, "
            f"{cur.num_rows:,} current values.</p>" + "".join(sections) + "</body></html>")
    (out / "index.html").write_text(page, encoding="utf-8")
    res.files.append("index.html")
    return res
