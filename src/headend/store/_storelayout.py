"""The layout a data directory was written with, recorded in ``<root>/layout.json``.

A meter's rows live in bucket ``meter_idx >> bucket_bits`` (directory ``b=<bucket>``)
and, on a shared bus, are written by the worker of partition ``bucket % partitions``. A
process that assumed other values would read part of the data (a store written with 6
bits and read with 16 shows one bucket in 32) and write rows to the wrong buckets. So
the values are written once, when the store is created, and every later open takes
them from the file::

    {"format_version": 1, "bucket_bits": 6, "partitions": 4,
     "created_at": "2026-12-04T18:50:00Z", "headend_version": "0.1.0",
     "origin": "created"}

Rules (:func:`open_layout`):

* **Recorded wins.** A requested value (an option, an environment variable, a config
  file) that equals the recorded one is accepted; one that differs raises
  :class:`~headend.errors.ConfigError`, never used. ``partitions`` is recorded by the
  first process that asks for one (``null`` until then: an embedded store has none).
* **New store.** No file and no data: the requested values, else the defaults given by
  the caller, are recorded (the file is published with ``link()``, which never replaces
  an existing file, under ``locks/layout.lock``: two processes creating the same store
  agree on one layout).
* **Older store** (data, no file): written before layouts were recorded, so with the
  default of 16 bits unless its files show otherwise (a bucket directory ``b=N``, N > 0,
  holds meters ``N << bits`` onwards, which gives ``bits``). The layout found is
  recorded (``"origin": "migrated"``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc

from headend.errors import ConfigError, StorageError
from headend.store import _fs
from headend.store._keys import KINDS
from headend.store._layout import FileEntry, MetaCache, list_dir, read_segment
from headend.store.config import (
    DEFAULT_BUCKET_BITS,
    MAX_BUCKET_BITS,
    MIN_BUCKET_BITS,
    StoreConfig,
)

__all__ = [
    "FORMAT_VERSION",
    "LAYOUT_FILE",
    "LEGACY_BUCKET_BITS",
    "StoreLayout",
    "open_layout",
    "partition_of",
    "read_layout",
    "with_layout",
]

LAYOUT_FILE: Final = "layout.json"
FORMAT_VERSION: Final = 1
#: bucket bits of every store written before the layout was recorded (unless its files
#: show another value)
LEGACY_BUCKET_BITS: Final = 16


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """What a data directory was written with (``<root>/layout.json``).

    Parameters
    ----------
    bucket_bits : int
        A bucket holds ``2**bucket_bits`` consecutive ``meter_idx``.
    partitions : int or None
        Ingest partitions P of the shared bus (``bucket % P``); None until a process
        that partitions (``serve``, ``worker``) records one.
    format_version : int
        Version of the on-disk format.
    created_at : str
        When the file was written (ISO 8601, UTC).
    headend_version : str
        The headend version that wrote it.
    origin : {"created", "migrated"}
        Written with a new store, or for a store that predates the file.
    """

    bucket_bits: int
    partitions: int | None = None
    format_version: int = FORMAT_VERSION
    created_at: str = ""
    headend_version: str = ""
    origin: str = "created"

    def __post_init__(self) -> None:
        if not MIN_BUCKET_BITS <= self.bucket_bits <= MAX_BUCKET_BITS:
            raise ConfigError(
                f"bucket_bits must be within {MIN_BUCKET_BITS}..{MAX_BUCKET_BITS}, "
                f"not {self.bucket_bits}")
        if self.partitions is not None and not 1 <= self.partitions <= 4096:
            raise ConfigError(f"partitions must be within 1..4096, not {self.partitions}")

    def to_json(self) -> str:
        return json.dumps({
            "format_version": self.format_version, "bucket_bits": self.bucket_bits,
            "partitions": self.partitions, "created_at": self.created_at,
            "headend_version": self.headend_version, "origin": self.origin,
        }, indent=1) + "\n"


def partition_of(meter_idx: npt.NDArray[np.integer] | int, bucket_bits: int,
                 partitions: int) -> npt.NDArray[np.int64]:
    """Ingest partition of each meter: ``(meter_idx >> bucket_bits) % partitions``.

    Consecutive buckets go to consecutive partitions (round robin), so a fleet of
    ``k * partitions`` buckets gives each partition ``k`` of them, and every bucket is
    in exactly one partition (its worker holds the bucket's store lock).
    """
    idx = np.asarray(meter_idx, dtype=np.int64)
    return (idx >> bucket_bits) % partitions


def read_layout(root: Path | str) -> StoreLayout | None:
    """The recorded layout of ``root`` (None when there is no ``layout.json``).

    Raises
    ------
    ConfigError
        The file is unreadable, malformed, or of a newer format than this headend's.
    """
    path = Path(root) / LAYOUT_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the store layout {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(f"{path}: format_version {version!r} is not one this headend "
                          f"reads (<= {FORMAT_VERSION}); upgrade headend")
    try:
        return StoreLayout(
            bucket_bits=int(raw["bucket_bits"]),
            partitions=None if raw.get("partitions") is None else int(raw["partitions"]),
            format_version=version, created_at=str(raw.get("created_at", "")),
            headend_version=str(raw.get("headend_version", "")),
            origin=str(raw.get("origin", "created")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed layout: {exc!r}") from exc


def open_layout(root: Path | str, *, bucket_bits: int | None = None,
                partitions: int | None = None,
                default_bucket_bits: int = DEFAULT_BUCKET_BITS,
                default_partitions: int | None = None) -> StoreLayout:
    """The layout of ``root``: read, or recorded now for a new or older store.

    Parameters
    ----------
    root : Path
        The data directory (must exist).
    bucket_bits, partitions : int, optional
        Values asked for (options, environment, config file): checked against the
        recorded ones, recorded if there are none.
    default_bucket_bits, default_partitions : int, optional
        Recorded when nothing is recorded and nothing was asked for (a new store; for
        ``partitions`` also a store whose layout has none yet).

    Raises
    ------
    ConfigError
        A value asked for differs from the recorded one (or, for an older store, from
        the one its files show); the layout file is malformed.
    StorageError
        The layout file cannot be written.
    """
    root = Path(root)
    found = read_layout(root)
    want_p = partitions if partitions is not None else default_partitions
    if found is not None and not (found.partitions is None and want_p is not None):
        _check(root, found, bucket_bits, partitions)
        return found
    with _fs.locked(root / "locks" / "layout.lock", what=f"layout of {root}"):
        found = read_layout(root)  # another process may have written it meanwhile
        if found is None:
            legacy = _legacy_bits(root, bucket_bits)
            bits = legacy or bucket_bits or default_bucket_bits
            layout = StoreLayout(bits, want_p, created_at=_now(), headend_version=_version(),
                                 origin="migrated" if legacy else "created")
            _check(root, layout, bucket_bits, partitions)
            _write(root, layout)
            return layout
        _check(root, found, bucket_bits, partitions)
        if found.partitions is None and want_p is not None:
            found = StoreLayout(found.bucket_bits, want_p, found.format_version,
                                found.created_at, found.headend_version, found.origin)
            _write(root, found)
        return found


def with_layout(root: Path | str, config: StoreConfig) -> StoreConfig:
    """``config`` with the bucket bits and partitions of ``root``'s layout (recorded
    now if the store is new or older; see :func:`open_layout` for what raises)."""
    layout = open_layout(root, bucket_bits=config.bucket_bits, partitions=config.partitions)
    if (layout.bucket_bits, layout.partitions) == (config.bucket_bits, config.partitions):
        return config
    return replace(config, bucket_bits=layout.bucket_bits, partitions=layout.partitions)


def _check(root: Path, layout: StoreLayout, bucket_bits: int | None,
           partitions: int | None) -> None:
    path = root / LAYOUT_FILE
    if bucket_bits is not None and bucket_bits != layout.bucket_bits:
        how = ("its files show" if layout.origin == "migrated"
               else f"it was created with (recorded in {path})")
        raise ConfigError(
            f"bucket_bits {bucket_bits} asked for, but the store at {root} has bucket_bits "
            f"{layout.bucket_bits}, which {how}; drop --bucket-bits (the recorded value is "
            f"used) or use another data directory{_hint(root)}")
    if partitions is not None and layout.partitions is not None \
            and partitions != layout.partitions:
        raise ConfigError(
            f"partitions {partitions} asked for (--partitions, HEADEND_PARTITIONS or the "
            f"config file), but the store at {root} records partitions {layout.partitions} "
            f"in {path}; drop the setting (the recorded value is used) or use another "
            f"data directory{_hint(root)}")


def _hint(root: Path) -> str:
    if _has_data(root):
        return ""
    return f" (it holds no data yet: delete {root / LAYOUT_FILE} to choose again)"


def _write(root: Path, layout: StoreLayout) -> None:
    """Publish ``layout.json`` atomically and durably (temp file, fsync, rename)."""
    data = layout.to_json().encode()

    def write(f: IO[bytes]) -> None:
        f.write(data)

    _fs.publish(root / LAYOUT_FILE, write)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version() -> str:
    from headend import __version__

    return __version__


# ---------------------------------------------------------------------- older stores


def _bucket_dirs(root: Path) -> list[tuple[int, Path]]:
    """Every ``(bucket, directory)`` of every kind, highest bucket first."""
    out: list[tuple[int, Path]] = []
    for kind in KINDS:
        try:
            it = os.scandir(root / kind.name)
        except FileNotFoundError:
            continue
        with it:
            for e in it:
                if e.name.startswith("b=") and e.is_dir() and e.name[2:].isdigit():
                    out.append((int(e.name[2:]), Path(e.path)))
    out.sort(key=lambda x: -x[0])
    return out


def _files(bdir: Path) -> list[FileEntry]:
    out: list[FileEntry] = []
    for yd in sorted(bdir.iterdir()):
        if yd.is_dir() and yd.name.startswith("y=") and yd.name[2:].isdigit():
            out.extend(list_dir(yd, int(yd.name[2:])))
    return out


def _has_data(root: Path) -> bool:
    return any(_files(d) for _, d in _bucket_dirs(root))


def _meter_span(f: FileEntry, metas: MetaCache) -> tuple[int, int] | None:
    """Smallest and largest ``meter_idx`` of a data file (None if it holds no row)."""
    try:
        if f.is_segment:
            col = read_segment(f).column("meter_idx")
            if len(col) == 0:
                return None
            mm = pc.min_max(col).as_py()
            return int(mm["min"]), int(mm["max"])
        m = metas.get(f)
        if m.rows == 0:
            return None
        hi = int(m.rg_hi.max())
        if hi == np.iinfo(np.int64).max:  # no statistics: read the column
            col = m.read(list(range(len(m.rg_hi))), ["meter_idx"]).column("meter_idx")
            mm = pc.min_max(col).as_py()
            return int(mm["min"]), int(mm["max"])
        return int(m.rg_lo.min()), hi
    except (OSError, ValueError, KeyError) as exc:
        raise StorageError(f"cannot read {f.path} to find the store's layout: {exc}") from exc


def _legacy_bits(root: Path, requested: int | None) -> int | None:
    """Bucket bits of a store with data and no layout file (None: no data).

    A bucket ``N > 0`` holding meter ``m`` gives the one ``bits`` with ``m >> bits == N``.
    With data in bucket 0 only, any ``bits`` above the largest meter's bit length reads
    it whole: the requested value if it is one, else 16 if it is one, else that length.
    """
    metas = MetaCache()
    largest = -1
    for bucket, bdir in _bucket_dirs(root):
        for f in _files(bdir):
            span = _meter_span(f, metas)
            if span is None:
                continue
            if bucket > 0:
                m = span[0]
                bits = m.bit_length() - bucket.bit_length()
                if bits < 0 or m >> bits != bucket or not (
                        MIN_BUCKET_BITS <= bits <= MAX_BUCKET_BITS):
                    raise ConfigError(
                        f"{root}: cannot tell the bucket bits of this store (no "
                        f"{LAYOUT_FILE}; {f.path} holds meter {m}, which no bucket bits "
                        f"put in bucket {bucket})")
                return bits
            largest = max(largest, span[1])
    if largest < 0:
        return None
    need = max(MIN_BUCKET_BITS, largest.bit_length())  # largest >> need == 0
    if requested is not None and requested >= need:
        return requested
    return max(LEGACY_BUCKET_BITS, need)
