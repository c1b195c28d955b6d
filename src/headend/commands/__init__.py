"""Commands to meters (issue 12): the lifecycle, the store port and its adapters,
admission (rejection at once), the downlink line and the ``command_responses`` decoder.

The codes (kinds, control codes, states, reasons) are :mod:`headend.model.commands`.
Applying responses is :mod:`headend.commands.apply`, the reads on-demand reads brought
:mod:`headend.commands.reads`, the per-collector scheduler :mod:`headend.commands.scheduler`
(docs/commands.md; what is missing: its "Not yet").
"""

from __future__ import annotations

from pathlib import Path

from headend.commands.admission import (
    CommandRequest,
    MeterFacts,
    admit,
    command_ids,
    meter_facts,
)
from headend.commands.base import CommandStore, UnknownCommand
from headend.commands.downlink import DOWNLINK_FIELDS, downlink_line, downlink_lines
from headend.commands.lifecycle import (
    Command,
    HistoryEntry,
    ReadsBrought,
    RepeatedTransition,
    TransitionError,
    advance,
    iso_ms,
)
from headend.commands.memory import MemoryCommandStore
from headend.commands.responses import RESPONSES, decode_command_responses
from headend.commands.sqlite import SqliteCommandStore, command_store_path

__all__ = [
    "DOWNLINK_FIELDS",
    "RESPONSES",
    "Command",
    "CommandRequest",
    "CommandStore",
    "HistoryEntry",
    "MemoryCommandStore",
    "MeterFacts",
    "ReadsBrought",
    "RepeatedTransition",
    "SqliteCommandStore",
    "TransitionError",
    "UnknownCommand",
    "admit",
    "advance",
    "command_ids",
    "command_store_path",
    "decode_command_responses",
    "downlink_line",
    "downlink_lines",
    "iso_ms",
    "meter_facts",
    "open_command_store",
]


def open_command_store(root: Path | str) -> SqliteCommandStore:
    """The durable command store of the data directory ``root``
    (``<root>/commands/commands.sqlite``)."""
    return SqliteCommandStore(command_store_path(root))
