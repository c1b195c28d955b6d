"""Crash safety and garbled input: nothing acknowledged is lost, nothing is doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.ingest.pipeline import Ingestor

from .conftest import interval_frame

SERIALS = [100000001, 100000002, 100000003]


def _run(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1].parent)},
    )


def test_crash_between_durable_write_and_ack(root: Path, files: dict[str, Path]) -> None:
    with Ingestor.open(root) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
    frame_file = root.parent / "up.hef"
    frame_file.write_bytes(interval_frame(SERIALS, 8))
    # the listener runs after the append is durable and before ingest returns (the ack)
    proc = _run(
        """
        import os, sys
        from headend.ingest.pipeline import Ingestor
        from headend.ingest.result import BaseListener
        class Crash(BaseListener):
            def on_stored(self, batch): os._exit(17)
            def on_watermark(self, t): pass
        ing = Ingestor.open(sys.argv[1], listeners=[Crash()])
        ing.ingest_bytes(open(sys.argv[2], "rb").read(), source="crash")
        print("acked")
        """,
        str(root), str(frame_file),
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 17, err
    assert "acked" not in out
    # the collector never got its ack, so it sends the upload again
    with Ingestor.open(root) as ing:
        r = ing.ingest_bytes(frame_file.read_bytes(), source="resend")
        assert (r.accepted, r.duplicate) == (0, 24)
        assert ing.data.store.scan_reads().num_rows == 24


def test_kill_9_mid_stream_then_resend_everything(root: Path, files: dict[str, Path]) -> None:
    with Ingestor.open(root) as ing:
        ing.ingest_paths([files["meters.csv"], files["collectors.csv"]])
    n_frames = 400
    frames_dir = root.parent / "frames"
    frames_dir.mkdir()
    for i in range(n_frames):
        start = 1_767_225_600 + i * 8 * 900
        (frames_dir / f"{i:04d}.hef").write_bytes(
            interval_frame(SERIALS, 8, seq=i + 1, start=start))
    proc = _run(
        """
        import sys, pathlib
        from headend.ingest.pipeline import Ingestor
        ing = Ingestor.open(sys.argv[1])
        for p in sorted(pathlib.Path(sys.argv[2]).iterdir()):
            ing.ingest_bytes(p.read_bytes(), source=p.name)
            print("acked", p.name, flush=True)
        """,
        str(root), str(frames_dir),
    )
    acked: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=30)
    assert len(acked) >= 40, err
    with Ingestor.open(root) as ing:
        # everything acknowledged before the kill is there
        stored = ing.data.store.scan_reads().num_rows
        assert stored >= len(acked) * 24
        # the collectors resend everything; the store ends with each read exactly once
        total_new = 0
        for p in sorted(frames_dir.iterdir()):
            total_new += ing.ingest_bytes(p.read_bytes(), source=p.name).accepted
        t = ing.data.store.scan_reads()
        assert t.num_rows == n_frames * 24 == stored + total_new
        keys = np.stack([t.column("meter_idx").to_numpy(),
                         t.column("interval_end").cast("int64").to_numpy()])
        assert np.unique(keys, axis=1).shape[1] == t.num_rows


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbled_frames_never_crash_and_never_invent_reads(ingestor: Ingestor,
                                                           data: st.DataObject) -> None:
    good = interval_frame(SERIALS, 4, seq=7)
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    blob = bytes(mutated[:cut]) + data.draw(st.binary(max_size=64))
    before = ingestor.data.store.scan_reads().num_rows
    r = ingestor.ingest_bytes(blob, source="fuzz") if blob else None
    after = ingestor.data.store.scan_reads().num_rows
    if r is None:
        return
    # whatever was accepted is in the store, and only an authentic frame stores reads
    assert after - before == r.accepted
    authentic = cut >= len(good) and bytes(mutated) == good
    if not authentic:
        assert r.accepted == 0 and r.duplicate == 0
    # nothing vanishes: the input was either stored (or known) or quarantined
    assert r.accepted + r.duplicate > 0 or r.quarantined > 0
