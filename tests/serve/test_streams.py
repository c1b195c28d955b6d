"""Third-party streams on the embedded bus: subjects, SSE with scopes and resume,
webhooks with signatures, retries and dead letters. Nothing leaks across scopes."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from headend.serve.config import load_config
from headend.serve.service import Service
from headend.serve.webhooks import dead_letters, sign

from ._fleet import BUCKET_BITS, T0, Fleet, HookReceiver, HttpServer, free_port

pytestmark = pytest.mark.filterwarnings("ignore:Specifying null_placement:FutureWarning")


def _service(data: Path) -> Service:
    cfg = load_config(env={}, data=data, bucket_bits=BUCKET_BITS, partitions=4,
                      webhook_base_delay_s=0.1)
    svc = Service(cfg)
    svc.start()
    return svc


def _load(svc: Service, fleet: Fleet) -> None:
    assert svc.uplink is not None
    svc.uplink.submit(fleet.collectors_csv(), source="t", content_type="text/csv")
    svc.uplink.submit(fleet.meters_csv(), source="t", content_type="text/csv")


def _upload(svc: Service, frames: list[bytes]) -> None:
    assert svc.uplink is not None
    ack = svc.uplink.submit(b"".join(frames), source="t", content_type="application/octet-stream")
    assert ack.quarantined == 0


def _rows(payloads: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for p in payloads for line in p.decode().splitlines() if line]


class SseReader:
    """Reads an SSE stream in a thread; collects (id, subject, data lines)."""

    def __init__(self, url: str, token: str, last_id: str | None = None) -> None:
        self.events: list[tuple[int, str, list[str]]] = []
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.status = 0
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self.status and time.monotonic() - t0 < 5:
            time.sleep(0.02)

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            self._read(url, headers)
        except httpx.HTTPError:  # closed by close(), or the server went away
            pass

    def _read(self, url: str, headers: dict[str, str]) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=30.0)) as c, \
                c.stream("GET", url, headers=headers) as r:
            self._response = r
            self.status = r.status_code
            if r.status_code != 200:
                return
            cur: dict[str, object] = {"data": []}
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("id: "):
                    cur["id"] = int(line[4:])
                elif line.startswith("event: "):
                    cur["event"] = line[7:]
                elif line.startswith("data: "):
                    cur["data"].append(line[6:])  # type: ignore[attr-defined]
                elif line == "" and "id" in cur:
                    self.events.append((cur["id"], cur["event"], cur["data"]))  # type: ignore[arg-type]
                    cur = {"data": []}

    def rows(self) -> list[dict[str, object]]:
        return [json.loads(d) for _, _, data in self.events for d in data]

    def wait_rows(self, n: int, timeout_s: float = 10) -> list[dict[str, object]]:
        t0 = time.monotonic()
        while len(self.rows()) < n and time.monotonic() - t0 < timeout_s:
            time.sleep(0.05)
        time.sleep(0.3)  # anything beyond n would show up now
        return self.rows()

    def close(self) -> None:
        self._stop.set()
        resp = getattr(self, "_response", None)
        if resp is not None:
            try:
                resp.close()
            except httpx.HTTPError:  # closing from another thread may race
                self.status = self.status or -1


@pytest.fixture
def svc(data_dir: Path, fleet: Fleet) -> Iterator[Service]:
    s = _service(data_dir)
    _load(s, fleet)
    yield s
    s.close()


def test_subjects_and_payloads(svc: Service, fleet: Fleet) -> None:
    c = svc.bus.consumer("HEADEND_OUT", None, filter_subject="headend.reads.raw.>")
    _upload(svc, fleet.frames(range(1)))
    msgs = c.fetch(1000, 2.0)
    assert len(msgs) == 200  # one subject per meter and reading type
    m0 = next(m for m in msgs if m.subject.endswith(".100000005.kwh_del"))
    assert m0.subject == "headend.reads.raw.electric.S1.F2.TF2-0.100000005.kwh_del"
    assert json.loads(m0.data) == {"meter": "100000005", "type": "kwh_del",
                                   "end": "2026-01-01T00:15:00Z", "value": 0.005, "quality": 0}
    assert m0.headers["Content-Type"] == "application/x-ndjson"
    assert m0.headers["Headend-Rows"] == "1"


def test_sse_scoped_and_resumes_with_last_event_id(svc: Service, fleet: Fleet) -> None:
    f1 = svc.subscribers.add("f1", {"feeder": "F1"})
    srv = HttpServer(svc)
    try:
        url = f"{srv.url}/v1/stream"
        assert SseReader(url, "wrong-token").status == 401
        r = SseReader(url, f1.token)
        _upload(svc, fleet.frames(range(2)))
        _upload(svc, [fleet.event_frame(["100000000", "100000001"], T0 + 1000)])
        rows = r.wait_rows(2 * 50 + 1)
        r.close()
        assert len(rows) == 101  # 50 F1 meters x 2 intervals + 1 event on F1
        assert {f for _, f, _ in r.events} == {f for _, f, _ in r.events if ".F1." in f}
        assert {int(str(x["meter"])) % 4 for x in rows} == {0}  # F1 = meters i % 4 == 0
        assert [x["type"] for x in rows].count("power_fail") == 1
        last = r.events[-1][0]
        # disconnected: more data arrives, then the client resumes after its last id
        _upload(svc, fleet.frames(range(2, 3)))
        r2 = SseReader(url, f1.token, last_id=str(last))
        rows2 = r2.wait_rows(50)
        r2.close()
        assert len(rows2) == 50
        assert {x["end"] for x in rows2} == {"2026-01-01T00:45:00Z"}
        assert min(e[0] for e in r2.events) > last
    finally:
        srv.close()


def test_webhook_down_then_up_signed_and_scoped(data_dir: Path, fleet: Fleet) -> None:
    hook = HookReceiver()
    dead = HookReceiver()  # never started: every attempt fails
    pre = _service(data_dir)  # subscribers are read at start
    pre.subscribers.add("f2", {"feeder": "F2"}, webhook=hook.url, max_attempts=10)
    pre.subscribers.add("gone", {"feeder": "F3", "meter": "100000002"}, webhook=dead.url,
                        max_attempts=3)
    pre.close()
    svc = _service(data_dir)
    try:
        _load(svc, fleet)
        _upload(svc, fleet.frames(range(2)))
        time.sleep(0.8)  # the receiver is down: attempts fail and are retried
        assert hook.received == []
        hook.start()
        t0 = time.monotonic()
        while len(_rows([b for _, b in hook.received])) < 100 and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        time.sleep(0.3)
        rows = _rows([b for _, b in hook.received])
        assert len(rows) == 100  # 50 F2 meters x 2 intervals, each delivered once
        assert {int(str(x["meter"])) % 4 for x in rows} == {1}
        sub = svc.subscribers.get("f2")
        assert sub is not None
        for headers, body in hook.received:
            assert headers["x-headend-signature"] == sign(sub.secret, body)
            assert ".F2." in headers["x-headend-subject"]
        assert max(int(h["x-headend-attempt"]) for h, _ in hook.received) >= 2  # retried
        # the subscriber whose receiver never came up: dead letters after 3 attempts
        t0 = time.monotonic()
        while not dead_letters(data_dir, "gone") and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        dl = dead_letters(data_dir, "gone")
        # one message (its subject: one meter, one reading type) holding both intervals
        assert [(d["subject"], d["attempts"]) for d in dl] == [
            ("headend.reads.raw.electric.S2.F3.TF3-2.100000002.kwh_del", 3)]
        assert len(_rows([base64.b64decode(dl[0]["body_b64"])])) == 2
        text = svc.metrics.render().decode()
        assert 'headend_webhook_attempts_total{outcome="dead_letter",subscriber="gone"} 1.0' \
            in text
        assert 'headend_webhook_attempts_total{outcome="delivered",subscriber="f2"} 50.0' in text
    finally:
        svc.close()
        hook.stop()


def test_webhook_down_while_serve_restarts_gets_everything_afterwards(
        data_dir: Path, fleet: Fleet) -> None:
    """The embedded bus keeps the webhook's backlog and position on disk: what was
    published while its receiver was down, before and after a restart of serve (the
    message in hand at the restart included), is delivered once the receiver is up."""
    hook = HookReceiver()  # down until the end
    first = _service(data_dir)
    try:
        first.subscribers.add("f1", {"feeder": "F1"}, webhook=hook.url, max_attempts=50)
        first.sync_subscribers()
        _load(first, fleet)
        _upload(first, fleet.frames(range(2)))
        time.sleep(0.5)  # attempts fail; the first message waits for its next retry
        assert hook.received == []
    finally:
        first.close()  # stopped mid-retry: the message is not acknowledged
    assert (data_dir / "bus" / "bus.sqlite3").exists()
    second = _service(data_dir)  # the restart, receiver still down
    try:
        _upload(second, fleet.frames(range(2, 4)))
        time.sleep(0.3)
        assert hook.received == []
        hook.start()
        want = {(m, end) for m in fleet.meter_ids if fleet.feeder[m] == "F1"
                for end in ("2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z",
                            "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z")}
        t0 = time.monotonic()
        got: set[tuple[str, str]] = set()
        while got != want and time.monotonic() - t0 < 30:
            time.sleep(0.1)
            got = {(str(r["meter"]), str(r["end"])) for r in _rows([b for _, b in hook.received])}
        assert got == want  # 50 F1 meters x 4 intervals, from before and after the restart
        assert dead_letters(data_dir, "f1") == []
        dropped = second.bus.dropped()
        assert any(s == "HEADEND_OUT" and d.startswith("wh_f1_") for s, d in dropped)
        assert set(dropped.values()) == {0}  # nothing dropped by the limits
    finally:
        second.close()
        hook.stop()


def test_transformer_grouping_and_config_sources(tmp_path: Path, fleet: Fleet) -> None:
    import pyarrow as pa

    from headend.bus import open_bus
    from headend.model import schema
    from headend.serve.config import load_config
    from headend.serve.streams import StreamPublisher

    meters = pa.table({
        "meter_idx": pa.array([0, 1, 2], pa.int32()), "meter_id": ["a", "b", "c"],
        "commodity": pa.array([0, 0, 0], pa.uint8()), "substation_id": ["S", "S", "S"],
        "feeder_id": ["F", "F", "F"], "transformer_id": ["T1", "T1", "T2"]})
    reads = pa.table([pa.array([0, 1, 2], pa.int32()), pa.array([0, 0, 0], pa.uint8()),
                      pa.array([900, 900, 900]).cast(schema.TS), pa.array([1, 2, 3], pa.int32()),
                      pa.array([0, 0, 0], pa.uint32())], schema=schema.READS)
    pub = StreamPublisher(open_bus(), lambda: meters, group_by="transformer")
    msgs = pub.messages("reads", reads)
    assert [(s, h["Headend-Rows"]) for s, _, h in msgs] == [
        ("headend.reads.raw.electric.S.F.T1.~.kwh_del", "2"),
        ("headend.reads.raw.electric.S.F.T2.~.kwh_del", "1")]
    (tmp_path / "c.toml").write_text('[serve]\nhttp = "0.0.0.0:9000"\npartitions = 3\n')
    cfg = load_config(tmp_path / "c.toml", env={"HEADEND_PARTITIONS": "5",
                                                 "HEADEND_NATS_URL": "nats://h:1"})
    assert (cfg.http, cfg.partitions, cfg.bus, cfg.port) == ("0.0.0.0:9000", 5, "nats://h:1", 9000)
    (tmp_path / "c.yaml").write_text("http: nonsense\n")
    with pytest.raises(ValueError, match="HOST:PORT"):
        load_config(tmp_path / "c.yaml", env={})
    assert load_config(env={}).http == "127.0.0.1:8080" and load_config(env={}).embedded


def test_subscriber_added_while_running_gets_webhooks(svc: Service, fleet: Fleet) -> None:
    hook = HookReceiver()
    hook.start()
    try:
        svc.subscribers.add("late", {"meter": "100000003"}, webhook=hook.url)
        t0 = time.monotonic()
        while "late" not in svc.webhooks and time.monotonic() - t0 < 6:
            time.sleep(0.05)
        assert "late" in svc.webhooks
        _upload(svc, fleet.frames(range(1)))
        t0 = time.monotonic()
        while not hook.received and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        time.sleep(0.2)
        assert [json.loads(b)["meter"] for _, b in hook.received] == ["100000003"]
    finally:
        hook.stop()


def test_feeder_grouping_payload_cap_and_row_order() -> None:
    """Feeder groups (transformer and meter tokens ``~``), rows in input order within a
    group, and a group bigger than the payload cap cut at line boundaries."""
    import numpy as np
    import pyarrow as pa

    from headend.bus import open_bus
    from headend.model import schema
    from headend.serve.streams import StreamPublisher, _stable_order, encode_groups

    meters = pa.table({
        "meter_idx": pa.array([0, 1, 2], pa.int32()), "meter_id": ["a", "b", "c"],
        "commodity": pa.array([0, 0, 0], pa.uint8()), "substation_id": ["S", "S", "S"],
        "feeder_id": ["F1", "F2", "F1"], "transformer_id": ["T1", "T2", "T3"]})
    reads = pa.table([pa.array([2, 1, 0], pa.int32()), pa.array([0, 0, 0], pa.uint8()),
                      pa.array([900, 900, 1800]).cast(schema.TS),
                      pa.array([1, 2, 3], pa.int32()), pa.array([0, 0, 0], pa.uint32())],
                     schema=schema.READS)
    msgs = StreamPublisher(open_bus(), lambda: meters, group_by="feeder").messages(
        "reads", reads)
    assert [(s, h["Headend-Rows"]) for s, _, h in msgs] == [
        ("headend.reads.raw.electric.S.F1.~.~.kwh_del", "2"),
        ("headend.reads.raw.electric.S.F2.~.~.kwh_del", "1")]
    assert [json.loads(x)["meter"] for x in msgs[0][1].splitlines()] == ["c", "a"]
    assert json.loads(msgs[0][1].splitlines()[1])["end"] == "1970-01-01T00:30:00Z"

    lines = pa.array([f"row{i:04d}\n" for i in range(300)])
    key = np.arange(300, dtype=np.int64) % 2
    keys, payloads, counts = encode_groups(key, lines, max_bytes=100)
    assert max(len(p) for p in payloads) <= 100 and int(counts.sum()) == 300
    assert b"".join(p for k, p in zip(keys, payloads) if k == 1) == "".join(
        f"row{i:04d}\n" for i in range(1, 300, 2)).encode()
    for top in (50, 70_000, 2**40):
        k = np.random.default_rng(1).integers(0, top, 5_000)
        assert np.array_equal(_stable_order(k), np.argsort(k, kind="stable"))


def test_scopes_finer_than_the_grouping_get_their_own_subjects(tmp_path: Path) -> None:
    """Under transformer/feeder grouping, meters (and transformers) a subscriber is
    scoped to are published on their own finer subjects: the scoped filter matches
    exactly their rows, and every row is in exactly one message for broader filters."""
    import pyarrow as pa

    from headend.bus import open_bus
    from headend.bus.base import subject_matches
    from headend.model import schema
    from headend.serve.streams import StreamPublisher
    from headend.serve.subjects import scope_filter
    from headend.serve.subscribers import SubscriberStore

    meters = pa.table({
        "meter_idx": pa.array([0, 1, 2, 3], pa.int32()), "meter_id": ["a", "b.1", "c", "d"],
        "commodity": pa.array([0, 0, 0, 0], pa.uint8()), "substation_id": ["S"] * 4,
        "feeder_id": ["F"] * 4, "transformer_id": ["T1", "T1", "T2", "T2"]})
    reads = pa.table([pa.array([0, 1, 2, 3], pa.int32()), pa.array([0] * 4, pa.uint8()),
                      pa.array([900] * 4).cast(schema.TS), pa.array([1, 2, 3, 4], pa.int32()),
                      pa.array([0] * 4, pa.uint32())], schema=schema.READS)
    subs = SubscriberStore(tmp_path)
    assert subs.fine_scopes() == (frozenset(), frozenset())
    subs.add("cust", {"meter": "b.1"})
    subs.add("eng", {"transformer": "T2"})
    assert subs.fine_scopes() == (frozenset({"b.1"}), frozenset({"T2"}))

    def rows_seen(msgs, flt):
        return sorted(json.loads(line)["meter"] for s, body, _ in msgs
                      if subject_matches(flt, s) for line in body.splitlines())

    for group_by, coarse in (("transformer", 1), ("feeder", 2)):
        pub = StreamPublisher(open_bus(), lambda: meters, group_by=group_by,
                              fine=subs.fine_scopes)
        msgs = pub.messages("reads", reads)
        assert rows_seen(msgs, "headend.>") == ["a", "b.1", "c", "d"]  # each row once
        assert rows_seen(msgs, scope_filter({"meter": "b.1"})) == ["b.1"]
        # T1: nobody is scoped to it, so under feeder grouping only b.1 (on its own
        # subject) matches a T1 filter; under transformer grouping its group does too
        assert rows_seen(msgs, scope_filter({"transformer": "T1"})) == (
            ["a", "b.1"] if coarse == 1 else ["b.1"])
        assert rows_seen(msgs, scope_filter({"meter": "a"})) == []  # nobody asked
        assert rows_seen(msgs, scope_filter({"transformer": "T2"})) == ["c", "d"]
        subjects = {s for s, _, _ in msgs}
        assert "headend.reads.raw.electric.S.F.T1.b~2E1.kwh_del" in subjects
        if coarse == 2:
            assert "headend.reads.raw.electric.S.F.T2.~.kwh_del" in subjects
    subs.remove("cust")
    assert subs.fine_scopes() == (frozenset(), frozenset({"T2"}))


def test_dead_letter_is_fsynced_before_the_acknowledgement(data_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import os

    from headend.bus import Message, open_bus
    from headend.serve import webhooks
    from headend.serve.streams import out_stream_spec
    from headend.serve.subscribers import SubscriberStore

    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    class Handle:
        def ack(self, msg: Message) -> None:
            order.append("ack")

    monkeypatch.setattr(webhooks.os, "fsync", fsync)
    sub = SubscriberStore(data_dir).add("gone", {"feeder": "F1"}, max_attempts=1,
                                        webhook=f"http://127.0.0.1:{free_port()}/hook")
    bus = open_bus("memory://")
    bus.ensure_stream(out_stream_spec())
    try:
        d = webhooks.WebhookDelivery(bus, sub, data_dir, base_delay_s=0.01, timeout_s=1.0)
        order.clear()  # (os.fsync is patched for the whole process: only count from here)
        msg = Message(sub.filter_subject.replace("*", "x").replace(">", "x"), b"{}\n",
                      _ack=Handle())
        assert d.deliver(msg) is False
        d.close()
    finally:
        bus.close()
    assert order == ["fsync", "ack"]
    assert len(dead_letters(data_dir, "gone")) == 1
