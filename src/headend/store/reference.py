"""Reference data kept beside the store as canonical CSV: transformer ratings, customers.

Each kind is one file under the data directory, rewritten atomically on every upsert
(temp file, fsync, rename, fsync dir): ``transformer_ratings.csv``
(``transformer_id,rating_kva`` [kVA], read by the rules' overload check) and
``customers.csv`` (``meter_id,customer_class``, read by analytics). Later rows win for
the same key. Small tables (one row per transformer or meter), so they are read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from headend.store import _fs

#: kind -> (file name, key column, value column); headers as model.schema.CSV_HEADERS
REFERENCE_FILES: Final = {
    "transformers": ("transformer_ratings.csv", "transformer_id", "rating_kva"),
    "customers": ("customers.csv", "meter_id", "customer_class"),
}


def load_reference(root: Path, kind: str) -> pa.Table:
    """The stored table of ``kind`` (empty with the right columns if none)."""
    name, key, value = REFERENCE_FILES[kind]
    path = Path(root) / name
    vtype = pa.float64() if kind == "transformers" else pa.string()
    if not path.exists():
        return pa.table({key: pa.array([], pa.string()), value: pa.array([], vtype)})
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={key: pa.string(), value: vtype}))


def upsert_reference(root: Path, kind: str, table: pa.Table) -> int:
    """Merge ``table`` into the stored ``kind``; returns the rows stored afterwards."""
    name, key, value = REFERENCE_FILES[kind]
    old = load_reference(root, kind)
    new = table.select([key, value]).cast(old.schema)
    both = pa.concat_tables([old, new])
    # last occurrence of each key wins: reverse, keep the first of each key, sort
    rev = both.take(pa.array(range(both.num_rows - 1, -1, -1), pa.int64()))
    first = rev.group_by(key, use_threads=False).aggregate([([], "count_all")])
    idx = pc.index_in(first.column(key), value_set=rev.column(key))
    merged = rev.take(idx).sort_by(key)
    _fs.publish(Path(root) / name, lambda fh: _write(fh, merged))
    return int(merged.num_rows)


def _write(fh: IO[bytes], table: pa.Table) -> None:
    # header unquoted, values quoted only where RFC 4180 needs it
    fh.write((",".join(table.column_names) + "\n").encode())
    pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
