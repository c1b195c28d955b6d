"""The ``headend`` command line. Each verb group lives in its own module with a
``register(app)`` function; this module only assembles them (routes stay thin)."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from headend.cli.common import CONTEXT_SETTINGS, RICH_MARKUP_MODE, HeadendGroup

app = typer.Typer(
    name="headend",
    help="Head-end system for smart-meter (AMI) networks: simulate, ingest, store, export."
    "\n\nStart with `headend demo`; every verb has -h. Exit codes: 0 success, 2 bad "
    "arguments, 3 unusable input, 4 storage failure (docs/cli.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HeadendGroup,
    rich_markup_mode=RICH_MARKUP_MODE,
    context_settings=CONTEXT_SETTINGS,
)


def version() -> str:
    """The installed headend's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("headend")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"headend {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    pass

#: verb modules, in the order they appear in --help
_VERB_MODULES: tuple[str, ...] = (
    "demo",
    "simulate",
    "ingest",
    "export",
    "serve",
    "rules",
    "command",
    "tariff",
    "dr",
    "vee",
    "analytics",
    "report",
)


def _register() -> None:
    for name in _VERB_MODULES:
        importlib.import_module(f"headend.cli.{name}").register(app)


def main() -> None:
    """Entry point of the ``headend`` console script."""
    import sys

    from headend import _allocator, _startup

    _allocator.tune()  # large column temporaries reused, not page-faulted in again
    _startup.hide_pandas(sys.argv[1:])  # pyarrow would import it whole, unused
    _register()
    app()
