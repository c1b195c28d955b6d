"""The service switch in the rules (issue 12, effects): a disconnected meter is dark on
purpose. A remote disconnect is never an outage, a silent meter or theft; energy
through an open switch is an alarm."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headend.model.codes import EVENT
from headend.model.commands import SWITCH_STATES
from headend.rules import MemorySink, RuleEngine, parse_ruleset
from headend.rules.testing import Fault, grid_meters, simulate

from ._kit import T0

DISCONNECTED = SWITCH_STATES.index("disconnected")


def _with_switch(meters: pa.Table, off: list[int]) -> pa.Table:
    state = np.zeros(len(meters), np.uint8)
    state[off] = DISCONNECTED
    return meters.append_column("switch_state", pa.array(state))


def _engine(meters: pa.Table, kinds: list[str], **params: dict[str, object]) -> RuleEngine:
    cfg = parse_ruleset({"rules": [{"name": k, "kind": k, "params": params.get(k, {})}
                                   for k in kinds]})
    return RuleEngine(None, meters, config=cfg, sink=MemorySink())


def _drop_meters(reads: pa.Table, gone: list[int]) -> pa.Table:
    keep = ~np.isin(reads.column("meter_idx").to_numpy(), gone)
    return reads.filter(pa.array(keep))


def test_all_meters_of_a_transformer_disconnected_is_no_outage_and_no_silence() -> None:
    g = grid_meters(1, 2, 5, 4)
    tx = [4, 5, 6, 7]  # S0F0T1, disconnected for move-outs: no reads, a gasp each
    meters = _with_switch(g, tx)
    reads, _ = simulate(meters, T0, T0 + 6 * 3600)
    reads = _drop_meters(reads, tx)
    a = T0 + 3600 + 400
    evs = pa.table({"meter_idx": pa.array(tx, pa.int32()),
                    "event_time": pa.array([a] * 4, pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                    "event_code": pa.array([int(EVENT.power_fail)] * 4, pa.uint32())})
    eng = _engine(meters, ["outage", "silent_meter"])
    eng.process(reads, evs)
    assert list(eng.outages) == []
    assert [a.device_id for a in eng.alarms] == []
    # the same meters connected: an outage of the transformer and no silence alarm
    on = _engine(g, ["outage", "silent_meter"])
    on.process(reads, evs)
    assert [(o.level, o.device_id) for o in on.outages] == [("transformer", "S0F0T1")]


def test_a_disconnected_meter_in_a_real_outage_does_not_change_it() -> None:
    g = grid_meters(1, 2, 5, 4)
    meters = _with_switch(g, [5])
    a, b = T0 + 3600 + 400, T0 + 3600 + 400 + 1800
    reads, evs = simulate(meters, T0, T0 + 6 * 3600, [Fault("transformer", "S0F0T1", a, b)])
    eng = _engine(meters, ["outage"])
    eng.process(_drop_meters(reads, [5]), evs)
    found = [(o.level, o.device_id, o.start, o.end, o.meters_affected) for o in eng.outages]
    assert found == [("transformer", "S0F0T1", a, b, 3)]  # 3 of its 4 meters had power


def test_zero_consumption_of_a_disconnected_meter_is_no_theft() -> None:
    g = grid_meters(1, 1, 1, 6)
    reads, _ = simulate(g, T0, T0 + 6 * 3600, volts=False)
    v = reads.column("value").to_numpy().copy()
    v[reads.column("meter_idx").to_numpy() == 2] = 0  # meter 2 reads zero all along
    reads = reads.set_column(3, "value", pa.array(v, pa.int32()))
    none = pa.table({"meter_idx": pa.array([], pa.int32()),
                     "event_time": pa.array([], pa.timestamp("s", tz="UTC")),
                     "event_code": pa.array([], pa.uint32())})
    connected = _engine(g, ["zero_consumption"])
    connected.process(reads, none)
    assert {a.device_id for a in connected.alarms} == {"S0F0T0M2"}  # theft suspected
    off = _engine(_with_switch(g, [2]), ["zero_consumption"])
    off.process(reads, none)
    assert list(off.alarms) == []


def test_energy_through_an_open_switch_is_an_alarm() -> None:
    g = grid_meters(1, 1, 1, 6)
    meters = _with_switch(g, [1, 3])
    reads, _ = simulate(meters, T0, T0 + 3 * 3600, volts=False)
    m = reads.column("meter_idx").to_numpy()
    t = reads.column("interval_end").cast(pa.int64()).to_numpy()
    v = reads.column("value").to_numpy().copy()
    v[m == 3] = 0  # meter 3 obeys its switch; meter 1 draws energy from T0 + 2 h on
    v[(m == 1) & (t <= T0 + 7200)] = 0
    reads = reads.set_column(3, "value", pa.array(v, pa.int32()))
    none = pa.table({"meter_idx": pa.array([], pa.int32()),
                     "event_time": pa.array([], pa.timestamp("s", tz="UTC")),
                     "event_code": pa.array([], pa.uint32())})
    eng = _engine(meters, ["disconnected_use"], disconnected_use={"intervals": 2})
    eng.process(reads, none)
    got = [(a.device_id, a.start) for a in eng.alarms]
    assert got == [("S0F0T0M1", T0 + 7200)]  # from the end of the last zero interval
