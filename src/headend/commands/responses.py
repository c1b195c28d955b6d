"""Decode the ``command_responses`` CSV that collectors upload (docs/commands.md).

Header ``command_id,meter_id,status,time,detail`` (further columns are ignored). Pure and
vectorised: CSV bytes in, an Arrow table of the good rows and the refused rows in the
quarantine schema out (:data:`headend.model.schema.QUARANTINE`, kind
``command_responses``, with the whole line in ``payload``). Applying the responses to
the command store is the caller's job.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from headend.errors import DecodeError
from headend.model import commands as C
from headend.model import reasons, schema
from headend.wire.csvfmt.rejects import make_rejects
from headend.wire.responses import responses_table

__all__ = ["KIND", "RESPONSES", "decode_command_responses"]

KIND: Final = "command_responses"

#: A decoded response (:data:`headend.model.commands.RESPONSES`): ``state`` is the
#: command state the status reports, ``reason`` the failure reason (the status itself)
#: for a failure, else null.
RESPONSES: Final = C.RESPONSES

_STATUS: Final = pa.array(list(C.RESPONSE_STATUSES), pa.string())
_ISO: Final = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
               r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$")
_DETAIL_CHARS: Final = 64

Mask = npt.NDArray[np.bool_]


def _times(col: pa.Array) -> tuple[pa.Array, Mask]:
    """ISO 8601 times with an offset as ``timestamp[ms, UTC]``; ok mask."""
    ok = np.asarray(pc.fill_null(pc.match_substring_regex(col, _ISO), False))
    out = pa.nulls(len(col), pa.timestamp("ms", tz="UTC"))
    if not ok.any():
        return out, ok
    good = col.filter(pa.array(ok))
    try:
        parsed = pc.cast(good, pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # a well-formed text that is no date (month 13): parse each distinct one
        uniq = pc.unique(good)
        vals: list[int | None] = []
        for text in uniq.to_pylist():
            try:
                dt = datetime.fromisoformat(text)
                vals.append(int(dt.astimezone(UTC).timestamp() * 1000))
            except ValueError:
                vals.append(None)
        table = pa.array(vals, pa.int64())
        parsed = table.take(pc.index_in(good, value_set=uniq)).cast(
            pa.timestamp("ms", tz="UTC"))
        ok[np.flatnonzero(ok)] = parsed.is_valid().to_numpy(zero_copy_only=False)
        parsed = parsed.filter(parsed.is_valid())
    pos = np.cumsum(ok) - 1
    out = parsed.take(pa.array(np.where(ok, pos, 0))) if len(parsed) else out
    return pc.if_else(pa.array(ok), out, pa.scalar(None, out.type)), ok


def decode_command_responses(data: bytes, *, source: str,
                             received_at: int | None = None) -> tuple[pa.Table, pa.Table]:
    """Decode a ``command_responses`` CSV.

    Parameters
    ----------
    data : bytes
        The CSV (UTF-8, header row, LF or CRLF).
    source : str
        Name of the input, kept in every quarantine row.
    received_at : int, optional
        When it arrived [s, Unix UTC]; now if not given.

    Returns
    -------
    (responses, rejects)
        ``responses`` (:data:`RESPONSES`) in input order; ``rejects`` (quarantine
        schema): ``bad_csv`` (empty ``command_id`` or ``meter_id``, wrong field count),
        ``bad_command_response`` (unknown ``status``), ``bad_timestamp`` (``time`` not
        ISO 8601 with a UTC offset); the first that applies, in that order.

    Raises
    ------
    DecodeError
        ``reason="bad_csv"`` if the header is not ``command_id,meter_id,status,time,
        detail`` (then other columns) or the file is not UTF-8 CSV.
    """
    if received_at is None:
        received_at = int(datetime.now(UTC).timestamp())
    text = bytes(data).removeprefix(b"\xef\xbb\xbf")
    header = text.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    names = [n.strip() for n in header.split(",")]
    if tuple(names[:len(C.COMMAND_RESPONSE_HEADER)]) != C.COMMAND_RESPONSE_HEADER:
        raise DecodeError(f"not a command_responses header: {header[:200]!r}",
                          reason=reasons.BAD_CSV, source=source)
    bad_lines: list[bytes] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        bad_lines.append((row.text or "").encode())
        return "skip"

    cols = list(C.COMMAND_RESPONSE_HEADER)
    try:
        t = pacsv.read_csv(
            io.BytesIO(text),
            read_options=pacsv.ReadOptions(column_names=[*cols, *(
                f"_extra{i}" for i in range(len(names) - len(cols)))], skip_rows=1),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(cols, pa.string()), include_columns=cols,
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DecodeError(f"command_responses CSV unreadable: {exc}", reason=reasons.BAD_CSV,
                          source=source) from exc
    c = {n: t.column(n).combine_chunks() for n in cols}
    n = t.num_rows
    taken = np.zeros(n, np.bool_)
    rejects: list[pa.Table] = []
    if bad_lines:
        rejects.append(make_rejects(source, KIND, reasons.BAD_CSV, "wrong number of fields",
                                    payload=pa.array(bad_lines, pa.binary()),
                                    received_at=received_at))
    lines = pc.binary_join_element_wise(*(c[k] for k in cols), ",").cast(pa.binary())

    def reject(bad: Mask, reason: str, detail: str | tuple[str, str]) -> None:
        m = bad & ~taken
        if not m.any():
            return
        fm = pa.array(m)
        det: pa.Array | str
        if isinstance(detail, tuple):
            shown = pc.utf8_slice_codeunits(c[detail[1]].filter(fm), 0, _DETAIL_CHARS)
            det = pc.binary_join_element_wise(f"{detail[0]} '", shown, "'", "")
        else:
            det = detail
        rejects.append(make_rejects(source, KIND, reason, det, payload=lines.filter(fm),
                                    received_at=received_at,
                                    meter_id=c["meter_id"].filter(fm),
                                    type=c["status"].filter(fm), time=c["time"].filter(fm)))
        taken[:] |= m

    for col in ("command_id", "meter_id"):
        reject(np.asarray(pc.equal(pc.utf8_length(c[col]), 0)), reasons.BAD_CSV,
               f"empty {col}")
    status_idx = np.asarray(pc.fill_null(pc.index_in(c["status"], value_set=_STATUS), -1))
    reject(status_idx < 0, reasons.BAD_COMMAND_RESPONSE,
           (f"status not one of {'|'.join(C.RESPONSE_STATUSES)}:", "status"))
    times, ok = _times(c["time"])
    reject(~ok, reasons.BAD_TIMESTAMP, ("time not ISO 8601 with a UTC offset:", "time"))
    keep = pa.array(~taken)
    out = responses_table(c["command_id"].filter(keep), c["meter_id"].filter(keep),
                          c["status"].filter(keep), times.filter(keep),
                          c["detail"].filter(keep))
    rej = (pa.concat_tables(rejects) if rejects else schema.QUARANTINE.empty_table())
    return out, rej
