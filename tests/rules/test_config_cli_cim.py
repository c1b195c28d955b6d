"""Rule files (YAML), the ``rules`` and ``export`` verbs, and the CIM rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from lxml import etree
from typer.testing import CliRunner

from headend.cli import rules as cli_rules
from headend.errors import ConfigError, ValidationError
from headend.rules import RuleEngine, default_ruleset, load_ruleset, parse_ruleset
from headend.rules.alerts import Alarm, Alert, Outage
from headend.rules.cim import EDE_NS, MSG_NS, render_xml, validate
from headend.rules.testing import Fault, grid_meters, simulate

from ._kit import T0

RULE_FILE = """
engine:
  allowed_lateness_s: 600
rules:
  - name: outages
    kind: outage
    params: {correlation_s: 90, confirm_s: 1500}
  - name: voltage_b
    kind: voltage
    params: {range: B, duration_s: 1800, service_voltages: [240]}
  - name: feeder_energy
    kind: threshold
    enabled: false
    params: {reading_type: kwh_del, by: feeder, agg: sum, window_s: 3600, op: ">", value: 900}
"""


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_rules.register(app)
    export = typer.Typer()
    cli_rules.register_export(export)
    app.add_typer(export, name="export")
    return app


def test_yaml_rule_file_is_validated_into_typed_configs(tmp_path: Path) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text(RULE_FILE)
    rs = load_ruleset(p)
    assert rs.engine.allowed_lateness_s == 600
    assert [(r.name, r.kind, r.enabled) for r in rs.rules] == [
        ("outages", "outage", True), ("voltage_b", "voltage", True),
        ("feeder_energy", "threshold", False)]
    assert rs.rules[0].params.confirm_s == 1500 and rs.rules[0].params.min_meters == 1
    assert rs.rules[1].params.limits() == (110.0, 127.0)


@pytest.mark.parametrize("doc, message", [
    ({"rules": [{"name": "x", "kind": "nope"}]}, "unknown kind 'nope'"),
    ({"rules": [{"name": "x", "kind": "outage", "params": {"bogus": 1}}]}, "bogus"),
    ({"rules": [{"name": "x", "kind": "voltage", "params": {"range": "C"}}]}, "range"),
    ({"rules": [{"name": "x", "kind": "tamper"}, {"name": "x", "kind": "tamper"}]}, "duplicate"),
    ({"rules": [{"name": "x", "kind": "event_count", "params": {"event_codes": ["3.x"]}}]},
     "malformed"),
    ({"rulez": []}, "keys 'engine' and 'rules'"),
])
def test_invalid_rule_files_are_rejected(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_ruleset(doc)


def test_engine_reads_the_rule_file_of_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULE_FILE)
    eng = RuleEngine.open(tmp_path, grid_meters())
    assert [r.name for r in eng.rules] == ["outages", "voltage_b"]
    assert len(default_ruleset().rules) == 10


def test_rules_list_and_check_verbs(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(_app(), ["rules", "list", "--data", str(tmp_path)])
    assert res.exit_code == 0
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["kind"] for r in rows][:3] == ["outage", "voltage", "tamper"]
    assert rows[0]["source"] == "built-in" and rows[0]["params"]["momentary_s"] == 300
    good = tmp_path / "good.yaml"
    good.write_text(RULE_FILE)
    res = runner.invoke(_app(), ["rules", "check", str(good)])
    assert res.exit_code == 0
    assert res.stdout.splitlines()[-1] == "ok: 3 rules (2 enabled)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: x, kind: nope}\n")
    res = runner.invoke(_app(), ["rules", "check", str(bad)])
    assert res.exit_code == 2


def test_export_outages_and_alarms_as_json_lines_and_cim(tmp_path: Path) -> None:
    meters = grid_meters(1, 1, 2, 3)
    faults = [Fault("transformer", "S0F0T1", T0 + 3600 + 9, T0 + 7200 + 9)]
    reads, evs = simulate(meters, T0, T0 + 4 * 3600, faults)
    eng = RuleEngine.open(tmp_path, meters)
    eng.process(reads, evs)
    eng.process(reads, evs)  # a replay adds nothing
    runner = CliRunner()
    res = runner.invoke(_app(), ["export", "outages", "--data", str(tmp_path)])
    assert res.exit_code == 0
    assert [json.loads(x) for x in res.stdout.splitlines()] == [{
        "outage_id": eng.outages.records and next(iter(eng.outages)).outage_id,
        "level": "transformer", "device_id": "S0F0T1", "start": "2026-01-01T01:00:09Z",
        "end": "2026-01-01T02:00:09Z", "sustained": True, "meters_affected": 3}]
    res = runner.invoke(_app(), ["export", "alarms", "--data", str(tmp_path)])
    assert res.exit_code == 0 and res.stdout == ""
    res = runner.invoke(_app(), ["export", "outages", "--data", str(tmp_path), "--format", "cim"])
    assert res.exit_code == 0
    validate(res.stdout_bytes)
    res = runner.invoke(_app(), ["rules", "status", "--data", str(tmp_path), "--json"])
    status = json.loads(res.stdout)
    assert (status["watermark"], status["outages"], status["alarms"]) == (T0 + 4 * 3600, 1, 0)
    assert status["late_rows"] == len(reads) + len(evs)  # the replay
    # the alert log holds the outage then the restoration, once each
    log = [json.loads(x) for x in (tmp_path / "rules" / "alerts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["device_id"]) for a in log] == [
        ("outage", "S0F0T1"), ("restoration", "S0F0T1")]


def _alerts() -> list[Alert]:
    o = Outage("abc", "feeder", "F1", T0, None, True, 120, "outages")
    a = Alarm("def", "voltage", "meter", "M7", T0 + 60, T0 + 1800,
              "voltage above ANSI C84.1 Range A", ("reads:volts",))
    t = Alarm("ghi", "tamper", "meter", "M8", T0 + 5, T0 + 5, "Meter cover removed (3.12.29.212)",
              ("events:3.12.29.212",))
    return [Alert("outage", o.outage_id, o.rule, o.level, o.device_id, o.start, o.export()),
            Alert("alarm_cleared", a.alarm_id, a.rule, a.level, a.device_id, T0 + 1800,
                  a.export()),
            Alert("alarm", t.alarm_id, t.rule, t.level, t.device_id, t.start, t.export())]


def test_cim_end_device_events_message_validates_and_carries_the_alerts() -> None:
    from datetime import UTC, datetime

    xml = render_xml(_alerts(), now=datetime(2026, 1, 1, 12, tzinfo=UTC))
    validate(xml)
    doc = etree.fromstring(xml)
    ns = {"msg": MSG_NS, "m": EDE_NS}
    assert doc.xpath("/msg:EventMessage/msg:Header/msg:Verb/text()", namespaces=ns) == ["created"]
    assert doc.xpath("//msg:Noun/text()", namespaces=ns) == ["EndDeviceEvents"]
    assert doc.xpath("//msg:Timestamp/text()", namespaces=ns) == ["2026-01-01T12:00:00Z"]
    evs = doc.xpath("//m:EndDeviceEvent", namespaces=ns)
    assert [e.xpath("m:Assets/m:mRID/text()", namespaces=ns)[0] for e in evs] == ["F1", "M7", "M8"]
    assert [e.xpath("m:EndDeviceEventType/@ref", namespaces=ns)[0] for e in evs] == [
        "3.26.0.85", "3.26.131.248", "3.12.29.212"]
    assert [e.xpath("m:createdDateTime/text()", namespaces=ns)[0] for e in evs] == [
        "2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:00:05Z"]


def test_a_message_breaking_the_schema_is_rejected() -> None:
    xml = render_xml(_alerts())
    bad = xml.replace(b"<msg:Verb>created</msg:Verb>", b"<msg:Verb>shouted</msg:Verb>")
    with pytest.raises(ValidationError):
        validate(bad)
    bad = xml.replace(b'ref="3.26.0.85"', b'ref="power fail"')
    with pytest.raises(ValidationError):
        validate(bad)
