"""The engine's batching: tick-free rules over many ticks at once give the same records
as one call per tick, and the rows of every chunk are in key order whatever the order
of the batches handed over."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from headend.cli import _register, app
from headend.rules import RuleEngine, parse_ruleset
from headend.rules.base import Chunk, Context, Output
from headend.rules.config import default_ruleset
from headend.rules.engine import TICK_FREE_KINDS
from headend.store import DataDir

_register()


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three days of 300 meters with every fault, ingested without rules."""
    base = tmp_path_factory.mktemp("faults")
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--meters", "300", "--days", "3", "--seed", "1",
                              "--faults", "all", "-o", str(base / "sim")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", str(base / "sim"), "--data", str(base / "data"),
                              "--no-rules", "--no-vee", "--json"])
    assert res.exit_code == 0, res.output
    return base / "data"


def _ruleset(batch_rows: int) -> Any:
    rules = [{"name": s.name, "kind": s.kind, "params": s.params.model_dump()}
             for s in default_ruleset().rules]
    rules += [
        {"name": "tx_hourly", "kind": "threshold",
         "params": {"reading_type": "kwh_del", "by": "transformer", "agg": "sum",
                    "window_s": 3600, "op": ">", "value": 5.0}},
        {"name": "gasps", "kind": "event_count",
         "params": {"event_codes": ["3.26.0.85"], "count": 1, "window_s": 7200}},
    ]
    return parse_ruleset({"engine": {"batch_rows": batch_rows}, "rules": rules})


def _records(data: Path, batch_rows: int, parts: int) -> tuple[list[Any], list[Any], int]:
    with DataDir.open(data) as dd:
        reads, events = dd.store.scan_reads(), dd.store.scan_events()
        eng = RuleEngine(None, dd.registry.table(), config=_ruleset(batch_rows))
        # hand the rows over in several batches, each in key order (as the ingestor
        # does), the later ones holding earlier event times too
        rng = np.random.default_rng(parts)
        cut_r = np.sort(rng.integers(0, reads.num_rows, parts - 1))
        cut_e = np.sort(rng.integers(0, events.num_rows, parts - 1))
        for (r0, r1), (e0, e1) in zip(zip(np.r_[0, cut_r], np.r_[cut_r, reads.num_rows],
                                          strict=True),
                                      zip(np.r_[0, cut_e], np.r_[cut_e, events.num_rows],
                                          strict=True), strict=True):
            eng.on_stored(SimpleNamespace(reads=reads.slice(r0, r1 - r0),
                                          events=events.slice(e0, e1 - e0)))
        eng.on_watermark(eng.max_seen)
        outages = sorted((o.outage_id, o.level, o.device_id, o.start, o.end, o.sustained)
                         for o in eng.outages)
        alarms = sorted((a.alarm_id, a.rule, a.device_id, a.start, a.end) for a in eng.alarms)
        return outages, alarms, eng.items_processed


def test_tick_free_rules_in_batches_find_what_they_find_tick_by_tick(faults: Path) -> None:
    per_tick = _records(faults, 1, 1)  # one tick per batch: every rule steps tick by tick
    assert per_tick[0] and per_tick[1]  # the faults are found at all
    kinds = {a[1] for a in per_tick[1]}
    assert {"voltage", "tx_hourly", "gasps"} <= kinds, kinds
    for batch_rows, parts in ((2_000_000, 1), (20_000, 3), (2_000_000, 4)):
        assert _records(faults, batch_rows, parts) == per_tick, (batch_rows, parts)


@pytest.mark.parametrize("tick_kind", ["silent_meter", "my_python_kind"])
def test_every_chunk_is_in_key_order_and_spans_its_ticks(faults: Path, tick_kind: str) -> None:
    """Batch chunks are in key order; tick chunks too, except for the built-in per-tick
    rules (outage, silent meter), which need no order inside a tick and get arrival order."""
    seen: list[tuple[str, Chunk]] = []

    class Spy:
        def __init__(self, kind: str) -> None:
            self.name = self.kind = kind

        def process(self, chunk: Chunk, ctx: Context) -> Output:
            seen.append((self.kind, chunk))
            return Output()

        def snapshot(self) -> dict[str, Any]:
            return {}

        def restore(self, s: dict[str, Any]) -> None:
            pass

    with DataDir.open(faults) as dd:
        reads, events = dd.store.scan_reads(), dd.store.scan_events()
        eng = RuleEngine(None, dd.registry.table(), config=_ruleset(50_000))
        eng.rules = [Spy(tick_kind), Spy("voltage")]
        assert "voltage" in TICK_FREE_KINDS and tick_kind not in TICK_FREE_KINDS
        rev = pa.array(np.arange(reads.num_rows)[::-1])  # worst case: reverse order
        eng.on_stored(SimpleNamespace(reads=reads.take(rev), events=events))
        eng.on_watermark(eng.max_seen)
    ticks = [c for k, c in seen if k == tick_kind]
    batches = [c for k, c in seen if k == "voltage"]
    assert 1 < len(batches) < len(ticks)
    for chunks in (ticks, batches):
        assert sum(len(c.r_time) for c in chunks) == reads.num_rows
        assert sum(len(c.e_time) for c in chunks) == events.num_rows
        assert [c.wm_prev for c in chunks[1:]] == [c.wm for c in chunks[:-1]]
        for c in chunks:
            assert np.all((c.r_time > c.wm_prev) & (c.r_time <= c.wm))
            key = (c.r_meter.astype(np.int64) << 40) | (c.r_type.astype(np.int64) << 33) | c.r_time
            if chunks is batches or tick_kind != "silent_meter":
                assert np.all(np.diff(key) > 0)
            else:  # arrival order (here reversed), each row once
                assert len(np.unique(key)) == len(key)
            ekey = (c.e_meter.astype(np.int64) << 33) | c.e_time
            assert np.all(np.diff(ekey) >= 0)
    for c in ticks:  # a tick chunk holds one tick's rows (empty ticks are skipped)
        assert np.all(np.r_[c.r_time, c.e_time] > c.wm - 300)
