"""Network topology as dense arrays: meter -> transformer -> feeder -> substation.

Rules key and partition their state by ``meter_idx`` (dense NumPy arrays) and
correlate meters through the device indices held here. Everything is built once per
registry change from a :data:`headend.model.schema.METERS` table; no per-meter Python
work afterwards.

Levels are numbered :data:`METER` (0), :data:`TRANSFORMER` (1), :data:`FEEDER` (2) and
:data:`SUBSTATION` (3); :data:`LEVEL_NAMES` gives their export names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headend.model import schema
from headend.model.codes import Commodity
from headend.model.commands import SWITCH_STATES

__all__ = [
    "FEEDER",
    "LEVEL_NAMES",
    "METER",
    "SUBSTATION",
    "TRANSFORMER",
    "Ids",
    "MeterSource",
    "Topology",
    "meters_table",
    "partition_of",
]

METER: Final = 0
TRANSFORMER: Final = 1
FEEDER: Final = 2
SUBSTATION: Final = 3
LevelName = Literal["meter", "transformer", "feeder", "substation"]
LEVEL_NAMES: Final[tuple[LevelName, ...]] = ("meter", "transformer", "feeder", "substation")
DEFAULT_INTERVAL_S: Final = 900

I32 = npt.NDArray[np.int32]


def partition_of(substation: I32, n_parts: int) -> I32:
    """Partition of each meter given its substation index (-1: none): rules correlate
    meters only within a substation, so substations are the unit of scale-out. Meters
    without a substation are spread by their own index. The bus router must use the
    same function on the same registry."""
    idx = np.arange(len(substation), dtype=np.int64)
    key = np.where(substation >= 0, substation.astype(np.int64), idx)
    out: I32 = (key % n_parts).astype(np.int32)
    return out


class MeterSource(Protocol):
    """What the rules need of a meter registry (``headend.store.MeterRegistry`` is one):
    its METERS table, current at each call."""

    def table(self) -> pa.Table: ...


def meters_table(registry: MeterSource | pa.Table | None) -> pa.Table:
    """The METERS table of a registry, or the table itself (``None``: an empty one)."""
    if registry is None:
        return schema.METERS.empty_table()
    if isinstance(registry, pa.Table):
        return registry
    return registry.table()


class Ids(Sequence[str]):
    """External ids (meters, devices) by dense index, held as one Arrow string array: a
    Python list of 4 M meter ids costs ~270 MB, this ~60 MB. Indexing gives a ``str``."""

    __slots__ = ("_a",)

    def __init__(self, values: pa.Array | Sequence[str]) -> None:
        a = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
        self._a: pa.Array = a.cast(pa.string())

    def __len__(self) -> int:
        return len(self._a)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [str(x) for x in self._a[i].to_pylist()]
        return str(self._a[int(i)].as_py())

    def __iter__(self) -> Iterator[str]:
        return iter(self._a.to_pylist())

    def isin(self, values: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Which ids are among ``values`` [bool per index]."""
        want = pa.array(sorted(set(values)), pa.string())
        return np.asarray(pc.is_in(self._a, value_set=want).to_numpy(zero_copy_only=False),
                          np.bool_)


def _encode(col: pa.ChunkedArray | pa.Array, n: int, idx: I32) -> tuple[I32, Ids]:
    """Dictionary-encode a string column into dense device indices (-1 for null)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    enc = pc.dictionary_encode(arr)
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    out = np.full(n, -1, dtype=np.int32)
    out[idx] = codes
    return out, Ids(enc.dictionary)


def _csr(device: I32, n_devices: int) -> tuple[I32, npt.NDArray[np.int64]]:
    """Members of each device: ``order[ptr[d]:ptr[d+1]]`` are the meters of ``d``."""
    valid = np.flatnonzero(device >= 0).astype(np.int32)
    order = valid[np.argsort(device[valid], kind="stable")]
    counts = np.bincount(device[valid], minlength=n_devices)
    ptr = np.zeros(n_devices + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return order, ptr


@dataclass(slots=True)
class Topology:
    """Dense topology of ``n`` meters (index = ``meter_idx``).

    Attributes
    ----------
    meter_id : Ids
        Meter id per index ("" for an index never registered).
    device : tuple of int32 arrays
        ``device[level][meter_idx]``: index of the meter's transformer, feeder and
        substation (levels 1-3; -1 when unknown). ``device[0]`` is the identity.
    names : tuple of Ids
        ``names[level][device_idx]``: external id of each device.
    two_way, commodity, interval_s :
        Per-meter flags: answers pings, :class:`~headend.model.codes.Commodity`,
        configured interval [s].
    disconnected :
        Per meter: its service switch is open (a completed remote disconnect, registry
        ``switch_state``): it is dark on purpose, so it is no member of any device for
        outage location, never silent, and its zero consumption is no theft.
    """

    n: int
    meter_id: Ids
    device: tuple[I32, I32, I32, I32]
    names: tuple[Ids, Ids, Ids, Ids]
    two_way: npt.NDArray[np.bool_]
    commodity: npt.NDArray[np.uint8]
    interval_s: npt.NDArray[np.int32]
    members: tuple[tuple[I32, npt.NDArray[np.int64]], ...]
    registered: npt.NDArray[np.bool_]
    disconnected: npt.NDArray[np.bool_]
    max_interval_s: int = DEFAULT_INTERVAL_S
    typical_interval_s: int = DEFAULT_INTERVAL_S  # median over meters

    @classmethod
    def from_meters(cls, meters: pa.Table, partition: tuple[int, int] = (0, 1)) -> Topology:
        """Build from a table with the :data:`~headend.model.schema.METERS` columns.

        ``partition = (k, n)``: only meters of partition ``k`` of ``n`` (see
        :func:`partition_of`) count as registered here (one engine per partition).
        """
        idx = meters.column("meter_idx").to_numpy().astype(np.int32)
        n = int(idx.max()) + 1 if len(idx) else 0
        row = np.full(n, -1, np.int64)  # the table row of each meter_idx
        row[idx] = np.arange(len(idx))
        mid = meters.column("meter_id").cast(pa.string())
        ids = Ids(pc.take(mid, pa.array(row, mask=row < 0)).combine_chunks().fill_null(""))
        dev: list[I32] = [np.arange(n, dtype=np.int32)]
        names: list[Ids] = [ids]
        for name in ("transformer_id", "feeder_id", "substation_id"):
            d, nm = _encode(meters.column(name), n, idx)
            dev.append(d)
            names.append(nm)

        def col(name: str, dtype: Any, default: Any) -> npt.NDArray[Any]:
            out = np.full(n, default, dtype=dtype)
            if name in meters.column_names:
                out[idx] = meters.column(name).to_numpy(zero_copy_only=False).astype(dtype)
            return out

        interval = col("interval_s", np.int32, DEFAULT_INTERVAL_S)
        interval[interval <= 0] = DEFAULT_INTERVAL_S
        registered = np.zeros(n, dtype=np.bool_)
        registered[idx] = True
        if partition[1] > 1:
            registered &= partition_of(dev[SUBSTATION], partition[1]) == partition[0]
        commodity = col("commodity", np.uint8, 0)
        disconnected = col("switch_state", np.uint8, 0) == SWITCH_STATES.index("disconnected")
        # device membership counts electric meters only: water and gas meters are
        # battery powered and neither gasp nor go silent in an outage; nor does a
        # disconnected meter tell anything of its transformer's power
        electric = registered & (commodity == Commodity.ELECTRIC) & ~disconnected
        members = tuple(_csr(np.where(electric, dev[lv], -1).astype(np.int32), len(names[lv]))
                        for lv in range(4))
        return cls(
            n=n,
            meter_id=ids,
            device=(dev[0], dev[1], dev[2], dev[3]),
            names=(names[0], names[1], names[2], names[3]),
            two_way=col("two_way", np.bool_, False),
            commodity=commodity,
            interval_s=interval,
            members=members,
            registered=registered,
            disconnected=disconnected,
            max_interval_s=int(interval.max()) if n else DEFAULT_INTERVAL_S,
            typical_interval_s=int(np.median(interval)) if n else DEFAULT_INTERVAL_S,
        )

    @classmethod
    def from_registry(cls, registry: MeterSource | pa.Table | None,
                      partition: tuple[int, int] = (0, 1)) -> Topology:
        """Build from a meter registry (see :func:`meters_table`)."""
        return cls.from_meters(meters_table(registry), partition)

    def n_devices(self, level: int) -> int:
        return len(self.names[level])

    def meters_of(self, level: int, devices: I32) -> tuple[I32, I32]:
        """Electric meters under ``devices`` at ``level``: (meter_idx, position in devices)."""
        order, ptr = self.members[level]
        starts, ends = ptr[devices], ptr[devices + 1]
        lens = (ends - starts).astype(np.int64)
        pos = np.repeat(np.arange(len(devices), dtype=np.int32), lens)
        offs = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        return order[np.repeat(starts, lens) + offs], pos

    def size(self, level: int) -> npt.NDArray[np.int64]:
        """Number of electric meters under each device of ``level``."""
        _, ptr = self.members[level]
        return np.diff(ptr)

    def device_id(self, level: int, device: int) -> str:
        return self.names[level][device]
