"""Real-time complex event processing over the read and event streams.

The engine (:class:`RuleEngine`) is an ingest listener: it runs declarative rules
(:mod:`headend.rules.config`, YAML or Python) in event time with a watermark, over
whole batches (NumPy group-bys, no Python call per event), keeps its state in dense
arrays indexed by ``meter_idx`` and checkpoints it under ``<data>/rules/``. Outages and
alarms are kept as records (:class:`Outage`, :class:`Alarm`) and sent to an
:class:`AlertSink`; :mod:`headend.rules.cim` renders them as IEC 61968-9 EndDeviceEvents.
See ``docs/rules.md``.
"""

from headend.rules.alerts import (
    Alarm,
    Alert,
    AlertSink,
    JsonlSink,
    MemorySink,
    Outage,
    RecordBook,
)
from headend.rules.base import Chunk, Context, Output, Rule
from headend.rules.config import (
    CONFIG_BY_KIND,
    EngineConfig,
    RuleSet,
    RuleSpec,
    default_ruleset,
    load_ruleset,
    parse_ruleset,
)
from headend.rules.engine import RULE_FACTORIES, RuleEngine, build_rule, register_kind
from headend.rules.grid import RATINGS_FILE, RATINGS_HEADER, load_ratings
from headend.rules.outage import EvidencePinger, OutageRule, Pinger
from headend.rules.topology import Topology

__all__ = [
    "CONFIG_BY_KIND",
    "RATINGS_FILE",
    "RATINGS_HEADER",
    "RULE_FACTORIES",
    "Alarm",
    "Alert",
    "AlertSink",
    "Chunk",
    "Context",
    "EngineConfig",
    "EvidencePinger",
    "JsonlSink",
    "MemorySink",
    "Outage",
    "OutageRule",
    "Output",
    "Pinger",
    "RecordBook",
    "Rule",
    "RuleEngine",
    "RuleSet",
    "RuleSpec",
    "Topology",
    "build_rule",
    "default_ruleset",
    "load_ratings",
    "load_ruleset",
    "parse_ruleset",
    "register_kind",
]
