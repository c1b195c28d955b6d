"""What an ingest refused, for people: the top quarantine reasons of one ingest, each
with one example row and where it is (file and line number).

The decoders do not carry line numbers (their hot path works on blocks of columns);
the example's line is found afterwards, once per reason shown, by looking the row up
in its file: first the whole row as canonical CSV, then the row's key (its first three
fields). Rows of binary frame files have no line; a row the lookup cannot find (quoted
or reformatted fields) is shown without one.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from headend.model import schema
from headend.wire.csvfmt.rejects import rejects_to_csv_bytes

__all__ = ["Rejection", "find_line", "printable", "top_rejections"]

#: reasons shown in an ingest summary, most frequent first
TOP: Final = 3
#: longest example row shown [characters]
EXAMPLE_CHARS: Final = 160
_COUNT_CHUNK: Final = 1 << 24  # bytes counted for newlines at a time


@dataclass(frozen=True, slots=True)
class Rejection:
    """One quarantine reason of an ingest: how many rows, and one of them."""

    reason: str
    rows: int
    source: str = ""
    line: int | None = None  #: 1-based line of the example in ``source``; None: unknown
    example: str = ""  #: the example row as canonical CSV ("" for a frame)
    detail: str = ""

    def describe(self) -> str:
        """``reason (N rows), e.g. FILE line L: ROW (detail)`` on one line."""
        head = f"{self.reason} ({self.rows:,} row{'s' if self.rows != 1 else ''})"
        if not self.source:
            return head
        where = self.source + (f" line {self.line}" if self.line is not None else "")
        row = f": {self.example}" if self.example else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{head}, e.g. {where}{row}{detail}"


def top_rejections(rows: pa.Table, by_reason: Mapping[str, int], files: Sequence[Path], *,
                   top: int = TOP) -> list[Rejection]:
    """The ``top`` most frequent reasons of ``by_reason``, each with an example.

    Parameters
    ----------
    rows : pa.Table
        Quarantine rows (``model.schema.QUARANTINE``) that may hold this ingest's; the
        examples are taken from rows whose ``source`` is one of ``files``.
    by_reason : Mapping[str, int]
        Rows quarantined per reason by the ingest (its summary).
    files : Sequence[Path]
        The files ingested, as given.
    """
    by_source = {str(p): p for p in files}
    mine = rows.filter(pc.is_in(rows.column("source"), pa.array(list(by_source), pa.string())))
    out = []
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    for reason, n in ranked:
        ex = mine.filter(pc.equal(mine.column("reason"), reason)).slice(0, 1)
        if ex.num_rows == 0:
            out.append(Rejection(reason, n))
            continue
        r = ex.to_pylist()[0]
        source, kind, detail = str(r["source"]), str(r["kind"]), str(r["detail"] or "")
        if kind not in schema.CSV_HEADERS:  # a frame or a whole file: no row, no line
            out.append(Rejection(reason, n, source, None, "", detail))
            continue
        text = rejects_to_csv_bytes(ex, kind).split(b"\n")[1]
        line = find_line(by_source[source], text) if source in by_source else None
        out.append(Rejection(reason, n, source, line, printable(text), detail))
    return out


def printable(row: bytes, limit: int = EXAMPLE_CHARS) -> str:
    """``row`` for a terminal: bytes that are not UTF-8 and characters that do not
    print as escapes, at most ``limit`` characters (then ``...``)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1]
                   for c in row.decode("utf-8", "backslashreplace"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def find_line(path: Path, row: bytes) -> int | None:
    """1-based number of the first line of ``path`` that is ``row``, else of the first
    that starts with ``row``'s first three fields; None if neither is found."""
    fields = row.split(b",")
    key = b",".join(fields[:3]) + b"," if len(fields) > 3 else None
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for needle, whole in ((row, True), (key, False)):
                if needle:
                    pos = _line_start(mm, needle, whole=whole)
                    if pos is not None:
                        return _newlines(mm, pos) + 1
    except (OSError, ValueError):  # gone, unreadable, or empty (mmap of 0 bytes)
        return None
    return None


def _line_start(mm: mmap.mmap, needle: bytes, *, whole: bool) -> int | None:
    """Offset of the first line starting with ``needle`` (and ending after it: whole)."""
    pos = 0 if mm[: len(needle)] == needle else mm.find(b"\n" + needle)
    at_start = pos == 0 and mm[: len(needle)] == needle
    while pos >= 0:
        start = pos if at_start else pos + 1
        end = start + len(needle)
        if not whole or end >= len(mm) or mm[end:end + 1] in (b"\n", b"\r"):
            return start
        at_start = False
        pos = mm.find(b"\n" + needle, start)
    return None


def _newlines(mm: mmap.mmap, end: int) -> int:
    """Line breaks before offset ``end``, counted a chunk at a time."""
    return sum(mm[a:min(a + _COUNT_CHUNK, end)].count(b"\n")
               for a in range(0, end, _COUNT_CHUNK))
