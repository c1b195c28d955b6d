"""The ``subscribers`` verbs: register with scopes, list, generate broker configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from headend.cli import serve as serve_cli


def _app() -> typer.Typer:
    app = typer.Typer()
    serve_cli.register(app)
    return app


def test_subscribers_add_list_configs(tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    data = str(tmp_path / "d")
    r = runner.invoke(app, ["subscribers", "add", "oms", "--scope", "feeder=F 1",
                            "--scope", "family=events", "--data", data])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["filter"] == "headend.events.*.*.*.F~201.*.*.*"
    assert out["nats_user"] == "sub_oms" and len(out["token"]) >= 32
    r = runner.invoke(app, ["subscribers", "list", "--data", data])
    assert r.output == "oms\theadend.events.*.*.*.F~201.*.*.*\t-\n"
    r = runner.invoke(app, ["subscribers", "nats-config", "--service-password", "pw",
                            "--data", data])
    assert r.exit_code == 0
    assert '"headend.events.*.*.*.F~201.*.*.*", "_INBOX_sub_oms.>"' in r.output
    assert f'"$JS.API.CONSUMER.MSG.NEXT.HEADEND_OUT.{out["durable"]}"' in r.output
    assert out["durable"] == "sub_oms_" + hashlib.sha256(out["filter"].encode()).hexdigest()[:8]
    r = runner.invoke(app, ["subscribers", "mosquitto-acl", "--data", data])
    assert "user sub_oms\ntopic read headend/events/+/+/+/F~201/+/+/+\n" in r.output
    r = runner.invoke(app, ["subscribers", "add", "x", "--scope", "colour=red", "--data", data])
    assert r.exit_code == 2
    r = runner.invoke(app, ["subscribers", "remove", "oms", "--data", data])
    assert r.exit_code == 0
    assert runner.invoke(app, ["subscribers", "list", "--data", data]).output == ""


def test_serve_names_the_bus_it_opened(tmp_path: Path) -> None:
    """The startup line names the bus in use: the embedded default is the log on disk
    in <data>/bus, not ``memory://``; NATS URLs lose their credentials."""
    from headend.serve.config import load_config

    from ._serve_proc import ServeProc

    data = tmp_path / "data"
    data.mkdir()
    srv = ServeProc(data)
    try:
        line = next(x for x in srv.output().splitlines() if "headend serving on" in x)
    finally:
        srv.stop()
    assert line.endswith(f"(bus file://{(data / 'bus').resolve()})"), line
    assert (data / "bus" / "bus.sqlite3").exists()
    mem = load_config(env={}, data=data, embedded_bus="memory")
    assert mem.bus_label == "memory://"
    nats = load_config(env={}, data=data, bus="nats://u:secret@h1:4222,nats://h2:4222")
    assert nats.bus_label == "nats://h1:4222,nats://h2:4222"
    assert "secret" not in nats.bus_label and nats.bus_url.startswith("nats://u:secret@")
