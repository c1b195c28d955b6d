"""Issue 11, point 4: an ingest that accepts nothing exits 3 and says why on screen (the
top reasons, one example row and its line each); a CSV header that is not canonical
is explained (separator found, columns missing or extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.cli.rejections import find_line, printable

from .test_cli_contracts import METERS

_register()
runner = CliRunner()

HEADER = "meter_id,reading_type,interval_end,value,quality\n"


def _ingest(data: Path, *files: Path, json_out: bool = False) -> tuple[int, str, str]:
    args = ["ingest", "--data", str(data), "--no-vee", *map(str, files)]
    res = runner.invoke(app, args + (["--json"] if json_out else []))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture
def meters(tmp_path: Path) -> Path:
    p = tmp_path / "meters.csv"
    p.write_text(METERS)
    return p


def test_a_file_with_no_accepted_row_exits_3_with_reasons_examples_and_lines(
        tmp_path: Path, meters: Path) -> None:
    """Every row rejected exited 0 and the reasons were only in `quarantine list`."""
    data = tmp_path / "data"
    assert _ingest(data, meters)[0] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER
                   + "M-2,kwh_del,2026-01-01T00:15:00Z,abc,\n"       # line 2: bad_value
                   + "M-2,kwh_del,2026-01-01T00:30:00Z,x1,\n"        # line 3: bad_value
                   + "M-2,kwh_del,yesterday,1.0,\n"                  # line 4: bad_timestamp
                   + "M-2,kwh_del,2026-01-01T00:45:00Z,2x,\n")       # line 5: bad_value
    code, _, err = _ingest(data, bad)
    assert code == 3
    assert err.splitlines()[-1].startswith(
        "headend: no row accepted: 4 quarantined (bad_timestamp 1, bad_value 3)")
    lines = err.splitlines()
    top = [ln.strip() for ln in lines[lines.index(next(
        ln for ln in lines if ln.startswith("top reasons"))) + 1:-1]]
    assert top[0].startswith(f"bad_value (3 rows), e.g. {bad} line 2: "
                             "M-2,kwh_del,2026-01-01T00:15:00Z,abc,")
    assert top[1].startswith(f"bad_timestamp (1 row), e.g. {bad} line 4: "
                             "M-2,kwh_del,yesterday,1.0,")
    assert "'yesterday'" in top[1]  # the reason's detail


def test_partial_acceptance_still_exits_0_and_shows_the_reason(tmp_path: Path,
                                                               meters: Path) -> None:
    reads = tmp_path / "reads.csv"
    reads.write_text(HEADER + "M-2,kwh_del,2026-01-01T00:15:00Z,0.1,\n"
                     + "M-2,kwh_del,2026-01-01T00:30:00Z,0.2,9.9.9\n")
    code, _, err = _ingest(tmp_path / "data", meters, reads)
    assert code == 0
    assert f"bad_quality (1 row), e.g. {reads} line 3: " in err


def test_a_reingest_of_stored_rows_is_not_a_failure(tmp_path: Path, meters: Path) -> None:
    """Duplicates were accepted before: ingesting the same file again exits 0."""
    reads = tmp_path / "reads.csv"
    reads.write_text(HEADER + "M-2,kwh_del,2026-01-01T00:15:00Z,0.1,\n")
    data = tmp_path / "data"
    assert _ingest(data, meters, reads)[0] == 0
    code, out, _ = _ingest(data, reads, json_out=True)
    assert code == 0 and json.loads(out)["duplicate"] == 1


def test_rows_waiting_for_their_meter_exit_3_and_say_they_wait(tmp_path: Path) -> None:
    reads = tmp_path / "reads.csv"
    reads.write_text(HEADER + "M-2,kwh_del,2026-01-01T00:15:00Z,0.1,\n")
    code, out, err = _ingest(tmp_path / "data", reads, json_out=True)
    assert code == 3 and json.loads(out)["quarantined"] == 1  # --json summary kept
    assert "wait in the quarantine and are released when these are loaded" in err


@pytest.mark.parametrize(("text", "said"), [
    ("meter_id;reading_type;interval_end;value;quality\nM-2;kwh_del;2026-01-01T00:15:00Z;1;\n",
     "is separated by semicolons (';'), not commas: with commas it is a reads header"),
    ("meter_id\treading_type\tinterval_end\tvalue\tquality\n",
     "is separated by tabs ('\\t'), not commas: with commas it is a reads header"),
    (("meter_id,commodity,technology,two_way,collector_id,transformer_id,feeder_id\n"
      "M-9,electric,rf,true,1,T1,F1\n"),
     "closest kind meters, missing column substation_id"),
    ("meter_id,commodity,technology,two_way,collector_id,transformer,feeder_id,substation_id\n",
     "closest kind meters, missing column transformer_id, extra column transformer"),
    ("meter_id,event_code,event_time\n",
     ("closest kind events, the required columns must come first, in this order: "
      "meter_id,event_time,event_code")),
    ("when,where\n", "no column of a canonical kind"),
])
def test_unknown_header_names_separator_and_columns(tmp_path: Path, text: str,
                                                    said: str) -> None:
    """A semicolon file and a meters file missing a column were both "unknown CSV
    header", with no word of the separator or the column."""
    f = tmp_path / "upload.csv"
    f.write_text(text)
    code, _, err = _ingest(tmp_path / "data", f)
    assert code == 3
    assert err.splitlines()[-1].startswith(f"headend: unusable input: {f}: CSV header ")
    assert said in err.splitlines()[-1]


def test_an_empty_file_is_named_as_such(tmp_path: Path) -> None:
    f = tmp_path / "cycle.hef"
    f.write_bytes(b"")
    code, _, err = _ingest(tmp_path / "data", f)
    assert code == 3 and "empty file" in err.splitlines()[-1]


@pytest.mark.parametrize(("body", "row", "line"), [
    (b"h\na,b,c,d\nx,y,z,w\n", b"x,y,z,w", 3),
    (b"h\r\na,b,c,d\r\nx,y,z,w\r\n", b"x,y,z,w", 3),            # CRLF
    (b"h\nx,y,z,ww\nx,y,z,w", b"x,y,z,w", 3),                   # a longer line first; no EOL
    (b"h\nx,y,z,1.0\n", b"x,y,z,1.000", 2),                     # reformatted: by its key
    (b"x,y,z,w\n", b"x,y,z,w", 1),
    (b"h\na,b,c,d\n", b"x,y,z,w", None),
    (b"", b"x,y,z,w", None),
])
def test_find_line(tmp_path: Path, body: bytes, row: bytes, line: int | None) -> None:
    p = tmp_path / "f.csv"
    p.write_bytes(body)
    assert find_line(p, row) == line
    assert find_line(tmp_path / "gone.csv", row) is None


def test_example_rows_print_safely() -> None:
    assert printable(b"M-1,kwh_del,\x00\xff,1,") == "M-1,kwh_del,\\x00\\xff,1,"
    assert printable("Zähler-7,ok".encode()) == "Zähler-7,ok"
    long = printable(b"x" * 500)
    assert len(long) == 160 and long.endswith("...")
