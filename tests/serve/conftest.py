"""Fixtures of the serve tests (the test kit is in ``_fleet.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._fleet import Fleet


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.make()


@pytest.fixture
def uniq() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    d.mkdir()
    yield d
