"""``serve`` hands the listeners' outbox over on its own (a publish that failed waits
there; with no upload coming, nothing else would deliver it)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from headend.serve import service as service_mod
from headend.serve.config import load_config
from headend.serve.service import Service

from ._fleet import BUCKET_BITS


def test_serve_retries_the_outbox_at_start_and_every_interval(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_mod, "OUTBOX_RETRY_S", 0.05)
    calls = threading.Semaphore(0)
    svc = Service(load_config(env={}, data=data_dir, bucket_bits=BUCKET_BITS, partitions=4))
    real = svc.host.deliver_pending

    def counted() -> int:
        calls.release()
        return real()

    monkeypatch.setattr(svc.host, "deliver_pending", counted)
    svc.start()
    try:
        for _ in range(3):  # at start, then again and again
            assert calls.acquire(timeout=10)
        assert any(t.name == "outbox" and t.is_alive() for t in svc._threads)
    finally:
        svc.close()
    assert not any(t.name == "outbox" and t.is_alive() for t in svc._threads)
