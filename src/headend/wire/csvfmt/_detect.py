"""Which canonical CSV a header line announces."""

from __future__ import annotations

import csv
from typing import Final

from headend.errors import DecodeError
from headend.model import reasons, schema

__all__ = ["KINDS", "detect_kind", "parse_header"]

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
    shown = text if len(text) <= 200 else text[:200] + "..."
    raise DecodeError(f"unknown CSV header {shown!r}", reason=reasons.BAD_CSV, source=source)


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
