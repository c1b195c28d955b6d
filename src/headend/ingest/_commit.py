"""The committer: stores validated batches on a second thread while the next ones decode,
and the timing of the decode stage."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa

from headend.ingest.result import IngestResult

__all__ = ["Committer", "timed"]

if TYPE_CHECKING:
    from headend.ingest.pipeline import Ingestor


class Committer:
    """Stores validated batches on a second thread, one batch at a time, in order.

    While batch *n* is being made durable, the ingesting thread decodes and validates
    batch *n+1* (NumPy and Arrow release the GIL), so both cores work. ``wait`` returns
    the counts of what was stored; callers acknowledge only after it.
    """

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor
        self._batch_rows = ingestor.config.batch_reads
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headend-commit")
        self._future: Future[IngestResult] | None = None
        self._done = IngestResult()  # counts of finished commits not yet handed out
        self._parts: list[tuple[str, pa.Table | None, pa.Table | None, pa.Table | None]] = []
        self._rows = 0

    def submit(self, source: str, reads: pa.Table | None, regs: pa.Table | None,
               evs: pa.Table | None) -> None:
        """Queue validated rows; they are stored, in order, once about ``batch_reads``
        rows are queued (few large appends from many small blocks) or on ``wait``."""
        self._parts.append((source, reads, regs, evs))
        self._rows += sum(len(t) for t in (reads, regs, evs) if t is not None)
        if self._rows >= self._batch_rows:
            self._dispatch()

    def _dispatch(self) -> None:
        if not self._parts:
            return
        parts, self._parts, self._rows = self._parts, [], 0
        sources = sorted({p[0] for p in parts})
        source = sources[0] if len(sources) == 1 else f"{sources[0]} (+{len(sources) - 1})"

        def cat(i: int) -> pa.Table | None:
            tables = [p[i] for p in parts if p[i] is not None]
            return None if not tables else tables[0] if len(tables) == 1 else (
                pa.concat_tables(tables).combine_chunks())

        reads, regs, evs = cat(1), cat(2), cat(3)
        self._collect()  # one commit at a time, in order
        self._future = self._pool.submit(self._run, source, reads, regs, evs)

    def _run(self, source: str, reads: pa.Table | None, regs: pa.Table | None,
             evs: pa.Table | None) -> IngestResult:
        result = IngestResult()
        self._ingestor._store(source, reads, regs, evs, result)
        return result

    def _collect(self) -> None:
        if self._future is not None:
            fut, self._future = self._future, None
            self._done.add(fut.result())

    def wait(self) -> IngestResult:
        """Store what is queued; counts of everything stored since the last ``wait``
        (raises what the store raised)."""
        self._dispatch()
        self._collect()
        out, self._done = self._done, IngestResult()
        return out

    def close(self) -> IngestResult:
        try:
            return self.wait()
        finally:
            self._pool.shutdown(wait=True)


def timed(items: Iterable[Any], result: IngestResult, stage: str) -> Iterator[Any]:
    """``items``, adding the time spent producing each to ``result``'s ``stage``."""
    it = iter(items)
    while True:
        started = time.perf_counter()
        item = next(it, _END)
        result.seconds_by_stage[stage] += time.perf_counter() - started
        if item is _END:
            return
        yield item


_END: Final = object()
