"""The VEE listener on the live path: uploads one by one, the delay, a stopped process."""

import os

import numpy as np
import pyarrow as pa
import pytest

from headend.store import DataDir
from headend.vee import VersionStore, current_reads
from headend.vee.listener import DELAY_S, VeeListener, meter_chunks
from headend.vee.versions import Coverage

from ._data import T0, series
from .test_versions import meters, scan

HOUR = 3600
#: the fields of a version that say what the current value is
COLS = ["meter_idx", "reading_type", "interval_end", "value", "quality", "method"]


def _day() -> pa.Table:
    """A day of 3 meters: M0 15-min (a spike, a long run of zeros, an unfilled 45-min
    gap), M1 hourly (an unfilled 3-hour gap), M2 15-min (a 1-hour gap across upload
    boundaries, filled later by a late upload); sorted by key as the store hands it on."""
    rng = np.random.default_rng(11)
    v0 = 100 + rng.integers(0, 40, 96)
    v0[20] = 9000  # spike
    v0[60:70] = 0
    return pa.concat_tables([
        series(0, T0 + 900, 900, v0, missing=[40, 41, 42]),
        series(1, T0 + HOUR, HOUR, 300 + rng.integers(0, 80, 24), missing=[9, 10, 11]),
        series(2, T0 + 900, 900, 50 + rng.integers(0, 9, 96))])


LATE = range(14, 18)  # M2's intervals ending 03:45 .. 04:30: uploads 3 and 4, late


def _uploads(day: pa.Table) -> list[pa.Table]:
    """Hourly uploads of the reads of the hour ending at the upload, M2's ``LATE``
    reads held back until the upload at 10:00."""
    t = day.column("interval_end").cast(pa.int64()).to_numpy()
    m = day.column("meter_idx").to_numpy()
    late = (m == 2) & np.isin((t - T0) // 900 - 1, list(LATE))
    out = []
    for h in range(24):
        sel = (t > T0 + h * HOUR) & (t <= T0 + (h + 1) * HOUR) & ~late
        if h == 9:
            sel |= late
        out.append(day.filter(pa.array(sel)))
    return out


def _ingest(root, uploads, **kw) -> VeeListener:
    """Store each upload and hand it to one listener, as one ingest call each."""

    class Batch:
        registers = None

        def __init__(self, reads: pa.Table) -> None:
            self.reads = reads

    with DataDir.open(root) as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
    lis = VeeListener(root, **kw)
    mark = 0
    for up in uploads:
        with DataDir.open(root) as dd:
            dd.store.append_reads(up)
        srt = up.sort_by([("meter_idx", "ascending"), ("reading_type", "ascending"),
                          ("interval_end", "ascending")])
        lis.on_stored(Batch(srt))
        mark = max(mark, int(up.column("interval_end").cast(pa.int64()).to_numpy().max()))
        lis.on_watermark(mark)
    lis.close()
    return lis


@pytest.mark.parametrize("delay_s", [0, HOUR, DELAY_S])
def test_uploads_one_by_one_give_what_one_file_gives(tmp_path, delay_s):
    """A day in hourly uploads (VEE after every upload, every few, or at the end) ends
    with the same current reads as the day in one file, the late upload included; the
    current versions agree except that the uploads leave a version (a plain validated
    read) where a late read replaced an estimate."""
    day = _day()
    one = _ingest(tmp_path / "one", [day], delay_s=delay_s)
    assert one.last is not None and one.last.suspect > 0
    by_upload = _ingest(tmp_path / "cyc", _uploads(day), delay_s=delay_s)
    assert by_upload.last is not None
    a, b = tmp_path / "one", tmp_path / "cyc"
    cur_a, cur_b = current_reads(a, scan(a)), current_reads(b, scan(b))
    assert cur_a.num_rows == 96 * 2 + 24
    assert cur_a.equals(cur_b)
    va = VersionStore(a).latest().select(COLS)
    vb = VersionStore(b).latest().select(COLS)
    mb = vb.column("meter_idx").to_numpy()
    tb = vb.column("interval_end").cast(pa.int64()).to_numpy()
    replaced = (mb == 2) & np.isin((tb - T0) // 900 - 1, list(LATE))
    assert set(vb.filter(pa.array(replaced)).column("method").to_pylist()) == {"validate"}
    assert vb.filter(pa.array(~replaced)).equals(va)


def test_vee_waits_for_the_delay_of_event_time(tmp_path):
    """Uploads within ``delay_s`` of the first read waiting share one VEE run."""
    ups = _uploads(_day())

    class Batch:
        registers = None
        reads = ups[0]

    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
        dd.store.append_reads(ups[0])
    lis = VeeListener(tmp_path, delay_s=2 * HOUR)
    lis.on_stored(Batch())
    lis.on_watermark(T0 + 2 * HOUR)  # first read waiting ends at T0 + 900
    assert lis.last is None
    assert len(list((tmp_path / "vee").glob("pending-*"))) == 1
    lis.on_watermark(T0 + 900 + 2 * HOUR)
    assert lis.last is not None and lis.last.reads > 0
    assert not list((tmp_path / "vee").glob("pending-*"))


def test_a_stopped_listener_leaves_its_reads_to_the_next(tmp_path):
    """A process stops with reads waiting (no close): the next listener to flush on the
    data directory runs VEE over them; a living listener's marker is left alone."""
    day = _day()
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
        dd.store.append_reads(day)

    class Batch:
        registers = None
        reads = day

    dead = VeeListener(tmp_path)
    dead.on_stored(Batch())
    marker = dead._mark.path
    assert marker.read_text() == str(T0 + 900)
    os.close(dead._mark._fd)  # the process is gone: its lock with it
    alive = VeeListener(tmp_path)
    alive.on_stored(Batch())
    nxt = VeeListener(tmp_path)
    nxt.close()
    assert not marker.exists() and alive._mark.path.exists()
    est = current_reads(tmp_path, scan(tmp_path))
    assert est.num_rows == 96 * 2 + 24  # the gaps of M0 and M1 estimated
    ref = tmp_path / "ref"
    _ingest(ref, [day])
    assert est.equals(current_reads(ref, scan(ref)))
    alive.close()


def test_late_data_days_old_gets_a_run_of_its_own(tmp_path):
    """Reads waiting for their run and a late upload ten days older: two VEE runs, each
    over its own window (what two ingest calls, one each, give), not one over 11 days."""
    day = _day()
    shift = 10 * 86_400
    t = day.column("interval_end").cast(pa.int64()).to_numpy()
    old = day.set_column(2, day.schema.field(2), pa.array(t - shift).cast(day.schema.field(2).type))

    class Batch:
        registers = None

        def __init__(self, reads: pa.Table) -> None:
            self.reads = reads

    for root in (tmp_path / "a", tmp_path / "b"):
        with DataDir.open(root) as dd:
            dd.registry.upsert(meters([900, 3600, 900]))
            dd.store.append_reads(pa.concat_tables([day, old]))
    both = VeeListener(tmp_path / "a")
    both.on_stored(Batch(day))
    both.on_stored(Batch(old))
    both.close()
    for part in (old, day):  # one listener call each, the old behaviour
        one = VeeListener(tmp_path / "b", delay_s=0)
        one.on_stored(Batch(part))
        one.close()
    assert both.last is not None and both.last.reads == 2 * day.num_rows
    a, b = tmp_path / "a", tmp_path / "b"
    assert current_reads(a, scan(a)).equals(current_reads(b, scan(b)))
    assert VersionStore(a).latest().select(COLS).equals(VersionStore(b).latest().select(COLS))
    spans = [Coverage(r).table().sort_by(
        [("meter_idx", "ascending"), ("reading_type", "ascending"), ("start", "ascending")])
        for r in (a, b)]
    assert spans[0].num_rows == 2 * 3 and spans[0].equals(spans[1])  # two windows a key


@pytest.mark.parametrize(("chunk_meters", "sink_rows"), [(1, 10**6), (2, 10**6), (1, 1)])
def test_a_run_in_meter_chunks_equals_one_chunk(tmp_path, monkeypatch, chunk_meters,
                                                sink_rows):
    """The same uploads with a run in chunks of 1 or 2 meters (meter 1, hourly with a
    gap, ends one chunk or starts the next) and in one chunk: the same versions,
    coverage, current reads and counts; also when every chunk's versions and coverage
    are written at once (``SINK_ROWS`` = 1) rather than once a run."""
    ups = _uploads(_day())
    one = _ingest(tmp_path / "one", ups, delay_s=DELAY_S, chunk_meters=10_000)
    monkeypatch.setattr("headend.vee.run.SINK_ROWS", sink_rows)
    cut = _ingest(tmp_path / "cut", ups, delay_s=DELAY_S, chunk_meters=chunk_meters)
    assert one.last is not None and cut.last is not None
    assert one.last.as_dict() == cut.last.as_dict()
    a, b = tmp_path / "one", tmp_path / "cut"
    assert current_reads(a, scan(a)).equals(current_reads(b, scan(b)))
    va = VersionStore(a).versions().select(["meter_idx", "reading_type", "interval_end",
                                            "version", "value", "quality", "method"])
    vb = VersionStore(b).versions().select(va.column_names)
    assert va.num_rows > 0 and va.equals(vb)
    assert Coverage(a).table().equals(Coverage(b).table())


def test_meter_chunks_stay_within_a_store_bucket():
    """Chunks of at most ``chunk_meters``, cut at bucket edges, every meter once."""
    ms = np.r_[np.arange(65_530, 65_540), np.arange(200_000, 200_003)].astype(np.int32)
    chunks = meter_chunks(ms, 4)
    assert [c.tolist() for c in chunks] == [
        [65_530, 65_531, 65_532], [65_533, 65_534, 65_535], [65_536, 65_537, 65_538, 65_539],
        [200_000, 200_001, 200_002]]
    assert meter_chunks(np.array([], np.int32), 4) == []


@pytest.mark.parametrize("share", ["data", "registry"])
def test_a_listener_on_the_ingestors_data_directory_gives_the_same(tmp_path, share):
    """Runs on the ingestor's open ``DataDir`` (``data=``) or its meter registry
    (``registry=``) write what runs that open the data directory themselves write."""
    day = _day()

    class Batch:
        registers = None

        def __init__(self, reads: pa.Table) -> None:
            self.reads = reads

    ref = _ingest(tmp_path / "ref", _uploads(day))
    with DataDir.open(tmp_path / "own") as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
        lis = VeeListener(tmp_path / "own", **{share: dd if share == "data" else dd.registry})
        for up in _uploads(day):
            dd.store.append_reads(up)
            lis.on_stored(Batch(up.sort_by([("meter_idx", "ascending"),
                                             ("reading_type", "ascending"),
                                             ("interval_end", "ascending")])))
            lis.on_watermark(int(up.column("interval_end").cast(pa.int64()).to_numpy().max()))
        lis.close()
    assert ref.last is not None and lis.last is not None
    assert ref.last.as_dict() == lis.last.as_dict()
    a, b = tmp_path / "ref", tmp_path / "own"
    assert current_reads(a, scan(a)).equals(current_reads(b, scan(b)))
    assert VersionStore(a).latest().select(COLS).equals(VersionStore(b).latest().select(COLS))


def test_the_default_listeners_vee_runs_do_not_load_the_meter_registry_again(tmp_path,
                                                                             monkeypatch):
    """``headend ingest``'s VEE listener takes the intervals from the ingestor's
    registry: a run opens a store of its own, not another copy of the registry (0.6 s
    and 180 MB per 400,000 meters)."""
    from headend.ingest.hooks import open_ingestor
    from headend.store.registry import MeterRegistry

    uploads = _uploads(_day())
    with DataDir.open(tmp_path) as dd:
        dd.registry.upsert(meters([900, 3600, 900]))
        for up in uploads:
            dd.store.append_reads(up)
    loads = []
    real = MeterRegistry._load
    monkeypatch.setattr(MeterRegistry, "_load", lambda self, t: (loads.append(1), real(self, t)))
    with open_ingestor(tmp_path, rules=False) as ing:
        (vee,) = [lis for lis in ing.listeners if isinstance(lis, VeeListener)]
        ing.data.registry.intervals()  # the ingestor's own registry, loaded once
        before = len(loads)
        for up in uploads:
            vee.on_stored(type("Batch", (), {"reads": up, "registers": None})())
        vee.flush()
    assert vee.last is not None and vee.last.reads > 0
    assert len(loads) == before
