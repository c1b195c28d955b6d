"""QuarantineStore: durable append, list, counts, remove, compaction, unique names."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from headend.model import schema as S
from headend.store import DataDir, QuarantineStore

from ._data import T0, ts


def q(ids: list[str], reasons: list[str], t: int = T0) -> pa.Table:
    n = len(ids)
    return pa.table([pa.array(ids), ts([t] * n), pa.array(["f.csv"] * n), pa.array(["reads"] * n),
                     pa.array(reasons), pa.array(["d"] * n), pa.array(["m1"] * n),
                     pa.array(["kwh_del"] * n), pa.array(["2026-01-01T00:15:00Z"] * n),
                     pa.array(["1.5"] * n), pa.array([None] * n, pa.string()),
                     pa.array([b"\x00raw"] * n, pa.binary())], schema=S.QUARANTINE)


def test_round_trip_counts_remove_compact(tmp_path: Path) -> None:
    qs = QuarantineStore(tmp_path, compact_files=0)
    assert qs.append(q(["a", "b"], ["unknown_meter", "bad_value"], T0)) == 2
    assert qs.append(q(["c"], ["unknown_meter"], T0 + 1)) == 1
    assert qs.append(q(["d"], ["unknown_meter"], T0 - 1)) == 1
    t = qs.list()
    assert t.schema.equals(S.QUARANTINE)
    assert t.column("quarantine_id").to_pylist() == ["d", "a", "b", "c"]
    assert t.slice(1, 1).to_pylist()[0]["payload"] == b"\x00raw"
    assert qs.counts() == {"unknown_meter": 3, "bad_value": 1}
    assert qs.list("unknown_meter", limit=2).column("quarantine_id").to_pylist() == ["d", "a"]
    qs.remove(["a", "zz"])
    again = QuarantineStore(tmp_path)  # durable: another instance sees it
    assert again.list().column("quarantine_id").to_pylist() == ["d", "b", "c"]
    again.compact()
    assert [p.name[:2] for p in (tmp_path / "quarantine").iterdir()] == ["q-"]
    assert qs.list().column("quarantine_id").to_pylist() == ["d", "b", "c"]
    assert qs.counts() == {"unknown_meter": 2, "bad_value": 1}


def test_crash_leftovers(tmp_path: Path) -> None:
    qs = QuarantineStore(tmp_path, compact_files=0)
    qs.append(q(["a", "b"], ["bad_csv", "bad_csv"]))
    d = tmp_path / "quarantine"
    old = next(d.iterdir())
    # crash mid-compaction: merged file written, old file not yet deleted -> listed once
    (d / ("q-99999999999999999999-1-x.parquet")).write_bytes(old.read_bytes())
    (d / ".tmp-999999-abc-q.parquet").write_bytes(b"partial")
    qs2 = QuarantineStore(tmp_path)
    assert not (d / ".tmp-999999-abc-q.parquet").exists()
    assert qs2.list().column("quarantine_id").to_pylist() == ["a", "b"]


def test_auto_compaction_and_datadir(tmp_path: Path) -> None:
    with DataDir.open(tmp_path) as dd:
        dd.quarantine.compact_files = 4
        for i in range(10):
            dd.quarantine.append(q([f"id{i}"], ["bad_hmac"], T0 + i))
        assert len(list((tmp_path / "quarantine").iterdir())) < 4
        assert dd.quarantine.counts() == {"bad_hmac": 10}
        assert dd.registry.table().num_rows == 0 and dd.keys.get(1) is None
