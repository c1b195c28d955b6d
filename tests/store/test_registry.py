"""MeterRegistry and CollectorKeys: stable dense indexes, lookups, topology, persistence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ValidationError
from headend.model import schema as S
from headend.store import CollectorKeys, MeterRegistry, serial_of

ROOT_SRC = str(Path(__file__).resolve().parents[2] / "src")


def meters(ids: list[str], feeders: list[str | None], *, interval_s: int = 900,
           commodity: int = 0) -> pa.Table:
    n = len(ids)
    return pa.table({
        "meter_id": pa.array(ids, pa.string()),
        "commodity": pa.array([commodity] * n, pa.uint8()),
        "technology": pa.array([1] * n, pa.uint8()),
        "two_way": pa.array([True] * n),
        "collector_id": pa.array(["C1"] * n),
        "transformer_id": pa.array([None if f is None else f + "-T" for f in feeders],
                                   pa.string()),
        "feeder_id": pa.array(feeders, pa.string()),
        "substation_id": pa.array(["S1"] * n),
        "interval_s": pa.array([interval_s] * n, pa.int32()),
    })


def test_serial_of() -> None:
    ids = pa.array(["123", "0007", "abc", "", "18446744073709551615",
                    "18446744073709551616", "99999999999999999999", "12a", None])
    assert serial_of(ids).tolist() == [123, 7, 0, 0, 2**64 - 1, 0, 0, 0, 0]


def test_assignment_in_topology_order_and_stable(tmp_path: Path) -> None:
    r = MeterRegistry(tmp_path)
    idx = r.upsert(meters(["m9", "1002", "m1", "1001"], ["F2", "F1", "F2", "F1"]))
    # sorted by substation, feeder, transformer, collector, meter id
    assert idx.tolist() == [3, 1, 2, 0]
    assert r.ids(np.array([0, 1, 2, 3], np.int32)).to_pylist() == ["1001", "1002", "m1", "m9"]
    assert r.feeder_range("F1") == (0, 2) and r.feeder_range("F2") == (2, 4)
    # second load: m1 moves feeder (keeps idx 2), two new meters appended, dup row last wins
    idx2 = r.upsert(meters(["x5", "m1", "1003", "x5"], ["F1", "F1", "F3", "F3"],
                           interval_s=300))
    assert idx2.tolist() == [5, 2, 4, 5]
    t = r.table()
    assert t.schema.equals(S.REGISTRY)
    assert t.column("meter_id").to_pylist() == ["1001", "1002", "m1", "m9", "1003", "x5"]
    assert t.column("serial").to_pylist() == [1001, 1002, 0, 0, 1003, 0]
    assert t.column("feeder_id").to_pylist() == ["F1", "F1", "F1", "F2", "F3", "F3"]
    assert r.interval_s(np.array([2, 3, 5], np.int32)).tolist() == [300, 900, 300]
    assert r.commodity(np.array([0], np.int32)).tolist() == [0]
    assert r.meters_of(feeder="F1").tolist() == [0, 1, 2]
    assert r.meters_of(feeder="F3", transformer="F3-T").tolist() == [4, 5]
    assert r.feeder_of(np.array([3, 0], np.int32)).to_pylist() == ["F2", "F1"]
    assert r.substation_of(np.array([1], np.int32)).to_pylist() == ["S1"]
    assert r.feeder_range("F1") == (0, 3) and r.feeder_range("nope") is None
    with pytest.raises(ValidationError):
        r.ids(np.array([6], np.int32))
    # persisted: a new instance sees the same
    r2 = MeterRegistry(tmp_path)
    assert r2.table().equals(t)


def test_lookups(tmp_path: Path) -> None:
    r = MeterRegistry(tmp_path)
    assert r.idx_for_id(pa.array(["a"])).tolist() == [-1]
    r.upsert(meters(["500", "0500", "abc", "7"], ["F"] * 4))
    # ids 0500 and 500 share serial 500: id lookups stay exact
    assert r.idx_for_id(pa.array(["500", "0500", "abc", "7", "8", "", "00007"])).tolist() == [
        1, 0, 3, 2, -1, -1, -1]  # sorted ids: 0500, 500, 7, abc
    got = r.idx_for_serial(np.array([7, 8, 0, 2**64 - 1], np.uint64)).tolist()
    assert got == [2, -1, -1, -1]
    assert r.idx_for_serial(np.array([500], np.uint64))[0] in (0, 1)


def test_reload_when_another_process_writes(tmp_path: Path) -> None:
    r = MeterRegistry(tmp_path)
    r.upsert(meters(["1"], ["F"]))
    other = MeterRegistry(tmp_path)
    other.upsert(meters(["2"], ["F"]))
    assert r.idx_for_serial(np.array([2], np.uint64)).tolist() == [1]
    assert len(r) == 2


def test_concurrent_upserts_from_processes(tmp_path: Path) -> None:
    code = (
        "import sys, pyarrow as pa\n"
        "from pathlib import Path\n"
        "from headend.store import MeterRegistry\n"
        "k = sys.argv[2]\n"
        "ids = [f'{k}{i}' for i in range(50)]\n"
        "n = len(ids)\n"
        "t = pa.table({'meter_id': ids, 'commodity': pa.array([0]*n, pa.uint8()),\n"
        "  'technology': pa.array([0]*n, pa.uint8()), 'two_way': [False]*n,\n"
        "  'collector_id': ['c']*n, 'transformer_id': ['t']*n, 'feeder_id': ['f']*n,\n"
        "  'substation_id': ['s']*n, 'interval_s': pa.array([900]*n, pa.int32())})\n"
        "for j in range(0, n, 10):\n"
        "    MeterRegistry(Path(sys.argv[1])).upsert(t.slice(j, 10))\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT_SRC)
    ps = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), k], env=env)
          for k in "ab"]
    assert [p.wait(timeout=60) for p in ps] == [0, 0]
    t = MeterRegistry(tmp_path).table()
    assert sorted(t.column("meter_id").to_pylist()) == sorted(
        [f"{k}{i}" for k in "ab" for i in range(50)])
    assert t.column("meter_idx").to_pylist() == list(range(100))


def test_collector_keys(tmp_path: Path) -> None:
    k = CollectorKeys(tmp_path)
    assert k.get(7) is None and len(k) == 0
    k.upsert(pa.table({"collector_id": pa.array([7, 9], pa.uint32()),
                       "hmac_key": pa.array([b"k7", b"k9"], pa.binary())}))
    k.upsert(pa.table({"collector_id": pa.array([9], pa.uint32()),
                       "hmac_key": pa.array([b"new9"], pa.binary())}))
    k2 = CollectorKeys(tmp_path)
    assert (k2.get(7), k2(9), k2.get(8)) == (b"k7", b"new9", None)
    assert k2.table().to_pydict() == {"collector_id": [7, 9], "hmac_key": [b"k7", b"new9"]}


def test_intervals_declared_kept_learned_durable_and_declared_wins(tmp_path: Path) -> None:
    from headend.model.schema import INTERVALS, TS

    r = MeterRegistry(tmp_path)
    r.upsert(meters(["a", "b", "c"], ["F1"] * 3, interval_s=0))
    r.upsert(meters(["a"], ["F1"], interval_s=300))
    r.upsert(meters(["a", "b"], ["F1"] * 2, interval_s=0))  # no interval_minutes: keeps 300
    assert r.declared().column("interval_s").to_pylist() == [300, 0, 0]
    t0 = 1_704_067_200
    learned = pa.table({"meter_idx": pa.array([0, 1, 1, 1], pa.int32()),
                        "reading_type": pa.array([0, 0, 0, 0], pa.uint8()),
                        "effective_from": pa.array([t0, t0, t0 + 86_400, t0 + 90_000],
                                                   pa.int64()).cast(TS),
                        "interval_s": pa.array([3600, 900, 300, 300], pa.int32())},
                       schema=INTERVALS)
    assert r.learn_intervals(learned) == 3  # the last repeats the interval in effect
    assert r.learn_intervals(learned) == 0
    again = MeterRegistry(tmp_path)  # durable
    assert again.table().column("interval_s").to_pylist() == [300, 300, 0]
    assert again.interval_source(np.array([0, 1, 2], np.int32)).tolist() == [1, 2, 0]
    assert again.interval_s(np.array([2], np.int32)).tolist() == [900]  # basis of limits
    h = again.intervals()
    m = np.array([0, 1, 1, 2], np.int32)
    at = h.at(m, np.zeros(4, np.uint8), np.array([t0, t0, t0 + 86_400, t0], np.int64))
    assert at.tolist() == [300, 900, 300, 0]
