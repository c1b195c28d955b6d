"""Fixtures of the command tests: a store of every adapter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headend.commands import CommandStore, MemoryCommandStore, SqliteCommandStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommandStore]:
    s: CommandStore
    if request.param == "memory":
        s = MemoryCommandStore()
    else:
        s = SqliteCommandStore(tmp_path / "commands" / "commands.sqlite")
    yield s
    s.close()
