"""Helpers of the NATS adapter (:mod:`headend.bus.nats`): publish acknowledgements,
driver errors as the port's, waiting for the first message of several consumers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors

from headend.errors import PublishError, ServiceUnavailable

__all__ = ["AckBatch", "first_message", "pub_ack", "translate"]


class AckBatch:
    """Publish acknowledgements of one :meth:`NatsBus.publish_many` attempt."""

    def __init__(self, batch_id: str, prefix: str, n: int) -> None:
        self.id = batch_id
        self.prefix = f"{prefix}.{batch_id}."
        self.results: list[Any] = [None] * n
        self.left = n
        self.done = asyncio.Event()
        if n == 0:
            self.done.set()

    def reply(self, k: int) -> str:
        return self.prefix + str(k)

    def set(self, k: int, msg: Any) -> None:
        if 0 <= k < len(self.results) and self.results[k] is None:
            self.results[k] = msg
            self.left -= 1
            if self.left == 0:
                self.done.set()


def pub_ack(msg: Any) -> int | Exception:
    """The stream sequence of a JetStream publish answer, or the exception it stands
    for (only ``seq`` is read: no PubAck object per message)."""
    if msg is None:
        return TimeoutError()
    if msg.headers and msg.headers.get("Status") == "503":
        return nats.js.errors.NoStreamResponseError()
    try:
        resp = json.loads(msg.data)
    except ValueError as exc:
        return exc
    if "error" in resp:
        try:
            nats.js.errors.APIError.from_error(resp["error"])  # raises the typed error
        except nats.js.errors.APIError as exc:
            return exc
    try:
        return int(resp["seq"])
    except (KeyError, TypeError, ValueError) as exc:
        return ValueError(f"unexpected publish answer {resp!r}: {exc}")


def translate(exc: BaseException) -> Exception:
    """A driver exception as the port's (no driver exception escapes the adapter)."""
    if isinstance(exc, nats.errors.NoServersError):
        return ServiceUnavailable(str(exc))
    if isinstance(exc, (nats.errors.Error, nats.js.errors.Error)):
        return PublishError(f"NATS: {exc!r}")
    return exc if isinstance(exc, Exception) else PublishError(repr(exc))


async def first_message(consumers: Sequence[Any], timeout_s: float
                        ) -> list[tuple[Any, Any]]:
    """Wait for the first message on any consumer's client queue. ``Queue.get`` is
    safe to cancel (an item is only removed by a get that completes), and a get that
    completed before its cancellation keeps its message: nothing is dropped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    tasks = {asyncio.ensure_future(c._psub._sub._pending_queue.get()): c for c in consumers}
    got: list[tuple[Any, Any]] = []
    try:
        while not got and (left := deadline - loop.time()) > 0:
            done, _ = await asyncio.wait(tasks, timeout=left,
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                c = tasks.pop(t)
                raw = c._taken(t.result())
                if raw is None:  # a status: keep waiting on this consumer
                    tasks[asyncio.ensure_future(c._psub._sub._pending_queue.get())] = c
                else:
                    got.append((c, raw))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t, c in tasks.items():
            if not t.cancelled() and t.exception() is None:
                raw = c._taken(t.result())
                if raw is not None:
                    got.append((c, raw))
    return got
