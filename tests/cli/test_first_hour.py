"""Issue 11, the first hour of a new user: each trap a new user fell into, reproduced
through the command line, and what the verb does now."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app

from .test_cli_contracts import METERS, READS

_register()
runner = CliRunner()


@pytest.mark.parametrize("solar_share", [0.0, 0.08])
def test_simulate_smallest_documented_size_with_every_fault(tmp_path: Path,
                                                           solar_share: float) -> None:
    """``simulate --meters 10 --faults all`` crashed in ``reverse_energy`` when no meter
    had solar; it now writes the uploads and the fault's ground truth."""
    import pyarrow.parquet as pq

    res = runner.invoke(app, ["simulate", "--meters", "10", "--faults", "all", "--format",
                              "csv", "--solar-share", str(solar_share), "-o", str(tmp_path),
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"]["reads"] > 0
    kinds = set(pq.read_table(tmp_path / "ground_truth.parquet").column("kind").to_pylist())
    assert "reverse_energy" in kinds
    for name in ("reads.csv", "registers.csv", "events.csv"):  # were NUL bytes in places
        assert b"\x00" not in (tmp_path / name).read_bytes(), name
    res = runner.invoke(app, ["ingest", "--data", str(tmp_path / "data"), "--no-vee", "--json",
                              str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["accepted"] > 0 and "bad_csv" not in summary["by_reason"], summary


# --------------------------------------------------------------------- 1. the demo


def _demo(out: Path, *more: str) -> Any:
    return runner.invoke(app, ["demo", "--meters", "10", "-o", str(out), *more])


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """``demo -o DIR`` deleted DIR whatever it held; a foreign non-empty folder is now
    refused (exit 2, nothing touched), and with --force only the demo's entries are
    written there."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    res = _demo(out)
    assert res.exit_code == 2
    assert "not empty and was not made by headend demo" in res.stderr
    assert "--force" in res.stderr and "Traceback" not in res.output
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]
    res = _demo(out, "--force")
    assert res.exit_code == 0, res.output
    assert (out / "thesis.docx").read_text() == "years of work"
    assert (out / "report.md").exists() and (out / "data").is_dir()


def test_demo_reruns_in_its_own_folder_and_says_what_to_try_next(tmp_path: Path) -> None:
    """The demo's folder is its own: a second run starts afresh there without --force.
    It ends by naming its store and commands to try with the right --data, and these
    commands answer (the demo's store is not the default ./headend-data)."""
    out = tmp_path / "demo"
    assert _demo(out).exit_code == 0
    (out / "notes.txt").write_text("kept")  # a file of the user's, added later
    res = _demo(out)
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "kept"
    data = out / "data"
    assert f"--data {data}" in res.stderr and "HEADEND_DATA" in res.stderr
    tried = [ln.strip().split() for ln in res.stderr.splitlines()
             if ln.strip().startswith("headend export outages")]
    assert tried, res.stderr
    answer = runner.invoke(app, tried[0][1:])
    assert answer.exit_code == 0 and answer.stdout.strip(), answer.output
    assert json.loads(answer.stdout.splitlines()[0])["outage_id"]


# ------------------------------------------------- 2. read verbs need a data directory

#: what a read verb needs besides --data to get as far as opening it
REQUIRED = {
    ("edit",): ["--meter", "M-1", "--reading-type", "kwh_del", "--interval-end",
                "2026-01-01T00:15:00Z", "--value", "1", "--reason", "r"],
    ("report",): ["-o", "report-out"],
    ("analytics", "anomaly"): ["--day", "2026-01-01"],
    ("subscribers", "remove"): ["nobody"],
    ("subscribers", "nats-config"): ["--service-password", "pw"],
    ("tariff", "bill"): ["--tariff", "t"],
    ("tariff", "show"): ["t"],
}
#: verbs that may create their data directory (they write: ingest and the services)
CREATING = {("ingest",), ("serve",), ("worker",), ("rules-worker",), ("subscribers", "add")}


def _leaves(cmd: Any = None, path: tuple[str, ...] = ()) -> Any:
    """(path, command) of every verb."""
    import typer

    cmd = typer.main.get_command(app) if cmd is None else cmd
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, cmd


def _verbs_with(*options: str) -> list[tuple[str, ...]]:
    return sorted(p for p, c in _leaves() if set(options) <= {o for q in c.params for o in q.opts})


def _verbs_with_data() -> list[tuple[str, ...]]:
    return _verbs_with("--data")


READ_VERBS = [v for v in _verbs_with_data() if v not in CREATING]


def test_every_verb_with_data_is_classified() -> None:
    assert set(CREATING) <= set(_verbs_with_data())
    assert {("export", "reads"), ("export", "outages"), ("quarantine", "list"),
            ("rules", "status"), ("analytics", "histogram"), ("report",), ("vee",),
            ("compact",), ("subscribers", "list")} <= set(READ_VERBS)


@pytest.mark.parametrize("verb", READ_VERBS, ids=" ".join)
def test_read_verb_refuses_a_missing_data_directory(verb: tuple[str, ...], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A read verb given a --data that does not exist created it and answered empty
    with exit 0; it now exits 2 saying so, and creates nothing."""
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo"
    res = runner.invoke(app, [*verb, "--data", str(missing), *REQUIRED.get(verb, [])])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(f"headend: no headend data directory at {missing}")
    assert len(res.stderr.splitlines()) == 1
    assert not missing.exists()


def test_read_verb_refuses_a_folder_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    res = runner.invoke(app, ["export", "reads", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "holds other files and no headend store" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday.jpg"]


def test_the_default_and_the_variable_are_checked_too(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["export", "outages"])  # default ./headend-data
    assert res.exit_code == 2 and "no headend data directory at headend-data" in res.stderr
    res = runner.invoke(app, ["export", "outages"], env={"HEADEND_DATA": str(tmp_path / "x")})
    assert res.exit_code == 2 and str(tmp_path / "x") in res.stderr
    assert not (tmp_path / "headend-data").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------- 3. time ranges


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A data directory holding the meters and reads of the contract tests."""
    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "reads.csv").write_text(READS)
    data = tmp_path / "data"
    res = runner.invoke(app, ["ingest", "--data", str(data), "--no-vee",
                              str(tmp_path / "meters.csv"), str(tmp_path / "reads.csv")])
    assert res.exit_code == 0, res.output
    return data


def _verbs_with_range() -> list[tuple[str, ...]]:
    return _verbs_with("--from", "--to")


@pytest.mark.parametrize("verb", _verbs_with_range(), ids=" ".join)
@pytest.mark.parametrize(("start", "end"), [("2026-01-02", "2026-01-01T12:00:00Z"),
                                            ("2026-01-01T00:00:00+01:00",
                                             "2026-01-01T00:00:00+01:00")])
def test_from_not_before_to_exits_2(verb: tuple[str, ...], start: str, end: str, store: Path,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--from`` after (or at) ``--to`` was accepted and answered nothing; exit 2."""
    monkeypatch.chdir(tmp_path)
    args = [*verb, "--data", str(store), "--from", start, "--to", end]
    res = runner.invoke(app, [*args, *REQUIRED.get(verb, [])], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert res.stderr == (f"headend: --from {start} is not before --to {end}: the time "
                          "range is empty (--from is inclusive, --to exclusive)\n")


def test_time_range_verbs_found() -> None:
    assert {("export", "reads"), ("export", "events"), ("export", "registers"), ("vee",),
            ("report",), ("analytics", "billing")} <= set(_verbs_with_range())


def test_an_empty_answer_says_so_on_stderr(store: Path) -> None:
    """Valid empty output stays on stdout (a header, or nothing); stderr says nothing
    matched, so an empty answer is never silent."""
    res = runner.invoke(app, ["export", "reads", "--data", str(store), "--from", "2027-01-01"])
    assert res.exit_code == 0
    assert res.stdout == "meter_id,reading_type,interval_end,value,quality\n"
    assert res.stderr == f"no reads in {store} match the options given\n"
    res = runner.invoke(app, ["export", "events", "--data", str(store)])
    assert res.exit_code == 0 and res.stderr.startswith("no events in")
    res = runner.invoke(app, ["export", "alarms", "--data", str(store)])
    assert res.exit_code == 0 and res.stdout == "" and res.stderr.startswith("no alarms")
    res = runner.invoke(app, ["export", "reads", "--data", str(store)])
    assert res.exit_code == 0 and res.stderr == "" and len(res.stdout.splitlines()) == 6
