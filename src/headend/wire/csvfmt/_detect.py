"""Which canonical CSV a header line announces."""

from __future__ import annotations

import csv
from typing import Final

from headend.errors import DecodeError
from headend.model import reasons, schema

__all__ = ["KINDS", "detect_kind", "header_problem", "parse_header"]

#: canonical CSV kinds, in :data:`headend.model.schema.CSV_HEADERS` order
KINDS: Final = tuple(schema.CSV_HEADERS)

BOM: Final = b"\xef\xbb\xbf"


def parse_header(header_line: str | bytes, *, source: str = "") -> tuple[str, list[str]]:
    """Kind and column names (stripped) of a header line.

    Raises
    ------
    DecodeError
        ``reason="bad_csv"`` if the line is not a canonical header: the required
        columns of a kind, in contract order, optionally followed by other columns.
    """
    if isinstance(header_line, bytes):
        header_line = header_line.removeprefix(BOM)
        try:
            header_line = header_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("CSV header is not UTF-8", reason=reasons.BAD_CSV,
                              source=source) from exc
    text = header_line.lstrip("\ufeff").strip()
    try:
        names = [n.strip() for n in next(csv.reader([text]))] if text else []
    except csv.Error as exc:
        raise DecodeError(f"malformed CSV header: {exc}", reason=reasons.BAD_CSV,
                          source=source) from exc
    for kind, required in schema.CSV_HEADERS.items():
        if tuple(names[: len(required)]) == required:
            return kind, names
    raise DecodeError(header_problem(text), reason=reasons.BAD_CSV, source=source)


#: separators people use instead of the canonical comma, by name
_OTHER_SEPARATORS: Final = {";": "semicolon", "\t": "tab", "|": "pipe"}


def header_problem(text: str) -> str:
    """Why ``text`` is not a canonical CSV header, in words: the separator found when it
    is not the comma, and the closest kind's missing, extra or misplaced columns.

    Examples
    --------
    >>> header_problem("meter_id;event_time;event_code")
    "CSV header 'meter_id;event_time;event_code' is separated by semicolons (';'), not commas: with commas it is an events header"
    >>> header_problem("meter_id,event_time")
    "CSV header 'meter_id,event_time' is not canonical: closest kind events, missing column event_code"
    """
    shown = text if len(text) <= 200 else text[:200] + "..."
    if not text:
        return "empty file: neither a CSV header line nor a binary frame (magic HEFR)"
    head = f"CSV header {shown!r}"
    seps = [sep for sep in _OTHER_SEPARATORS if text.count(sep) > text.count(",")]
    if seps:
        sep = max(seps, key=text.count)
        names = [n.strip().strip('"') for n in text.split(sep)]
        kind = next((k for k, req in schema.CSV_HEADERS.items()
                     if tuple(names[: len(req)]) == req), None)
        msg = (f"{head} is separated by {_OTHER_SEPARATORS[sep]}s ({sep!r}), not commas")
        return msg + (f": with commas it is a{'n' if kind[0] in 'aeiou' else ''} {kind} header"
                      if kind else f"; {_closest(names)}")
    try:
        names = [n.strip() for n in next(csv.reader([text]))]
    except csv.Error:
        names = text.split(",")
    return f"{head} is not canonical: {_closest(names)}"


def _closest(names: list[str]) -> str:
    """The kind sharing most required columns with ``names``, and what differs."""
    def shared(kind: str) -> int:
        return len(set(schema.CSV_HEADERS[kind]) & set(names))

    kind = max(KINDS, key=shared)  # first of the best, in KINDS order
    required = schema.CSV_HEADERS[kind]
    if shared(kind) == 0:
        return ("no column of a canonical kind (e.g. reads: " + ",".join(
            schema.CSV_HEADERS["reads"]) + "; see docs/formats.md)")
    missing = [c for c in required if c not in names]
    known = set(required) | set(schema.CSV_OPTIONAL.get(kind, ()))
    extra = [n for n in names if n not in known]
    parts = [f"closest kind {kind}"]
    if missing:
        parts.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if extra:
        parts.append(f"extra column{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    if not missing:
        parts.append("the required columns must come first, in this order: "
                     + ",".join(required))
    return ", ".join(parts)


def detect_kind(header_line: str | bytes) -> str:
    """The canonical CSV kind (``reads``, ``meters``, ...) of a header line.

    A UTF-8 byte-order mark, a trailing CR/LF, whitespace around the line and the
    names, and quoted names are tolerated; required columns must come first and in contract order
    (:data:`headend.model.schema.CSV_HEADERS`), extra columns may follow.

    Raises
    ------
    DecodeError
        ``reason="bad_csv"`` for any other header.

    Examples
    --------
    >>> detect_kind("\\ufeffmeter_id,reading_type,interval_end,value,quality\\r\\n")
    'reads'
    """
    return parse_header(header_line)[0]
