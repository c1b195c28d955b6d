"""The HTTP API (FastAPI): uploads, third-party Server-Sent Events, metrics, health.

Routes stay thin: parse, call the service, serialise.

``POST /v1/uploads``
    Body: one or more binary frames (``Content-Type: application/octet-stream``) or
    canonical CSV (``text/csv``). The reply is the acknowledgement, sent only once the
    data is durable: ``200 {"accepted": n, "duplicate": n, "quarantined": n,
    "by_reason": {...}, "parts": n, "meters_loaded": n, "collectors_loaded": n}``.
    ``400 {"error": ..., "reason": ...}`` if the upload cannot be used at all (e.g. the
    body does not match its content type): it is then in the quarantine with that
    reason. ``415`` for another content type; ``503`` if it is not durable in time or
    the store is unavailable (retrying is harmless: duplicates are counted, not
    stored). The rule is the one of every uplink source (:mod:`headend.serve.sources`).
``GET /v1/stream``
    Server-Sent Events of the caller's scope (``Authorization: Bearer <token>`` or
    ``?token=``), optionally narrowed by ``?filter=<subject filter>``. Each event:
    ``id`` = stream sequence, ``event`` = subject, ``data`` = the JSON lines. A client
    that reconnects with ``Last-Event-ID`` resumes right after it; without it, the
    stream starts with new messages (``?from_seq=N`` to replay from N).
``POST /v1/commands``, ``GET /v1/commands/{id}``, ``GET /v1/collectors/{id}/commands``
    Commands to meters and the collectors' long poll (:mod:`headend.serve.commands`).
``GET /metrics``
    Prometheus text format.
``GET /healthz``
    ``{"status": "ok", ...}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from headend.bus import Message, subject_matches
from headend.errors import HeadendError
from headend.serve.commands import CommandsRoutes
from headend.serve.service import Service
from headend.serve.sources import Intake, Upload
from headend.serve.streams import OUT_STREAM
from headend.serve.subscribers import Subscriber
from headend.serve.uplink import UploadAck

__all__ = ["HttpUplink", "create_app", "sse_event"]

_CTS = ("application/octet-stream", "text/csv", "text/plain")
KEEPALIVE_S = 15.0


def sse_event(m: Message) -> bytes:
    """One SSE event of a message (one ``data:`` line per JSON line)."""
    lines = m.data.decode("utf-8").rstrip("\n").split("\n")
    body = "".join(f"data: {line}\n" for line in lines)
    return f"id: {m.seq}\nevent: {m.subject}\n{body}\n".encode()


def _ack_all(msgs: list[Message]) -> None:
    for m in msgs:
        m.ack()


def _subscriber(service: Service, request: Request) -> Subscriber:
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else \
        request.query_params.get("token", "")
    sub = service.subscribers.by_token(token) if token else None
    if sub is None:
        raise HTTPException(401, "a valid subscriber token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    return sub


class HttpUplink:
    """The HTTP uplink source: ``POST /v1/uploads`` (module docstring), in :attr:`router`.

    The reply is the receipt of :meth:`Intake.take`: 200 and the counts (ack), 400 and
    the reason (reject: the body is in the quarantine), 503 (defer: retry). ``415``
    answers a content type that is not an upload, before anything is received; 503 too
    until :meth:`start` gave an intake (a process without an uplink).
    """

    channel = "http"

    def __init__(self) -> None:
        self._intake: Intake | None = None
        self.router = APIRouter()
        self.router.add_api_route("/v1/uploads", self.receive, methods=["POST"])

    def start(self, intake: Intake) -> None:
        self._intake = intake

    def close(self) -> None:
        self._intake = None

    async def receive(self, request: Request) -> Response:
        intake = self._intake
        if intake is None:
            raise HTTPException(503, "this process has no uplink")
        ct = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ct not in _CTS:
            raise HTTPException(415, "Content-Type must be application/octet-stream or text/csv")
        body = await request.body()
        upload = Upload(body, f"http:{request.client.host if request.client else '?'}", ct)
        outcome = await run_in_threadpool(intake.take, upload)
        if outcome.kind == "ack":
            assert isinstance(outcome.result, UploadAck)
            return JSONResponse(outcome.result.to_dict())
        if outcome.kind == "reject":
            return JSONResponse({"error": outcome.detail, "reason": outcome.reason},
                                status_code=400)
        return JSONResponse({"error": str(outcome.error)}, status_code=503)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application of a started :class:`Service`."""
    app = FastAPI(title="headend", version="1", docs_url=None, redoc_url=None)

    uploads = HttpUplink()
    if service.uplink is not None:
        uploads.start(service.uplink.intake(
            "http", lambda rows: service.host.data.quarantine.append(rows), wait=True,
            on_upload=service.metrics.uploads.labels("http").inc))
    app.include_router(uploads.router)
    app.include_router(CommandsRoutes(
        service.commands, poll_max_wait_s=service.cfg.commands.poll_max_wait_s).router)

    @app.get("/v1/stream")
    async def stream(request: Request) -> StreamingResponse:
        sub = _subscriber(service, request)
        narrow = request.query_params.get("filter")
        last_id = request.headers.get("last-event-id")
        from_seq = request.query_params.get("from_seq")
        try:
            start = int(last_id) + 1 if last_id else int(from_seq) if from_seq else 0
        except ValueError as exc:
            raise HTTPException(400, "Last-Event-ID must be a stream sequence") from exc
        broker_filter = narrow or sub.filter_subject
        consumer = await run_in_threadpool(
            lambda: service.bus.consumer(OUT_STREAM, None, filter_subject=broker_filter,
                                         start_seq=start, ack_wait_s=60.0))

        async def events() -> AsyncIterator[bytes]:
            idle = 0.0
            try:
                yield b": headend stream\n\n"
                while True:
                    if await request.is_disconnected():
                        return
                    try:
                        msgs = await run_in_threadpool(consumer.fetch, 256, 1.0)
                    except HeadendError:  # the bus is closing: end the stream
                        return
                    if not msgs:
                        idle += 1.0
                        if idle >= KEEPALIVE_S:
                            idle = 0.0
                            yield b": keepalive\n\n"
                        continue
                    idle = 0.0
                    out = []
                    for m in msgs:
                        # server-side scope check: the broker filter may be the narrower one
                        if subject_matches(sub.filter_subject, m.subject) and (
                                narrow is None or subject_matches(narrow, m.subject)):
                            out.append(sse_event(m))
                    await run_in_threadpool(_ack_all, msgs)
                    if out:
                        yield b"".join(out)
            finally:
                try:
                    await asyncio.shield(run_in_threadpool(consumer.close))
                except HeadendError:
                    pass

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/metrics")
    async def metrics() -> Response:
        body = await run_in_threadpool(service.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "bus": service.cfg.bus.split("@")[-1],
                "workers": [sorted(w.owned) for w in service.workers]}

    return app
