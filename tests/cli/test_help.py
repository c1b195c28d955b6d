"""Issue 11: every verb's help renders: nothing in ``[...]`` lost to markup, flags shown
as flags, the environment variables and defaults named, one example each; ``-h`` and
``--version`` work."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from headend.cli import _register, app, version
from headend.serve.config import ENV

_register()
runner = CliRunner()
ROOT = typer.main.get_command(app)

#: verbs configured through headend.serve.config: their options name the variable of
#: the field they set (the option binds none itself, see headend.cli.serve)
SERVE_VERBS = {("serve",), ("worker",), ("rules-worker",)}
#: option -> ServeConfig field, where the names differ
FIELD_OF_OPTION = {"--nats": "bus", "--lease-ttl": "lease_ttl_s", "--ack-wait": "ack_wait_s",
                   "--unknown-wait": "rules_unknown_wait_s",
                   "--rules-lateness": "rules_lateness_s"}
#: options that share a name with a setting but are not it
NOT_A_SETTING = {(("rules-worker",), "--partitions")}  # rules partitions, not ingest ones


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(ROOT))
#: verbs: the commands without subcommands, and the groups that also run on their own
#: (``headend simulate [options]``, besides ``headend simulate collectors``)
LEAVES = [(p, c) for p, c in COMMANDS
          if not hasattr(c, "commands") or (p and c.invoke_without_command)]


def _flat(text: str) -> str:
    """Whitespace as one space; a line wrapped after a hyphen joined again."""
    return re.sub(r"(?<=\w-)\s+(?=\w)", "", re.sub(r"\s+", " ", text)).strip()


def _help(path: tuple[str, ...], flag: str = "--help") -> str:
    res = runner.invoke(app, [*path, flag])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_the_walk_finds_every_verb() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"demo", "simulate", "ingest", "compact", "serve", "worker", "rules-worker",
            "vee", "edit", "report", "export reads", "export outages", "quarantine list",
            "rules status", "subscribers add", "analytics anomaly"} <= names
    assert len(names) >= 30


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=lambda x: " ".join(x) or "headend"
                         if isinstance(x, tuple) else "")
def test_help_renders_every_text_env_var_and_default(path: tuple[str, ...], cmd: Any) -> None:
    out = _help(path)
    assert _help(path, "-h") == out  # -h is --help
    flat = _flat(out)
    assert "<bool>" not in out  # flags are shown as flags
    assert "Data directory ." not in flat
    for param in cmd.params:
        opt = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if param.help:  # the whole text, [...] included: nothing eaten as markup
            assert _flat(param.help) in flat, (path, opt)
        elif param.param_type_name == "option" and opt not in ("--help", "--version"):
            pytest.fail(f"{' '.join(path)} {opt} has no help")
        if getattr(param, "is_flag", False):
            assert re.search(rf"{re.escape(opt)}\s+<", out) is None, (path, opt)
        if param.envvar:
            assert param.envvar in flat, (path, opt)
        if (path in SERVE_VERBS or path[:1] == ("subscribers",)) and \
                (path, opt) not in NOT_A_SETTING:
            field = FIELD_OF_OPTION.get(opt, opt.lstrip("-").replace("-", "_"))
            for var in (v for v, f in ENV.items() if f == field):
                assert var in flat, (path, opt, var)
        shown = param.show_default
        if isinstance(shown, str):
            assert shown in flat, (path, opt)
        elif (shown and param.default is not None and not getattr(param, "is_flag", False)
              and not isinstance(param.default, list)):
            assert str(param.default) in flat, (path, opt)


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=lambda x: " ".join(x)
                         if isinstance(x, tuple) else "")
def test_every_verb_has_one_example(path: tuple[str, ...], cmd: Any) -> None:
    out = _help(path)
    assert "Example:" in out, path
    example = out.split("Example:", 1)[1].strip().splitlines()[0].strip()
    command = example.split("headend ", 1)
    assert len(command) == 2 and command[1].startswith(" ".join(path)), (path, example)


def test_data_option_names_its_variable_and_default() -> None:
    flat = _flat(_help(("export", "reads")))
    assert "HEADEND_DATA" in flat and "./headend-data" in flat
    flat = _flat(_help(("serve",)))
    assert "[env HEADEND_DATA; default ./headend-data]" in flat  # brackets kept


def test_version_and_short_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"headend {version()}"
    assert version() != "unknown"  # installed (editable) in the test environment
    res = runner.invoke(app, ["-h"])
    assert res.exit_code == 0 and "--version" in res.stdout and "Commands:" in res.stdout
