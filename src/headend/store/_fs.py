"""Durable file primitives: atomic publish, directory fsync, temp-file hygiene, flocks.

Every file headend keeps is published the same way::

    write  <dir>/.tmp-<pid>-<uuid>-<name>   (never read by anyone)
    fsync  the temp file
    rename it to <dir>/<name>               (atomic on POSIX: the commit point)
    fsync  <dir>                            (the rename itself survives a crash)

A crash before the rename leaves only a temp file, which the next owner of the
directory deletes; a crash after it leaves a complete file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from headend.errors import StorageError

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames/creations/unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A unique temp name beside ``final`` (``.tmp-<pid>-<uuid>-<name>``)."""
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{final.name}")


def publish(final: Path, write: Callable[[IO[bytes]], None], *, sync_dir: bool = True) -> None:
    """Write a file through ``write(fileobj)`` and publish it atomically and durably.

    Raises
    ------
    StorageError
        On any ``OSError``; the temp file is removed and ``final`` is untouched.
    """
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        if sync_dir:
            fsync_dir(final.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StorageError(f"could not write {final}: {exc}") from exc


def publish_path(final: Path, write_to: Callable[[Path], None], *, sync_dir: bool = True) -> None:
    """Like :func:`publish` for writers that want a path (Parquet writers)."""
    tmp = temp_path(final)
    try:
        write_to(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        if sync_dir:
            fsync_dir(final.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StorageError(f"could not write {final}: {exc}") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temp_files(directory: Path, *, only_dead: bool) -> int:
    """Delete leftover temp files in ``directory`` (not recursive); returns how many.

    With ``only_dead`` only files of processes that no longer run are removed (for
    directories shared without an exclusive lock).
    """
    n = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for e in entries:
        if not e.name.startswith(TMP_PREFIX):
            continue
        if only_dead:
            try:
                pid = int(e.name[len(TMP_PREFIX):].split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid > 0 and (pid == os.getpid() or _pid_alive(pid)):
                continue
        try:
            os.unlink(e.path)
            n += 1
        except FileNotFoundError:
            pass
    return n


class FileLock:
    """An exclusive ``flock`` on ``path``, held until :meth:`release`.

    Parameters
    ----------
    path : Path
        The lock file (created if missing; never deleted).
    timeout_s : float
        How long to wait for another holder [s]; 0 fails at once.
    what : str
        Describes the locked resource in the error message.
    """

    def __init__(self, path: Path, *, timeout_s: float, what: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise StorageError(f"cannot lock {path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StorageError(
                        f"{what} is locked by another process ({path}); each writer process "
                        "must own a disjoint set of meter buckets (see StoreConfig.bucket_of)"
                    ) from exc
                time.sleep(0.01)
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


@contextmanager
def locked(path: Path, *, timeout_s: float = 30.0, what: str = "resource") -> Iterator[None]:
    """Hold a short-lived exclusive lock on ``path`` for the ``with`` block."""
    lock = FileLock(path, timeout_s=timeout_s, what=what)
    try:
        yield
    finally:
        lock.release()
