"""The downlink line of a command: what a collector receives (docs/commands.md).

One JSON object per line (UTF-8, ``\\n``-terminated), the same on MQTT
``headend/downlink/<collector_id>`` and in an HTTP long poll's ``application/x-ndjson``
answer. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from headend.commands.lifecycle import Command, iso_ms
from headend.errors import ValidationError

__all__ = ["DOWNLINK_FIELDS", "downlink_line", "downlink_lines"]

#: the keys of a downlink object, in the order written (a contract)
DOWNLINK_FIELDS: Final = ("command_id", "kind", "meter_id", "control_code", "issued_at",
                          "expires_at", "params")


def downlink_line(cmd: Command, *, issued_ms: int,
                  params: Mapping[str, Any] | None = None) -> bytes:
    """The JSON line that hands ``cmd`` to its collector.

    Parameters
    ----------
    cmd : Command
        A command that may be sent: ``queued`` or ``sent`` (a resend), with a control
        code.
    issued_ms : int
        When the head end issues it [ms, Unix UTC].
    params : mapping, optional
        Kind-specific parameters (JSON-serialisable); ``{}`` for the four kinds today.

    Raises
    ------
    ValidationError
        If the command is in another state or has no control code.

    Examples
    --------
    >>> c = Command("c1", "ping", "M1", "queued", None, None, "ops", 0, 0, 300_000,
    ...             "1001", "3.26.0.46")
    >>> downlink_line(c, issued_ms=1_500).decode()  # doctest: +NORMALIZE_WHITESPACE
    '{"command_id":"c1","kind":"ping","meter_id":"M1","control_code":"3.26.0.46",\
"issued_at":"1970-01-01T00:00:01.500Z","expires_at":"1970-01-01T00:05:00.000Z",\
"params":{}}\\n'
    """
    if cmd.state not in ("queued", "sent"):
        raise ValidationError(f"{cmd.command_id} is {cmd.state}: only queued or sent "
                              "commands go down to a collector")
    if cmd.control_code is None:
        raise ValidationError(f"{cmd.command_id} has no control code")
    obj = {"command_id": cmd.command_id, "kind": cmd.kind, "meter_id": cmd.meter_id,
           "control_code": cmd.control_code, "issued_at": iso_ms(issued_ms),
           "expires_at": iso_ms(cmd.expires_ms), "params": dict(params or {})}
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def downlink_lines(cmds: Iterable[Command], *, issued_ms: int) -> bytes:
    """Several commands' lines, concatenated (one MQTT message or long-poll answer)."""
    return b"".join(downlink_line(c, issued_ms=issued_ms) for c in cmds)
