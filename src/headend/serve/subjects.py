"""The subject scheme of third-party streams and ingest partitions (see docs/streams.md).

Every third-party subject has nine tokens, so one NATS filter (or MQTT topic filter)
selects any combination of them broker-side::

    headend.<family>.<stage>.<commodity>.<substation>.<feeder>.<transformer>.<meter>.<type>

=========  ===========  ==============================================================
family     stage        type
=========  ===========  ==============================================================
reads      raw          reading type name (``kwh_del``)
reads      validated    reading type name
registers  raw          register name (``kwh_del_total``)
events     device       event type name (``power_fail``) or ``c<t>-<d>-<s>-<e>``
alarms     <rule>       alarm type
outages    <level>      ``start`` / ``end`` (meter token ``~`` above meter level)
commands   <state>      command kind (:func:`headend.serve.commands.command_subject`)
=========  ===========  ==============================================================

Ids become tokens by :func:`token`: ``[A-Za-z0-9_-]`` kept, every other byte of the
UTF-8 encoding written ``~XX`` (upper-case hex), an empty or missing id ``~``. The
mapping is injective, so a scope can never match another id's subject. MQTT topics
carry the same tokens joined by ``/`` (``headend/reads/raw/...``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from headend.errors import ConfigError
from headend.model.codes import EVENT_BY_PACKED, unpack_event_code

__all__ = [
    "FAMILIES",
    "INGEST_PREFIX",
    "MISSING",
    "SCOPE_KEYS",
    "event_token",
    "ingest_subject",
    "scope_filter",
    "to_mqtt",
    "to_mqtt_filter",
    "token",
]

PREFIX: Final = "headend"
#: subject of partition ``k`` of the ingest queue: ``headend-ingest.<k>`` (internal
#: subjects use another first token, so no filter of the nine-token third-party
#: scheme, nor the stream capturing it, ever overlaps them)
INGEST_PREFIX: Final = "headend-ingest"
#: per-upload ingest results (to the uplink that waits to acknowledge)
RESULT_PREFIX: Final = "headend-result"
#: what the third-party stream captures: every nine-token ``headend.`` subject
OUT_SUBJECTS: Final = ("headend.*.*.*.*.*.*.*.*",)
MISSING: Final = "~"
FAMILIES: Final = ("reads", "registers", "events", "alarms", "outages", "commands")
#: scope key -> token position in the subject (0 = "headend")
SCOPE_KEYS: Final[dict[str, int]] = {
    "family": 1,
    "stage": 2,
    "commodity": 3,
    "substation": 4,
    "feeder": 5,
    "transformer": 6,
    "meter": 7,
    "type": 8,
}
N_TOKENS: Final = 9
_SAFE = re.compile(r"[A-Za-z0-9_-]")


def token(value: str | None) -> str:
    """One id as a subject token (see module docstring); injective."""
    if value is None or value == "":
        return MISSING
    out = []
    for ch in value:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def event_token(packed: int) -> str:
    """Event type token: the known name, else ``c<type>-<domain>-<sub>-<event>``."""
    et = EVENT_BY_PACKED.get(int(packed))
    if et is not None:
        return et.name
    return "c" + "-".join(str(x) for x in unpack_event_code(int(packed)))


def scope_filter(scope: Mapping[str, str]) -> str:
    """The one subject filter granting exactly ``scope`` (key -> id, raw ids).

    ``{"feeder": "F1"}`` -> ``headend.*.*.*.*.F1.*.*.*``. Raises ConfigError for an
    unknown key.
    """
    toks = [PREFIX] + ["*"] * (N_TOKENS - 1)
    for key, value in scope.items():
        pos = SCOPE_KEYS.get(key)
        if pos is None:
            raise ConfigError(f"unknown scope key {key!r}; known: {sorted(SCOPE_KEYS)}")
        toks[pos] = token(value) if key not in ("family", "stage", "type") else value
    return ".".join(toks)


def to_mqtt(subject: str) -> str:
    """``headend.reads.raw...`` -> ``headend/reads/raw/...`` (tokens hold no ``/``)."""
    return subject.replace(".", "/")


def to_mqtt_filter(filter_subject: str) -> str:
    """A NATS filter as an MQTT topic filter (``*`` -> ``+``, ``>`` -> ``#``)."""
    return "/".join("+" if t == "*" else "#" if t == ">" else t
                    for t in filter_subject.split("."))


def ingest_subject(partition: int) -> str:
    """Subject of ingest partition ``partition``."""
    return f"{INGEST_PREFIX}.{partition}"
