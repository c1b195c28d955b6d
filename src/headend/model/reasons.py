"""Machine-readable quarantine reasons: the one list, shared by ingest, CLI and docs.

A rejected frame, row or record is never dropped silently: it is written to the
quarantine with one of these reasons and a human-readable detail.
"""

from __future__ import annotations

from typing import Final

#: reason -> meaning. Keys are a stable contract (CLI output, JSON, docs/ingest.md).
REASONS: Final[dict[str, str]] = {
    "unknown_meter": "the meter is not in the registry; released once the meter is loaded",
    "unknown_collector": "no HMAC key is known for the frame's collector; released once it is",
    "bad_hmac": "the frame's HMAC-SHA256 does not match the collector's key",
    "truncated_frame": "the frame is shorter than its header says",
    "bad_frame": "garbled frame: bad magic, version, header or block sizes",
    "bad_timestamp": "timestamp unparseable, without a UTC offset, out of range or off the interval grid",
    "impossible_value": "value outside what the reading type can physically be",
    "bad_value": "value missing or not a number",
    "unknown_reading_type": "reading type or register name not known",
    "wrong_commodity": "reading type does not belong to the meter's commodity",
    "bad_quality": "quality code not an IEC 61968-9 code known to headend",
    "bad_event_code": "event code is not a well-formed EndDeviceEventType",
    "bad_csv": "CSV row or header malformed",
    "bad_meter": "meter registry row invalid (commodity, technology, two_way or id)",
    "ingest_failed": "a message that made the ingest fail at every delivery, alone at the "
                     "last (a poison message); the error in detail, the message in payload",
    "rules_unknown_meter": "a stored row reached a rules worker whose registry did not know "
                           "its meter within the wait; not fed to the rules",
    "bad_command_response": "command response row invalid: empty command_id or meter_id, "
                            "or a status headend does not know",
    "unknown_command": "command response for a command id the command store does not know",
    "command_response_conflict": "command response the command's state does not allow "
                                 "(completed after expired, an answer to a rejected "
                                 "command): not applied",
}

UNKNOWN_METER: Final = "unknown_meter"
UNKNOWN_COLLECTOR: Final = "unknown_collector"
BAD_HMAC: Final = "bad_hmac"
TRUNCATED_FRAME: Final = "truncated_frame"
BAD_FRAME: Final = "bad_frame"
BAD_TIMESTAMP: Final = "bad_timestamp"
IMPOSSIBLE_VALUE: Final = "impossible_value"
BAD_VALUE: Final = "bad_value"
UNKNOWN_READING_TYPE: Final = "unknown_reading_type"
WRONG_COMMODITY: Final = "wrong_commodity"
BAD_QUALITY: Final = "bad_quality"
BAD_EVENT_CODE: Final = "bad_event_code"
BAD_CSV: Final = "bad_csv"
BAD_METER: Final = "bad_meter"
INGEST_FAILED: Final = "ingest_failed"
RULES_UNKNOWN_METER: Final = "rules_unknown_meter"
BAD_COMMAND_RESPONSE: Final = "bad_command_response"
UNKNOWN_COMMAND: Final = "unknown_command"
COMMAND_RESPONSE_CONFLICT: Final = "command_response_conflict"

#: reasons whose records can succeed later without a change to the data itself
RETRYABLE: Final = frozenset({UNKNOWN_METER, UNKNOWN_COLLECTOR})
