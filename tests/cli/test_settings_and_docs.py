"""Issue 11, points 5 and 7-9: a missing extra is named in one line; times people read
are ISO 8601 UTC (``--json`` keeps Unix seconds); one rules-lateness setting shared by
ingest, serve and rules-worker; a README that claims only what exists."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.cli.common import EXTRA_OF_MODULE, HeadendGroup
from headend.cli.rules import effective_ruleset
from headend.rules import default_ruleset
from headend.serve.config import (
    ENV,
    LIVE_RULES_LATENESS_S,
    RULES_LATENESS_ENV,
    load_config,
    rules_lateness,
)

from .test_cli_contracts import METERS

_register()
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

#: kwh_del of two meters for two hours, and one row refused (bad_value)
READS = "meter_id,reading_type,interval_end,value,quality\n" + "".join(
    f"{m},kwh_del,2026-01-01T{h:02d}:{q:02d}:00Z,0.{h}{q // 15},\n"
    for m in ("M-2", "M-10") for h in (0, 1) for q in (0, 15, 30, 45) if h or q
) + "M-2,kwh_del,2026-01-01T02:00:00Z,1.2.3,\n"
LAST = int(time.mktime((2026, 1, 1, 1, 45, 0, 0, 0, 0))) - time.timezone  # newest read [s]


def _store(tmp_path: Path, *more: str, env: dict[str, str] | None = None,
           name: str = "data") -> Path:
    (tmp_path / "meters.csv").write_text(METERS)
    (tmp_path / "reads.csv").write_text(READS)
    data = tmp_path / name
    res = runner.invoke(app, ["ingest", "--data", str(data), "--no-vee", *more,
                              str(tmp_path / "meters.csv"), str(tmp_path / "reads.csv")],
                        env=env)
    assert res.exit_code == 0, res.output
    return data


def _status(data: Path) -> dict[str, int]:
    res = runner.invoke(app, ["rules", "status", "--data", str(data), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # type: ignore[no-any-return]


# ------------------------------------------------------------ 5. extras, in one line


def test_serve_without_uvicorn_names_the_extra_in_one_line(tmp_path: Path) -> None:
    """`headend serve` after the README's install died with a 35-line traceback."""
    code = ("import sys; sys.modules['uvicorn'] = None; from headend.cli import main; "
            f"sys.argv = ['headend', 'serve', '--data', {str(tmp_path / 'd')!r}]; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stderr == ("headend: headend serve needs the 'serve' extra (uvicorn is not "
                          "installed): pip install 'headend[serve]' (in a clone: pip "
                          "install -e '.[serve]')\n")


def test_any_verb_that_meets_a_missing_extra_says_which(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """The command group turns a missing optional module anywhere into the same line."""
    group = typer.Typer(cls=HeadendGroup)

    @group.command("plot")
    def plot() -> None:
        import matplotlib  # noqa: F401

    @group.command("other")
    def other() -> None:
        pass

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    res = runner.invoke(group, ["plot"])
    assert res.exit_code == 2
    assert res.stderr.startswith("headend: headend plot needs the 'report' extra")
    monkeypatch.setitem(sys.modules, "pyspark", None)
    data = _store(tmp_path)
    res = runner.invoke(app, ["analytics", "histogram", "--data", str(data), "--engine",
                              "spark"])
    assert res.exit_code == 2 and "pip install 'headend[spark]'" in res.stderr


def test_every_optional_package_maps_to_its_extra() -> None:
    """EXTRA_OF_MODULE (which extra to name) follows pyproject.toml."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    dists = {m: {re.sub(r"[-_.]+", "-", d).lower() for d in ds}
             for m, ds in packages_distributions().items()}
    for extra, reqs in extras.items():
        if extra in ("all", "test", "dev"):
            continue
        for req in reqs:
            dist = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", req)[0]).lower()  # type: ignore[index]
            modules = [m for m, e in EXTRA_OF_MODULE.items() if dist in dists.get(m, ())]
            if not any(dist in ds for ds in dists.values()):
                continue  # not installed here: its module name is unknown
            assert modules and all(EXTRA_OF_MODULE[m] == extra for m in modules), (extra, req)
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)


# ------------------------------------------------- 7. times people read: ISO 8601 UTC


def test_quarantine_csv_received_at_is_iso_utc(tmp_path: Path) -> None:
    before = time.time()
    data = _store(tmp_path)
    res = runner.invoke(app, ["quarantine", "list", "--data", str(data)])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["reason"] for r in rows] == ["bad_value"]
    got = rows[0]["received_at"]
    assert ISO.match(got), got
    assert before - 2 <= time.mktime(time.strptime(got, "%Y-%m-%dT%H:%M:%SZ")) \
        - time.timezone <= time.time() + 1
    res = runner.invoke(app, ["quarantine", "list", "--data", str(data), "--json"])
    assert json.loads(res.stdout)["received_at"] == got


def test_rules_status_shows_iso_times_and_json_keeps_seconds(tmp_path: Path) -> None:
    data = _store(tmp_path)
    status = _status(data)
    assert status["watermark"] == LAST and status["outages"] == 0
    res = runner.invoke(app, ["rules", "status", "--data", str(data)])
    assert res.exit_code == 0
    text = {label.strip(): value.strip() for label, _, value in
            (ln.partition("  ") for ln in res.stdout.splitlines())}
    assert text["watermark"] == "2026-01-01T01:45:00Z"
    assert text["newest event time"] == "2026-01-01T01:45:00Z"
    assert text["rows processed"] == f"{status['items_processed']:,}"
    assert text["storm until"] == ""  # never, not 1970-01-01
    assert str(LAST) not in res.stdout


def test_anomaly_prints_empty_not_nan(tmp_path: Path) -> None:
    data = _store(tmp_path)
    res = runner.invoke(app, ["analytics", "anomaly", "--data", str(data), "--day",
                              "2026-01-01"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 2 and "nan" not in res.stdout.lower()
    assert all(r["mean_kwh"] == r["std_kwh"] == r["z"] == "" for r in rows)  # no history
    res = runner.invoke(app, ["analytics", "anomaly", "--data", str(data), "--day",
                              "2026-01-01", "--format", "json"])
    assert all(json.loads(ln)["z"] is None for ln in res.stdout.splitlines())


# ------------------------------------------------- 8. one rules-lateness setting


def test_ingest_takes_the_lateness_from_option_variable_or_rules_yaml(tmp_path: Path) -> None:
    assert _status(_store(tmp_path, name="a"))["watermark"] == LAST  # file replays: 0
    assert _status(_store(tmp_path, "--rules-lateness", "900", name="b"))["watermark"] \
        == LAST - 900
    env = {RULES_LATENESS_ENV: "600"}
    assert _status(_store(tmp_path, env=env, name="c"))["watermark"] == LAST - 600
    yml = tmp_path / "d" / "rules"
    yml.mkdir(parents=True)
    (yml / "rules.yaml").write_text("engine: {allowed_lateness_s: 300}\n"
                                    "rules: [{name: outages, kind: outage}]\n")
    assert _status(_store(tmp_path, name="d"))["watermark"] == LAST - 300
    (tmp_path / "e" / "rules").mkdir(parents=True)
    (tmp_path / "e" / "rules" / "rules.yaml").write_text((yml / "rules.yaml").read_text())
    assert _status(_store(tmp_path, "--rules-lateness", "60", name="e"))["watermark"] \
        == LAST - 60


def test_serve_and_rules_worker_resolve_the_same_setting(tmp_path: Path) -> None:
    """serve overrode rules.yaml's allowed_lateness_s with 900 s, silently."""
    pytest.importorskip("prometheus_client")
    from headend.serve.service import Service

    assert ENV[RULES_LATENESS_ENV] == "rules_lateness_s"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text("engine: {allowed_lateness_s: 300}\n"
                                      "rules: [{name: outages, kind: outage}]\n")
    for env, want in (({}, 300), ({RULES_LATENESS_ENV: "120"}, 120)):
        cfg = load_config(env=env, data=tmp_path, embedded_bus="memory")
        svc = Service(cfg)
        try:
            assert svc.rules.config.engine.allowed_lateness_s == want
        finally:
            svc.close()
        # what rules-worker passes to its engines (it needs a NATS bus to run)
        assert rules_lateness(effective_ruleset(tmp_path)[0], cfg.rules_lateness_s,
                              default=LIVE_RULES_LATENESS_S) == want
    assert rules_lateness(default_ruleset(), None, default=LIVE_RULES_LATENESS_S) == 900
    assert rules_lateness(default_ruleset(), None, default=0) == 0


# ------------------------------------------------- 9. README and .gitignore


def test_the_demo_folder_is_ignored_by_git() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("headend-demo/report.md", "headend-demo/data/layout.json",
                 "headend-data/layout.json", "headend-sim/meters.csv"):
        res = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert res.returncode == 0, path


@pytest.mark.parametrize(("claim", "implementation"), [
    ("Green Button", r"def \w*green_?button\w*\("),  # an exporter, not a mention
    ("PostgreSQL", r"^\s*(import|from) (psycopg|sqlalchemy)"),
    ("MariaDB", r"^\s*(import|from) (pymysql|sqlalchemy)"),
], ids=["green-button", "postgresql", "mariadb"])
def test_readme_names_only_what_the_code_has(claim: str, implementation: str) -> None:
    """The README named PostgreSQL/MariaDB sinks, a Green Button export and tests that
    need PostgreSQL; a claim needs code that implements it."""
    readme = (REPO / "README.md").read_text()
    if claim.lower() not in readme.lower():
        return
    src = "\n".join(p.read_text() for p in (REPO / "src" / "headend").rglob("*.py"))
    assert re.search(implementation, src, re.IGNORECASE | re.MULTILINE), \
        f"README claims {claim}"


def test_readme_verbs_exist() -> None:
    readme = (REPO / "README.md").read_text()
    root = typer.main.get_command(app)
    for verb in set(re.findall(r"`headend ([a-z][a-z-]*)", readme)):
        assert verb in root.commands, verb  # type: ignore[attr-defined]
