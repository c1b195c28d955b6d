"""Process start-up: the batch verbs do not pay for importing pandas (src/headend/_startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headend import _startup

_PROBE = """
import atexit, sys
atexit.register(lambda: print("PANDAS", "pandas" in sys.modules, file=sys.stderr))
sys.argv = ["headend", *sys.argv[1:]]
from headend.cli import main
main()
"""


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], check=False, capture_output=True,
                          text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    """A folder with a meters CSV and a reads CSV of that meter (an ingest that accepts
    no row exits 3, docs/cli.md)."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "meters.csv").write_text(
        "meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id,"
        "substation_id\nM1,electric,rf,true,1,T1,F1,S1\n")
    (d / "reads.csv").write_text("meter_id,reading_type,interval_end,value,quality\n"
                                 "M1,kwh_del,2026-01-01T00:15:00Z,0.25,\n")
    return d


def test_ingest_never_imports_pandas(tmp_path: Path, csv: Path) -> None:
    pytest.importorskip("pandas")  # the point is moot where pandas is not installed
    r = _run(["ingest", "--data", str(tmp_path / "d"), str(csv)])
    assert r.returncode == 0, r.stderr
    assert "PANDAS False" in r.stderr


def test_hiding_pandas_can_be_switched_off(tmp_path: Path, csv: Path) -> None:
    pytest.importorskip("pandas")
    r = _run(["ingest", "--data", str(tmp_path / "d"), str(csv)], HEADEND_HIDE_PANDAS="0")
    assert r.returncode == 0, r.stderr
    assert "PANDAS True" in r.stderr  # pyarrow's first conversion imports it


def test_only_the_batch_verbs_hide_it() -> None:
    assert _startup.verb_of(["--help"]) is None
    assert _startup.verb_of(["ingest", "--data", "d", "f.csv"]) == "ingest"
    assert "analytics" not in _startup.NO_PANDAS_VERBS
    assert {"ingest", "simulate", "demo", "compact"} <= _startup.NO_PANDAS_VERBS
