"""Fixtures of the simulator tests: small utilities and their collected uploads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from headend.sim import FaultPlan, Faults, Upload, Utility, build_utility, iter_uploads


@dataclass
class Run:
    """A whole simulation kept in memory (small utilities only)."""

    u: Utility
    plan: FaultPlan
    uploads: list[Upload]

    @property
    def reads(self) -> pa.Table:
        return pa.concat_tables([up.reads for up in self.uploads])

    @property
    def reads_tag(self) -> np.ndarray:
        return np.concatenate([up.reads_tag for up in self.uploads])

    @property
    def registers(self) -> pa.Table:
        return pa.concat_tables([up.registers for up in self.uploads])

    @property
    def events(self) -> pa.Table:
        return pa.concat_tables([up.events for up in self.uploads])

    def truth(self, kind: str) -> list[dict]:
        return [r for r in self.plan.ground_truth().to_pylist() if r["kind"] == kind]


def run(n: int, faults: str = "", **kw: object) -> Run:
    u = build_utility(n, **kw)  # type: ignore[arg-type]
    plan = Faults.from_names(faults).resolve(u)
    return Run(u, plan, list(iter_uploads(u, plan)))


@pytest.fixture(scope="session")
def clean() -> Run:
    """3000 meters, 2 days, 15-minute intervals, no faults."""
    return run(3000, seed=11, days=2)


@pytest.fixture(scope="session")
def faulted() -> Run:
    """6000 meters, 2 days, every fault kind but the storm."""
    return run(6000, "all", seed=5, days=2)


@pytest.fixture(scope="session")
def storm() -> Run:
    """20000 meters, 1 day, a storm (30 % of gasps lost)."""
    return run(20000, "storm", seed=7)
