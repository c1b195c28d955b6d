"""Ingest: idempotence, every rejection reason, registry-driven release, durability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headend.ingest.pipeline import Ingestor
from headend.ingest.result import BaseListener
from headend.model import codes
from headend.wire.frame import FLAG_RETRANSMISSION, encode_frame

from .conftest import COLLECTOR, KEY, T0, event_frame, interval_frame

M1, M2, M3, W1 = 100000001, 100000002, 100000003, 200000001


def stored_keys(ing: Ingestor) -> list[tuple[int, int, int]]:
    t = ing.data.store.scan_reads()
    return list(zip(t.column("meter_idx").to_pylist(), t.column("reading_type").to_pylist(),
                    t.column("interval_end").cast(pa.int64()).to_pylist(), strict=True))


def test_frame_is_stored_once_across_uploads_and_compaction(ingestor: Ingestor) -> None:
    frame = interval_frame([M1, M2], 8)
    r1 = ingestor.ingest_bytes(frame, source="up1")
    assert (r1.accepted, r1.duplicate, r1.quarantined) == (16, 0, 0)
    # the same upload again, and a retransmission that overlaps half of it
    r2 = ingestor.ingest_bytes(frame, source="up2")
    assert (r2.accepted, r2.duplicate) == (0, 16)
    ingestor.data.store.compact()
    overlap = interval_frame([M1, M2], 12, seq=2, flags=FLAG_RETRANSMISSION)
    r3 = ingestor.ingest_bytes(overlap, source="up3")
    assert (r3.accepted, r3.duplicate) == (8, 16)
    keys = stored_keys(ingestor)
    assert len(keys) == len(set(keys)) == 24
    # first write wins: values of the first upload are kept
    t = ingestor.data.store.scan_reads()
    assert t.column("value").to_pylist()[:8] == [250 + (i % 7) for i in range(8)]


def test_duplicate_inside_one_upload_is_stored_once(ingestor: Ingestor) -> None:
    frame = interval_frame([M1, M1], 4)  # every key twice in the same frame
    r = ingestor.ingest_bytes(frame, source="dup")
    assert (r.accepted, r.duplicate) == (4, 4)
    assert len(stored_keys(ingestor)) == 4


def test_dedup_survives_reopen(root: Path, files: dict[str, Path]) -> None:
    with Ingestor.open(root) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
        assert ing.ingest_bytes(interval_frame([M1], 4), source="a").accepted == 4
    with Ingestor.open(root) as ing:
        r = ing.ingest_bytes(interval_frame([M1], 6), source="b")
        assert (r.accepted, r.duplicate) == (2, 4)


def test_csv_and_frames_share_one_key_space(ingestor: Ingestor, tmp_path: Path) -> None:
    ingestor.ingest_bytes(interval_frame([M1], 2), source="frame")
    csv = (
        "meter_id,reading_type,interval_end,value,quality\n"
        f"{M1},kwh_del,2026-01-01T00:15:00Z,9.999,\n"  # same key as the frame's first read
        f"{M1},kwh_del,2026-01-01T01:15:00+01:00,9.999,\n"  # 00:15Z again, written with an offset
        f"{M1},kwh_del,2026-01-01T00:45:00Z,0.251,1.2.32\n"
    )
    r = ingestor.ingest_bytes(csv.encode(), source="csv", content_type="text/csv")
    assert (r.accepted, r.duplicate, r.quarantined) == (1, 2, 0)
    t = ingestor.data.store.scan_reads()
    assert t.column("value").to_pylist() == [250, 251, 251]
    assert t.column("quality").to_pylist()[2] == codes.quality_mask("1.2.32")


def test_unknown_meter_waits_in_quarantine_until_loaded(root: Path, files: dict[str, Path],
                                                       tmp_path: Path) -> None:
    reads = tmp_path / "reads.csv"
    reads.write_text(
        "meter_id,reading_type,interval_end,value,quality\n"
        "100000009,kwh_del,2026-01-01T00:15:00Z,0.5,\n"
        f"{M1},kwh_del,2026-01-01T00:15:00Z,0.5,\n"
    )
    with Ingestor.open(root) as ing:
        r = ing.ingest_paths([reads])  # no meters known yet
        assert (r.accepted, r.quarantined) == (0, 2)
        assert r.by_reason == {"unknown_meter": 2}
        r = ing.ingest_paths([files["meters.csv"]])
        assert r.meters_loaded == 4
        assert (r.accepted, r.released) == (1, 1)
        assert ing.data.quarantine.counts() == {"unknown_meter": 1}
        more = tmp_path / "more_meters.csv"
        more.write_text(files["meters.csv"].read_text().splitlines()[0]
                        + "\n100000009,electric,rf,true,501,T9,F9,S9\n")
        r = ing.ingest_paths([more])
        assert (r.accepted, r.released) == (1, 1)
        assert ing.data.quarantine.counts() == {}
        assert ing.data.store.scan_reads().num_rows == 2


def test_files_in_any_order(root: Path, files: dict[str, Path], tmp_path: Path) -> None:
    frames = tmp_path / "up.hef"
    frames.write_bytes(interval_frame([M1, M2, M3], 4))
    with Ingestor.open(root) as ing:
        r = ing.ingest_paths([frames, files["meters.csv"], files["collectors.csv"]])
        assert (r.accepted, r.quarantined) == (12, 0)


def test_unknown_collector_frame_released_when_key_loaded(root: Path, files: dict[str, Path]
                                                          ) -> None:
    with Ingestor.open(root) as ing:
        ing.ingest_paths([files["meters.csv"]])
        r = ing.ingest_bytes(interval_frame([M1], 4), source="c")
        assert r.by_reason == {"unknown_collector": 1} and r.accepted == 0
        r = ing.ingest_paths([files["collectors.csv"]])
        assert r.accepted == 4
        assert ing.data.quarantine.counts() == {}


def test_frame_rejections(ingestor: Ingestor) -> None:
    good = interval_frame([M1], 4)
    tampered = bytearray(good)
    tampered[60] ^= 0xFF
    r = ingestor.ingest_bytes(bytes(tampered), source="tampered")
    assert r.by_reason == {"bad_hmac": 1} and r.accepted == 0
    wrong_key = interval_frame([M1], 4, key=b"x" * 32)
    assert ingestor.ingest_bytes(wrong_key, source="k").by_reason == {"bad_hmac": 1}
    assert ingestor.ingest_bytes(good[:-10], source="t").by_reason == {"truncated_frame": 1}
    garbled = bytearray(good)
    garbled[4] = 9  # version 9
    assert ingestor.ingest_bytes(bytes(garbled), source="g").by_reason == {"bad_frame": 1}
    # a truncated frame followed by a good one: the good one is still ingested
    r = ingestor.ingest_bytes(good[:100] + good, source="mixed")
    assert r.accepted == 4 and r.quarantined == 1
    q = ingestor.data.quarantine.list()
    assert set(q.column("reason").to_pylist()) == {"bad_hmac", "truncated_frame", "bad_frame"}
    assert all(p for p in q.column("payload").to_pylist())  # raw bytes kept for forensics


def test_row_rejections_in_frames(ingestor: Ingestor) -> None:
    n = 7
    serial = np.array([M1, 999, M1, M1, M1, W1, M1], dtype=np.uint64)
    t = T0 + 900 * np.arange(1, n + 1)
    t[2] = T0 + 907  # not on a whole minute
    value = np.full(n, 100, np.int32)
    value[3] = -5  # negative energy
    quality = np.zeros(n, np.uint32)
    quality[4] = 1 << 31  # not a known quality bit
    rt = np.zeros(n, np.uint8)
    rt[6] = 77  # no such reading type
    frame = encode_frame(KEY, COLLECTOR, 1, int(t.max()) + 60,
                         interval=(serial, t, value, quality, rt))
    r = ingestor.ingest_bytes(frame, source="rows")
    assert r.accepted == 1
    assert r.by_reason == {"unknown_meter": 1, "bad_timestamp": 1, "impossible_value": 1,
                           "bad_quality": 1, "wrong_commodity": 1,
                           "unknown_reading_type": 1}
    q = ingestor.data.quarantine.list().sort_by("reason")
    rows = {row["reason"]: row for row in q.to_pylist()}
    assert rows["unknown_meter"]["meter_id"] == "999"
    assert rows["impossible_value"]["value"] == "-0.005"
    assert rows["wrong_commodity"]["type"] == "kwh_del"


def test_read_from_the_future_of_its_frame_is_rejected(ingestor: Ingestor) -> None:
    t = np.array([T0 + 900, T0 + 10 * 86_400], dtype=np.int64)
    frame = encode_frame(KEY, COLLECTOR, 1, T0 + 1000,
                         interval=(np.array([M1, M1], np.uint64), t, np.array([1, 1]),
                                   np.zeros(2), np.zeros(2)))
    r = ingestor.ingest_bytes(frame, source="future")
    assert r.accepted == 1 and r.by_reason == {"bad_timestamp": 1}


def test_csv_row_rejections(ingestor: Ingestor) -> None:
    csv = (
        "meter_id,reading_type,interval_end,value,quality\n"
        f"{M1},kwh_del,2026-01-01T00:15:00Z,0.1,\n"
        f"{M1},kwh_del,2026-01-01T00:30:00,0.1,\n"  # no offset
        f"{M1},kwh_del,2026-01-01T00:45:00Z,abc,\n"
        f"{M1},kwh_xxx,2026-01-01T01:00:00Z,0.1,\n"
        f"{M1},kwh_del,2026-01-01T01:15:00Z,0.1,9.9.9\n"
        f"{M1},kwh_del,2026-01-01T01:30:00Z\n"  # too few fields
        f"{M1},kwh_del,2026-01-01T01:45:00Z,99999,\n"
    )
    r = ingestor.ingest_bytes(csv.encode(), source="rows.csv")
    assert r.accepted == 1
    assert r.by_reason == {"bad_timestamp": 1, "bad_value": 1, "unknown_reading_type": 1,
                           "bad_quality": 1, "bad_csv": 1, "impossible_value": 1}


def test_events_and_registers(ingestor: Ingestor) -> None:
    r = ingestor.ingest_bytes(event_frame([M1, M2], [T0 + 10, T0 + 20], "3.26.0.85"), source="e")
    assert r.accepted == 2
    again = ingestor.ingest_bytes(event_frame([M1, M2], [T0 + 10, T0 + 20], "3.26.0.85"),
                                  source="e2")
    assert (again.accepted, again.duplicate) == (0, 2)
    csv = ("meter_id,event_time,event_code\n"
           f"{M1},2026-01-01T00:00:10Z,3.26.0.85\n"
           f"{M1},2026-01-01T00:05:00Z,3.26.0.216\n"
           f"{M1},2026-01-01T00:06:00Z,3.26.banana\n")
    r = ingestor.ingest_bytes(csv.encode(), source="ev.csv")
    assert (r.accepted, r.duplicate, r.quarantined) == (1, 1, 1)
    assert r.by_reason == {"bad_event_code": 1}
    regs = ("meter_id,register,read_time,value\n"
            f"{M1},kwh_del_total,2026-01-02T00:00:00Z,12345.678\n"
            f"{M1},kwh_del_total,2026-01-02T00:00:00Z,12345.678\n"
            f"{M1},kvarh,2026-01-02T00:00:00Z,1\n")
    r = ingestor.ingest_bytes(regs.encode(), source="reg.csv")
    assert (r.accepted, r.duplicate, r.quarantined) == (1, 1, 1)
    t = ingestor.data.store.scan_registers()
    assert t.column("value").to_pylist() == [12_345_678]


def test_unusable_input_is_quarantined_not_dropped(ingestor: Ingestor) -> None:
    r = ingestor.ingest_bytes(b"hello,world\n1,2\n", source="junk")
    assert r.unusable and r.by_reason == {"bad_csv": 1}
    assert ingestor.data.quarantine.list().column("payload").to_pylist() == [b"hello,world\n1,2\n"]


def test_listeners_see_only_new_rows(root: Path, files: dict[str, Path]) -> None:
    seen: list[int] = []
    marks: list[int] = []

    class Spy(BaseListener):
        def on_stored(self, batch):  # type: ignore[no-untyped-def]
            seen.append(batch.reads.num_rows)

        def on_watermark(self, t: int) -> None:
            marks.append(t)

    with Ingestor.open(root, listeners=[Spy()]) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
        ing.ingest_bytes(interval_frame([M1], 4), source="a")
        ing.ingest_bytes(interval_frame([M1], 6), source="b")
    assert seen == [4, 2]
    assert marks[-1] == T0 + 6 * 900


def test_reference_data_and_directories(root: Path, files: dict[str, Path], tmp_path: Path
                                        ) -> None:
    from headend.ingest.pipeline import iter_paths
    from headend.store.reference import load_reference

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "meters.csv").write_text(files["meters.csv"].read_text())
    (folder / "ratings.csv").write_text("transformer_id,rating_kva\nT1,25\nT2,37.5\nT3,-1\n")
    (folder / "customers.csv").write_text("meter_id,customer_class\n100000001,residential\n")
    (folder / "notes.txt").write_text("not for ingest")
    paths = list(iter_paths([str(folder)]))
    assert [p.name for p in paths] == ["customers.csv", "meters.csv", "ratings.csv"]
    with Ingestor.open(root) as ing:
        r = ing.ingest_paths(paths)
        assert r.reference_loaded == {"transformers": 2, "customers": 1}
        assert r.by_reason == {"bad_value": 1}  # the negative rating
        ing.ingest_bytes(b"transformer_id,rating_kva\nT1,50\n", source="update")
    ratings = load_reference(root, "transformers")
    assert ratings.to_pydict() == {"transformer_id": ["T1", "T2"], "rating_kva": [50.0, 37.5]}
    assert (root / "transformer_ratings.csv").read_text().splitlines()[0] == \
        "transformer_id,rating_kva"


def test_failing_listener_gets_the_batch_later_from_the_outbox(root: Path,
                                                               files: dict[str, Path]) -> None:
    got: list[int] = []

    class Flaky(BaseListener):
        name = "flaky"
        down = True

        def on_stored(self, batch):  # type: ignore[no-untyped-def]
            if self.down:
                raise ConnectionError("broker down")
            got.append(batch.reads.num_rows)

        def on_watermark(self, t: int) -> None:
            pass

    flaky = Flaky()
    with Ingestor.open(root, listeners=[flaky]) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
        r = ing.ingest_bytes(interval_frame([M1], 4), source="a")
        # the data is durable, so the upload is acknowledged; the batch waits for the listener
        assert r.accepted == 4 and r.outboxed == {"flaky": 1}
        assert ing.outbox.count("flaky") == 1 and got == []
    flaky.down = False
    with Ingestor.open(root, listeners=[flaky]) as ing:  # survives a restart
        r = ing.ingest_bytes(interval_frame([M2], 2), source="b")
        assert r.outboxed == {}
        assert got == [4, 2]  # the kept batch first, in order
        assert ing.outbox.count("flaky") == 0


def test_the_outbox_is_handed_over_without_a_new_upload(root: Path,
                                                         files: dict[str, Path]) -> None:
    """``deliver_pending``: after a restart with no upload coming (serve retries it)."""
    got: list[int] = []

    class Flaky(BaseListener):
        name = "flaky"
        down = True

        def on_stored(self, batch):  # type: ignore[no-untyped-def]
            if self.down:
                raise ConnectionError("broker down")
            got.append(batch.reads.num_rows)

    flaky = Flaky()
    with Ingestor.open(root, listeners=[flaky]) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
        ing.ingest_bytes(interval_frame([M1], 4), source="a")
        ing.ingest_bytes(interval_frame([M2], 3), source="b")
        assert ing.deliver_pending() == 0 and ing.outbox.count("flaky") == 2  # still down
    flaky.down = False
    with Ingestor.open(root, listeners=[flaky]) as ing:
        assert ing.deliver_pending() == 2
        assert got == [4, 3] and ing.outbox.count("flaky") == 0
        assert ing.deliver_pending() == 0


def test_a_redelivered_upload_is_published_again(root: Path, files: dict[str, Path]) -> None:
    """A worker that died after storing an upload and before its listeners took it: the
    bus delivers the upload again, the store counts duplicates, and listeners that must
    not miss a row (``republish_on_redelivery``) get all of them; others get none."""
    got: dict[str, list[int]] = {"stream": [], "rules": []}

    class Spy(BaseListener):
        def __init__(self, name: str, again: bool) -> None:
            self.name, self.republish_on_redelivery = name, again

        def on_stored(self, batch):  # type: ignore[no-untyped-def]
            got[self.name].append(batch.reads.num_rows)

        def on_watermark(self, t: int) -> None:
            pass

    frame = interval_frame([M1], 4)
    with Ingestor.open(root) as ing:  # the worker that died: stored, never published
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
        assert ing.ingest_bytes(frame, source="a").accepted == 4
    with Ingestor.open(root, listeners=[Spy("stream", True), Spy("rules", False)]) as ing:
        r = ing.ingest_bytes(frame, source="a", redelivery=True)
        assert (r.accepted, r.duplicate) == (0, 4)
        assert got == {"stream": [4], "rules": []}
        r = ing.ingest_bytes(frame, source="a")  # a plain retransmission: nothing new
        assert r.duplicate == 4 and got == {"stream": [4], "rules": []}


def test_csv_blocks_are_stored_as_few_large_appends(
        root: Path, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV decoded in many small blocks is appended in batches of ``batch_reads``
    rows, not once per block; every row is stored once and listeners get each batch's
    new rows in key order."""
    import functools

    from headend.ingest import pipeline
    from headend.ingest.pipeline import IngestConfig, StoredBatch
    from headend.wire.csvfmt import decode_csv

    monkeypatch.setattr(pipeline, "decode_csv", functools.partial(decode_csv, block_size=4096))
    t = T0 + 900 * np.arange(1, 501)
    lines = [f"{m},kwh_del,{np.datetime_as_string(np.datetime64(int(s), 's'))}Z,0.5,"
             for s in t for m in (M2, M1)]  # time-major, as exports are
    reads_csv = tmp_path / "reads.csv"
    reads_csv.write_text("meter_id,reading_type,interval_end,value,quality\n"
                         + "\n".join(lines + lines[:10]) + "\n")  # 10 duplicates
    batches: list[pa.Table] = []

    class Spy(BaseListener):
        def on_stored(self, batch: StoredBatch) -> None:
            batches.append(batch.reads)

        def on_watermark(self, event_time_s: int) -> None:
            pass

    ing = Ingestor.open(root, listeners=[Spy()], config=IngestConfig(batch_reads=600))
    appends: list[int] = []
    real = ing.data.store.append_reads
    monkeypatch.setattr(ing.data.store, "append_reads",
                        lambda tb: appends.append(len(tb)) or real(tb))
    with ing:
        ing.ingest_paths([files["meters.csv"]])
        r = ing.ingest_paths([reads_csv])
        assert (r.accepted, r.duplicate) == (1000, 10)
        assert reads_csv.stat().st_size > 10 * 4096  # many blocks ...
        assert 2 <= len(appends) <= 3 and all(n >= 600 for n in appends[:-1])  # ... few appends
        assert sum(b.num_rows for b in batches) == 1000
        for b in batches:
            m = b.column("meter_idx").to_numpy().astype(np.int64)
            tt = b.column("interval_end").cast(pa.int64()).to_numpy()
            assert np.all(np.diff(m * 2**33 + tt) > 0)  # key order
        assert len(stored_keys(ing)) == 1000
