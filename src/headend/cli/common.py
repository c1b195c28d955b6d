"""Helpers shared by the CLI verbs: the data-dir options, time arguments, optional
extras, exit codes, and the settings every verb group shares (help rendering).

Exit codes (a contract, see docs/cli.md):

====  ==========================================================================
0     success, including partial acceptance (some rows quarantined)
2     bad arguments (unknown option, missing file, unparseable time, ``--from`` not
      before ``--to``, no data directory at ``--data`` for a verb that reads one,
      an optional extra that is not installed) and bad configuration, e.g.
      ``--bucket-bits`` or ``--partitions`` that differ from the data directory's
      recorded layout (``<data>/layout.json``)
3     unusable input (a file that is neither a binary frame nor a canonical CSV; an
      ingest that accepted no row)
4     storage failure (nothing was acknowledged)
====  ==========================================================================

Errors print one line, ``headend: <reason>``, on stderr.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

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
DATA_ENV = "HEADEND_DATA"

#: what every verb group shares: ``-h`` as well as ``--help``; help rendered as plain
#: text (Rich markup would take ``[env ...]`` or ``[s]`` in a help text for a tag and
#: drop it, and shows flags as ``--json <bool>``)
CONTEXT_SETTINGS: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"]}
RICH_MARKUP_MODE: Final = None

#: entries only a headend data directory holds (``layout.json`` since issue 10; a store
#: written before it has the others; ``subscribers add`` and ``tariff load`` may come
#: before any ingest)
_DATA_MARKERS: Final = ("layout.json", "reads", "quarantine", "meters.parquet", "rules",
                        "subscribers.json", "tariffs")


def verb_group(help: str) -> typer.Typer:
    """A verb group (``export``, ``rules``, ...) with the shared settings."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=RICH_MARKUP_MODE,
                       context_settings=CONTEXT_SETTINGS)


def is_data_dir(path: Path) -> bool:
    """Whether ``path`` is a headend data directory: a folder that holds what a verb
    wrote, or an empty one (nothing in it to mistake for a store)."""
    if not path.is_dir():
        return False
    return any((path / m).exists() for m in _DATA_MARKERS) or next(path.iterdir(), None) is None


def require_data_dir(path: Path) -> Path:
    """``path`` if it is a headend data directory; else exit 2 saying so.

    Verbs that only read (export, report, analytics, quarantine, rules status, ...)
    call this instead of creating a directory (or a store's folders in some other
    folder) and answering nothing.
    """
    if not is_data_dir(path):
        what = ("the folder holds other files and no headend store" if path.is_dir()
                else "it is not a folder" if path.exists() else "it does not exist")
        fail(f"no headend data directory at {path} ({what}); give --data DIR or set "
             f"{DATA_ENV} (default {DEFAULT_DATA}); `headend ingest --data DIR FILE...` or "
             "`headend demo` creates one")
    return path


def _data_dir_callback(value: Path) -> Path:
    return require_data_dir(Path(value))


#: ``--data`` of a verb that reads stored data: the directory must exist
DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar=DATA_ENV,
        help="Data directory written by `headend ingest` or `headend demo`; it must exist.",
        show_default=DEFAULT_DATA,
        callback=_data_dir_callback,
    ),
]

#: ``--data`` of a verb that writes (ingest, serve, workers): created if missing
NewDataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        envvar=DATA_ENV,
        help="Data directory (created if missing).",
        show_default=DEFAULT_DATA,
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


def rules_lateness_help(default: str) -> str:
    """Help of a ``--rules-lateness`` option whose last resort is ``default``."""
    return ("The real-time rules' watermark trails the newest event time by this much [s] "
            "(docs/rules.md). Default: engine.allowed_lateness_s of <data>/rules/rules.yaml "
            f"if it sets one, else {default}.")


#: ``--rules-lateness`` of ``ingest``: the one rules-lateness setting (serve and
#: rules-worker have it too, with 900 s as their last resort)
RulesLatenessOption = Annotated[
    int | None,
    typer.Option(
        "--rules-lateness",
        envvar="HEADEND_RULES_LATENESS",  # = headend.serve.config.RULES_LATENESS_ENV
        min=0,
        metavar="SECONDS",
        show_default=False,
        help=rules_lateness_help("0 (file replays)"),
    ),
]


def apply_rules_lateness(listeners: list[Any], given: int | None) -> None:
    """Set the allowed lateness of the rules engine among an ingestor's ``listeners``
    (the one rules-lateness setting; :func:`headend.serve.config.rules_lateness`)."""
    from headend.rules import RuleEngine
    from headend.serve.config import rules_lateness

    for li in listeners:
        if isinstance(li, RuleEngine):
            lateness = rules_lateness(li.config, given,
                                      default=li.config.engine.allowed_lateness_s)
            engine = li.config.engine.model_copy(update={"allowed_lateness_s": lateness})
            li.config = li.config.model_copy(update={"engine": engine})


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


def parse_range(from_: str | None, to: str | None, *, from_option: str = "--from",
                to_option: str = "--to") -> tuple[int | None, int | None]:
    """``--from`` (inclusive) and ``--to`` (exclusive) to Unix seconds; exit 2 unless
    ``--from`` is before ``--to`` (an empty range would answer nothing, silently)."""
    start = parse_time(from_, option=from_option)
    end = parse_time(to, option=to_option)
    if start is not None and end is not None and start >= end:
        fail(f"{from_option} {from_} is not before {to_option} {to}: the time range is "
             f"empty ({from_option} is inclusive, {to_option} exclusive)")
    return start, end


def iso_utc(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2026-01-05T00:15:00Z``) for people to read."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: the optional extras of pyproject.toml, by the top-level modules they install
EXTRA_OF_MODULE: Final[dict[str, str]] = {
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "httpx": "serve",
    "nats": "nats", "paho": "mqtt",
    "sqlalchemy": "sql", "psycopg": "sql", "pymysql": "sql",
    "pyspark": "spark", "pandas": "spark", "matplotlib": "report",
}


def missing_extra_message(module: str, what: str) -> str:
    """One line: ``what`` needs ``module``, and the extra that installs it."""
    extra = EXTRA_OF_MODULE.get(module.partition(".")[0])
    if extra is None:
        return f"{what} needs the Python package {module!r}, which is not installed"
    return (f"{what} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'headend[{extra}]' (in a clone: pip install -e '.[{extra}]')")


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require_extra(extra: str, what: str) -> None:
    """Exit 2 with one line naming the extra if any of its modules is missing."""
    for module, e in EXTRA_OF_MODULE.items():
        if e == extra and not _importable(module):
            fail(missing_extra_message(module, what))


class HeadendGroup(TyperGroup):
    """The ``headend`` command group: a :class:`ConfigError` raised by any verb (a bad
    setting, a layout that differs from the data directory's) ends it with one line on
    stderr and exit code 2, like bad arguments; so does a missing optional dependency,
    named with the extra that installs it (no traceback)."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(str(exc).replace("\n", " "), EXIT_USAGE)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.partition(".")[0] not in EXTRA_OF_MODULE:
                raise
            verb = ctx.invoked_subcommand or "this verb"
            fail(missing_extra_message(exc.name, f"headend {verb}"), EXIT_USAGE)
