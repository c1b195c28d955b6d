"""Split a canonical CSV into blocks of whole lines and parse each with Arrow.

Lines that are not valid UTF-8 are taken out of a block before Arrow sees it (Arrow
would otherwise fail the whole stream), and rows with the wrong number of fields are
collected by Arrow's ``invalid_row_handler``; both become ``bad_csv`` rejects, and the
other rows of the block are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from headend.errors import DecodeError
from headend.model import reasons

__all__ = ["Block", "open_blocks", "parse_block"]

BOM: Final = b"\xef\xbb\xbf"
#: longest header line read before giving up [bytes]
MAX_HEADER: Final = 1 << 20

Source = bytes | bytearray | memoryview | os.PathLike[str]


@dataclass(slots=True)
class Block:
    """Parsed rows of one block plus the lines refused before or by the parser."""

    columns: dict[str, pa.StringArray]
    num_rows: int
    bad_lines: list[bytes] = field(default_factory=list)
    bad_details: list[str] = field(default_factory=list)


def _chunks_of(mv: memoryview, start: int, block_size: int) -> Iterator[memoryview]:
    n = len(mv)
    raw = mv.obj if isinstance(mv.obj, bytes) else bytes(mv)
    pos = start
    while pos < n:
        end = pos + block_size
        if end >= n:
            yield mv[pos:]
            return
        nl = raw.rfind(b"\n", pos, end)
        if nl < 0:
            nl = raw.find(b"\n", end)
            if nl < 0:
                yield mv[pos:]
                return
        yield mv[pos : nl + 1]
        pos = nl + 1


def _file_chunks(fh: object, first: bytes, block_size: int, source: str) -> Iterator[bytes]:
    read = fh.read  # type: ignore[attr-defined]
    pending = first
    limit = max(4 * block_size, 64 << 20)
    eof = False
    while not eof or pending:
        if not eof and len(pending) < block_size:
            more = read(block_size)
            eof = not more
            pending += more
            continue
        nl = pending.rfind(b"\n", 0, block_size if len(pending) > block_size else None)
        if nl < 0:
            nl = pending.find(b"\n")
        if nl < 0:
            if eof:
                yield pending
                return
            if len(pending) > limit:
                raise DecodeError(f"a line longer than {limit} bytes",
                                  reason=reasons.BAD_CSV, source=source)
            more = read(block_size)
            eof = not more
            pending += more
            continue
        yield pending[: nl + 1]
        pending = pending[nl + 1 :]


def open_blocks(
    data: Source, block_size: int, source: str
) -> tuple[bytes, Iterator[bytes | memoryview]]:
    """The header line and an iterator over blocks of whole lines that follow it."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        mv = memoryview(data).cast("B")
        raw = mv.obj if isinstance(mv.obj, bytes) else bytes(mv)
        start = len(BOM) if raw.startswith(BOM) else 0
        nl = raw.find(b"\n", start)
        end = len(raw) if nl < 0 else nl + 1
        return bytes(mv[start:end]), _chunks_of(mv, end, block_size)
    path = Path(data)

    def gen() -> Iterator[bytes]:
        with path.open("rb") as fh:
            fh.seek(hstart)
            yield from _file_chunks(fh, b"", block_size, source)

    with path.open("rb") as fh:
        head = fh.read(MAX_HEADER)
    start = len(BOM) if head.startswith(BOM) else 0
    nl = head.find(b"\n", start)
    if nl < 0 and len(head) == MAX_HEADER:
        raise DecodeError("no end to the CSV header line", reason=reasons.BAD_CSV, source=source)
    hstart = len(head) if nl < 0 else nl + 1
    return head[start:hstart], gen()


def _split_utf8(block: bytes | memoryview) -> tuple[bytes | memoryview, list[bytes]]:
    """Remove the lines that are not valid UTF-8; return the rest and the removed."""
    try:
        str(block, "utf-8")
        return block, []
    except UnicodeDecodeError as exc:
        raw = bytes(block)
        first = raw.rfind(b"\n", 0, exc.start) + 1
    good: list[bytes] = [raw[:first]]
    bad: list[bytes] = []
    for line in raw[first:].split(b"\n"):  # only in blocks holding invalid UTF-8
        try:
            line.decode("utf-8")
            good.append(line + b"\n")
        except UnicodeDecodeError:
            bad.append(line.rstrip(b"\r"))
    return b"".join(good), bad


def _split_bad_quoting(block: bytes | memoryview) -> tuple[bytes | memoryview, list[bytes]]:
    """Remove the lines whose quoting breaks RFC 4180 on a single line.

    Canonical CSV has no line breaks in values, so a line that ends inside a quoted
    field is malformed and must not swallow the lines after it (the CSV parser would
    join them). A quote is well placed if it opens a field (at its start), closes one
    (followed by ``,``, CR, LF or the end) or is half of an escaped ``""``; with every
    quote well placed, an even count per line means the line ends outside quotes.
    Vectorised over the quote characters only.
    """
    arr = np.frombuffer(block, np.uint8)
    qpos = np.flatnonzero(arr == ord('"'))
    if not len(qpos):
        return block, []
    ends = np.flatnonzero(arr == 10)
    if not len(ends) or ends[-1] != len(arr) - 1:
        ends = np.append(ends, len(arr) - 1)  # last line without a line break
    starts = np.concatenate([[0], ends[:-1] + 1])
    line = np.searchsorted(ends, qpos)
    first_q = np.searchsorted(qpos, starts)  # index of each line's first quote
    p = np.arange(len(qpos)) - first_q[line]  # quotes before this one on its line
    prev = np.where(qpos > starts[line], arr[np.maximum(qpos - 1, 0)], ord(","))
    nxt = arr[np.minimum(qpos + 1, len(arr) - 1)]
    nxt = np.where(qpos == len(arr) - 1, 10, nxt)
    opens = (prev == ord(",")) | (prev == ord('"'))  # field start or 2nd of ""
    closes = np.isin(nxt, np.frombuffer(b'",\r\n', np.uint8))
    bad_q = np.where(p % 2 == 0, ~opens, ~closes)
    count = np.bincount(line, minlength=len(ends))
    odd = (count % 2 == 1) | (np.bincount(line, weights=bad_q, minlength=len(ends)) > 0)
    if not odd.any():
        return block, []
    bad = [bytes(arr[s:e + 1]).rstrip(b"\r\n") for s, e in zip(starts[odd], ends[odd],
                                                                strict=True)]
    drop = np.repeat(odd, ends - starts + 1)
    return arr[~drop].tobytes(), bad


def parse_block(
    block: bytes | memoryview, names: list[str], wanted: list[str], source: str
) -> Block:
    """Parse one block of whole lines (no header) into string columns ``wanted``."""
    text, bad_utf8 = _split_utf8(block)
    text, bad_quotes = _split_bad_quoting(text)
    out = Block({}, 0, bad_lines=bad_utf8 + bad_quotes,
                bad_details=["line is not valid UTF-8"] * len(bad_utf8)
                + ["malformed quoting"] * len(bad_quotes))

    def on_invalid(row: pacsv.InvalidRow) -> str:
        out.bad_lines.append(row.text.encode().rstrip(b"\r"))
        out.bad_details.append(
            f"expected {row.expected_columns} fields, got {row.actual_columns}")
        return "skip"

    empty = {n: pa.array([], pa.string()) for n in wanted}
    if not len(text):
        out.columns = empty
        return out
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False,
                                           block_size=max(len(text) + 1, 1 << 16)),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in wanted}, include_columns=wanted,
                strings_can_be_null=False, null_values=[], quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        arr = np.frombuffer(text, np.uint8)
        if not ((arr != 10) & (arr != 13)).any():  # blank lines only
            out.columns = empty
            return out
        raise DecodeError(f"CSV cannot be parsed: {exc}", reason=reasons.BAD_CSV,
                          source=source) from exc
    table = table.combine_chunks()
    out.num_rows = table.num_rows
    out.columns = {
        n: (table.column(n).chunk(0) if table.column(n).num_chunks else empty[n]) for n in wanted
    }
    return out
