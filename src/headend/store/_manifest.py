"""The bucket owner's manifest of a bucket-year directory: its files, kept in memory.

Only the process holding a bucket's flock writes the bucket's directories, so its view
of them is authoritative: the directory is listed **once** (when the owner first
touches it, or after a compaction rewrote it) and every file the owner publishes or
deletes afterwards is added to or removed from the manifest. An append therefore
costs the same whatever the number of files in the directory (no listing, no name
parsing per append); ``bench/bench_append.py`` measures it.

The directory stays the truth on disk (names carry level, scope, seq and parts; the
live-file rule of :mod:`headend.store._layout` decides), so crash safety is exactly
that of the file protocol: a new owner lists the directory and rebuilds the manifest.
Readers in other processes list the directory (cached while its mtime is unchanged,
:class:`~headend.store._layout.DirCache`).

The manifest is indexed by scope (MMDD, MM or "" for a year), so the questions of an
append (the live files holding a day, for the dedup index; the segments of a day, for
automatic compaction) cost the files of that day, not of the directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from headend.store._layout import FileEntry, list_dir, split_live, valid_copies


class DirManifest:
    """Files of one bucket-year directory as its owner knows them (thread-safe).

    Parameters
    ----------
    directory : Path
        The bucket-year directory (``.../b=<bucket>/y=<year>``).
    year : int
        Its UTC year.
    """

    def __init__(self, directory: Path, year: int,
                 entries: list[FileEntry] | None = None) -> None:
        self.directory = directory
        self.year = year
        self._lock = threading.Lock()
        self._by_scope: dict[str, dict[tuple[Path, int], FileEntry]] = {}
        self._shared: dict[Path, int] = {}  # entries left of each multi-day segment
        self._segments: dict[str, int] = {}  # segment entries per day
        self._version = 0
        self._view: tuple[int, list[FileEntry], dict[str, FileEntry]] | None = None
        self._next = 0
        self._load(list_dir(directory, year) if entries is None else entries)

    def _load(self, entries: list[FileEntry]) -> None:
        with self._lock:
            self._by_scope, self._shared, self._segments = {}, {}, {}
            self._put(entries)
            self._next = max(self._next, max((f.seq for f in entries), default=-1) + 1)
            self._version += 1

    def reload(self, entries: list[FileEntry] | None = None) -> None:
        """Replace the entries (by a new listing of the directory if not given); the
        next seq never goes down."""
        self._load(list_dir(self.directory, self.year) if entries is None else entries)

    def next_seq(self) -> int:
        """Allocate the next sequence number of the directory."""
        with self._lock:
            s = self._next
            self._next += 1
            return s

    def add(self, entries: Iterable[FileEntry]) -> None:
        """Record published files."""
        with self._lock:
            self._put(entries)
            self._version += 1

    def _put(self, entries: Iterable[FileEntry]) -> None:
        for f in entries:
            d = self._by_scope.setdefault(f.scope, {})
            if (f.path, f.batch) not in d:
                if f.shared:
                    self._shared[f.path] = self._shared.get(f.path, 0) + 1
                if f.is_segment:
                    self._segments[f.scope] = self._segments.get(f.scope, 0) + 1
            d[(f.path, f.batch)] = f

    def discard(self, entries: Iterable[FileEntry]) -> None:
        """Forget entries (deleted files, or days of a multi-day segment made obsolete)."""
        with self._lock:
            for f in entries:
                got = self._by_scope.get(f.scope, {}).pop((f.path, f.batch), None)
                if got is None:
                    continue
                if f.shared:
                    self._shared[f.path] -= 1
                if f.is_segment:
                    self._segments[f.scope] -= 1
            self._version += 1

    def shared_left(self, path: Path) -> int:
        """Entries (days) of the multi-day segment ``path`` still in the manifest."""
        with self._lock:
            return self._shared.get(path, 0)

    def entries(self) -> list[FileEntry]:
        """Every entry (live or not), by seq."""
        with self._lock:
            out = [f for d in self._by_scope.values() for f in d.values()]
        out.sort(key=lambda f: f.seq)
        return out

    def of_day(self, mmdd: str) -> list[FileEntry]:
        """Live files that may hold rows of day ``mmdd`` (its segments and day file,
        the month/year files or parts holding it), by seq."""
        with self._lock:
            out = [f for s in (mmdd, mmdd[:2], "") for f in self._by_scope.get(s, {}).values()
                   if f.level != "dcp"]
        out.sort(key=lambda f: f.seq)
        return split_live(out)[0]

    def segments_of_day(self, mmdd: str) -> int:
        """Number of segment entries of day ``mmdd``."""
        with self._lock:
            return self._segments.get(mmdd, 0)

    def view(self) -> tuple[list[FileEntry], dict[str, FileEntry]]:
        """(live files, valid day copies), recomputed only after a change."""
        v = self._view
        if v is not None and v[0] == self._version:
            return v[1], v[2]
        version = self._version
        entries = self.entries()
        live, _ = split_live(entries)
        copies = valid_copies(entries)
        self._view = (version, live, copies)
        return live, copies
