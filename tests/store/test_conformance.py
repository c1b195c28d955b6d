"""Conformance suite of the ReadStore port, run over every adapter (store.base contract)."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.errors import StorageError, ValidationError
from headend.model import schema as S
from headend.store import InMemoryStore, ParquetStore, QueryStore, ReadPlan, ReadStore

from ._data import DAY, T0, events, reads, registers, rows


def reopen(s: Any) -> Any:
    if isinstance(s, ParquetStore):
        s.close()
        return ParquetStore(s.root, config=s.config)
    return s


def test_is_a_read_store(store: Any) -> None:
    assert isinstance(store, ReadStore)
    assert isinstance(store, QueryStore)
    assert isinstance(store.plan_reads(), ReadPlan)


def test_dedup_within_batch_first_wins(store: Any) -> None:
    r = store.append_reads(reads([5, 5, 6, 5], [0, 0, 0, 1], [T0 + 900] * 4, [10, 11, 12, 13]))
    assert r.new.tolist() == [True, False, True, True]
    assert (r.accepted, r.duplicate) == (3, 1)
    assert rows(store.scan_reads()) == [
        (5, 0, T0 + 900, 10, 0), (5, 1, T0 + 900, 13, 0), (6, 0, T0 + 900, 12, 0)]


def test_new_rows_in_key_order(store: Any) -> None:
    """``AppendResult.order``: the stored rows' input positions, sorted by key, across
    buckets and days, without the duplicates (listeners rely on it: no second sort)."""
    store.append_reads(reads([7], [0], [T0 + 900], [1]))
    m = [9, 7, 7, 3, 9, 3, 7]
    t = [T0 + 2 * DAY + 900, T0 + 900, T0 + 1800, T0 + 900, T0 + 900, T0 + 900, T0 + DAY]
    r = store.append_reads(reads(m, [0, 0, 0, 0, 0, 2, 0], t, [1, 2, 3, 4, 5, 6, 7]))
    assert r.new.tolist() == [True, False, True, True, True, True, True]
    assert r.order.tolist() == [3, 5, 2, 6, 4, 0]
    assert store.append_reads(reads([7], [0], [T0 + 900], [1])).order.tolist() == []


def test_rows_handed_over_are_the_stored_rows_in_key_order(store: Any) -> None:
    """``AppendResult.table``, where an adapter gives it, is ``input.take(order)``."""
    store.append_reads(reads([4], [0], [T0 + 900], [9]))
    batch = reads([6, 4, 2, 4], [0, 0, 0, 2], [T0 + 900] * 4, [1, 2, 3, 4])  # one day
    r = store.append_reads(batch)
    assert r.order.tolist() == [2, 3, 0]  # meter 4's kwh_del was stored already
    if type(store).__name__ == "ParquetStore":  # it gathers them to write one segment
        assert r.table is not None
    if r.table is not None:
        assert r.table.equals(batch.take(r.order))


def test_dedup_across_batches_compaction_and_reopen(store: Any) -> None:
    assert store.append_reads(reads([1, 2], [0, 0], [T0 + 900, T0 + 900], [1, 2])).new.tolist() \
        == [True, True]
    assert store.append_reads(reads([2, 3], [0, 0], [T0 + 900, T0 + 900], [9, 3])).new.tolist() \
        == [False, True]
    store.compact()
    assert store.append_reads(reads([1, 3, 4], [0, 0, 0], [T0 + 900] * 3, [7, 7, 4])).new.tolist() \
        == [False, False, True]
    store = reopen(store)
    try:
        r = store.append_reads(reads([1, 2, 3, 4, 5], [0] * 5, [T0 + 900] * 5, [0] * 5))
        assert r.new.tolist() == [False, False, False, False, True]
        store.compact()
        assert rows(store.scan_reads()) == [(m, 0, T0 + 900, v, 0)
                                            for m, v in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 0)]]
    finally:
        store.close()


def test_off_grid_times_and_types(store: Any) -> None:
    t = [T0 + 7, T0 + 7, T0 + 8, T0 + 86_399, T0 + 86_400]
    r = store.append_reads(reads([3, 3, 3, 3, 3], [2, 2, 2, 2, 2], t, [1, 2, 3, 4, 5]))
    assert r.new.tolist() == [True, False, True, True, True]
    assert store.append_reads(reads([3, 3], [2, 1], [T0 + 8, T0 + 8], [0, 0])).new.tolist() \
        == [False, True]
    assert rows(store.scan_reads(reading_types=np.array([2], np.uint8))) == [
        (3, 2, T0 + 7, 1, 0), (3, 2, T0 + 8, 3, 0), (3, 2, T0 + 86_399, 4, 0),
        (3, 2, T0 + 86_400, 5, 0)]


def test_values_exact(store: Any) -> None:
    q = [0, 2**32 - 1, (1 << 22) | 1]
    store.append_reads(reads([0, 1, 2], [0, 0, 0], [T0 + 300] * 3,
                             [2**31 - 1, -(2**31), 0], q))
    store.compact()
    t = store.scan_reads()
    assert t.schema.equals(S.READS)
    assert rows(t) == [(0, 0, T0 + 300, 2**31 - 1, 0), (1, 0, T0 + 300, -(2**31), 2**32 - 1),
                       (2, 0, T0 + 300, 0, (1 << 22) | 1)]


def _expected(batches: list[pa.Table]) -> list[tuple[object, ...]]:
    seen: dict[tuple[object, ...], tuple[object, ...]] = {}
    for b in batches:
        for r in rows(b):
            seen.setdefault(r[:3], r)
    return [seen[k] for k in sorted(seen)]


def test_scans_sorted_and_filtered(store: Any) -> None:
    rng = np.random.default_rng(3)
    batches = []
    for i in range(4):
        n = 400
        m = rng.integers(0, 60, n)  # several 16-meter buckets
        rt = rng.integers(0, 2, n)
        t = T0 + 900 * rng.integers(0, 3 * 96, n)  # three days
        batches.append(reads(m, rt, t, rng.integers(0, 1000, n)))
        store.append_reads(batches[-1])
        if i == 1:
            store.compact()
    exp = _expected(batches)
    assert rows(store.scan_reads()) == exp
    meters = np.array([40, 3, 17, 18, 59], np.int32)
    start, end = T0 + DAY // 2, T0 + 2 * DAY + 900
    got = store.scan_reads(meters=meters, start=start, end=end,
                           reading_types=np.array([1], np.uint8))
    assert rows(got) == [r for r in exp if r[0] in set(meters.tolist()) and r[1] == 1
                         and start <= r[2] < end]
    assert rows(store.scan_reads(meters=np.arange(16, 32, dtype=np.int32))) == [
        r for r in exp if 16 <= r[0] < 32]
    assert rows(store.scan_reads(meters=np.array([], np.int32))) == []
    hist = store.meter_history(17, 0, T0, T0 + 3 * DAY)
    assert rows(hist) == [r for r in exp if r[0] == 17 and r[1] == 0]
    day = T0 + DAY
    fs = store.feeder_interval_sum(10, 40, 1, day)
    sel = [r for r in exp if 10 <= r[0] < 40 and r[1] == 1 and day <= r[2] < day + DAY]
    sums: dict[int, list[int]] = {}
    for r in sel:
        sums.setdefault(int(r[2]), [0, 0])  # type: ignore[call-overload]
        sums[int(r[2])][0] += int(r[3])  # type: ignore[call-overload]
        sums[int(r[2])][1] += 1
    assert rows(fs) == [(t, v, c) for t, (v, c) in sorted(sums.items())]


def _fill(store: Any, seed: int) -> list[tuple[Any, ...]]:
    """Reads of 60 meters (several buckets) x 2 types x 3 days in four batches, one
    compaction between them: Parquet files and segments. Returns the stored rows."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(4):
        n = 300
        batches.append(reads(rng.integers(0, 60, n), rng.integers(0, 2, n),
                             T0 + 900 * rng.integers(1, 3 * 96, n), rng.integers(-9, 1000, n)))
        store.append_reads(batches[-1])
        if i == 1:
            store.compact()
    return _expected(batches)


#: queries of the plan_reads tests: all, meters (unsorted, repeated) and a type, a
#: window, a meter range from a time, no meter, nothing in the window
_PLANNED: list[dict[str, Any]] = [
    {},
    {"meters": np.array([40, 3, 17, 18, 59, 3], np.int32),
     "reading_types": np.array([1], np.uint8)},
    {"start": T0 + DAY // 2, "end": T0 + 2 * DAY + 900},
    {"meters": np.arange(16, 32, dtype=np.int32), "start": T0 + DAY},
    {"meters": np.array([], np.int32)},
    {"start": T0 + 9 * DAY},
]


def _collect(plan: Any) -> tuple[list[tuple[Any, ...]], int]:
    """The rows of every chunk of ``plan.run`` (sorted) and the count it returned;
    checks that each chunk is non-empty and sorted by key."""
    got: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def fn(t: pa.Table) -> None:
        r = rows(t)
        assert r and all(a[:3] < b[:3] for a, b in itertools.pairwise(r))
        with lock:
            got.extend(r)

    n = plan.run(fn)
    return sorted(got), n


@pytest.mark.parametrize("kw", _PLANNED)
def test_plan_reads_hands_over_what_scan_reads_returns(store: Any, kw: dict[str, Any]) -> None:
    _fill(store, 5)
    want = rows(store.scan_reads(**kw))
    plan = store.plan_reads(chunk_rows=64, **kw)
    got, n = _collect(plan)
    assert got == want
    assert n == len(want)
    ext = plan.extent
    if want:  # (with no row, the extent is None or a superset)
        assert ext is not None
        assert ext.meter_lo <= min(r[0] for r in want)
        assert max(r[0] for r in want) <= ext.meter_hi
        assert ext.t_lo <= min(r[2] for r in want)
        assert max(r[2] for r in want) <= ext.t_hi
        assert ext.rows >= len(want)


@pytest.mark.parametrize("kw", _PLANNED)
def test_plan_reads_run_files_in_key_order_with_columns(store: Any, kw: dict[str, Any]
                                                        ) -> None:
    _fill(store, 6)
    want = sorted((r[0], r[2], r[3]) for r in rows(store.scan_reads(**kw)))
    plan = store.plan_reads(chunk_rows=64, **kw)
    by_file: dict[int, list[pa.Table | None]] = {}
    lock = threading.Lock()

    def fn(no: int, t: pa.Table | None) -> None:
        with lock:
            by_file.setdefault(no, []).append(t)

    plan.run_files(fn, columns=["meter_idx", "interval_end", "value"])
    got = []
    files_of: dict[int, set[int]] = {}
    for no, parts in by_file.items():
        assert parts[-1] is None and None not in parts[:-1]  # the end, once, last
        tables = [t for t in parts if t is not None]
        assert all(t.column_names == ["meter_idx", "interval_end", "value"] for t in tables)
        r = [x for t in tables for x in rows(t)]
        assert [x[0] for x in r] == sorted(x[0] for x in r)  # the file's chunks in order
        got.extend(r)
        for x in r:
            files_of.setdefault(x[0], set()).add(no)
    assert sorted(got) == want
    if plan.meters_in_one_file:
        assert all(len(v) == 1 for v in files_of.values())


@pytest.mark.parametrize("kw", _PLANNED)
def test_plan_reads_run_days_rolls_the_rows_up(store: Any, kw: dict[str, Any]) -> None:
    _fill(store, 7)
    store.compact()  # rollup sidecars where the adapter writes them
    want: dict[tuple[int, int, int], list[int]] = {}
    for m, rt, t, v, _ in rows(store.scan_reads(**kw)):
        hour = (t + 3599) // 3600 - 1  # the hour in which the read ends
        w = want.setdefault((m, rt, hour // 24), [0, 0, 0])
        w[0] += v
        w[1] |= 1 << (hour % 24)
        w[2] += 1
    got: dict[tuple[int, int, int], list[int]] = {}
    lock = threading.Lock()

    def fn(d: pa.Table) -> None:
        with lock:
            for m, rt, day, v, h, n in rows(d):
                g = got.setdefault((m, rt, day), [0, 0, 0])
                g[0] += v
                g[1] |= h
                g[2] += n

    store.plan_reads(**kw).run_days(fn)
    assert got == want


@pytest.mark.parametrize("kw", _PLANNED)
def test_plan_reads_paths_and_segments_hold_every_row(store: Any, kw: dict[str, Any]
                                                      ) -> None:
    _fill(store, 8)
    want = rows(store.scan_reads(**kw))
    plan = store.plan_reads(**kw)
    got = [r for t in plan.segments() for r in rows(t)]
    meters, types = kw.get("meters"), kw.get("reading_types")
    start, end = kw.get("start"), kw.get("end")
    for path in plan.paths():  # whole files: their reader applies the query's filter
        got.extend(r for r in rows(pq.read_table(path).cast(S.READS))
                   if (meters is None or r[0] in meters.tolist())
                   and (types is None or r[1] in types.tolist())
                   and (start is None or r[2] >= start) and (end is None or r[2] < end))
    assert sorted(got) == want


def test_a_plan_is_pinned_when_it_returns(store: Any) -> None:
    """Appends and a compaction after ``plan_reads`` change nothing in the plan."""
    want = _fill(store, 9)
    plan = store.plan_reads(chunk_rows=64)
    store.append_reads(reads([61, 62], [0, 0], [T0 + 900, T0 + 1800], [1, 2]))
    store.compact()
    assert _collect(plan) == (want, len(want))
    assert len(store.scan_reads()) == len(want) + 2


def test_registers_and_events_dedup(store: Any) -> None:
    r = store.append_registers(registers([1, 1, 1, 2], [0, 0, 2, 0],
                                         [T0, T0, T0, T0 + 5], [10**12, 5, 7, 8]))
    assert r.new.tolist() == [True, False, True, True]
    store.compact()
    r = store.append_registers(registers([1, 2], [0, 0], [T0 + DAY, T0 + 5], [11, 9]))
    assert r.new.tolist() == [True, False]
    assert rows(store.scan_registers(meters=np.array([1], np.int32))) == [
        (1, 0, T0, 10**12), (1, 0, T0 + DAY, 11), (1, 2, T0, 7)]
    e = store.append_events(events([4, 4, 4, 4], [T0 + 1, T0 + 1, T0 + 1, T0 + 2], [9, 9, 3, 9]))
    assert e.new.tolist() == [True, False, True, True]
    store.compact()
    e = store.append_events(events([4, 5], [T0 + 1, T0 + 1], [3, 3]))
    assert e.new.tolist() == [False, True]
    assert rows(store.scan_events(start=T0 + 1, end=T0 + 2)) == [
        (4, T0 + 1, 3), (4, T0 + 1, 9), (5, T0 + 1, 3)]


def test_empty_and_bad_input(store: Any) -> None:
    assert store.append_reads(S.READS.empty_table()).new.tolist() == []
    with pytest.raises(StorageError):
        store.append_reads(pa.table({"meter_idx": pa.array([1], pa.int32())}))
    with pytest.raises(ValidationError):
        store.append_reads(reads([-1], [0], [T0], [0]))
    assert len(store.scan_reads()) == 0


_batch = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 2), st.integers(0, 200), st.integers(-5, 5)),
    min_size=0, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_batch, min_size=1, max_size=5), compact_after=st.integers(0, 5))
def test_matches_reference_model(tmp_path_factory: pytest.TempPathFactory,
                                 batches: list[list[tuple[int, int, int, int]]],
                                 compact_after: int) -> None:
    """Random batches (times on and off the grid, 2 days): both stores equal a dict model."""
    from .conftest import SMALL

    stores = [InMemoryStore(), ParquetStore(tmp_path_factory.mktemp("h"), config=SMALL)]
    model: dict[tuple[int, int, int], tuple[object, ...]] = {}
    try:
        for i, b in enumerate(batches):
            t = reads([x[0] for x in b], [x[1] for x in b],
                      [T0 + x[2] * 899 for x in b], [x[3] for x in b])
            exp_new = []
            for r in rows(t):
                exp_new.append(r[:3] not in model)
                model.setdefault(r[:3], r)  # type: ignore[arg-type]
            for s in stores:
                assert s.append_reads(t).new.tolist() == exp_new
                if i == compact_after:
                    s.compact()
        for s in stores:
            assert rows(s.scan_reads()) == [model[k] for k in sorted(model)]
    finally:
        for s in stores:
            s.close()
