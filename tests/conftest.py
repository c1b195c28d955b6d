"""Shared test configuration.

Tests that need a real service carry ``@pytest.mark.service("nats")`` (or
``"postgres"``, ``"mariadb"``, ``"mosquitto"``, ``"redis"``). When the service is not
reachable the test is skipped, unless ``HEADEND_REQUIRE_SERVICES=1`` is set (as CI
does), in which case it fails: a check that did not run is never reported as passed.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES: dict[str, tuple[str, int]] = {
    "postgres": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
    "redis": ("127.0.0.1", 6379),
    "mosquitto": ("127.0.0.1", 1883),
    "nats": ("127.0.0.1", 4222),
    "rabbitmq": ("127.0.0.1", 5672),
}

_reachable: dict[str, bool] = {}


def service_reachable(name: str) -> bool:
    """True if the named service accepts TCP connections (cached per session)."""
    if name not in _reachable:
        host, port = SERVICES[name]
        try:
            with socket.create_connection((host, port), timeout=1.0):
                _reachable[name] = True
        except OSError:
            _reachable[name] = False
    return _reachable[name]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="service"):
        for name in marker.args:
            if name not in SERVICES:
                raise pytest.UsageError(f"unknown service {name!r} in @pytest.mark.service")
            if not service_reachable(name):
                msg = f"service {name} at {SERVICES[name][0]}:{SERVICES[name][1]} unreachable"
                if os.environ.get("HEADEND_REQUIRE_SERVICES") == "1":
                    pytest.fail(msg + " (HEADEND_REQUIRE_SERVICES=1)")
                pytest.skip(msg)
