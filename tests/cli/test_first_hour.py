"""Issue 11, the first hour of a new user: each trap a new user fell into, reproduced
through the command line, and what the verb does now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headend.cli import _register, app

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
