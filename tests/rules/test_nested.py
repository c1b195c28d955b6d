"""Nested and overlapping outages: exact records, and the observable ground truth."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from headend.rules.testing import Fault, grid_meters, observable_truth, score_outages, simulate

from ._kit import T0
from .test_outage import _exported, _run

METERS = grid_meters(1, 2, 5, 4)
H = 3600


def _outages(faults: list[Fault], loss: float) -> list[tuple[object, ...]]:
    reads, evs = simulate(METERS, T0, T0 + 12 * H, faults, gasp_loss=loss, restore_loss=loss,
                          seed=3)
    out = _exported(_run(METERS, reads, evs))
    ids = {o["outage_id"]: i for i, o in enumerate(out)}
    return [(o["level"], o["device_id"], o["start"], o["end"], o["meters_affected"],
             None if o["parent"] is None else ids[o["parent"]]) for o in out]


@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_transformer_outages_inside_a_feeder_outage_are_not_seen(loss: float) -> None:
    faults = [Fault("feeder", "S0F0", T0 + H + 30, T0 + 4 * H),
              Fault("transformer", "S0F0T1", T0 + 2 * H + 5, T0 + 3 * H + 7),
              Fault("transformer", "S0F0T3", T0 + H + 600, T0 + 2 * H)]
    assert _outages(faults, loss) == [
        ("feeder", "S0F0", "2026-01-01T01:00:30Z", "2026-01-01T04:00:00Z", 20, None)]


@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_transformer_outage_past_the_feeder_restoration_is_nested_from_it(loss: float) -> None:
    faults = [Fault("feeder", "S0F0", T0 + H + 30, T0 + 3 * H),
              Fault("transformer", "S0F0T2", T0 + 2 * H + 11, T0 + 5 * H + 20)]
    assert _outages(faults, loss) == [
        ("feeder", "S0F0", "2026-01-01T01:00:30Z", "2026-01-01T03:00:00Z", 20, None),
        ("transformer", "S0F0T2", "2026-01-01T03:00:00Z", "2026-01-01T05:00:20Z", 4, 0)]


@pytest.mark.parametrize(("loss", "tx_end", "m_end"), [
    (0.0, "2026-01-01T03:00:00Z", "2026-01-01T06:00:10Z"),
    # 30 % lost: two of four restorations lost (median of back times: the first unflagged
    # read), and the meter's own: back at its first unflagged read
    (0.3, "2026-01-01T03:15:00Z", "2026-01-01T06:30:00Z")])
def test_meter_still_out_after_its_transformer_is_restored(loss: float, tx_end: str,
                                                           m_end: str) -> None:
    faults = [Fault("transformer", "S0F1T4", T0 + H + 30, T0 + 3 * H),
              Fault("meter", "S0F1T4M2", T0 + 2 * H, T0 + 6 * H + 10)]
    assert _outages(faults, loss) == [
        ("transformer", "S0F1T4", "2026-01-01T01:00:30Z", tx_end, 4, None),
        ("meter", "S0F1T4M2", tx_end, m_end, 1, 0)]


@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_transformer_out_before_its_feeder_and_after_it_is_its_own_outage(loss: float) -> None:
    faults = [Fault("transformer", "S0F0T2", T0 + 3000, T0 + 5 * H + 20),
              Fault("feeder", "S0F0", T0 + H + 30, T0 + 3 * H)]
    assert _outages(faults, loss) == [
        ("transformer", "S0F0T2", "2026-01-01T00:50:00Z", "2026-01-01T05:00:20Z", 4, None),
        ("feeder", "S0F0", "2026-01-01T01:00:30Z", "2026-01-01T03:00:00Z", 20, None)]


def _row(level: str, dev: str, start: int, end: int, meters: range) -> dict[str, object]:
    ts = dt.datetime.fromtimestamp
    return {"kind": "outage", "level": level, "device_id": dev,
            "start": ts(start, dt.UTC), "end": ts(end, dt.UTC), "meter_idx": list(meters)}


def test_observable_truth_drops_covered_and_shifts_outlasting_outages() -> None:
    rows = [_row("feeder", "F", 1000, 5000, range(20)),
            _row("transformer", "A", 2000, 3000, range(4, 8)),   # wholly inside: unseen
            _row("transformer", "B", 4000, 9000, range(8, 12)),  # outlasts F: from 5000
            _row("transformer", "C", 500, 2000, range(12, 16)),  # ends inside F: at 5000
            _row("meter", "M", 8000, 9500, range(9, 10)),        # inside B, outlasts it
            _row("transformer", "D", 100, 200, range(30, 34))]   # elsewhere
    rows.append({"kind": "cover_removed", "level": "meter", "device_id": "X", "start": None,
                 "end": None, "meter_idx": [1]})
    truth = observable_truth(pa.Table.from_pylist(rows[:-1]))
    assert truth.unobservable == [Fault("transformer", "A", 2000, 3000)]
    assert truth.reasons == ["covered"]
    assert truth.shifted == 2
    assert truth.faults == [Fault("feeder", "F", 1000, 5000),
                            Fault("transformer", "B", 5000, 9000),
                            Fault("transformer", "C", 500, 5000),
                            Fault("meter", "M", 9000, 9500),
                            Fault("transformer", "D", 100, 200)]
    assert observable_truth(rows).faults == truth.faults
    score = score_outages([], truth)
    assert (score["recall"], score["unobservable"]) == (0.0, 1.0)


def test_observable_truth_within_event_spread_or_with_every_event_lost() -> None:
    f = _row("feeder", "F", 10_000, 20_000, range(20))
    rows = [f | {"events_sent": 100},
            _row("transformer", "A", 9_998, 15_000, range(4)),  # 2 s early: looks like F
            _row("transformer", "B", 9_950, 15_000, range(4, 8)),  # gasps lost, no read due
            _row("transformer", "C", 9_000, 15_000, range(8, 12)),  # a read due at 9,900
            _row("transformer", "D", 12_000, 20_020, range(12, 14)),  # restorations mingle
            _row("transformer", "E", 12_000, 20_500, range(14, 16)),  # lost, same read
            _row("transformer", "G", 12_000, 20_500, range(16, 18))]  # one restoration kept
    for r, sent in zip(rows[1:], (3, 0, 0, 2, 0, 1), strict=True):
        r["events_sent"] = sent
    truth = observable_truth(rows, interval_s=900, gasp_spread_s=3, restore_spread_s=30)
    assert [(x.device_id, why) for x, why in zip(truth.unobservable, truth.reasons,
                                                 strict=True)] == [
        ("A", "start_unseen"), ("B", "start_unseen"), ("D", "restore_spread"),
        ("E", "events_lost")]
    assert truth.faults == [Fault("feeder", "F", 10_000, 20_000),
                            Fault("transformer", "C", 9_000, 20_000),
                            Fault("transformer", "G", 20_000, 20_500)]
    # without the spreads, only the outages whose every event was lost stay hidden
    assert [x.device_id for x in observable_truth(rows).unobservable] == ["B", "E"]
