"""The ``headend`` command line. Each verb group lives in its own module with a
``register(app)`` function; this module only assembles them (routes stay thin)."""

from __future__ import annotations

import importlib

import typer

from headend.cli.common import HeadendGroup

app = typer.Typer(
    name="headend",
    help="Head-end system for smart-meter (AMI) networks: simulate, ingest, store, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HeadendGroup,
)

#: verb modules, in the order they appear in --help
_VERB_MODULES: tuple[str, ...] = (
    "demo",
    "simulate",
    "ingest",
    "export",
    "serve",
    "rules",
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
