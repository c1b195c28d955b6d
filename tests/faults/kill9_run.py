"""kill -9 of ``serve`` at 20 random points of a stream of 1M reads (a long run).

Not collected by the CI suite (its name is not ``test_*.py``; ``test_kill9.py`` runs the
same scenario with 50,000 reads): it takes 5-10 minutes per bus. Run it by path::

    python -m pytest -q -s tests/faults/kill9_run.py

The scenario is in ``_kill9.py``: 2,000 meters, 100 uploads of 10,000 reads (binary
frames, 5 intervals of every meter), posted by a collector-like client that retries
until it gets ``200``; 20 uploads drawn at random are hit by a SIGKILL of ``serve`` a
random 0-300 ms after the post, then ``serve`` is restarted and the upload posted
again. On the embedded default (durable bus in ``<data>/bus``) the subscriber is a
webhook; on NATS JetStream (a private nats-server) a durable consumer.

Checked: the store holds each read exactly once; the outbound stream ``HEADEND_OUT``
holds every read; the subscriber got every row at least once (it deduplicates on
meter, type and interval end, as docs/streams.md tells subscribers to do).

Results (2026-12-05, seed 20261204, this 2-core machine shared with other work):

* embedded: store 1,000,000 reads, none lost or doubled; ``HEADEND_OUT`` 1,000,000
  distinct reads; webhook 1,030,080 rows in 206,016 POSTs, all 1,000,000 distinct
  (30,080 rows published twice: uploads stored before a kill and published again from
  their redelivered ingest message); stream 111 s, webhook done 405 s after it. PASS.
* NATS: store 1,000,000; ``HEADEND_OUT`` 1,000,000 distinct; durable consumer
  1,004,880 rows in 200,976 messages, all 1,000,000 distinct; stream 115 s. PASS.

The earlier failure (2026-12-04: the webhook had 619,995 of the 1,000,000 rows after
180 s) was slow delivery, not loss: every read was in ``HEADEND_OUT`` (a diagnosis run
of this scenario, seed 7, found 1,000,000 of 1,000,000 there, and the webhook got all of them
261 s after a 96-s stream). The webhook posts one message at a time and ``serve``
spends 94 % of that thread waiting for the receiver (Python's ``http.server``, a
connection per request, about 600 POSTs a second), slower than the stream is
ingested; the old check also parsed every received row again every second, in the
process that runs the receiver, and gave up after 180 s. The check now parses what
is new only and waits up to 900 s. The NATS figure of that day (807,675 rows
missing) was not reproduced with this code (0 missing, and ``HEADEND_OUT`` complete).
Its check ended the pull at the first fetch that waited 2 s, which a busy server can
cause, so it may have been the check too (not proven); the pull now stops only when
the durable consumer has nothing pending. The gap between the store and the publish
that a kill could hit is covered on both buses by the redelivery of the
unacknowledged ingest message, tested on its own in
``tests/serve/test_publish_crash.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults._kill9 import run

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("bus", ["embedded", pytest.param("nats", marks=pytest.mark.service("nats"))])
def test_kill9_at_20_points_loses_nothing_doubles_nothing(bus: str, tmp_path: Path) -> None:
    # the webhook delivers one message per POST (one per meter and type: 202,000 for
    # 1M reads here) at about 600 a second on this machine, slower than the stream is
    # ingested, so it gets time to catch up from its durable backlog
    out = run(bus, tmp_path, meters=2_000, uploads=100, intervals=5, kills=20,
              seed=20261204, catch_up_s=900)
    print(out.report())
    assert out.total == 1_000_000
    out.check()
