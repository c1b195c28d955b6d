"""On-demand reads tied to their command: which stored reads a ``read`` command brought.

A ``read`` command asks the collector for the meter's reads; they come back as ordinary
uploads (frames or CSV) and are stored like any other. While the command is ``sent`` or
``delivered`` (:data:`~headend.commands.lifecycle.TAKING_READS`), every new interval read
and register read of its meter that is stored counts as brought by it, and is recorded
on the command (:class:`~headend.commands.lifecycle.ReadsBrought`: counts, the interval
ends and read times covered, the uploads). Its ``completed`` response closes the count;
a ``completed`` with nothing brought fails the command ``no_reads``
(:mod:`headend.commands.apply`).

:func:`reads_brought` is the pure, vectorised core: one ``isin`` of the batch's meter
column against the few meters with a read command open, then a group-by over the rows
that matched. The ingest listener that calls it after every stored batch is
:class:`headend.ingest.hooks.CommandReads`; it asks the store first
(:meth:`~headend.commands.base.CommandStore.open_reads`, answered from memory while
nothing changed) and returns at once when no read command is open.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.commands.lifecycle import ReadsBrought

__all__ = ["OpenReads", "reads_brought"]


class OpenReads:
    """The meters with a read command open, as ``meter_idx`` for the isin.

    Parameters
    ----------
    by_meter : mapping
        :meth:`~headend.commands.base.CommandStore.open_reads`: meter id -> command ids.
    idx : int array
        The registry's ``meter_idx`` of each key of ``by_meter``, in its order (-1 for a
        meter the registry does not know: it never matches).
    """

    __slots__ = ("by_meter", "command_ids", "idx")

    def __init__(self, by_meter: Mapping[str, tuple[str, ...]], idx: npt.ArrayLike) -> None:
        self.by_meter = by_meter
        ids = np.asarray(idx, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.idx: npt.NDArray[np.int64] = ids[order]  # sorted, for searchsorted
        keys = list(by_meter.values())
        self.command_ids: list[tuple[str, ...]] = [keys[i] for i in order.tolist()]


def _per_meter(meter_idx: npt.NDArray[np.int64], times: npt.NDArray[np.int64],
               open_: OpenReads) -> dict[int, tuple[int, int, int]]:
    """meter position in ``open_`` -> (count, first time, last time) of the rows whose
    meter is open (``times`` [s])."""
    sel = np.isin(meter_idx, open_.idx)
    if not sel.any():
        return {}
    m, t = meter_idx[sel], times[sel]
    order = np.argsort(m, kind="stable")  # new rows come in key order: already sorted
    m, t = m[order], t[order]
    uniq, start, count = np.unique(m, return_index=True, return_counts=True)
    lo = np.minimum.reduceat(t, start)
    hi = np.maximum.reduceat(t, start)
    pos = np.searchsorted(open_.idx, uniq)
    return {int(p): (int(c), int(a), int(b))
            for p, c, a, b in zip(pos.tolist(), count.tolist(), lo.tolist(), hi.tolist(),
                                  strict=True)}


def _column(table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return np.asarray(col.to_numpy(), dtype=np.int64)


def reads_brought(open_: OpenReads, reads: pa.Table, registers: pa.Table, *,
                  source: str) -> list[tuple[str, ReadsBrought]]:
    """What one stored batch brought to each open read command.

    Parameters
    ----------
    open_ : OpenReads
        The meters with a read command sent or delivered.
    reads, registers : pa.Table
        The batch's new interval reads (:data:`~headend.model.schema.READS`) and
        register reads (:data:`~headend.model.schema.REGISTERS`).
    source : str
        The upload's source, recorded with the reads.

    Returns
    -------
    list of (command_id, ReadsBrought)
        One entry per open command of a meter with rows in the batch (every open read
        command of that meter gets the meter's reads), in the order of ``open_``.
    """
    if not len(open_.idx) or (reads.num_rows == 0 and registers.num_rows == 0):
        return []
    per_i = _per_meter(_column(reads, "meter_idx"), _column(reads, "interval_end"), open_) \
        if reads.num_rows else {}
    per_r = _per_meter(_column(registers, "meter_idx"), _column(registers, "read_time"),
                       open_) if registers.num_rows else {}
    out: list[tuple[str, ReadsBrought]] = []
    for pos in sorted(per_i.keys() | per_r.keys()):
        ni, fi, li = per_i.get(pos, (0, None, None))
        nr, fr, lr = per_r.get(pos, (0, None, None))
        got = ReadsBrought(ni, nr, fi, li, fr, lr, 1, (source,))
        out.extend((cid, got) for cid in open_.command_ids[pos])
    return out

