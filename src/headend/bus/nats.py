"""NATS JetStream adapter of the bus port (file storage, replicated streams).

``nats-py`` is asyncio; this adapter runs one event loop in a daemon thread and offers
the blocking port of :mod:`headend.bus.base` on top of it, so callers (HTTP handlers in
a thread pool, workers, the CLI) stay synchronous. Streams use file storage;
``StreamSpec.replicas`` = 3 on a 3-node cluster survives one node down. Durable
consumers are JetStream durable pull consumers (explicit ack); key-value buckets are
JetStream KV buckets whose TTL is the bucket's ``max_age``.

Install with ``pip install headend[nats]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from headend.bus.base import Message, StreamSpec
from headend.errors import PublishError, ServiceUnavailable

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.js import api
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the NATS bus needs nats-py: pip install 'headend[nats]'"
    ) from exc

from headend.bus._natsio import AckBatch as _AckBatch
from headend.bus._natsio import first_message as _first_message
from headend.bus._natsio import pub_ack as _pub_ack
from headend.bus._natsio import translate as _translate

__all__ = ["NatsBus"]

log = logging.getLogger(__name__)

#: publish failures worth retrying (no stream leader yet, node down, reconnecting)
_RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
              nats.errors.ConnectionReconnectingError, asyncio.TimeoutError,
              nats.js.errors.ServiceUnavailableError,
              nats.js.errors.NoStreamResponseError)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0


class _Loop:
    """An asyncio loop in a daemon thread; :meth:`run` blocks on a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nats-bus", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = DEFAULT_TIMEOUT_S) -> T:
        if self.loop.is_closed() or not self.thread.is_alive():
            coro.close()
            raise ServiceUnavailable("the NATS bus is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError as exc:
            fut.cancel()
            raise ServiceUnavailable(f"NATS call timed out after {timeout} s") from exc
        except nats.errors.NoServersError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise PublishError(f"NATS: {exc!r}") from exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class _NatsConsumer:
    def __init__(self, bus: NatsBus, psub: Any, ephemeral: bool) -> None:
        self._bus = bus
        self._psub = psub
        self._ephemeral = ephemeral

    def ack(self, msg: Message) -> None:
        # sent once the data is durable; if the ack is lost the message is redelivered
        # after ack_wait and deduplicated by the store
        raw: Any = msg._raw
        self._bus._loop.run(raw.ack())

    def ack_many(self, msgs: Sequence[Message]) -> None:
        """Acknowledge ``msgs`` in one trip to the event loop (pipelined, one flush)."""

        async def go() -> None:
            for m in msgs:
                raw: Any = m._raw
                await raw.ack()

        self._bus._loop.run(go())

    def nak(self, msg: Message) -> None:
        raw: Any = msg._raw
        self._bus._loop.run(raw.nak())

    def in_progress(self, msg: Message) -> None:
        raw: Any = msg._raw
        self._bus._loop.run(raw.in_progress())

    async def _fetch_raw(self, max_messages: int, timeout_s: float) -> list[Any]:
        try:
            return list(await self._psub.fetch(max_messages, timeout=timeout_s))
        except (TimeoutError, nats.errors.TimeoutError):
            return []

    def _wrap(self, raws: Sequence[Any]) -> list[Message]:
        out = []
        for r in raws:
            md = r.metadata
            out.append(Message(r.subject, r.data, dict(r.headers or {}), md.sequence.stream,
                               md.num_delivered, self, r, md.timestamp.timestamp()))
        return out

    def fetch(self, max_messages: int, timeout_s: float) -> list[Message]:
        raws = self._bus._loop.run(self._fetch_raw(max_messages, timeout_s),
                                   timeout=timeout_s + DEFAULT_TIMEOUT_S)
        return self._wrap(raws)

    @staticmethod
    def fetch_each_of(requests: Sequence[tuple[_NatsConsumer, int]], timeout_s: float
                      ) -> list[list[Message] | Exception]:
        """:func:`headend.bus.base.fetch_each`: the pull requests of all consumers go
        out together and are awaited together (each fetch runs to its end: nothing
        is cancelled, so no delivered message can be dropped on the client)."""
        if not requests:
            return []

        async def go() -> list[Any]:
            res: list[Any] = await asyncio.gather(
                *(c._fetch_raw(n, timeout_s) for c, n in requests), return_exceptions=True)
            return res

        res = requests[0][0]._bus._loop.run(go(), timeout=timeout_s + DEFAULT_TIMEOUT_S)
        out: list[list[Message] | Exception] = []
        for (c, _), r in zip(requests, res, strict=True):
            out.append(_translate(r) if isinstance(r, BaseException) else c._wrap(r))
        return out

    @staticmethod
    def fetch_first_of(consumers: Sequence[_NatsConsumer], timeout_s: float
                       ) -> list[Message]:
        """:func:`headend.bus.base.fetch_first`: messages already received are
        returned at once; otherwise one pull request for one message (expiring after
        ``timeout_s``) goes to each consumer and the first message to arrive on any of
        them is returned. Requests that are still open may deliver one message each
        later: it waits in that consumer's client queue and is returned by its next
        fetch (or handed back by :meth:`close`)."""
        if not consumers:
            return []

        async def go() -> list[tuple[_NatsConsumer, Any]]:
            for c in consumers:  # what earlier pull requests left in the queues
                raw = c._queued()
                if raw is not None:
                    return [(c, raw)]
            expires = max(int(timeout_s * 1e9) - 100_000, 1_000_000)
            request = json.dumps({"batch": 1, "expires": expires}).encode()
            for c in consumers:
                await c._bus.nc.publish(c._psub._nms, request, c._psub._deliver)
            return await _first_message(consumers, timeout_s)

        got = consumers[0]._bus._loop.run(go(), timeout=timeout_s + DEFAULT_TIMEOUT_S)
        return [m for c, raw in got for m in c._wrap([raw])]

    def _queued(self) -> Any:
        """The next message already in this client's queue (statuses skipped), or None."""
        q = self._psub._sub._pending_queue
        while not q.empty():
            raw = self._taken(q.get_nowait())
            if raw is not None:
                return raw
        return None

    def _taken(self, raw: Any) -> Any:
        """Book a message taken off the client queue; None for a status message (a
        pull request that expired or found nothing, a heartbeat)."""
        sub = self._psub._sub
        sub._pending_size -= len(raw.data)
        status = raw.headers.get("Status") if raw.headers else None
        if status:
            log.debug("pull status %s: %s", status, raw.headers.get("Description", ""))
            return None
        return raw

    def pending(self) -> int:
        info = self._bus._loop.run(self._psub.consumer_info())
        return int(info.num_pending or 0)

    def close(self) -> None:
        async def nak_pending() -> None:
            # messages a pull request of ours received but no fetch returned yet (a
            # pull that outlived its fetch): hand them back now instead of after
            # ack_wait (another worker may own the partition next)
            queue = getattr(getattr(self._psub, "_sub", None), "_pending_queue", None)
            while queue is not None and not queue.empty():
                raw = queue.get_nowait()
                if raw.reply and raw.data:
                    await raw.nak()

        try:
            self._bus._loop.run(nak_pending(), timeout=2)
        except Exception as exc:  # noqa: BLE001 - best effort: ack_wait redelivers anyway
            log.debug("closing consumer: %s", exc)
        try:
            self._bus._loop.run(self._psub.unsubscribe(), timeout=2)
        except Exception as exc:  # noqa: BLE001 - closing: the connection may be gone already
            log.debug("closing consumer: %s", exc)


class _NatsKV:
    def __init__(self, bus: NatsBus, kv: Any) -> None:
        self._bus = bus
        self._kv = kv

    def get(self, key: str) -> tuple[bytes, int] | None:
        async def go() -> tuple[bytes, int] | None:
            try:
                e = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
            return (e.value or b"", int(e.revision))

        return self._bus._loop.run(go())

    def create(self, key: str, value: bytes) -> int | None:
        async def go() -> int | None:
            try:
                return int(await self._kv.create(key, value))
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                return None

        return self._bus._loop.run(go())

    def update(self, key: str, value: bytes, revision: int) -> int | None:
        async def go() -> int | None:
            try:
                return int(await self._kv.update(key, value, last=revision))
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                return None

        return self._bus._loop.run(go())

    def delete(self, key: str) -> None:
        self._bus._loop.run(self._kv.delete(key))

    def keys(self) -> list[str]:
        async def go() -> list[str]:
            try:
                return sorted(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                return []

        return self._bus._loop.run(go())


class NatsBus:
    """The JetStream :class:`~headend.bus.base.Bus`.

    Parameters
    ----------
    servers : str or sequence of str
        ``nats://host:port`` URLs (several for a cluster); comma-separated accepted.
    user, password : str, optional
        Credentials, if the server requires them.
    connect_timeout_s : float
        Give up connecting after this long [s] (raises ServiceUnavailable).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        user: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 5.0,
        name: str = "headend",
        publish_retry_s: float = 15.0,
        inbox_prefix: str | None = None,
    ) -> None:
        self.publish_retry_s = publish_retry_s
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self._loop = _Loop()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user, password=password)
        if inbox_prefix is not None:
            kwargs.update(inbox_prefix=inbox_prefix)

        async def on_error(exc: Exception) -> None:
            log.info("NATS: %s", exc)

        async def connect() -> Any:
            return await nats.connect(
                error_cb=on_error,
                servers=list(servers), name=name, connect_timeout=connect_timeout_s,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                **kwargs,
            )

        try:
            self.nc = self._loop.run(connect(), timeout=connect_timeout_s * 3 + 1)
        except Exception as exc:
            self._loop.stop()
            raise ServiceUnavailable(f"cannot connect to NATS at {servers}: {exc}") from exc
        self.js = self.nc.jetstream(timeout=DEFAULT_TIMEOUT_S)
        self._ack_prefix: str | None = None
        self._ack_seq = 0
        self._acks: dict[str, _AckBatch] = {}

    def ensure_stream(self, spec: StreamSpec) -> None:
        cfg = api.StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            storage=api.StorageType.FILE,
            num_replicas=spec.replicas,
            retention=api.RetentionPolicy.WORK_QUEUE if spec.work_queue
            else api.RetentionPolicy.LIMITS,
            max_age=spec.max_age_s or None,
            max_msgs=spec.max_msgs,
            max_bytes=spec.max_bytes,
        )

        async def go() -> None:
            try:
                await self.js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(cfg)
            # an existing stream is kept as its operator set it (replicas, limits)

        self._loop.run(go())

    def publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None = None) -> int:
        return self.publish_many([(subject, data, headers)])[0]

    def publish_many(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        """Publish pipelined; messages not acknowledged (a stream leader being elected,
        a node down) are retried for up to ``publish_retry_s``. A message carrying a
        ``Nats-Msg-Id`` header is stored once even if retried (JetStream dedup window)."""

        async def attempt(todo: list[int]) -> list[Any]:
            # pipelined: every message published with its own reply subject under one
            # wildcard subscription, one flush, then the acks are awaited together
            # (no future, semaphore or timer per message)
            batch = await self._batch_acks(len(todo))
            try:
                for k, i in enumerate(todo):
                    subject, data, headers = messages[i]
                    await self.nc.publish(subject, data, reply=batch.reply(k),
                                          headers=dict(headers) if headers else None)
                await self.nc.flush(DEFAULT_TIMEOUT_S)
                try:
                    await asyncio.wait_for(batch.done.wait(), DEFAULT_TIMEOUT_S)
                except TimeoutError:
                    pass
                return [_pub_ack(r) for r in batch.results]
            finally:
                self._acks.pop(batch.id, None)

        async def go() -> list[int]:
            seqs: list[int | None] = [None] * len(messages)
            todo = list(range(len(messages)))
            deadline = self._loop.loop.time() + self.publish_retry_s
            delay = 0.05
            while True:
                res = await attempt(todo)
                failed = []
                for i, r in zip(todo, res, strict=True):
                    if isinstance(r, BaseException):
                        if not isinstance(r, _RETRYABLE):
                            raise r
                        failed.append(i)
                    else:
                        seqs[i] = r
                if not failed:
                    return [int(x) for x in seqs if x is not None]
                if self._loop.loop.time() >= deadline:
                    raise PublishError(f"{len(failed)} messages not acknowledged by JetStream "
                                       f"within {self.publish_retry_s} s")
                todo = failed
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

        return self._loop.run(go(), timeout=self.publish_retry_s + DEFAULT_TIMEOUT_S * 2)

    async def _batch_acks(self, n: int) -> _AckBatch:
        if self._ack_prefix is None:
            self._ack_prefix = self.nc.new_inbox()

            async def on_ack(msg: Any) -> None:
                _, bid, k = msg.subject.rsplit(".", 2)
                batch = self._acks.get(bid)
                if batch is not None:
                    batch.set(int(k), msg)

            await self.nc.subscribe(self._ack_prefix + ".>", cb=on_ack,
                                    pending_msgs_limit=-1, pending_bytes_limit=-1)
        self._ack_seq += 1
        batch = _AckBatch(f"{self._ack_seq}", self._ack_prefix, n)
        self._acks[batch.id] = batch
        return batch

    def consumer(
        self,
        stream: str,
        durable: str | None,
        *,
        filter_subject: str = ">",
        start_seq: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = -1,
    ) -> _NatsConsumer:
        cfg = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            filter_subject=filter_subject,
            max_ack_pending=-1 if durable else 10_000,
        )
        if start_seq <= 0:
            cfg.deliver_policy = api.DeliverPolicy.NEW
        elif start_seq > 1:
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = start_seq
        if durable is None:
            cfg.inactive_threshold = 60.0

        async def go() -> Any:
            if durable is not None:
                await self._update_durable(stream, durable, ack_wait_s, max_deliver)
            return await self.js.pull_subscribe(filter_subject, durable=durable, stream=stream,
                                                config=cfg)

        return _NatsConsumer(self, self._loop.run(go()), durable is None)

    async def _update_durable(self, stream: str, durable: str, ack_wait_s: float,
                              max_deliver: int) -> None:
        """Bring an existing durable consumer's ``ack_wait`` and ``max_deliver`` to the
        values asked for (JetStream keeps a durable's config as it was created, and
        binding to it does not change it: a consumer created by an older release would
        keep its 30 s ``ack_wait`` for ever). Both are editable on a live consumer; its
        position, filter and pending acknowledgements stay."""
        try:
            info = await self.js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            return  # pull_subscribe creates it with the config asked for
        cur = info.config
        wait_now = float(cur.ack_wait or 0.0)
        deliver_now = -1 if cur.max_deliver is None or cur.max_deliver <= 0 else \
            int(cur.max_deliver)
        deliver_want = -1 if max_deliver <= 0 else max_deliver
        if abs(wait_now - ack_wait_s) < 1e-3 and deliver_now == deliver_want:
            return
        log.info("consumer %s/%s: ack_wait %.3g s -> %.3g s, max_deliver %d -> %d", stream,
                 durable, wait_now, ack_wait_s, deliver_now, deliver_want)
        cur.ack_wait = ack_wait_s
        cur.max_deliver = deliver_want
        cur.name = cur.name or durable
        cur.durable_name = durable
        await self.js.add_consumer(stream, config=cur)

    def kv(self, bucket: str, *, ttl_s: float, replicas: int = 1) -> _NatsKV:
        async def go() -> Any:
            try:
                return await self.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                return await self.js.create_key_value(bucket=bucket, ttl=ttl_s or None,
                                                      history=1, replicas=replicas)

        return _NatsKV(self, self._loop.run(go()))

    def dropped(self) -> dict[tuple[str, str], int]:
        """Always empty: JetStream removes messages by its limits without recording
        which consumers had not acknowledged them (nor does it publish an advisory);
        on NATS, watch consumer lag (``headend_consumer_lag_messages``) against the
        stream's limits instead."""
        return {}

    def stream_messages(self, name: str) -> int:
        """Messages a stream holds now (a work queue: those not yet acknowledged).
        Monitoring and benchmarks; not part of the bus port."""

        async def go() -> int:
            info = await self.js.stream_info(name)
            return int(info.state.messages)

        return self._loop.run(go())

    def delete_stream(self, name: str) -> None:
        """Delete a stream if it exists (tests, re-deployments)."""

        async def go() -> None:
            try:
                await self.js.delete_stream(name)
            except nats.js.errors.NotFoundError:
                pass

        self._loop.run(go())

    def close(self) -> None:
        try:
            self._loop.run(self.nc.close(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - closing: nothing left to protect
            log.debug("closing connection: %s", exc)
        self._loop.stop()
