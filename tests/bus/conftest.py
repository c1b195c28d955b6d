"""Fixtures of the bus tests: one ``bus`` fixture over every adapter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headend.bus import Bus, open_bus

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture(
    params=["memory", "log", pytest.param("nats", marks=pytest.mark.service("nats"))]
)
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    url = {"memory": "memory://", "log": f"file://{tmp_path / 'bus'}",
           "nats": NATS_URL}[request.param]
    b = open_bus(url)
    yield b
    b.close()


@pytest.fixture
def uniq() -> str:
    """A unique token for stream, subject and consumer names."""
    return uuid.uuid4().hex[:10].upper()
