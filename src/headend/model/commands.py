"""Commands to meters: kinds, control codes, states and reasons (the one source of truth).

A command asks one meter, through its collector, to do one thing: an on-demand read,
a disconnect or connect of its service switch, or a ping. Its life is a small state
machine (:data:`TRANSITIONS`); every state that is not a success carries a reason from a
fixed list (:data:`REJECTIONS`, :data:`FAILURES`, :data:`EXPIRY`). docs/codes.md and
docs/commands.md are generated from / written against this module.

Control codes
-------------
Each kind carries its IEC 61968-9 EndDeviceControlType, ``type.domain.subdomain.
eventOrAction`` (the same four enumerations as EndDeviceEventType, Annex E). The type
field is the end device: 3 electric meter, 7 gas meter, 8 water meter (as for the event
codes in :mod:`headend.model.codes`). Disconnect ``3.31.0.23`` (RCDSwitch / Disconnect)
and connect ``3.31.0.18`` (RCDSwitch / Connect) are the codes used in practice. We found
no named control for an on-demand read or a ping; they are composed from the same
enumerations: read ``3.21.0.46`` (domain 21 Metrology, eventOrAction 46 Read) and ping
``3.26.0.46`` (domain 26 Power, "device energization status", eventOrAction 46 Read),
the domain of headend's power-fail and power-restored events (``3.26.0.85``,
``3.26.0.216``).

References
----------
IEC 61968-9:2013, Annex E (EndDeviceType, EndDeviceDomain, EndDeviceSubdomain,
EndDeviceEventOrAction). The numeric enumerations as implemented in Honeywell/Elster
Connexo, ``com.elster.jupiter.cbo.EndDeviceDomain`` (Metrology 21, Power 26, RCDSwitch
31) and ``EndDeviceEventOrAction`` (Connect 18, Disconnect 23, Read 46), and its
``EndDeviceControlTypeMapping`` (``*.31.0.18`` close, ``*.31.0.23`` open the remote
switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from headend.model.codes import Commodity

__all__ = [
    "ALL_REASONS",
    "COMMAND_KINDS",
    "COMMAND_RESPONSE_HEADER",
    "COMMAND_STATES",
    "CONFIRM_ABOVE",
    "DEVICE_TYPE",
    "EXPIRY",
    "FAILURES",
    "HEAD_END_FAILURES",
    "INITIAL_STATES",
    "KIND_BY_NAME",
    "REASON_CODES",
    "REJECTIONS",
    "RESPONSES",
    "RESPONSE_STATUSES",
    "RESPONSE_STATUS_CODES",
    "SWITCH_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "CommandKind",
    "control_code",
]


@dataclass(frozen=True, slots=True)
class CommandKind:
    """One kind of command.

    Attributes
    ----------
    code : int
        Stored code (``uint8``); never reused.
    name : str
        Name on the CLI, in JSON and CSV (``disconnect``).
    control : str
        IEC 61968-9 EndDeviceControlType without its type field
        (``domain.subdomain.eventOrAction``); :func:`control_code` adds the type.
    commodities : tuple of int
        :class:`~headend.model.codes.Commodity` codes of the meters it fits.
    expires_s : int
        Default time from creation to expiry [s].
    description : str
        What it asks the meter.
    """

    code: int
    name: str
    control: str
    commodities: tuple[int, ...]
    expires_s: int
    description: str


_ALL: Final = (Commodity.ELECTRIC, Commodity.WATER, Commodity.GAS)

#: The kinds. A service switch is modelled on electric meters only: water and gas
#: meters may have shut-off valves, but the registry does not say which do, so a
#: disconnect or connect of a water or gas meter is rejected (``kind_unfit``).
COMMAND_KINDS: Final[tuple[CommandKind, ...]] = (
    CommandKind(0, "read", "21.0.46", _ALL, 3_600,
                "on-demand read: the meter's interval and register reads, uploaded as usual"),
    CommandKind(1, "disconnect", "31.0.23", (Commodity.ELECTRIC,), 86_400,
                "open the service switch (remote disconnect)"),
    CommandKind(2, "connect", "31.0.18", (Commodity.ELECTRIC,), 86_400,
                "close the service switch (remote connect)"),
    CommandKind(3, "ping", "26.0.46", _ALL, 300,
                "ask whether the meter answers (is energised and reachable)"),
)
KIND_BY_NAME: Final = {k.name: k for k in COMMAND_KINDS}

#: IEC 61968-9 EndDeviceType of each commodity's meter (the control code's type field)
DEVICE_TYPE: Final[dict[int, int]] = {Commodity.ELECTRIC: 3, Commodity.GAS: 7,
                                      Commodity.WATER: 8}


def control_code(kind: str, commodity: int) -> str:
    """The EndDeviceControlType of ``kind`` sent to a meter of ``commodity``.

    Raises ``KeyError`` for an unknown kind or commodity.

    Examples
    --------
    >>> control_code("disconnect", Commodity.ELECTRIC)
    '3.31.0.23'
    >>> control_code("read", Commodity.WATER)
    '8.21.0.46'
    """
    return f"{DEVICE_TYPE[commodity]}.{KIND_BY_NAME[kind].control}"


# --------------------------------------------------------------------------- states

#: state -> meaning, in lifecycle order
COMMAND_STATES: Final[dict[str, str]] = {
    "queued": "accepted by the head end, waiting to be sent to the meter's collector",
    "sent": "handed to the collector's downlink; no answer yet",
    "delivered": "the collector reports the command reached the meter",
    "completed": "the collector reports the meter did it (a read: after its reads were "
                 "uploaded)",
    "failed": "the collector or the head end gave up; the reason says why",
    "expired": "not completed before its expiry time",
    "rejected": "refused at once by the head end, never sent; the reason says why",
}

#: the states a command is created in
INITIAL_STATES: Final = frozenset({"queued", "rejected"})
#: state -> states it may move to. A sent command may go back to queued (to be sent
#: again, e.g. after a restart before the collector acknowledged it); a collector may
#: answer ``completed`` without ``delivered`` first.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "queued": frozenset({"sent", "failed", "expired"}),
    "sent": frozenset({"queued", "delivered", "completed", "failed", "expired"}),
    "delivered": frozenset({"completed", "failed", "expired"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
    "rejected": frozenset(),
}
TERMINAL_STATES: Final = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

# --------------------------------------------------------------------------- reasons

#: A ``disconnect`` sent to more meters than this at once needs an explicit
#: confirmation (``--yes``), else every one is rejected ``confirmation_needed``.
CONFIRM_ABOVE: Final = 100

#: reason -> meaning of a ``rejected`` command, in the order they are checked (the first
#: that applies is the command's reason)
REJECTIONS: Final[dict[str, str]] = {
    "meter_unknown": "the meter is not in the registry",
    "not_allowed": "the caller may not send commands of this kind",
    "kind_unfit": "the kind does not fit the meter's commodity (disconnect and connect: "
                  "electric meters only)",
    "meter_one_way": "the meter is one-way (two_way false in the registry): it cannot "
                     "receive commands",
    "no_collector": "the meter has no collector_id in the registry: no downlink reaches it",
    "confirmation_needed": f"a disconnect of more than {CONFIRM_ABOVE} meters at once, "
                           "sent without confirmation (--yes)",
    "critical_care": "a disconnect of a meter flagged critical_care, sent without --force "
                     "and a reason",
}

#: reason -> meaning of a ``failed`` command. The first five are what a collector
#: reports (a ``command_responses`` status); ``downlink_failed`` and ``no_reads`` are
#: the head end's (:data:`HEAD_END_FAILURES`).
FAILURES: Final[dict[str, str]] = {
    "meter_unreachable": "the collector could not reach the meter (after its own retries)",
    "meter_refused": "the meter refused the command (e.g. switch locked or armed)",
    "switch_failed": "the service switch did not reach the position asked for",
    "not_supported": "the meter does not support this kind of command",
    "collector_error": "the collector failed for another reason (detail says which)",
    "downlink_failed": "the head end could not hand the command to the collector's "
                       "downlink after its retries",
    "no_reads": "a read the collector reported completed, but no new read of the meter "
                "was uploaded while it was sent or delivered",
}
#: the failure reasons the head end gives (never a collector's response status)
HEAD_END_FAILURES: Final = frozenset({"downlink_failed", "no_reads"})

#: reason -> meaning of an ``expired`` command
EXPIRY: Final[dict[str, str]] = {
    "expired": "the command was not completed before its expiry time",
}

ALL_REASONS: Final[dict[str, str]] = {**REJECTIONS, **FAILURES, **EXPIRY}

#: Stored code of each reason (code = index + 1; 0 is no reason), as the SQLite command
#: store packs its audit log. Append only: a code is never reused or moved.
REASON_CODES: Final = (
    "meter_unknown", "not_allowed", "kind_unfit", "meter_one_way", "no_collector",
    "confirmation_needed", "critical_care", "meter_unreachable", "meter_refused",
    "switch_failed", "not_supported", "collector_error", "downlink_failed", "expired",
    "no_reads",
)
assert sorted(REASON_CODES) == sorted(ALL_REASONS), "every reason needs a stored code"

# --------------------------------------------------------------------------- responses

#: Canonical CSV header of the ``command_responses`` kind (what collectors upload).
COMMAND_RESPONSE_HEADER: Final = ("command_id", "meter_id", "status", "time", "detail")

#: status -> the command state it reports. A failure is reported by its reason.
RESPONSE_STATUSES: Final[dict[str, str]] = {
    "delivered": "delivered",
    "completed": "completed",
    **{r: "failed" for r in FAILURES if r not in HEAD_END_FAILURES},
}

#: The ``status`` code of a response in the binary frame's ``command_responses`` section
#: (docs/formats.md): code = index. Append only.
RESPONSE_STATUS_CODES: Final = ("delivered", "completed", "meter_unreachable",
                                "meter_refused", "switch_failed", "not_supported",
                                "collector_error")
assert sorted(RESPONSE_STATUS_CODES) == sorted(RESPONSE_STATUSES)

#: A decoded response (the CSV's and the frame section's decoders give this table, in
#: upload order): ``state`` is the command state the status reports, ``reason`` the
#: failure reason (the status itself) for a failure, else null; ``time`` the
#: collector's [ms, UTC].
RESPONSES: Final = pa.schema([
    pa.field("command_id", pa.string(), nullable=False),
    pa.field("meter_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("detail", pa.string()),
])

# --------------------------------------------------------------------------- switch

#: Service switch state of a meter as kept in the registry (``uint8`` code = index).
SWITCH_STATES: Final = ("unknown", "connected", "disconnected")
