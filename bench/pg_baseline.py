"""The PostgreSQL baseline: COPY interval reads into a (meter, reading type, interval end)-keyed table.

This is what utilities do today (one relational box); the ingest benchmark compares
headend against it on the same reads, machine and run. Connects to the local
PostgreSQL (``HEADEND_PG_DSN``, default ``host=127.0.0.1 dbname=test user=postgres``).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

DSN = os.environ.get("HEADEND_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")

DDL = """
DROP TABLE IF EXISTS bench_interval_read;
CREATE TABLE bench_interval_read (
    meter_id     integer     NOT NULL,
    reading_type smallint    NOT NULL,
    interval_end timestamptz NOT NULL,
    value        integer     NOT NULL,
    quality      integer     NOT NULL,
    PRIMARY KEY (meter_id, reading_type, interval_end)
);
"""


@dataclass
class PgResult:
    rows: int
    seconds: float
    rows_per_s: float
    bytes_per_read: float
    server_version: str


def reachable() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    try:
        import psycopg

        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _csv_chunks(reads: pa.Table, chunk_rows: int = 1_000_000) -> list[bytes]:
    """The reads as headerless CSV (interval_end as epoch-based timestamptz text)."""
    out = []
    for off in range(0, reads.num_rows, chunk_rows):
        t = reads.slice(off, chunk_rows)
        ts = pc.strftime(t.column("interval_end"), format="%Y-%m-%d %H:%M:%S+00")
        t2 = pa.table({
            "meter_id": t.column("meter_idx"),
            "reading_type": t.column("reading_type").cast(pa.int16()),
            "interval_end": ts,
            "value": t.column("value"),
            "quality": t.column("quality").cast(pa.int64()),
        })
        buf = io.BytesIO()
        pacsv.write_csv(t2, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
        out.append(buf.getvalue())
    return out


def copy_reads(reads: pa.Table) -> PgResult:
    """COPY ``reads`` (model.schema.READS) into a fresh keyed table; time the load.

    The CSV text is prepared before the clock starts, so the figure is PostgreSQL's
    parse + insert + primary-key maintenance + commit, as a bulk loader would see it.
    """
    import psycopg

    chunks = _csv_chunks(reads)
    with psycopg.connect(DSN) as conn:
        version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
        conn.execute(DDL)
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            "COPY bench_interval_read FROM STDIN (FORMAT csv)"
        ) as copy:
            for c in chunks:
                copy.write(c)
        conn.commit()
        seconds = time.perf_counter() - t0
        size = conn.execute(
            "select pg_total_relation_size('bench_interval_read')"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DROP TABLE bench_interval_read")
        conn.commit()
    return PgResult(reads.num_rows, seconds, reads.num_rows / seconds,
                    size / max(reads.num_rows, 1), str(version))
