"""Verb group ``rules`` (list, check, status) and the ``export outages|alarms`` verbs.

Thin: parse, call :mod:`headend.rules`, serialise. Outages and alarms are read from
``<data>/rules/outages.jsonl`` / ``alarms.jsonl`` as the engine left them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from headend.cli.common import DEFAULT_DATA_PATH, DataOption, fail, iso_utc, verb_group
from headend.errors import ConfigError

rules_app = verb_group("Real-time rules: list, check a rule file, engine status.")

FormatOption = Annotated[str, typer.Option(
    "--format", help="jsonl (one object per line) or cim (IEC 61968-9 EndDeviceEvents XML).")]


def effective_ruleset(data: Path):  # type: ignore[no-untyped-def]
    """The rule set in effect in ``data`` and where it comes from (file or built-in)."""
    from headend.rules import default_ruleset, load_ruleset

    yml = data / "rules" / "rules.yaml"
    return (load_ruleset(yml), str(yml)) if yml.exists() else (default_ruleset(), "built-in")


@rules_app.command("list")
def rules_list(data: DataOption = DEFAULT_DATA_PATH) -> None:
    """Rules in effect (<data>/rules/rules.yaml or the built-in set), one JSON per line.

    \b
    Example:
      headend rules list --data ./headend-data
    """
    try:
        rs, src = effective_ruleset(data)
    except ConfigError as exc:
        fail(str(exc))
    for r in rs.rules:
        sys.stdout.write(json.dumps({"name": r.name, "kind": r.kind, "enabled": r.enabled,
                                     "params": r.params.model_dump(mode="json"),
                                     "source": src}, sort_keys=True) + "\n")


@rules_app.command("check")
def rules_check(file: Annotated[Path, typer.Argument(help="YAML rule file.")]) -> None:
    """Validate a rule file; prints each rule and exits 2 if the file is invalid.

    \b
    Example:
      headend rules check my-rules.yaml
    """
    from headend.rules import load_ruleset

    if not file.exists():
        fail(f"no such file: {file}")
    try:
        rs = load_ruleset(file)
    except ConfigError as exc:
        fail(str(exc))
    for r in rs.rules:
        sys.stdout.write(f"{r.name}\t{r.kind}\t{'enabled' if r.enabled else 'disabled'}\n")
    sys.stdout.write(f"ok: {len(rs.rules)} rules ({len(rs.enabled())} enabled)\n")


#: times of ``rules status`` [Unix s in --json], ISO 8601 UTC in the text form
_STATUS_TIMES = ("watermark", "max_seen", "storm_until")
_STATUS_LABELS = {"watermark": "watermark", "max_seen": "newest event time",
                  "items_processed": "rows processed", "late_rows": "late rows",
                  "outages": "outages", "alarms": "alarms", "storm_until": "storm until"}


@rules_app.command("status")
def rules_status(
    data: DataOption = DEFAULT_DATA_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, times in Unix seconds (the checkpoint's meta.json and the record counts).")] = False,
) -> None:
    """Engine checkpoint: watermark, rows processed, late rows, outages and alarms.

    Times in ISO 8601 UTC; empty until the engine has run.

    \b
    Example:
      headend rules status --data ./headend-data
    """
    meta_p = data / "rules" / "checkpoint" / "meta.json"
    meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
    counts = {}
    for kind in ("outages", "alarms"):
        p = data / "rules" / f"{kind}.jsonl"
        counts[kind] = sum(1 for ln in p.read_text().splitlines() if ln) if p.exists() else 0
    status = {**meta, **counts}
    if as_json:
        sys.stdout.write(json.dumps(status, sort_keys=True) + "\n")
        return
    width = max(map(len, _STATUS_LABELS.values()))
    for key, label in _STATUS_LABELS.items():
        value = status.get(key)
        if key in _STATUS_TIMES:
            value = iso_utc(value) if value else None  # 0: never (not the epoch)
        elif isinstance(value, int):
            value = f"{value:,}"
        sys.stdout.write(f"{label:<{width}}  {'' if value is None else value}\n")


def _records(data: Path, kind: str) -> list[dict[str, object]]:
    from headend.rules import Alarm, Outage, RecordBook

    book = RecordBook(data / "rules" / f"{kind}.jsonl", Outage if kind == "outages" else Alarm)
    return [r for r in book]


def _write(records: list[object], fmt: str, kind: str) -> None:
    if not records:  # stdout stays empty (valid JSON lines, or an empty CIM message)
        sys.stderr.write(f"no {kind} recorded (`headend rules status` shows what the rules "
                         "have seen)\n")
    if fmt == "jsonl":
        for r in records:
            sys.stdout.write(json.dumps(r.export(), sort_keys=False) + "\n")  # type: ignore[attr-defined]
        return
    if fmt != "cim":
        fail(f"--format must be jsonl or cim, not {fmt!r}")
    from headend.rules.alerts import Alert
    from headend.rules.cim import render_xml

    alerts = []
    for r in records:
        d = r.export()  # type: ignore[attr-defined]
        if kind == "outages":
            alerts.append(Alert("outage" if r.end is None else "restoration",  # type: ignore[attr-defined]
                                r.outage_id, r.rule, r.level, r.device_id,  # type: ignore[attr-defined]
                                r.start if r.end is None else r.end, d))  # type: ignore[attr-defined]
        else:
            alerts.append(Alert("alarm" if r.end is None or r.end == r.start else "alarm_cleared",  # type: ignore[attr-defined]
                                r.alarm_id, r.rule, r.level, r.device_id,  # type: ignore[attr-defined]
                                r.start if r.end is None else r.end, d))  # type: ignore[attr-defined]
    sys.stdout.buffer.write(render_xml(alerts))


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")


def register_export(export_app: typer.Typer) -> None:
    """Add ``export outages`` and ``export alarms`` to the lead's ``export`` group."""

    @export_app.command("outages")
    def export_outages(data: DataOption = DEFAULT_DATA_PATH, fmt: FormatOption = "jsonl") -> None:
        """Outages as JSON lines: outage_id, level, device_id, start, end, sustained,
        meters_affected (end null while ongoing; times ISO 8601 UTC).

        \b
        Example:
          headend export outages --data ./headend-data --format cim > outages.xml
        """
        _write(_records(data, "outages"), fmt, "outages")  # type: ignore[arg-type]

    @export_app.command("alarms")
    def export_alarms(data: DataOption = DEFAULT_DATA_PATH, fmt: FormatOption = "jsonl") -> None:
        """Alarms as JSON lines: rule, meter_id or device_id, start, end, detail (times
        ISO 8601 UTC).

        \b
        Example:
          headend export alarms --data ./headend-data
        """
        _write(_records(data, "alarms"), fmt, "alarms")  # type: ignore[arg-type]
