"""Commands survive a restart of ``serve`` (store in ``<data>/commands/``, embedded bus
on disk): what was sent and not answered is sent again, what was queued is sent, answers
still apply; and responses also come in as files (``headend ingest``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.ingest.hooks import open_ingestor

from ._commands import (
    bus_states,
    lines,
    poll,
    reads_csv,
    responses_csv,
    send,
    serving,
    state,
    upload,
)

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")

LIMITS = {"max_in_flight": 3, "rate_per_s": 1000, "burst": 1000}


def test_restart_with_commands_in_flight(data_dir: Path) -> None:
    with serving(data_dir, commands=LIMITS) as (svc, client):
        send(client, "read", ["E1", "E2", "E3", "E4", "E5"], command_id="r")
        assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["r:E1", "r:E2", "r:E3"]
        upload(client, responses_csv(("r:E1", "E1", "delivered")))
        assert svc.commands.store.list(state="queued")[0].command_id == "r:E4"
    # a new serve on the same data directory
    with serving(data_dir, commands=LIMITS) as (svc, client):
        states = {i: state(client, f"r:{i}") for i in ("E1", "E2", "E3", "E4", "E5")}
        # sent and unanswered: queued again; delivered stays (the collector has it)
        assert states == {"E1": "delivered", "E2": "queued", "E3": "queued",
                          "E4": "queued", "E5": "queued"}
        assert svc.commands.store.history("r:E2")[-1].detail == \
            "sent before a restart, no answer: sent again"
        # E1 still in flight: two rooms, the oldest first
        assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["r:E2", "r:E3"]
        upload(client, reads_csv("E1", "E2", "E3"))  # the reads' reads, then completed
        ack = upload(client, responses_csv(("r:E1", "E1", "completed"),
                                           ("r:E2", "E2", "completed"),
                                           ("r:E3", "E3", "completed")))
        assert ack["accepted"] == 3
        assert [x["command_id"] for x in lines(poll(client, "C1"))] == ["r:E4", "r:E5"]
        # the bus (on disk) has the states of both runs, the resend's queued included
        e2 = [c["state"] for _, c in bus_states(svc) if c["command_id"] == "r:E2"]
        assert e2 == ["queued", "sent", "queued", "sent", "completed"]


def test_responses_as_files(data_dir: Path, tmp_path: Path) -> None:
    """``headend ingest`` of a command_responses file applies it to the store serve uses."""
    with serving(data_dir) as (_, client):
        send(client, "disconnect", ["E1"], command_id="d")
        send(client, "ping", ["E2"], command_id="p")
        assert len(lines(poll(client, "C1"))) == 2
    f = tmp_path / "responses.csv"
    f.write_bytes(responses_csv(("d", "E1", "delivered"), ("d", "E1", "completed"),
                                ("p", "E2", "completed"), ("p", "E2", "completed"),
                                ("nobody", "E2", "completed")))
    with open_ingestor(data_dir, rules=False, vee=False) as ing:
        res = ing.ingest_paths([f])
        assert (res.accepted, res.duplicate, res.quarantined) == (3, 1, 1)
        assert dict(res.by_reason) == {"unknown_command": 1}
        q = ing.data.quarantine.list()
        assert q.column("payload")[0].as_py().startswith(b"nobody,E2,completed,")
    with serving(data_dir) as (_, client):
        assert (state(client, "d"), state(client, "p")) == ("completed", "completed")


def test_commands_made_by_the_cli_while_serve_runs(data_dir: Path) -> None:
    """``headend command send`` writes the same store: serve's downlink sends the command
    and publishes its states."""
    import subprocess

    from ._fleet import headend_cmd

    with serving(data_dir) as (svc, client):
        out = subprocess.run(headend_cmd("command", "send", "ping", "--meter", "E2", "--id",
                                         "cli-1", "--data", str(data_dir), "--json"),
                             capture_output=True, text=True, timeout=60, check=True)
        assert '"state": "queued"' in out.stdout
        assert [x["command_id"] for x in lines(poll(client, "C1", wait=5))] == ["cli-1"]
        assert [c["state"] for _, c in bus_states(svc) if c["command_id"] == "cli-1"] == \
            ["queued", "sent"]
