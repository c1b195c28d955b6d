import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ValidationError
from headend.model import codes
from headend.model.schema import READS, TS
from headend.store import DataDir
from headend.vee import VersionStore, current_reads, run_vee
from headend.vee.listener import VeeListener
from headend.vee.versions import COVER_METERS, COVERAGE, Coverage

from ._data import T0, series

EST_MASK = codes.ESTIMATED_MASK
SUSPECT_MASK = codes.SUSPECT_MASK
EDITED = 1 << codes.QUALITY_BY_NAME["edited"].bit
VALID = 1 << codes.QUALITY_BY_NAME["validated"].bit


def meters(interval_s):
    n = len(interval_s)
    return pa.table({
        "meter_id": [f"M{i}" for i in range(n)],
        "commodity": pa.array([0] * n, pa.uint8()), "technology": pa.array([0] * n, pa.uint8()),
        "two_way": [True] * n, "collector_id": ["C1"] * n, "transformer_id": ["T1"] * n,
        "feeder_id": ["F1"] * n, "substation_id": ["S1"] * n,
        "interval_s": pa.array(interval_s, pa.int32())})


@pytest.fixture
def root(tmp_path):
    """M0: 15-min, a 45-min gap and a 3,000 Wh spike; M1: hourly, a 3-hour gap."""
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900, 3600]))
        v0 = 100 + np.arange(96) % 5
        v0[50] = 3000
        a = series(0, T0 + 900, 900, v0, missing=[10, 11, 12])
        b = series(1, T0 + 3600, 3600, 200 + np.arange(24) % 3, missing=[5, 6, 7])
        dd.store.append_reads(pa.concat_tables([a, b]))
    return tmp_path


def scan(root):
    with DataDir.open(root) as dd:
        return dd.store.scan_reads()


def test_run_vee_fills_every_expected_interval_and_keeps_originals(root):
    summary = run_vee(root)
    assert (summary.reads, summary.expected, summary.estimated) == (114, 120, 6)
    assert summary.rules["spike"] == 1 and summary.suspect == 1
    raw = scan(root)
    assert raw.num_rows == 114  # the store is never modified
    cur = current_reads(root, raw)
    assert cur.schema.equals(READS)
    assert cur.num_rows == 120
    q = cur.column("quality").to_numpy()
    m = cur.column("meter_idx").to_numpy()
    t = cur.column("interval_end").cast(pa.int64()).to_numpy()
    # meter 0: gap of 3 quarter hours interpolated between 104 and 103 (ties to even)
    gap = (m == 0) & np.isin(t, T0 + 900 * np.array([11, 12, 13]))
    np.testing.assert_array_equal(cur.column("value").to_numpy()[gap], [104, 104, 103])
    assert ((q[gap] & EST_MASK) != 0).all()
    # meter 1: 3 hours missing -> estimated (interpolation fallback, no like day)
    assert (((q & EST_MASK) != 0) & (m == 1)).sum() == 3
    spike = (m == 0) & (t == T0 + 900 * 51)
    assert (q[spike] & SUSPECT_MASK) != 0 and cur.column("value").to_numpy()[spike] == [3000]
    others = ((q & (EST_MASK | SUSPECT_MASK)) == 0)
    assert ((q[others] & VALID) != 0).all()
    # every key is unique and sorted
    k = m.astype(np.int64) * 10**10 + t
    assert (np.diff(k) > 0).all()


def test_second_run_writes_nothing(root):
    # 6 estimates and 1 suspect read; the 113 reads that merely passed are covered
    assert run_vee(root).versions_written == 7
    assert run_vee(root).versions_written == 0


def test_edit_keeps_every_version_with_author_and_reason(root):
    run_vee(root)
    vs = VersionStore(root)
    t_spike = T0 + 900 * 51
    when = dt.datetime(2024, 2, 1, 9, 0, tzinfo=dt.UTC)
    assert vs.edit(0, 0, t_spike, 104, reason="spike confirmed false by field visit",
                   author="alice", created_at=when) == 2
    hist = vs.versions(meters=np.array([0], np.int32), start=t_spike, end=t_spike + 1)
    rows = hist.to_pylist()
    assert [(r["version"], r["value"], r["method"], r["author"]) for r in rows] == [
        (1, 3000, "validate", "vee"), (2, 104, "edit", "alice")]
    assert rows[1]["reason"] == "spike confirmed false by field visit"
    assert rows[1]["created_at"] == when and rows[1]["quality"] == EDITED
    # original (version 0) is still the stored read
    raw = scan(root)
    orig = raw.filter(pa.compute.equal(raw.column("interval_end").cast(pa.int64()), t_spike))
    assert orig.column("value").to_pylist() == [3000]
    cur = current_reads(root, raw)
    edited = cur.filter(pa.compute.equal(cur.column("interval_end").cast(pa.int64()), t_spike))
    assert edited.column("value").to_pylist() == [104]
    # VEE never overrides a manual edit
    assert run_vee(root).versions_written == 0
    assert VersionStore(root).latest(meters=np.array([0], np.int32), start=t_spike,
                                     end=t_spike + 1).column("value").to_pylist() == [104]


def test_edit_needs_reason_and_author(tmp_path):
    with pytest.raises(ValidationError):
        VersionStore(tmp_path).edit(0, 0, T0, 1, reason=" ", author="bob")
    with pytest.raises(ValidationError):
        VersionStore(tmp_path).edit(0, 0, T0, 1, reason="why", author="")


def test_late_read_replaces_an_estimate(root):
    run_vee(root)
    with DataDir.open(root) as dd:
        dd.store.append_reads(series(0, T0 + 900 * 12, 900, [777]))
    # the read replaces its estimate; both neighbours are re-interpolated towards it
    assert run_vee(root).versions_written == 3
    cur = current_reads(root, scan(root))
    m = cur.column("meter_idx").to_numpy()
    t = cur.column("interval_end").cast(pa.int64()).to_numpy()
    sel = (m == 0) & np.isin(t, T0 + 900 * np.array([11, 12, 13]))
    assert cur.column("value").to_numpy()[sel].tolist() == [440, 777, 440]
    assert ((cur.column("quality").to_numpy()[sel] & EST_MASK) != 0).tolist() == [
        True, False, True]


def test_current_reads_window_adds_estimates_inside_it_only(root):
    run_vee(root)
    raw = scan(root)
    lo, hi = T0 + 900 * 12, T0 + 900 * 20
    win = raw.filter(pa.compute.and_(
        pa.compute.greater_equal(raw.column("interval_end").cast(pa.int64()), lo),
        pa.compute.less(raw.column("interval_end").cast(pa.int64()), hi)))
    cur = current_reads(root, win, start=lo, end=hi)
    t = cur.column("interval_end").cast(pa.int64()).to_numpy()
    assert t.min() >= lo and t.max() < hi
    # meter 0: 8 intervals in the window, the estimated one (ending T0 + 13 x 900 s) included
    m0 = cur.filter(pa.compute.equal(cur.column("meter_idx"), 0))
    assert m0.num_rows == 8
    assert (m0.column("quality").to_numpy()[0] & EST_MASK) != 0


def test_current_reads_without_versions_is_the_raw_scan(tmp_path):
    raw = series(0, T0 + 900, 900, [1, 2, 3])
    assert current_reads(tmp_path, raw) is raw


def test_listener_runs_vee_after_ingest(root):
    class Batch:
        reads = series(0, T0 + 900 * 12, 900, [555])

    lis = VeeListener(root)
    with DataDir.open(root) as dd:
        dd.store.append_reads(Batch.reads)
    lis.on_stored(Batch())
    lis.on_watermark(T0 + 900 * 12)  # 3 hours of event time: VEE waits
    assert lis.last is None
    lis.close()  # the ingestor closes: VEE on what waits
    assert lis.last is not None and lis.last.estimated == 2  # the two still missing
    cur = current_reads(root, scan(root))
    t = cur.column("interval_end").cast(pa.int64()).to_numpy()
    m = cur.column("meter_idx").to_numpy()
    assert cur.column("value").to_numpy()[(m == 0) & (t == T0 + 900 * 12)].tolist() == [555]


def test_compact_merges_files_and_keeps_every_version(root):
    run_vee(root)
    vs = VersionStore(root)
    vs.edit(0, 0, T0 + 900, 1, reason="r", author="a")
    before = vs.versions()
    assert len(vs._files()) == 2
    assert vs.compact() == 2
    assert len(vs._files()) == 1
    assert vs.versions().equals(before)
    # a crash between publishing the merged file and removing the parts: no duplicates
    import shutil

    only = vs._files()[0]
    shutil.copy(only, only.replace("part-", "part-0"))
    assert vs.versions().equals(before)


def _store_and_listen(root, new):
    """Store ``new`` as ingest does, then hand it to a VEE listener."""

    class Batch:
        reads = new

    with DataDir.open(root) as dd:
        dd.store.append_reads(new)
    lis = VeeListener(root)
    lis.on_stored(Batch())
    lis.close()
    return lis


def _state(root, batches):
    with DataDir.open(root) as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
        for b in batches:
            dd.store.append_reads(b)


def test_listener_computes_what_run_vee_computes_for_its_window(tmp_path):
    """Edges in the store, reads stored earlier inside the new span, a long gap (like
    days from the lookback), a suspect read: the listener, working from the batch in
    memory, writes exactly the versions run_vee writes for the same window."""
    rng = np.random.default_rng(7)
    day = 86_400
    old = [series(0, T0 + 900, 900, 100 + rng.integers(0, 50, 96 * 10)),
           series(1, T0 + 3600, 3600, 300 + rng.integers(0, 80, 24 * 10)),
           series(2, T0 + 10 * day - 4 * 3600 + 900, 900, 50 + rng.integers(0, 9, 16)),
           series(0, T0 + 11 * day + 900 * 30, 900, [120, 130])]  # stored inside the span
    v0 = 100 + rng.integers(0, 50, 96)
    v0[40] = 9000
    new = pa.concat_tables([
        series(0, T0 + 10 * day + 900, 900, v0, missing=[5, 6, *range(40, 46)]),
        series(0, T0 + 11 * day + 900, 900, 100 + rng.integers(0, 50, 96),
               missing=[29, 30, *range(50, 70)]),
        series(1, T0 + 10 * day + 3600, 3600, 300 + rng.integers(0, 80, 48), missing=[3]),
        series(2, T0 + 10 * day + 900, 900, 50 + rng.integers(0, 9, 150), missing=[70])])
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        _state(root, old)
        run_vee(root)

    lis = _store_and_listen(a, new)
    with DataDir.open(b) as dd:
        dd.store.append_reads(new)
    t = new.column("interval_end").cast(pa.int64()).to_numpy()
    s = run_vee(b, start=int(t.min()) - day, end=int(t.max()) + 1 + day,
                meters=np.array([0, 1, 2], np.int32))
    assert lis.last is not None
    assert lis.last.versions_written == s.versions_written > 0
    assert lis.last.estimated == s.estimated and s.methods["like_day"] > 0
    cols = ["meter_idx", "reading_type", "interval_end", "version", "value", "quality", "method"]
    assert VersionStore(a).latest().select(cols).equals(VersionStore(b).latest().select(cols))
    assert current_reads(a, scan(a)).equals(current_reads(b, scan(b)))


def test_listener_leaves_other_reading_types_of_the_batch_meters_alone(tmp_path):
    """The store holds kwh_rec of meter 0 over the whole span; the batch brings its
    kwh_del only: the edges of kwh_rec must not make its stored reads look missing."""
    day = 86_400
    rec = series(0, T0 + 900, 900, [5] * 96 * 4, rt=1)
    _state(tmp_path, [rec, series(0, T0 + 900, 900, [100] * 96)])
    new = series(0, T0 + 2 * day + 900, 900, [100] * 96, missing=[10])

    _store_and_listen(tmp_path, new)
    cur = current_reads(tmp_path, scan(tmp_path))
    est = cur.filter(pa.array((cur.column("quality").to_numpy() & EST_MASK) != 0))
    # the hole of day 3, and day 2 between the stored and the new kwh_del reads
    assert set(est.column("reading_type").to_pylist()) == {0}
    assert est.num_rows == 1 + 96


def _spans(rows):
    """COVERAGE rows (meter, reading type, start, end), times as seconds after T0."""
    return pa.table({"meter_idx": pa.array([r[0] for r in rows], pa.int32()),
                     "reading_type": pa.array([r[1] for r in rows], pa.uint8()),
                     "start": pa.array([T0 + r[2] for r in rows], pa.int64()).cast(TS),
                     "end": pa.array([T0 + r[3] for r in rows], pa.int64()).cast(TS)},
                    schema=COVERAGE)


def test_coverage_files_per_meter_range_and_the_single_file_before(tmp_path):
    """The single coverage file of the layout before is read, then split into a file
    per ``COVER_METERS`` meters at the next add; an add rewrites only its meters' files
    and spans merge per key across the old and the new."""
    import pyarrow.parquet as pq

    far = COVER_METERS + 3  # another file
    (tmp_path / "vee").mkdir()
    pq.write_table(_spans([(5, 0, 100, 200), (far, 1, 0, 50)]),
                   tmp_path / "vee" / "coverage.parquet")
    cov = Coverage(tmp_path)
    assert cov.exists()
    q = np.array([5, 5, far], np.int32), np.array([0, 0, 1], np.uint8)
    assert cov.covered(*q, T0 + np.array([150, 200, 49])).tolist() == [True, False, True]
    cov.add(_spans([(5, 0, 200, 300), (7, 0, 0, 10)]))
    assert not (tmp_path / "vee" / "coverage.parquet").exists()
    files = sorted(p.name for p in (tmp_path / "vee" / "coverage").iterdir())
    assert files == ["m=000000.parquet", "m=000001.parquet"]
    assert cov.table().equals(_spans([(5, 0, 100, 300), (7, 0, 0, 10), (far, 1, 0, 50)]))
    before = (tmp_path / "vee" / "coverage" / "m=000001.parquet").stat().st_mtime_ns
    cov.add(_spans([(6, 2, 0, 10)]))  # the other file is left alone
    assert (tmp_path / "vee" / "coverage" / "m=000001.parquet").stat().st_mtime_ns == before
    assert cov.covered(*q, T0 + np.array([150, 299, 49])).tolist() == [True, True, True]
    assert cov.table(np.array([far], np.int32)).num_rows == 1
