"""build_utility: registry, topology, collectors, weather; determinism."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from headend.errors import ConfigError
from headend.model.codes import Commodity, Technology
from headend.model.schema import METERS
from headend.sim import build_utility
from headend.sim.utility import SERIAL_BASE


@pytest.fixture(scope="module")
def u():
    return build_utility(20_000, seed=1, days=2, start=dt.date(2026, 7, 1))


def test_meters_schema_and_ids(u):
    m = u.meters
    assert m.schema == METERS
    assert m.num_rows == 20_000
    idx = m.column("meter_idx").to_numpy()
    np.testing.assert_array_equal(idx, np.arange(20_000))
    serial = m.column("serial").to_numpy()
    np.testing.assert_array_equal(serial, SERIAL_BASE + idx)
    assert m.column("meter_id").to_pylist()[:2] == ["100000000", "100000001"]
    assert m.column("meter_id").to_pylist()[-1] == str(SERIAL_BASE + 19_999)
    assert set(m.column("interval_s").to_pylist()) == {900}


def test_commodities_in_blocks(u):
    c = u.meters.column("commodity").to_numpy()
    assert (u.n_electric, u.n_water, u.n_gas) == (18_400, 1_000, 600)
    assert (c[: u.n_electric] == Commodity.ELECTRIC).all()
    assert (c[u.n_electric : u.n_electric + u.n_water] == Commodity.WATER).all()
    assert (c[u.n_electric + u.n_water :] == Commodity.GAS).all()
    # water and gas meters have no electric topology
    assert u.meters.column("feeder_id").null_count == 1_600
    assert u.meters.column("transformer_id").slice(0, u.n_electric).null_count == 0


def test_topology_contiguous_ranges(u):
    n_e = u.n_electric
    for table, level, col in ((u.transformers, "transformer", u.meter_transformer),
                              (u.feeders, "feeder", u.meter_feeder),
                              (u.substations, "substation", u.meter_substation)):
        first = table.column("first_meter").to_numpy()
        n = table.column("n_meters").to_numpy()
        assert n.sum() == n_e and (n >= 1).all()
        np.testing.assert_array_equal(first, np.concatenate([[0], np.cumsum(n)[:-1]]))
        np.testing.assert_array_equal(col[:n_e], np.repeat(np.arange(len(n)), n))
        ids = u.meters.column(f"{level}_id").to_pylist()
        assert ids[first[-1]] == table.column(f"{level}_id")[-1].as_py()
    assert u.transformers.num_rows == round(n_e / 8)
    assert u.feeders.num_rows == round(n_e / 2500)
    assert u.substations.num_rows == 1
    # a feeder's transformers all point at it
    tx_feeder = np.array(u.transformers.column("feeder_id").to_pylist())
    m_feeder = np.array(u.meters.column("feeder_id").to_pylist()[:n_e])
    first = u.transformers.column("first_meter").to_numpy()
    np.testing.assert_array_equal(m_feeder[first], tx_feeder)
    assert set(u.transformers.column("kva").to_pylist()) <= {
        10, 15, 25, 37.5, 50, 75, 100, 167, 250, 333, 500, 750, 1000, 1500}


def test_collectors_and_keys(u):
    c = u.collectors
    keys = u.collector_keys()
    assert len(keys) == c.num_rows
    assert all(len(k) == 32 for k in keys.values())
    assert len(set(keys.values())) == c.num_rows
    assert all(s.isdigit() for s in c.column("collector_id").to_pylist())
    tech = u.meters.column("technology").to_numpy()
    n_gprs = int((tech == Technology.GPRS).sum())
    assert c.num_rows == 10 + n_gprs  # 20 000 / 2000 blocks + one per GPRS meter
    assert ((tech == Technology.RF) | (tech == Technology.GPRS)).all()
    # every meter's collector id is a collector; GPRS meters are alone on theirs
    assert c.column("n_meters").to_numpy().sum() == 20_000
    gp = np.flatnonzero(tech == Technology.GPRS)
    assert (c.column("n_meters").to_numpy()[u.meter_collector[gp]] == 1).all()
    two_way = u.meters.column("two_way").to_numpy(zero_copy_only=False)
    assert 0.8 < two_way.mean() < 0.95


def test_plc_network():
    p = build_utility(3000, seed=2, network="plc", interval_s=3600)
    tech = p.meters.column("technology").to_numpy()
    assert set(np.unique(tech)) <= {Technology.PLC, Technology.GPRS}
    assert (tech == Technology.PLC).mean() > 0.99
    assert p.n_cycles == 24


def test_customer_classes_and_solar(u):
    cls = u.customer_class
    share = np.bincount(cls[: u.n_electric], minlength=3) / u.n_electric
    assert 0.8 < share[0] < 0.95 and 0.05 < share[1] < 0.15 and 0 < share[2] < 0.05
    pv = u.solar_idx
    assert (pv < u.n_electric).all() and (cls[pv] < 2).all()
    assert 0.05 < len(pv) / u.n_electric < 0.1


def test_weather(u):
    w = u.weather
    assert w.column_names == ["time", "temperature_c"]
    t = w.column("time").cast(pa.int64()).to_numpy()
    assert (np.diff(t) == 3600).all()
    assert t[0] <= u.start_s and t[-1] >= u.end_s
    temp = w.column("temperature_c").to_numpy()
    assert 5 < temp.mean() < 35  # July at 40 N
    assert np.std(temp) > 1  # diurnal swing
    assert u.temperature_at(np.array([t[3]]))[0] == temp[3]


def test_deterministic_and_seed_dependent():
    a = build_utility(5000, seed=3)
    b = build_utility(5000, seed=3)
    c = build_utility(5000, seed=4)
    assert a.meters.equals(b.meters) and a.collectors.equals(b.collectors)
    assert a.weather.equals(b.weather) and a.transformers.equals(b.transformers)
    assert not a.collectors.equals(c.collectors)
    np.testing.assert_array_equal(a.params.base_kw, b.params.base_kw)


@pytest.mark.parametrize("kw", [
    {"n_meters": 0}, {"n_meters": 10, "network": "lora"}, {"n_meters": 10, "interval_s": 600},
    {"n_meters": 10, "days": 0}, {"n_meters": 10, "water_share": 0.6, "gas_share": 0.5},
])
def test_bad_arguments(kw):
    n = kw.pop("n_meters")
    with pytest.raises(ConfigError):
        build_utility(n, **kw)


def test_public_api_exports():
    from headend import sim

    assert sorted(sim.__all__) == sorted(set(sim.__all__))
    assert all(hasattr(sim, name) for name in sim.__all__)
    assert {"build_utility", "iter_uploads", "write_frames", "write_csv", "Faults",
            "Storm", "GROUND_TRUTH"} <= set(sim.__all__)
