"""Helpers shared by the CLI verbs: the data-dir option, time arguments, exit codes.

Exit codes (a contract, see docs/cli.md):

====  ==========================================================================
0     success, including partial acceptance (some rows quarantined)
2     bad arguments (unknown option, missing file, unparseable time) and bad
      configuration, e.g. ``--bucket-bits`` or ``--partitions`` that differ from the
      data directory's recorded layout (``<data>/layout.json``)
3     unusable input (a file that is neither a binary frame nor a canonical CSV)
4     storage failure (nothing was acknowledged)
====  ==========================================================================

Errors print one line, ``headend: <reason>``, on stderr.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from headend.errors import ConfigError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNUSABLE = 3
EXIT_STORAGE = 4

DEFAULT_DATA = "./headend-data"
#: the default of every ``--data`` option (the environment variable overrides it)
DEFAULT_DATA_PATH = Path(DEFAULT_DATA)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar="HEADEND_DATA",
        help="Data directory (created if missing).",
        show_default=True,
    ),
]

BucketBitsOption = Annotated[
    int | None,
    typer.Option(
        "--bucket-bits",
        min=4,
        max=27,
        help="Bucket bits of a new store (2**N meters per bucket; 16 if not given). An "
        "existing store's recorded value (<data>/layout.json) is always used; a "
        "different one is refused.",
    ),
]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``headend: message`` on stderr and exit with ``code``."""
    sys.stderr.write(f"headend: {message.splitlines()[0] if message else 'error'}\n")
    raise typer.Exit(code)


def parse_time(text: str | None, *, option: str) -> int | None:
    """ISO 8601 date or date-time to Unix seconds; no offset means UTC."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: not an ISO 8601 time: {text!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


class HeadendGroup(TyperGroup):
    """The ``headend`` command group: a :class:`ConfigError` raised by any verb (a bad
    setting, a layout that differs from the data directory's) ends it with one line on
    stderr and exit code 2, like bad arguments."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(str(exc).replace("\n", " "), EXIT_USAGE)
