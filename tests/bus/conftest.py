"""Fixtures of the bus tests: one ``bus`` fixture over every adapter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from headend.bus import Bus, open_bus

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture(
    params=["memory", pytest.param("nats", marks=pytest.mark.service("nats"))]
)
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    b = open_bus("memory://" if request.param == "memory" else NATS_URL)
    yield b
    b.close()


@pytest.fixture
def uniq() -> str:
    """A unique token for stream, subject and consumer names."""
    return uuid.uuid4().hex[:10].upper()
