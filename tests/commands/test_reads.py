"""On-demand reads tied to their command (issue 12, point 2): the reads of a meter with
a read command sent or delivered are recorded on it, through ``headend ingest`` of
frames (with the responses in a frame section) and of CSV, and shown by ``command
status --json`` and ``export commands``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.commands import ReadsBrought, open_command_store
from headend.commands.reads import OpenReads, reads_brought
from headend.model import schema
from headend.wire.frame import encode_frame
from headend.wire.responses import encode_responses_section

_register()
runner = CliRunner()

KEY = bytes(range(32))
COLLECTOR = 501
T0 = 1_767_600_000  # 2026-01-05T08:00:00Z
M1, M2, M3 = 100000001, 100000002, 100000003
METERS = ("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
          "substation_id,interval_minutes\n"
          + "".join(f"{m},electric,rf,true,{COLLECTOR},T1,F1,S1,15\n" for m in (M1, M2, M3)))
COLLECTORS = f"collector_id,hmac_key\n{COLLECTOR},{KEY.hex()}\n"


def cli(*args: str, code: int = 0) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, (args, res.stdout, res.stderr)
    return res.stdout


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "collectors.csv").write_text(COLLECTORS)
    d = tmp_path / "data"
    cli("ingest", "--data", str(d), str(tmp_path / "collectors.csv"),
        str(tmp_path / "meters.csv"), "--no-vee", "--no-rules")
    return d


def _send_read(data: Path, cid: str, meter: int, *, sent: bool = True) -> None:
    cli("command", "send", "read", "--meter", str(meter), "--id", cid, "--data", str(data))
    if sent:  # what serve's downlink does when it hands the command over
        store = open_command_store(data)
        store.transition(cid, "sent", actor="headend", at_ms=(T0 + 1) * 1000)
        store.close()


def _frame(seq: int, meters: dict[int, int], *, registers: tuple[int, ...] = (),
           responses: list[tuple[str, int, str]] = (), start: int = T0) -> bytes:
    """``meters``: serial -> number of 15-minute interval reads ending after ``start``."""
    s = np.concatenate([np.full(n, m, np.uint64) for m, n in meters.items()] or [
        np.empty(0, np.uint64)])
    t = np.concatenate([start + 900 * np.arange(1, n + 1) for n in meters.values()] or [
        np.empty(0, np.int64)])
    reg = None
    if registers:
        reg = (np.array(registers, np.uint64), np.full(len(registers), 12_345),
               np.full(len(registers), start + 1_800), np.zeros(len(registers), np.uint8))
    sec = b""
    if responses:
        sec = encode_responses_section([r[0] for r in responses], [str(r[1]) for r in responses],
                                       [r[2] for r in responses],
                                       [(start + 3_600) * 1000] * len(responses))
    return encode_frame(KEY, COLLECTOR, seq, start + 7_200,
                        interval=(s, t, np.full(len(s), 250), np.zeros(len(s), np.uint32),
                                  np.zeros(len(s), np.uint8)),
                        register=reg, sections=sec)


def _ingest(data: Path, path: Path, body: bytes | str, *, code: int = 0) -> str:
    if isinstance(body, str):
        path.write_text(body)
    else:
        path.write_bytes(body)
    return cli("ingest", "--data", str(data), str(path), "--no-vee", "--no-rules", code=code)


def _status(data: Path, cid: str) -> dict[str, object]:
    out: dict[str, object] = json.loads(cli("command", "status", cid, "--json", "--data",
                                            str(data)))
    return out


def test_a_frame_with_reads_and_the_completed_response_in_its_section(
        tmp_path: Path, data: Path) -> None:
    _send_read(data, "od-1", M1)
    _send_read(data, "od-q", M3, sent=False)  # still queued: takes no reads
    f = tmp_path / "up.hef"
    _ingest(data, f, _frame(1, {M1: 4, M2: 6, M3: 2}, registers=(M1, M2),
                            responses=[("od-1", M1, "completed")]))
    got = _status(data, "od-1")
    assert (got["state"], got["reason"]) == ("completed", None)
    assert got["reads"] == {
        "interval_reads": 4, "register_reads": 1,
        "first_interval_end": "2026-01-05T08:15:00Z", "last_interval_end": "2026-01-05T09:00:00Z",
        "first_read_time": "2026-01-05T08:30:00Z", "last_read_time": "2026-01-05T08:30:00Z",
        "uploads": 1, "sources": [str(f)]}
    assert _status(data, "od-q")["reads"]["interval_reads"] == 0  # type: ignore[index]
    # every read is stored as an ordinary read, the other meters' too
    reads = cli("export", "reads", "--data", str(data))
    assert len(reads.strip().splitlines()) == 1 + 4 + 6 + 2
    # export commands: the reads as columns at the end
    rows = {r["command_id"]: r for r in csv.DictReader(io.StringIO(
        cli("export", "commands", "--data", str(data))))}
    r = rows["od-1"]
    assert list(r)[-6:] == ["interval_reads", "register_reads", "first_interval_end",
                            "last_interval_end", "read_uploads", "read_sources"]
    assert (r["interval_reads"], r["register_reads"], r["first_interval_end"],
            r["read_uploads"], r["read_sources"]) == ("4", "1", "2026-01-05T08:15:00Z", "1",
                                                      str(f))


def test_reads_and_responses_in_separate_csv_uploads(tmp_path: Path, data: Path) -> None:
    _send_read(data, "od-2", M2)
    reads = ("meter_id,reading_type,interval_end,value,quality\n"
             f"{M2},kwh_del,2026-01-05T08:15:00Z,0.25,\n"
             f"{M2},kwh_del,2026-01-05T08:30:00Z,0.25,\n"
             f"{M1},kwh_del,2026-01-05T08:30:00Z,0.25,\n")
    _ingest(data, tmp_path / "reads.csv", reads)
    _ingest(data, tmp_path / "frame.hef", _frame(2, {M2: 3}, start=T0 + 900))
    _ingest(data, tmp_path / "resp.csv", "command_id,meter_id,status,time,detail\n"
            f"od-2,{M2},delivered,2026-01-05T09:00:00Z,\n"
            f"od-2,{M2},completed,2026-01-05T09:01:00Z,read done\n")
    got = _status(data, "od-2")
    assert got["state"] == "completed"
    reads_of = got["reads"]
    assert isinstance(reads_of, dict)
    # 2 from the CSV, 3 from the frame (one of them, 08:30, a duplicate: not new)
    assert (reads_of["interval_reads"], reads_of["uploads"]) == (2 + 2, 2)
    assert (reads_of["first_interval_end"], reads_of["last_interval_end"]) == (
        "2026-01-05T08:15:00Z", "2026-01-05T09:00:00Z")
    assert reads_of["sources"] == [str(tmp_path / "reads.csv"), str(tmp_path / "frame.hef")]
    # after its completion the command takes no more reads
    _ingest(data, tmp_path / "late.hef", _frame(3, {M2: 1}, start=T0 + 7_200))
    assert _status(data, "od-2")["reads"] == reads_of


def test_completed_without_reads_fails_no_reads(tmp_path: Path, data: Path) -> None:
    _send_read(data, "od-3", M3)
    _ingest(data, tmp_path / "r.hef", _frame(4, {M1: 2},
                                            responses=[("od-3", M3, "completed")]))
    got = _status(data, "od-3")
    assert (got["state"], got["reason"]) == ("failed", "no_reads")
    assert "no new read of the meter" in str(got["detail"])
    # the collector says it again: a duplicate, nothing changes
    _ingest(data, tmp_path / "again.csv", "command_id,meter_id,status,time,detail\n"
            f"od-3,{M3},completed,2026-01-05T09:01:00Z,\n")
    assert _status(data, "od-3")["state"] == "failed"
    assert "bad_command_response" not in cli("quarantine", "list", "--data", str(data))
    hist = open_command_store(data).history("od-3")
    assert [(h.state, h.reason, h.actor) for h in hist] == [
        ("queued", None, hist[0].actor), ("sent", None, "headend"),
        ("failed", "no_reads", "collector")]


def test_a_response_to_no_command_in_a_section_is_quarantined(tmp_path: Path,
                                                               data: Path) -> None:
    _send_read(data, "od-4", M1)
    _ingest(data, tmp_path / "b.hef", _frame(5, {M1: 2}, responses=[
        ("od-4", M1, "completed"), ("ghost", M1, "completed")]))
    q = cli("quarantine", "list", "--data", str(data))
    assert "unknown_command" in q and "ghost" in q
    assert _status(data, "od-4")["state"] == "completed"


def test_a_section_that_does_not_add_up_quarantines_the_frame(tmp_path: Path,
                                                              data: Path) -> None:
    _send_read(data, "od-5", M1)
    frame = bytearray(_frame(7, {M1: 2}, responses=[("od-5", M1, "completed")]))
    sec = len(frame) - 32 - len(encode_responses_section(["od-5"], [str(M1)], ["completed"],
                                                         [0]))
    frame[sec:sec + 2] = (9).to_bytes(2, "little")  # an unknown section type
    import hashlib
    import hmac
    frame[-32:] = hmac.new(KEY, bytes(frame[:-32]), hashlib.sha256).digest()
    _ingest(data, tmp_path / "bad.hef", bytes(frame), code=3)  # nothing accepted
    q = cli("quarantine", "list", "--data", str(data))
    assert "bad_frame" in q and "unknown section type 9" in q
    assert _status(data, "od-5")["state"] == "sent"  # neither reads nor response applied
    assert _status(data, "od-5")["reads"]["interval_reads"] == 0  # type: ignore[index]


def test_ingest_without_commands_opens_no_command_store(tmp_path: Path, data: Path) -> None:
    _ingest(data, tmp_path / "plain.hef", _frame(6, {M1: 3}))
    assert not (data / "commands").exists()


def test_reads_brought_core() -> None:
    """The pure core: one isin, a group-by per meter, every open command of a meter."""
    open_ = OpenReads({"A": ("a1", "a2"), "B": ("b1",), "Z": ("z1",)}, [5, 2, -1])
    reads = pa.table({"meter_idx": pa.array([1, 2, 2, 5, 5, 5], pa.int32()),
                      "reading_type": pa.array([0] * 6, pa.uint8()),
                      "interval_end": pa.array([10, 900, 1800, 2700, 900, 3600]).cast(
                          schema.TS),
                      "value": pa.array([1] * 6, pa.int32()),
                      "quality": pa.array([0] * 6, pa.uint32())}, schema=schema.READS)
    regs = pa.table({"meter_idx": pa.array([5, 7], pa.int32()),
                     "register": pa.array([0, 0], pa.uint8()),
                     "read_time": pa.array([4000, 5]).cast(schema.TS),
                     "value": pa.array([1, 1], pa.int64())}, schema=schema.REGISTERS)
    got = reads_brought(open_, reads, regs, source="s")
    b = ReadsBrought(2, 0, 900, 1800, None, None, 1, ("s",))
    a = ReadsBrought(3, 1, 900, 3600, 4000, 4000, 1, ("s",))
    assert sorted(got) == sorted([("b1", b), ("a1", a), ("a2", a)])
    assert reads_brought(OpenReads({}, []), reads, regs, source="s") == []
    assert reads_brought(open_, reads.slice(0, 1), regs.slice(1), source="s") == []


def test_an_ingestor_without_a_command_hook_quarantines_section_responses(
        tmp_path: Path) -> None:
    """Never dropped: an ingestor that applies no responses (no ``side_csv``) stores the
    frame's reads and quarantines its responses."""
    from headend.ingest.pipeline import Ingestor

    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "collectors.csv").write_text(COLLECTORS)
    with Ingestor.open(tmp_path / "d") as ing:
        ing.ingest_paths([tmp_path / "collectors.csv", tmp_path / "meters.csv"])
        res = ing.ingest_bytes(_frame(1, {M1: 2}, responses=[("x", M1, "completed")]),
                               source="up")
        assert (res.accepted, res.quarantined) == (2, 1)
        assert dict(res.by_reason) == {"unknown_command": 1}
        q = ing.data.quarantine.list()
        assert q.column("kind").to_pylist() == ["command_responses"]
        assert q.column("payload").to_pylist()[0].startswith(b'"x","100000001","completed"')
