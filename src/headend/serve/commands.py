"""Commands in ``headend serve``: the HTTP routes, the downlink to collectors, the
responses coming back, and the states published on the bus (docs/commands.md).

Routes (thin: parse, call :class:`CommandService`, serialise):

``POST /v1/commands``
    JSON ``{"kind", "meter_ids", "reason"?, "command_id"?, "expires_in_s"?, "confirm"?,
    "force"?}``; ``202 {"commands": [<command>...]}``, one per distinct meter, queued or
    rejected with its reason (:meth:`headend.commands.Command.to_json`). ``400
    {"error"}`` for a request that is not one (unknown kind, no meter, ``force``
    without ``reason``); ``409 {"error"}`` when a ``command_id`` is already a command of
    another kind or meter.
``GET /v1/commands/{command_id}``
    ``200 <command>``, ``404 {"error"}``.
``GET /v1/collectors/{collector_id}/commands?wait=SECONDS``
    The long poll of a collector: ``200`` with the downlink JSON lines
    (``application/x-ndjson``) as soon as the scheduler lets some go, or ``204`` when
    none did within ``wait`` (0 to ``poll_max_wait_s``; default 0: answer at once).

The downlink: :class:`CommandService` runs one thread that, every ``tick_s``, expires
commands past their expiry, queues again those sent and not answered in time
(:func:`~headend.commands.scheduler.resend_due`) and, when serve runs with MQTT,
publishes the commands :func:`~headend.commands.scheduler.plan` lets go to each collector
on ``headend/downlink/<collector_id>`` (QoS 1, one message per collector and tick,
JSON lines). A command becomes ``sent`` once the broker acknowledged it (PUBACK) or a
poll returned it. A collector that polled in the last ``poller_ttl_s`` gets its
commands only from its polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool

from headend.bus import Bus
from headend.commands import (
    Command,
    CommandRequest,
    CommandStore,
    TransitionError,
    UnknownCommand,
    admit,
    downlink_lines,
    meter_facts,
)
from headend.commands.apply import apply_responses, apply_switch
from headend.commands.responses import decode_command_responses
from headend.commands.scheduler import (
    IN_FLIGHT_STATES,
    Bucket,
    Candidate,
    SchedulerConfig,
    expiring,
    handover_backoff_ms,
    plan,
    resend_due,
)
from headend.errors import HeadendError, ServiceUnavailable, ValidationError
from headend.model import commands as C
from headend.model.codes import COMMODITIES
from headend.serve.streams import JSONL
from headend.serve.subjects import token

__all__ = ["ACTOR", "CommandService", "CommandsRoutes", "Handover", "command_subject",
           "mqtt_downlink"]

log = logging.getLogger(__name__)

#: actor of the head end's own state changes (sent, expired, resent) in the audit log
ACTOR: Final = "headend"
#: the downlink thread rests this many times as long as its last tick took
REST_FACTOR: Final = 3.0
#: how long a hand-over over MQTT waits for the broker's PUBACK [s]
PUBACK_TIMEOUT_S: Final = 10.0


def _ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def _line(c: Command) -> bytes:
    return (json.dumps(c.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def command_subject(c: Command, place: tuple[str, str, str, str]) -> str:
    """``headend.commands.<state>.<commodity>.<substation>.<feeder>.<transformer>.
    <meter>.<kind>`` (tokens of :mod:`headend.serve.subjects`); ``place`` is the
    meter's commodity name and its substation, feeder and transformer ids (tokens
    already)."""
    com, sub, fdr, tx = place
    return f"headend.commands.{c.state}.{com}.{sub}.{fdr}.{tx}.{token(c.meter_id)}.{c.kind}"


#: hands downlink payloads over: ``{collector_id: payload}`` -> the collectors whose
#: hand-over failed, with the error (the others are acknowledged)
Handover = Callable[[Mapping[str, bytes]], dict[str, Exception]]


def mqtt_downlink(client: Any, *, timeout_s: float = PUBACK_TIMEOUT_S) -> Handover:
    """Hand-over over MQTT with a connected paho ``client``: each payload is published
    on ``headend/downlink/<collector_id>`` with QoS 1 (all at once, pipelined), then the
    broker's PUBACKs are awaited, ``timeout_s`` [s] in all; a collector whose message
    got none fails with :class:`ServiceUnavailable`."""
    from headend.serve.mqtt import DOWNLINK_TOPIC

    def send(batch: Mapping[str, bytes]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        infos = {coll: client.publish(DOWNLINK_TOPIC.format(collector_id=coll), payload,
                                      qos=1) for coll, payload in batch.items()}
        deadline = time.monotonic() + timeout_s
        for coll, info in infos.items():
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                failed[coll] = ServiceUnavailable(f"MQTT downlink to {coll}: {exc}")
                continue
            if not info.is_published():
                failed[coll] = ServiceUnavailable(f"MQTT downlink to {coll}: no PUBACK "
                                                  f"within {timeout_s} s")
        return failed

    return send


#: order of the open states at one instant (a newer view of a command replaces an older)
_OPEN_RANK: Final = {"queued": 0, "sent": 1, "delivered": 2}
#: how long [s] an ended command is remembered, so that a late view of it (published
#: outside the lock) does not open it again
ENDED_TTL_S: Final = 120.0


class _OpenCommands:
    """The open commands (queued, sent, delivered) by id and by collector, with each
    collector's count of queued ones: a poll plans on its own collector's commands
    only, and not at all when none of them is queued.

    Views of a command come from several threads: an older one never replaces a newer
    one (by ``updated_ms``, then lifecycle order), and an ended command is not opened
    again by a late view of it (for :data:`ENDED_TTL_S`).
    """

    __slots__ = ("by_collector", "by_id", "ended", "queued")

    def __init__(self, cmds: Iterable[Command] = (), ended: dict[str, float] | None = None
                 ) -> None:
        self.by_id: dict[str, Command] = {}
        self.by_collector: dict[str | None, dict[str, Command]] = {}
        self.queued: dict[str | None, int] = {}
        self.ended: dict[str, float] = ended if ended is not None else {}
        for c in cmds:
            self.put(c)

    def put(self, c: Command) -> None:
        """Add ``c``, or replace the command of its id if ``c`` is not older."""
        if c.command_id in self.ended:
            return
        cur = self.by_id.get(c.command_id)
        if cur is not None and (c.updated_ms, _OPEN_RANK.get(c.state, 3)) < \
                (cur.updated_ms, _OPEN_RANK.get(cur.state, 3)):
            return
        self._drop(c.command_id)
        self.by_id[c.command_id] = c
        self.by_collector.setdefault(c.collector_id, {})[c.command_id] = c
        if c.state == "queued":
            self.queued[c.collector_id] = self.queued.get(c.collector_id, 0) + 1

    def end(self, command_id: str) -> None:
        """The command ended (completed, failed, expired): forget it, remember that."""
        self._drop(command_id)
        self.ended[command_id] = time.monotonic()

    def _drop(self, command_id: str) -> None:
        c = self.by_id.pop(command_id, None)
        if c is None:
            return
        mine = self.by_collector[c.collector_id]
        del mine[command_id]
        if not mine:
            del self.by_collector[c.collector_id]
        if c.state == "queued":
            self.queued[c.collector_id] -= 1

    def reset(self, cmds: Iterable[Command]) -> _OpenCommands:
        """A fresh view of the open commands as read from the store (ended ones
        remembered for :data:`ENDED_TTL_S`)."""
        t = time.monotonic() - ENDED_TTL_S
        return _OpenCommands(cmds, {k: v for k, v in self.ended.items() if v > t})

    def values(self) -> list[Command]:
        return list(self.by_id.values())

    def of(self, collector_id: str) -> list[Command]:
        """The open commands of ``collector_id``; none when none of them is queued
        (nothing to plan)."""
        if not self.queued.get(collector_id):
            return []
        return list(self.by_collector.get(collector_id, {}).values())


@dataclass(slots=True)
class _Sends:
    """What the service remembers of a command between ticks (lost at a restart)."""

    sends: int = 0  # hand-overs so far
    last_ms: int = 0  # last hand-over [ms]
    failures: int = 0  # failed hand-overs in a row
    not_before_ms: int = 0


class CommandService:
    """Commands of one serve process: admission, downlink, responses, bus states.

    Parameters
    ----------
    store : CommandStore
        The durable store (``<data>/commands/``); closed by :meth:`close`.
    registry : callable
        Returns the current :class:`~headend.store.registry.MeterRegistry`.
    bus : Bus or None
        Where command states are published (``headend.commands.<state>...``).
    cfg : SchedulerConfig
    poller_ttl_s : float
        A collector that polled within this long [s] gets its commands by poll only.
    tick_s : float
        Period of the downlink thread [s].
    clock : callable
        Seconds since the epoch (tests).
    """

    def __init__(self, store: CommandStore, registry: Callable[[], Any], bus: Bus | None, *,
                 cfg: SchedulerConfig | None = None, poller_ttl_s: float = 300.0,
                 tick_s: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.registry = registry
        self.bus = bus
        self.cfg = cfg or SchedulerConfig()
        self.poller_ttl_s = poller_ttl_s
        self.tick_s = tick_s
        self.clock = clock
        #: hand-over over MQTT (:data:`Handover`); None: collectors poll
        self.mqtt_send: Handover | None = None
        self._lock = threading.RLock()
        self._buckets: dict[str, Bucket] = {}
        self._sends: dict[str, _Sends] = {}
        self._pollers: dict[str, float] = {}  # collector -> monotonic time of last poll
        self._handing: set[str] = set()  # ids being published (outside the lock)
        self._published: set[str] = set()  # queued ids whose state went on the bus
        #: the open commands (queued, sent, delivered) as last read from the store at a
        #: tick, with every change made since; polls plan on it without reading the store
        self._open = _OpenCommands()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- admission

    def submit(self, request: CommandRequest) -> list[Command]:
        """Admit and store the request's commands (idempotent on their ids); publish
        the new ones' states. Raises :class:`ValidationError` when an id is already a
        command of another kind or meter."""
        now = _ms(self.clock)
        made = admit(request, meter_facts(self.registry(), request.meter_ids), now_ms=now)
        stored = self.store.put(made)
        for m, s in zip(made, stored, strict=True):
            if (m.kind, m.meter_id) != (s.kind, s.meter_id):
                raise ValidationError(f"command id {s.command_id} is already a {s.kind} of "
                                      f"meter {s.meter_id} (asked: {m.kind} of {m.meter_id})")
        self._publish([s for m, s in zip(made, stored, strict=True) if s == m])
        return stored

    def get(self, command_id: str) -> Command | None:
        return self.store.get(command_id)

    # ----------------------------------------------------------------- responses

    def take_responses(self, data: bytes, source: str
                       ) -> tuple[int, int, pa.Table, pa.Table]:
        """The ingest hook of ``command_responses`` (``Ingestor.side_csv``): decode,
        apply, publish the new states, record the switch states completed disconnects
        and connects set; (changed, duplicates, quarantine rows, their EndDeviceEvents)."""
        now = _ms(self.clock)
        good, rej = decode_command_responses(data, source=source, received_at=now // 1000)
        with self._lock:
            applied = apply_responses(self.store, good, source=source, now_ms=now,
                                      received_at=now // 1000)
        self._publish(applied.changed)
        events = apply_switch(self.registry(), applied.changed)
        changed = good.num_rows - applied.duplicate - len(applied.rejects)
        return changed, applied.duplicate, pa.concat_tables([rej, applied.quarantine]), events

    # ----------------------------------------------------------------- downlink

    def _active(self) -> list[Command]:
        return [c for s in ("queued", "sent", "delivered") for c in self.store.list(state=s)]

    def _move(self, ids: Sequence[str], to_state: str, now: int, detail: str | None = None
              ) -> list[Command]:
        """Move the commands to ``to_state`` in one store transaction; if one of them
        changed meanwhile (a response, the CLI), one by one, skipping it."""
        if not ids:
            return []
        try:
            return self.store.transition_many([(cid, to_state, ACTOR, now, None, detail)
                                               for cid in ids])
        except (TransitionError, UnknownCommand):
            pass
        out = []
        for cid in ids:
            try:
                out.append(self.store.transition(cid, to_state, actor=ACTOR, at_ms=now,
                                                 detail=detail))
            except (TransitionError, UnknownCommand) as exc:
                log.info("command %s not moved to %s: %s", cid, to_state, exc)
        return out

    def _plan(self, active: list[Command], now: int, collectors: frozenset[str] | None,
              skip: frozenset[str]) -> dict[str, list[Command]]:
        """Under the lock: what may be handed over now, per collector."""
        by_id = {c.command_id: c for c in active}
        in_flight: dict[str, int] = {}
        queued = []
        for c in active:
            if c.collector_id is None or c.collector_id in skip:
                continue
            if c.state in IN_FLIGHT_STATES:
                in_flight[c.collector_id] = in_flight.get(c.collector_id, 0) + 1
            elif c.command_id not in self._handing and c.control_code is not None:
                s = self._sends.get(c.command_id)
                queued.append(Candidate.of(c, s.not_before_ms if s else 0))
        p = plan(queued, in_flight, self._buckets, now, self.cfg, collectors=collectors)
        self._buckets.update(p.buckets)
        return {coll: [by_id[i] for i in ids] for coll, ids in p.send.items()}

    def _sent(self, cmds: Sequence[Command], now: int) -> list[Command]:
        moved = self._move([c.command_id for c in cmds], "sent", now)
        for c in moved:
            self._open.put(c)
            s = self._sends.setdefault(c.command_id, _Sends())
            s.sends, s.last_ms, s.failures, s.not_before_ms = s.sends + 1, now, 0, 0
        return moved

    def tick(self) -> None:
        """One round of the downlink thread (module docstring)."""
        now = _ms(self.clock)
        changed: list[Command] = []
        with self._lock:
            active = self._active()
            self._open = self._open.reset(active)
            changed += self._move(expiring(active, now), "expired", now)
            sent = [(c, self._sends.get(c.command_id, _Sends(1, c.updated_ms)))
                    for c in active if c.state == "sent"]
            again = resend_due([(c, s.sends, s.last_ms) for c, s in sent], now, self.cfg)
            changed += self._move(again, "queued", now, "no answer: sent again")
            ended = {c.command_id for c in changed if c.state == "expired"}
            fresh = [c for c in active if c.state == "queued" and c.command_id not in
                     self._published and c.command_id not in ended]
            changed += fresh  # made by another process (headend command send)
            self._published.update(c.command_id for c in fresh)
            todo: dict[str, list[Command]] = {}
            for c in changed:
                if c.state in C.TERMINAL_STATES:
                    self._open.end(c.command_id)
                else:
                    self._open.put(c)
            if self.mqtt_send is not None:
                todo = self._plan(self._open.values(), now, None, self._polling())
                self._handing.update(c.command_id for cs in todo.values() for c in cs)
        self._publish(changed)
        if todo:  # outside the lock: the broker may be slow
            self._hand_over(todo)

    def _hand_over(self, todo: dict[str, list[Command]]) -> None:
        """Publish every collector's lines, then record the acknowledged ones ``sent``
        (one store transaction) and back off the others (``downlink_failed`` after
        ``max_handover_failures``)."""
        assert self.mqtt_send is not None
        now = _ms(self.clock)
        try:
            failed = self.mqtt_send({coll: downlink_lines(cmds, issued_ms=now)
                                     for coll, cmds in todo.items()})
        except (HeadendError, OSError) as err:
            failed = dict.fromkeys(todo, err)
        for coll, why in failed.items():
            log.warning("downlink to collector %s failed: %s", coll, why)
        with self._lock:
            self._handing.difference_update(c.command_id for cs in todo.values() for c in cs)
            changed = self._sent([c for coll, cs in todo.items() if coll not in failed
                                  for c in cs], _ms(self.clock))
            for coll, why in failed.items():
                give_up = []
                for c in todo[coll]:
                    s = self._sends.setdefault(c.command_id, _Sends())
                    s.failures += 1
                    s.not_before_ms = now + handover_backoff_ms(s.failures, self.cfg)
                    if s.failures >= self.cfg.max_handover_failures \
                            and self._still_queued(c.command_id):
                        give_up.append(c.command_id)
                changed += [self.store.transition(i, "failed", actor=ACTOR, at_ms=now,
                                                  reason="downlink_failed", detail=str(why))
                            for i in give_up]
        self._publish(changed)

    def _still_queued(self, cid: str) -> bool:
        c = self.store.get(cid)
        return c is not None and c.state == "queued"

    def _polling(self) -> frozenset[str]:
        """Collectors that polled within ``poller_ttl_s`` (the others are forgotten)."""
        t = time.monotonic()
        for k in [k for k, v in self._pollers.items() if t - v >= self.poller_ttl_s]:
            del self._pollers[k]
        return frozenset(self._pollers)

    def take_for_poll(self, collector_id: str) -> bytes:
        """The downlink lines the scheduler lets go to ``collector_id`` now (marked
        ``sent``), or ``b""``."""
        with self._lock:
            self._pollers[collector_id] = time.monotonic()
            now = _ms(self.clock)
            todo = self._plan(self._open.of(collector_id), now, frozenset({collector_id}),
                              frozenset())
            cmds = todo.get(collector_id, [])
            if not cmds:
                return b""
            unseen = [c for c in cmds if c.command_id not in self._published]  # the CLI's
            moved = self._sent(cmds, now)
        self._publish(unseen + moved)
        ok = {m.command_id for m in moved}
        return downlink_lines([c for c in cmds if c.command_id in ok], issued_ms=now)

    # ----------------------------------------------------------------- bus

    def _publish(self, cmds: Sequence[Command]) -> None:
        """Each command's state on ``headend.commands.<state>...``; failures are logged
        (the store has the state)."""
        with self._lock:  # what is remembered of a command ends with it
            for c in cmds:
                if c.state in C.TERMINAL_STATES:
                    self._published.discard(c.command_id)
                    self._sends.pop(c.command_id, None)
                    self._open.end(c.command_id)
                    continue
                if c.state == "queued":
                    self._published.add(c.command_id)
                self._open.put(c)
        if self.bus is None or not cmds:
            return
        try:
            places = self._places([c.meter_id for c in cmds])
            msgs: list[tuple[str, bytes, dict[str, str] | None]] = [
                (command_subject(c, places[c.meter_id]), _line(c),
                 {"Content-Type": JSONL}) for c in cmds]
            self.bus.publish_many(msgs)
        except HeadendError as exc:
            log.warning("command states not published on the bus: %s", exc)

    def _places(self, meter_ids: list[str]) -> dict[str, tuple[str, str, str, str]]:
        reg = self.registry()
        ids = list(dict.fromkeys(meter_ids))
        idx = reg.idx_for_id(pa.array(ids, pa.string()))
        known = idx >= 0
        out = dict.fromkeys(ids, ("~", "~", "~", "~"))
        if known.any():
            k = idx[known]
            com = reg.attribute("commodity", k).to_numpy(zero_copy_only=False)
            cols = [reg.attribute(n, k).to_pylist()
                    for n in ("substation_id", "feeder_id", "transformer_id")]
            for j, i in enumerate(np.flatnonzero(known).tolist()):
                out[ids[i]] = (COMMODITIES[int(com[j])], token(cols[0][j]), token(cols[1][j]),
                               token(cols[2][j]))
        return out

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, downlink: bool = True) -> None:
        """Queue again what was sent and not answered before a restart, then run the
        downlink thread (``downlink=False``: a worker process, responses only)."""
        if not downlink:
            return
        now = _ms(self.clock)
        with self._lock:
            again = self._move([c.command_id for c in self.store.list(state="sent")],
                               "queued", now, "sent before a restart, no answer: sent again")
            self._open = self._open.reset(self._active())
        self._publish(again)
        self._thread = threading.Thread(target=self._run, name="command-downlink",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Tick every ``tick_s``, and rest at least :data:`REST_FACTOR` times as long as
        a tick took (a long backlog makes long ticks: they take at most a quarter of a
        core)."""
        spent = 0.0
        while not self._stop.wait(max(self.tick_s, REST_FACTOR * spent)):
            t0 = time.monotonic()
            try:
                self.tick()
            except Exception:  # keep the downlink alive; logged
                log.exception("command downlink")
            spent = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the downlink thread (responses are still applied until :meth:`close`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()
        self.store.close()


# --------------------------------------------------------------------------- routes


class CommandPost(BaseModel):
    """Body of ``POST /v1/commands``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    meter_ids: list[str] = Field(min_length=1)
    reason: str | None = None
    command_id: str | None = None
    expires_in_s: int | None = Field(None, gt=0)
    confirm: bool = False
    force: bool = False


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status)


class CommandsRoutes:
    """The routes of the module docstring, in :attr:`router`, over a
    :class:`CommandService` (None: 503, a process without commands)."""

    def __init__(self, service: CommandService | None, *, poll_max_wait_s: float = 60.0,
                 poll_step_s: float = 0.1) -> None:
        self.service = service
        self.poll_max_wait_s = poll_max_wait_s
        self.poll_step_s = poll_step_s
        r = self.router = APIRouter()
        r.add_api_route("/v1/commands", self.post, methods=["POST"], status_code=202)
        r.add_api_route("/v1/commands/{command_id}", self.get, methods=["GET"])
        r.add_api_route("/v1/collectors/{collector_id}/commands", self.poll, methods=["GET"])

    async def post(self, request: Request) -> Response:
        svc = self.service
        if svc is None:
            return _error(503, "this process has no command service")
        try:
            body = CommandPost.model_validate_json(await request.body())
            req = CommandRequest(body.kind, body.meter_ids, _actor(request),
                                 reason=body.reason, command_id=body.command_id,
                                 confirm=body.confirm, force=body.force,
                                 expires_in_s=body.expires_in_s)
        except (PydanticError, ValidationError) as exc:
            return _error(400, str(exc))
        try:
            cmds = await run_in_threadpool(svc.submit, req)
        except ValidationError as exc:
            return _error(409, str(exc))
        return JSONResponse({"commands": [c.to_json() for c in cmds]}, status_code=202)

    async def get(self, command_id: str) -> Response:
        if self.service is None:
            return _error(503, "this process has no command service")
        cmd = await run_in_threadpool(self.service.get, command_id)
        if cmd is None:
            return _error(404, f"unknown command {command_id!r}")
        return JSONResponse(cmd.to_json())

    async def poll(self, collector_id: str, request: Request) -> Response:
        svc = self.service
        if svc is None:
            return _error(503, "this process has no command service")
        raw = request.query_params.get("wait", "0")
        try:
            wait = float(raw)
        except ValueError:
            return _error(400, f"wait must be a number of seconds, not {raw!r}")
        if not 0 <= wait <= self.poll_max_wait_s:
            return _error(400, f"wait must be between 0 and {self.poll_max_wait_s:g} s")
        deadline = time.monotonic() + wait
        while True:
            body = await run_in_threadpool(svc.take_for_poll, collector_id)
            if body:
                return Response(body, media_type=JSONL)
            left = deadline - time.monotonic()
            if left <= 0 or await request.is_disconnected():
                return Response(status_code=204)
            await asyncio.sleep(min(self.poll_step_s, left))


def _actor(request: Request) -> str:
    return f"http:{request.client.host if request.client else '?'}"
