"""Configuration of ``headend serve`` and ``headend worker`` (typed, validated, read once).

Sources, later ones winning: defaults, ``--config FILE`` (YAML or TOML), environment
variables, command-line options. With nothing given, serve runs embedded: in-process
bus, one in-process ingest worker, HTTP on 127.0.0.1:8080, no MQTT.

=============================  ==========================  ==============================
environment variable           field                       example
=============================  ==========================  ==============================
``HEADEND_DATA``               ``data``                    ``/var/lib/headend``
``HEADEND_NATS_URL``           ``bus``                     ``nats://n1:4222,nats://n2:4222``
``HEADEND_NATS_USER``          ``nats_user``
``HEADEND_NATS_PASSWORD``      ``nats_password``
``HEADEND_MQTT_URL``           ``mqtt``                    ``mqtt://127.0.0.1:1883``
``HEADEND_MQTT_CLIENT_ID``     ``mqtt_client_id``          ``headend-uplink-1``
``HEADEND_MQTT_UPLINK_ROOT``   ``mqtt_uplink_root``        ``headend/uplink``
``HEADEND_HTTP``               ``http``                    ``0.0.0.0:8080``
``HEADEND_PARTITIONS``         ``partitions``              ``16``
``HEADEND_REPLICAS``           ``replicas``                ``3``
``HEADEND_STREAM_GROUP``       ``stream_group``            ``transformer``
``HEADEND_RULES``              ``rules``                   ``true``
``HEADEND_OMS_URL``            ``oms`` (one CIM endpoint)  ``https://oms.example/ami``
``HEADEND_RULES_LATENESS``     ``rules_lateness_s``        ``900``
=============================  ==========================  ==============================

The store's ``bucket_bits`` and ``partitions`` belong to the data directory: they are
recorded in ``<data>/layout.json`` when the store is created, and every process reads
them from there (:func:`with_store_layout`). Given here (option, environment, file),
a value must equal the recorded one or the process refuses to start (ConfigError).
A new store created by a process on a shared bus gets ``PARTITIONED_BUCKET_BITS``
(256 meters per bucket, so small fleets reach every partition); an embedded one 16.

The command downlink's per-collector limits are ``commands:`` in the config file
(:class:`CommandsConfig`; docs/commands.md, "Scheduling").

OMS endpoints (``oms``: a list in the config file; see :mod:`headend.serve.oms`)::

    oms:
      - {name: oms, url: "https://oms.example/ami", format: cim, secret: "..."}
      - {name: diagnostics, url: "http://diag:9000/in", format: json, families: [alarms]}
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headend.errors import ConfigError

__all__ = ["EMBEDDED_BUS_DIR", "ENV", "LIVE_RULES_LATENESS_S", "RULES_LATENESS_ENV",
           "CommandsConfig", "OmsEndpointConfig", "ServeConfig", "load_config", "rules_lateness",
           "with_store_layout"]

#: the embedded bus's directory in the data directory (``embedded_bus: disk``)
EMBEDDED_BUS_DIR: Final = "bus"

#: the one rules-lateness setting of serve, ingest and rules-worker (docs/rules.md)
RULES_LATENESS_ENV: Final = "HEADEND_RULES_LATENESS"
#: the rules lateness of live collection (serve, rules-worker) when neither the setting
#: nor rules.yaml gives one [s]: the reads of an interval arrive over the next interval
LIVE_RULES_LATENESS_S: Final = 900


ENV: dict[str, str] = {
    "HEADEND_DATA": "data",
    "HEADEND_NATS_URL": "bus",
    "HEADEND_NATS_USER": "nats_user",
    "HEADEND_NATS_PASSWORD": "nats_password",
    "HEADEND_MQTT_URL": "mqtt",
    "HEADEND_MQTT_CLIENT_ID": "mqtt_client_id",
    "HEADEND_MQTT_UPLINK_ROOT": "mqtt_uplink_root",
    "HEADEND_HTTP": "http",
    "HEADEND_PARTITIONS": "partitions",
    "HEADEND_REPLICAS": "replicas",
    "HEADEND_STREAM_GROUP": "stream_group",
    "HEADEND_RULES": "rules",
    RULES_LATENESS_ENV: "rules_lateness_s",
}


class OmsEndpointConfig(BaseModel):
    """An OMS or diagnostics endpoint that receives outages and alarms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    url: str
    format: Literal["cim", "json"] = "cim"
    families: tuple[Literal["outages", "alarms"], ...] = ("outages", "alarms")
    secret: str | None = None
    max_attempts: int = Field(8, ge=1)


class CommandsConfig(BaseModel):
    """The command downlink (``commands:`` in the config file; docs/commands.md,
    "Scheduling"): the per-collector limits of
    :class:`~headend.commands.scheduler.SchedulerConfig`, and the long poll."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_in_flight: int = Field(default=16, ge=1)
    rate_per_s: float = Field(default=10.0, gt=0)
    burst: int = Field(default=16, ge=1)
    resend_after_s: float = Field(default=120.0, gt=0)
    backoff_max_s: float = Field(default=1800.0, gt=0)
    max_sends: int = Field(default=3, ge=1)
    handover_retry_s: float = Field(default=1.0, gt=0)
    max_handover_failures: int = Field(default=5, ge=1)
    #: longest ``wait`` of ``GET /v1/collectors/<id>/commands`` [s]
    poll_max_wait_s: float = Field(default=60.0, gt=0)
    #: a collector that polled within this long [s] gets its commands by poll only
    poller_ttl_s: float = Field(default=300.0, gt=0)
    #: period of the downlink thread (expiry, resends, MQTT hand-over) [s]
    tick_s: float = Field(default=0.25, gt=0)


def rules_lateness(ruleset: Any, given: int | None, *, default: int) -> int:
    """The real-time rules' allowed lateness [s]: ``given`` (a ``--rules-lateness``
    option, ``HEADEND_RULES_LATENESS`` or a config file), else ``engine.allowed_lateness_s``
    when ``<data>/rules/rules.yaml`` sets it, else ``default`` (0 for ingest, which
    replays files; :data:`LIVE_RULES_LATENESS_S` for serve and rules-worker)."""
    if given is not None:
        return int(given)
    engine = ruleset.engine
    return int(engine.allowed_lateness_s) if "allowed_lateness_s" in engine.model_fields_set \
        else default


class ServeConfig(BaseModel):
    """Settings of a serve or worker process (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Path = Path("./headend-data")
    http: str = "127.0.0.1:8080"
    bus: str = "memory://"
    nats_user: str | None = None
    nats_password: str | None = None
    mqtt: str | None = None
    #: the MQTT uplink's client id, fixed across restarts so the broker keeps its
    #: session; default (None): one per data directory (``mqtt.default_client_id``)
    mqtt_client_id: str | None = Field(None, min_length=1, max_length=65535)
    #: collectors publish on ``<mqtt_uplink_root>/<collector_id>``
    mqtt_uplink_root: str = Field("headend/uplink", pattern=r"^[^#+]+$")
    #: ingest partitions; when not given, the data directory's recorded value (this
    #: default for a store that records none)
    partitions: int = Field(8, ge=1, le=4096)
    replicas: int = Field(1, ge=1, le=5)
    workers: int = Field(1, ge=0, le=1, description="in-process ingest worker (0 or 1)")
    #: partition leases of ingest and rules workers expire this long after their last
    #: refresh [s]; with ack_wait_s it bounds the failover (docs/scaling.md)
    lease_ttl_s: float = Field(4.0, gt=0)
    #: the bus redelivers a message not acknowledged within this [s] of its delivery or
    #: of its last in-progress heartbeat (every ack_wait_s / 4 while a batch is worked)
    ack_wait_s: float = Field(4.0, gt=0)
    #: an ingest message delivered this many times is ingested alone and, if it still
    #: fails, quarantined (``ingest_failed``) and acknowledged
    max_deliveries: int = Field(5, ge=2)
    #: a rules worker holds back rows of meters its registry does not know yet for at
    #: most this long [s], then quarantines them (``rules_unknown_meter``)
    rules_unknown_wait_s: float = Field(300.0, ge=0)
    upload_timeout_s: float = Field(60.0, gt=0)
    #: store bucket bits; None: the data directory's recorded value (a new store:
    #: 16 embedded, PARTITIONED_BUCKET_BITS on a shared bus)
    bucket_bits: int | None = Field(None, ge=4, le=27)
    webhooks: bool = True
    mqtt_out: bool = True
    webhook_base_delay_s: float = Field(0.5, gt=0)
    stream_group: Literal["meter", "transformer", "feeder"] = "meter"
    #: run the real-time rules on what this process ingests and publish outages and
    #: alarms on the bus; default (None): on with the embedded bus, off for NATS
    #: workers (whose meter-bucket partitions can split a feeder; docs/scaling.md)
    rules: bool | None = None
    #: the rules' watermark trails the newest event time by this much [s]: reads of an
    #: interval arrive during the next one; None: see :func:`rules_lateness`
    rules_lateness_s: int | None = Field(None, ge=0)
    oms: tuple[OmsEndpointConfig, ...] = ()
    commands: CommandsConfig = CommandsConfig()
    #: where the embedded bus (``bus: memory://``) keeps its streams, durable consumer
    #: positions and leases: ``disk``, in ``<data>/bus`` (what is published for third
    #: parties, webhooks and OMS endpoints survives a restart; docs/streams.md), or
    #: ``memory`` (lost on restart: tests)
    embedded_bus: Literal["disk", "memory"] = "disk"
    #: the embedded bus keeps third-party messages (``HEADEND_OUT``) this long [s] ...
    outbound_max_age_s: float = Field(7 * 86_400.0, gt=0)
    #: ... and at most this many bytes [bytes] (subjects, headers, payloads); what
    #: either limit removes before a durable consumer acknowledged it is counted in
    #: ``headend_bus_dropped_total``
    outbound_max_bytes: int = Field(1 << 30, ge=1 << 20)

    @property
    def run_rules(self) -> bool:
        return self.embedded if self.rules is None else self.rules

    @field_validator("http")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {v!r}")
        return v

    @field_validator("bus")
    @classmethod
    def _bus(cls, v: str) -> str:
        if not v.startswith(("memory://", "nats://")):
            raise ValueError(f"bus must be memory:// or nats://..., got {v!r}")
        return v

    @property
    def host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def embedded(self) -> bool:
        return self.bus.startswith("memory://")

    @property
    def bus_url(self) -> str:
        """The bus this process opens: NATS as configured, or the embedded bus, on disk
        in ``<data>/bus`` (``file://...``, the default) or in memory (``memory://``)."""
        if self.embedded and self.embedded_bus == "disk":
            return f"file://{Path(self.data).resolve() / EMBEDDED_BUS_DIR}"
        return self.bus

    @property
    def bus_label(self) -> str:
        """:attr:`bus_url` without credentials (for logs and the startup line)."""
        url = self.bus_url
        if url.startswith("nats://"):
            return ",".join("nats://" + u.split("://", 1)[-1].rsplit("@", 1)[-1]
                            for u in url.split(","))
        return url


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".toml",):
        raw: Any = tomllib.loads(text)
    else:
        raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw.get("serve", raw) if isinstance(raw.get("serve"), dict) else raw


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None,
                **overrides: Any) -> ServeConfig:
    """Build the configuration from a file, the environment and explicit overrides
    (``None`` overrides are ignored). Raises ConfigError with pydantic's message."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(_read_file(Path(path)))
        except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    env = os.environ if env is None else env
    for var, fieldname in ENV.items():
        if env.get(var):
            values[fieldname] = env[var]
    if env.get("HEADEND_OMS_URL"):
        values["oms"] = [{"name": "oms", "url": env["HEADEND_OMS_URL"], "format": "cim"}]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig(**values)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


def with_store_layout(cfg: ServeConfig) -> ServeConfig:
    """``cfg`` with the bucket bits and partitions recorded in ``cfg.data``.

    The first process to open a data directory records its layout: the values given, or
    the defaults (bucket bits 16 embedded, ``PARTITIONED_BUCKET_BITS`` on a shared bus;
    a process on a shared bus also records its partitions). Later processes take the
    recorded values.

    Raises
    ------
    ConfigError
        ``bucket_bits`` or ``partitions`` were given (option, environment variable or
        config file) and differ from the recorded values.
    """
    from headend.store import open_layout
    from headend.store.config import DEFAULT_BUCKET_BITS, PARTITIONED_BUCKET_BITS

    Path(cfg.data).mkdir(parents=True, exist_ok=True)
    layout = open_layout(
        cfg.data, bucket_bits=cfg.bucket_bits,
        partitions=cfg.partitions if "partitions" in cfg.model_fields_set else None,
        default_bucket_bits=DEFAULT_BUCKET_BITS if cfg.embedded else PARTITIONED_BUCKET_BITS,
        default_partitions=None if cfg.embedded else cfg.partitions)
    return cfg.model_copy(update={"bucket_bits": layout.bucket_bits,
                                  "partitions": layout.partitions or cfg.partitions})
