"""An ingest worker process that gets stuck in its first batch (test kit of
test_failover.py): it takes its partitions by lease like any worker, touches
``marker`` once a batch is being ingested, and never finishes it, heartbeating the
batch in progress until it is killed.

    python _stuck_worker.py NATS_URL PARTITIONS MARKER
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from headend.bus import open_bus
from headend.serve.worker import IngestWorker, WorkerConfig


def main(url: str, partitions: int, marker: Path) -> None:
    def stuck(data: bytes, source: str, content_type: str | None, **_: Any) -> Any:
        marker.write_text(str(len(data)))
        time.sleep(3600)

    IngestWorker(open_bus(url), stuck, config=WorkerConfig(partitions=partitions)).run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
