"""Verbs ``serve`` (HTTP + MQTT uplinks, embedded by default), ``worker`` (one more ingest
worker on a shared NATS bus), ``rules-worker`` (one more rules worker on a shared NATS
bus: topology partitions of the real-time rules, taken by lease) and the
``subscribers`` group (third-party access)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from headend.cli.common import (
    fail,
    require_data_dir,
    require_extra,
    rules_lateness_help,
    verb_group,
)
from headend.errors import ConfigError, HeadendError

# These verbs read their settings through headend.serve.config (defaults, then --config,
# then the environment, then the options), so the options themselves bind no
# environment variable: each help names the one that applies, and the default.
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML or TOML file with the settings (headend.serve.config); the "
    "environment and the options override it.")]
DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Data directory, created if missing [env HEADEND_DATA; default "
    "./headend-data].")]
NatsOpt = Annotated[str | None, typer.Option(
    "--nats", help="NATS URL(s), comma-separated [env HEADEND_NATS_URL]; default: the "
    "embedded bus (in-process).")]
PartOpt = Annotated[int | None, typer.Option(
    "--partitions", help="Ingest partitions [env HEADEND_PARTITIONS]; default: the data "
    "directory's recorded value (<data>/layout.json), else 8. A different value is refused.")]
BitsOpt = Annotated[int | None, typer.Option(
    "--bucket-bits", min=4, max=27, help="Store bucket bits of a new data directory "
    "(default 16, or 8 on a shared bus); an existing one's recorded value is used and a "
    "different one refused.")]
ExistingDataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Data directory; it must exist [env HEADEND_DATA; default "
    "./headend-data].")]
NameArg = Annotated[str, typer.Argument(help="The subscriber's name.", metavar="NAME")]
LeaseOpt = Annotated[float | None, typer.Option(
    "--lease-ttl", metavar="SECONDS", help="A partition's lease expires this long after "
    "the worker holding it last refreshed it [s]: the failover time after a worker dies "
    "(docs/scaling.md); default 4.")]
AckWaitOpt = Annotated[float | None, typer.Option(
    "--ack-wait", metavar="SECONDS", help="The bus delivers a message again when it is not "
    "acknowledged this long after its delivery or its last in-progress heartbeat [s]; "
    "default 4.")]
LatenessOpt = Annotated[int | None, typer.Option(
    "--rules-lateness", min=0, metavar="SECONDS",
    help=rules_lateness_help("900 (live collection)") + " [env HEADEND_RULES_LATENESS]")]


def _config(path: Path | None, **kw: Any) -> Any:
    from headend.serve.config import load_config

    try:
        return load_config(path, **kw)
    except ConfigError as exc:
        fail(str(exc).replace("\n", " "))


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def serve(
    config: ConfigOpt = None,
    data: DataOpt = None,
    http: Annotated[str | None, typer.Option(
        "--http", help="HOST:PORT of the HTTP API [env HEADEND_HTTP; default "
        "127.0.0.1:8080].")] = None,
    nats: NatsOpt = None,
    mqtt: Annotated[str | None, typer.Option(
        "--mqtt", help="MQTT broker for collector uplinks, mqtt://host:port [env "
        "HEADEND_MQTT_URL]; default: no MQTT.")] = None,
    mqtt_client_id: Annotated[str | None, typer.Option(
        "--mqtt-client-id", help="MQTT uplink client id, fixed across restarts (the "
        "broker keeps its session) [env HEADEND_MQTT_CLIENT_ID]; default: one per data "
        "directory.")] = None,
    partitions: PartOpt = None,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", help="Stream replicas on NATS [env HEADEND_REPLICAS; default 1].")
                        ] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="In-process ingest workers, 0 or 1 (default 1).")] = None,
    bucket_bits: BitsOpt = None,
    rules_lateness: LatenessOpt = None,
) -> None:
    """Run the head end: HTTP uploads, SSE streams, /metrics; embedded with no options.

    Needs the 'serve' extra: pip install 'headend[serve]'. Stop with Ctrl-C.

    \b
    Example:
      headend serve --data ./headend-data --http 127.0.0.1:8080
    """
    cfg = _config(config, data=data, http=http, bus=nats, mqtt=mqtt,
                  mqtt_client_id=mqtt_client_id, partitions=partitions,
                  replicas=replicas, workers=workers, bucket_bits=bucket_bits,
                  rules_lateness_s=rules_lateness)
    _require_extras(cfg, "headend serve", "serve")
    import uvicorn

    from headend.serve.app import create_app
    from headend.serve.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        service = Service(cfg)
        service.start()
    except HeadendError as exc:
        fail(str(exc))
    typer.echo(f"headend serving on http://{cfg.http} (bus {cfg.bus_label})", err=True)
    # uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, with the
    # handler that was installed before it; with the default handler that kills the
    # process before service.close() (rules checkpoint, deliveries, locks) can run, so
    # install no-op handlers first: uvicorn.run then returns and the service closes
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(create_app(service), host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        service.close()
        typer.echo("headend serve stopped", err=True)


def worker(
    config: ConfigOpt = None,
    data: DataOpt = None,
    nats: NatsOpt = None,
    partitions: PartOpt = None,
    bucket_bits: BitsOpt = None,
    lease_ttl: LeaseOpt = None,
    ack_wait: AckWaitOpt = None,
    max_deliveries: Annotated[int | None, typer.Option(
        "--max-deliveries", help="Deliveries before a failing message is ingested alone "
        "and, if it fails again, quarantined (ingest_failed); default 5.")] = None,
) -> None:
    """Add one ingest worker to the shared NATS bus (workers share the partitions).

    Needs the 'serve' and 'nats' extras: pip install 'headend[serve,nats]'. Stop
    with Ctrl-C.

    \b
    Example:
      headend worker --data /srv/headend --nats nats://127.0.0.1:4222
    """
    cfg = _config(config, data=data, bus=nats, partitions=partitions, bucket_bits=bucket_bits,
                  lease_ttl_s=lease_ttl, ack_wait_s=ack_wait, max_deliveries=max_deliveries)
    _require_extras(cfg, "headend worker", "serve")
    from headend.serve.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        service = Service(cfg, uplink=False)
        service.start()
    except HeadendError as exc:
        fail(str(exc))
    typer.echo(f"headend worker {service.workers[0].worker_id} on {cfg.bus.split('@')[-1]}",
               err=True)
    try:
        _wait_for_signal()
    finally:
        service.close()


def rules_worker(
    partitions: Annotated[int, typer.Option(
        "--partitions", help="Rules partitions N (substations with index % N == K).")],
    partition: Annotated[int | None, typer.Option(
        "--partition", help="Pin this worker to partition K (waits for its lease); "
        "default: take partitions by lease, shared with the other rules workers.")] = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    nats: NatsOpt = None,
    lease_ttl: LeaseOpt = None,
    ack_wait: AckWaitOpt = None,
    unknown_wait: Annotated[float | None, typer.Option(
        "--unknown-wait", metavar="SECONDS", help="Longest wait for an unknown meter "
        "before its rows are quarantined [s]; default 300.")] = None,
    rules_lateness: LatenessOpt = None,
) -> None:
    """Run the real-time rules on the shared NATS bus: partitions taken by lease.

    Needs the 'serve' and 'nats' extras: pip install 'headend[serve,nats]'. Stop
    with Ctrl-C.

    \b
    Example:
      headend rules-worker --partitions 4 --data /srv/headend --nats nats://127.0.0.1:4222
    """
    if partition is not None and not 0 <= partition < partitions:
        fail(f"--partition must be in [0, {partitions})")
    cfg = _config(config, data=data, bus=nats, lease_ttl_s=lease_ttl, ack_wait_s=ack_wait,
                  rules_unknown_wait_s=unknown_wait, rules_lateness_s=rules_lateness)
    if cfg.embedded:
        fail("a rules worker needs a shared bus: set HEADEND_NATS_URL or --nats")
    _require_extras(cfg, "headend rules-worker", "serve")
    from headend.cli.rules import effective_ruleset
    from headend.serve.config import LIVE_RULES_LATENESS_S
    from headend.serve.config import rules_lateness as resolve_lateness
    from headend.serve.rules_worker import LeasedRulesWorker
    from headend.serve.service import open_service_bus

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        bus = open_service_bus(cfg)
        rw = LeasedRulesWorker(bus, cfg.data, partitions, lease_ttl_s=cfg.lease_ttl_s,
                               replicas=cfg.replicas,
                               only=None if partition is None else {partition},
                               allowed_lateness_s=resolve_lateness(
                                   effective_ruleset(cfg.data)[0], cfg.rules_lateness_s,
                                   default=LIVE_RULES_LATENESS_S),
                               ack_wait_s=cfg.ack_wait_s,
                               unknown_wait_s=cfg.rules_unknown_wait_s)
    except HeadendError as exc:
        fail(str(exc))
    what = "all" if partition is None else f"partition {partition} of"
    typer.echo(f"headend rules worker {rw.worker_id} ({what} {partitions} partitions, by "
               f"lease) on {cfg.bus.split('@')[-1]}", err=True)
    thread = threading.Thread(target=rw.run, name="rules-worker", daemon=True)
    thread.start()
    try:
        _wait_for_signal()
    finally:
        rw.stop()
        thread.join(30)
        bus.close()


subscribers_app = verb_group("Third parties: credentials, scopes, broker config.")


def _require_extras(cfg: Any, what: str, *extras: str) -> None:
    """Exit 2 naming the extra when ``extras``, or the bus and broker ``cfg`` uses, are
    not installed (one line, no traceback)."""
    for extra in (*extras, *(("nats",) if not cfg.embedded else ()),
                  *(("mqtt",) if cfg.mqtt else ())):
        require_extra(extra, what)


def _store(data: Path | None, *, create: bool = False) -> Any:
    """The subscriber store of the data directory (which must exist unless ``create``)."""
    from headend.serve.subscribers import SubscriberStore

    root = _config(None, data=data).data
    return SubscriberStore(root if create else require_data_dir(Path(root)))


@subscribers_app.command("add")
def sub_add(
    name: NameArg,
    scope: Annotated[list[str], typer.Option(
        "--scope", help="KEY=VALUE (commodity, substation, feeder, transformer, meter, "
        "family, stage, type); repeat for several keys.")] = [],  # noqa: B006
    webhook: Annotated[str | None, typer.Option("--webhook", help="URL to POST to.")] = None,
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", help="Webhook deliveries of a message before it goes to the "
        "dead letters.")] = 8,
    data: DataOpt = None,
) -> None:
    """Register a subscriber; prints its credentials as JSON.

    \b
    Example:
      headend subscribers add oms-east --scope substation=SUB-01 --scope family=outages
    """
    pairs: dict[str, str] = {}
    for s in scope:
        k, sep, v = s.partition("=")
        if not sep or not k:
            fail(f"--scope {s!r}: expected KEY=VALUE")
        if k in pairs:
            fail(f"--scope {k} given twice; register one subscriber per value")
        pairs[k] = v
    try:
        sub = _store(data, create=True).add(name, pairs, webhook=webhook, max_attempts=max_attempts)
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(json.dumps({"name": sub.name, "scope": sub.scope, "filter": sub.filter_subject,
                           "token": sub.token, "nats_user": sub.nats_user, "durable": sub.durable,
                           "nats_password": sub.nats_password, "webhook": sub.webhook,
                           "webhook_secret": sub.secret}, indent=2))


@subscribers_app.command("list")
def sub_list(data: ExistingDataOpt = None) -> None:
    """List subscribers (name, filter, webhook), one per line, tab-separated.

    \b
    Example:
      headend subscribers list --data ./headend-data
    """
    for s in _store(data).list():
        typer.echo(f"{s.name}\t{s.filter_subject}\t{s.webhook or '-'}")


@subscribers_app.command("remove")
def sub_remove(name: NameArg, data: ExistingDataOpt = None) -> None:
    """Remove a subscriber.

    \b
    Example:
      headend subscribers remove oms-east --data ./headend-data
    """
    if not _store(data).remove(name):
        fail(f"no subscriber {name!r}")


@subscribers_app.command("nats-config")
def sub_nats_config(
    service_user: Annotated[str, typer.Option(
        "--service-user", help="NATS user of headend's own processes.")] = "headend",
    service_password: Annotated[str, typer.Option(
        "--service-password", envvar="HEADEND_NATS_PASSWORD",
        help="Password of the service user (required).", show_default=False)] = "",
    data: ExistingDataOpt = None,
) -> None:
    """Print the nats-server authorization block for the subscribers.

    \b
    Example:
      HEADEND_NATS_PASSWORD=secret headend subscribers nats-config > auth.conf
    """
    from headend.serve.subscribers import nats_authorization

    if not service_password:
        fail("--service-password (or HEADEND_NATS_PASSWORD) is required")
    typer.echo(nats_authorization(_store(data).list(), service_user=service_user,
                                  service_password=service_password), nl=False)


@subscribers_app.command("mosquitto-acl")
def sub_mosquitto_acl(
    service_user: Annotated[str, typer.Option(
        "--service-user", help="MQTT user of headend's own processes.")] = "headend",
    data: ExistingDataOpt = None,
) -> None:
    """Print a Mosquitto acl_file for the subscribers.

    \b
    Example:
      headend subscribers mosquitto-acl --data ./headend-data > /etc/mosquitto/acl
    """
    from headend.serve.subscribers import mosquitto_acl

    typer.echo(mosquitto_acl(_store(data).list(), service_user=service_user), nl=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("rules-worker")(rules_worker)
    app.add_typer(subscribers_app, name="subscribers")
