"""Verb group ``command``: commands to meters (issue 12), and ``export commands``.

``command send`` admits the commands (queued, or rejected at once with a reason) and
stores them durably in ``<data>/commands/``; ``command status`` and ``command list``
read them back; ``export commands`` writes every command, or every state change with
``--history``, as CSV or JSON lines. Sending them down to collectors is a later step
(docs/commands.md, "Not yet"). ``export commands`` is registered on the ``export``
group from here, so that the command verbs live in one module.
"""

from __future__ import annotations

import csv
import getpass
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Final

import typer

from headend.cli.common import (
    DEFAULT_DATA_PATH,
    EXIT_UNUSABLE,
    DataOption,
    fail,
    parse_time,
    verb_group,
)
from headend.model import commands as C

command_app = verb_group("Commands to meters: on-demand read, disconnect, connect, ping "
                         "(docs/commands.md).")

#: ``command send --wait``: how often the store is polled [s]
POLL_S: Final = 0.2

KindArg = Annotated[str, typer.Argument(
    metavar="KIND", help="read, disconnect, connect or ping.", show_default=False)]
JsonOption = Annotated[bool, typer.Option(
    "--json", help="One JSON object per command, one per line.")]
ActorOption = Annotated[str | None, typer.Option(
    "--actor", help="Who sends it, for the audit log (default: the OS user).",
    show_default=False)]


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without /etc/passwd entry
        return "unknown"


def _meters_file(path: Path) -> list[str]:
    """Meter ids of a file: one per line (first CSV field), a ``meter_id`` header, blank
    lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--meters-file {path}: {exc}")
    out = []
    for row in csv.reader(text.splitlines()):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        out.append(row[0].strip())
    if out and out[0] == "meter_id":
        out = out[1:]
    return out


def _print(cmds: Iterable[object], as_json: bool) -> None:
    from headend.commands import Command

    for c in cmds:
        assert isinstance(c, Command)
        if as_json:
            sys.stdout.write(json.dumps(c.to_json()) + "\n")
        else:
            sys.stdout.write("\t".join([c.command_id, c.kind, c.meter_id, c.state,
                                        c.reason or ""]) + "\n")
    sys.stdout.flush()


@command_app.command("send")
def command_send(
    kind: KindArg,
    data: DataOption = DEFAULT_DATA_PATH,
    meter: Annotated[list[str] | None, typer.Option(
        "--meter", help="A meter id (repeatable).", show_default=False)] = None,
    meters_file: Annotated[Path | None, typer.Option(
        "--meters-file", help="A file of meter ids, one per line (first CSV field; a "
        "meter_id header and # comments are skipped).", show_default=False)] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why (kept in the audit log); needed with --force.",
        show_default=False)] = None,
    command_id: Annotated[str | None, typer.Option(
        "--id", help="Idempotency key: the command id for one meter, ID:METER_ID for each "
        "of several. Sending the same id again gives the same command. Default: a random "
        "16-character id per command.", show_default=False)] = None,
    wait: Annotated[float, typer.Option(
        "--wait", min=0, metavar="SECONDS", help="Wait up to this long for the queued "
        "commands to reach a final state, then print them as they are.")] = 0,
    expires_in: Annotated[int | None, typer.Option(
        "--expires-in", min=1, metavar="SECONDS", help="Time to expiry (default per kind: "
        "read 3600, disconnect and connect 86400, ping 300).", show_default=False)] = None,
    yes: Annotated[bool, typer.Option(
        "--yes", help=f"Confirm a disconnect of more than {C.CONFIRM_ABOVE} meters.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Disconnect critical_care meters too (needs --reason; the audit "
        "log says who forced it).")] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a command to meters: every command made is printed with its state
    (command_id, kind, meter_id, state, reason; tab-separated, or JSON lines).

    Exit 0 when at least one was queued, 3 when all were rejected, 2 for bad arguments.

    \b
    Example:
      headend command send disconnect --data ./headend-data --meter M-1 --reason move-out
    """
    from headend.commands import (
        CommandRequest,
        TransitionError,
        admit,
        meter_facts,
        open_command_store,
    )
    from headend.errors import ValidationError
    from headend.store.registry import MeterRegistry

    if kind not in C.KIND_BY_NAME:
        fail(f"unknown command kind {kind!r}: one of {', '.join(C.KIND_BY_NAME)}")
    meters = list(meter or []) + (_meters_file(meters_file) if meters_file else [])
    if not meters:
        fail("no meter: give --meter ID (repeatable) or --meters-file FILE")
    if force and not (reason and reason.strip()):
        fail("--force needs --reason (who forced it and why goes to the audit log)")
    who = _actor(actor)
    try:
        req = CommandRequest(kind, meters, who, reason=reason, command_id=command_id,
                             confirm=yes, force=force, expires_in_s=expires_in)
    except ValidationError as exc:
        fail(str(exc))
    now_ms = int(time.time() * 1000)
    made = admit(req, meter_facts(MeterRegistry(data), meters), now_ms=now_ms)
    store = open_command_store(data)
    try:
        stored = store.put(made)
        clash = [(m, s) for m, s in zip(made, stored, strict=True)
                 if (m.kind, m.meter_id) != (s.kind, s.meter_id)]
        if clash:
            m, s = clash[0]
            fail(f"command id {s.command_id} is already a {s.kind} of meter {s.meter_id} "
                 f"(asked: {m.kind} of {m.meter_id}); use another --id")
        ids = [c.command_id for c in stored]
        deadline = time.monotonic() + wait
        while wait and time.monotonic() < deadline and any(
                c is not None and c.state not in C.TERMINAL_STATES
                for c in map(store.get, ids)):
            time.sleep(POLL_S)
        final = [store.get(i) for i in ids] if wait else stored
    except TransitionError as exc:  # pragma: no cover - put never moves a state
        fail(str(exc))
    finally:
        store.close()
    _print(final, as_json)
    if not any(c.state != "rejected" for c in stored):
        raise typer.Exit(EXIT_UNUSABLE)


@command_app.command("status")
def command_status(
    command_ids: Annotated[list[str], typer.Argument(
        metavar="COMMAND_ID...", help="Command ids.", show_default=False)],
    data: DataOption = DEFAULT_DATA_PATH,
    as_json: JsonOption = False,
) -> None:
    """The commands' states (command_id, kind, meter_id, state, reason; or JSON lines).
    An unknown id is an error (exit 2) after the known ones are printed.

    \b
    Example:
      headend command status job7:M-1 --data ./headend-data --json
    """
    from headend.commands import open_command_store

    store = open_command_store(data)
    try:
        got = {i: store.get(i) for i in dict.fromkeys(command_ids)}
    finally:
        store.close()
    _print([c for c in got.values() if c is not None], as_json)
    unknown = [i for i, c in got.items() if c is None]
    if unknown:
        fail(f"unknown command{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")


@command_app.command("list")
def command_list(
    data: DataOption = DEFAULT_DATA_PATH,
    state: Annotated[str | None, typer.Option(
        "--state", help="Only commands in this state.", show_default=False)] = None,
    meter: Annotated[str | None, typer.Option(
        "--meter", help="Only this meter's commands.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only commands changed at or after this time (ISO 8601; UTC if no "
        "offset).", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Commands in creation order (command_id, kind, meter_id, state, reason; or JSON
    lines).

    \b
    Example:
      headend command list --data ./headend-data --state queued --since 2026-01-05
    """
    from headend.commands import open_command_store

    if state is not None and state not in C.COMMAND_STATES:
        fail(f"unknown state {state!r}: one of {', '.join(C.COMMAND_STATES)}")
    t = parse_time(since, option="--since")
    store = open_command_store(data)
    try:
        cmds = store.list(state=state, meter_id=meter,
                          since_ms=None if t is None else t * 1000)
    finally:
        store.close()
    _print(cmds, as_json)
    if not cmds:
        sys.stderr.write(f"no commands in {data} match the options given\n")


#: ``export commands`` columns (a contract, docs/cli.md)
EXPORT_COLUMNS: Final = ("command_id", "kind", "meter_id", "state", "reason", "created_at",
                         "updated_at", "actor", "detail", "interval_reads", "register_reads",
                         "first_interval_end", "last_interval_end", "read_uploads",
                         "read_sources")


def _reads_columns(c: object) -> tuple[str | None, ...]:
    """The reads columns of a command: what a read brought (docs/cli.md), empty for the
    other kinds."""
    from headend.commands import Command

    assert isinstance(c, Command)
    r = c.reads
    if r is None:
        return (None,) * 6
    j = r.to_json()
    return (str(r.interval_reads), str(r.register_reads), j["first_interval_end"],
            j["last_interval_end"], str(r.uploads), " ".join(r.sources))


def export_commands(
    data: DataOption = DEFAULT_DATA_PATH,
    history: Annotated[bool, typer.Option(
        "--history", help="One row per state change (the audit log), not per command.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of CSV.")
                       ] = False,
) -> None:
    """Commands as CSV: command_id,kind,meter_id,state,reason,created_at,updated_at,actor,
    detail (ISO 8601 UTC), then what a read brought: interval_reads,register_reads,
    first_interval_end,last_interval_end,read_uploads,read_sources; in creation order;
    with --history each state change, its time as updated_at and who made it as actor
    (the reads columns empty).

    \b
    Example:
      headend export commands --data ./headend-data --history > audit.csv
    """
    from headend.commands import iso_ms, open_command_store

    store = open_command_store(data)
    try:
        cmds = store.list()
        rows: Sequence[tuple[str | None, ...]]
        if history:
            by_id = {c.command_id: c for c in cmds}
            rows = [(h.command_id, by_id[h.command_id].kind, by_id[h.command_id].meter_id,
                     h.state, h.reason, iso_ms(by_id[h.command_id].created_ms),
                     iso_ms(h.at_ms), h.actor, h.detail, *(None,) * 6)
                    for h in store.history()]
        else:
            rows = [(c.command_id, c.kind, c.meter_id, c.state, c.reason,
                     iso_ms(c.created_ms), iso_ms(c.updated_ms), c.actor, c.detail,
                     *_reads_columns(c)) for c in cmds]
    finally:
        store.close()
    out = sys.stdout
    if as_json:
        for r in rows:
            out.write(json.dumps(dict(zip(EXPORT_COLUMNS, r, strict=True))) + "\n")
    else:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(EXPORT_COLUMNS)
        w.writerows(tuple("" if v is None else v for v in r) for r in rows)
    out.flush()
    if not rows:  # an empty answer says so (stdout stays a valid, empty export)
        sys.stderr.write(f"no commands in {data}\n")


def register(app: typer.Typer) -> None:
    app.add_typer(command_app, name="command")
    from headend.cli.export import export_app

    export_app.command("commands")(export_commands)
