"""kill -9 of ``serve`` at 4 random points of a stream of 50,000 reads, on the embedded
default (durable bus in the data directory) and on NATS JetStream (a private
nats-server): the CI-sized variant of ``kill9_run.py`` (the scenario is in
``_kill9.py``).

Checked: the store holds each of the 50,000 reads exactly once; the outbound stream
``HEADEND_OUT`` holds every one of them; a durable third-party subscriber (a webhook on
the embedded bus, a JetStream durable consumer on NATS) got every row at least once
(it deduplicates on meter, type and interval end).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults._kill9 import run

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("bus", ["embedded", pytest.param("nats", marks=pytest.mark.service("nats"))])
def test_kill9_at_4_points_of_50k_reads(bus: str, tmp_path: Path) -> None:
    out = run(bus, tmp_path, meters=500, uploads=20, intervals=5, kills=4, seed=20261205,
              catch_up_s=120)
    print(out.report())
    assert out.total == 50_000
    out.check()
