import numpy as np
import pyarrow as pa

from headend.analytics import shapes
from headend.analytics.matrix import HourlyMatrix
from headend.model.schema import READS, TS

T0 = 1_704_067_200  # Mon 2024-01-01


def matrix(values: np.ndarray) -> HourlyMatrix:
    return HourlyMatrix(np.arange(values.shape[0], dtype=np.int32), T0 + 3600, values)


def test_daily_shape_is_mean_per_local_hour():
    hour = np.tile(np.arange(24.0), 3)
    m = matrix(np.stack([hour, 2 * hour]))
    m.kwh[0, 5] = np.nan  # a missing hour is left out of the mean
    t = shapes.daily_shape(m)
    assert t.column_names == ["meter_idx", "hour", "mean_kwh"]
    np.testing.assert_array_equal(t.column("mean_kwh").to_numpy().reshape(2, 24),
                                  [np.arange(24.0), 2 * np.arange(24.0)])
    # two hours ahead of UTC: local hour 0 is UTC hour 22
    t = shapes.daily_shape(m, "Etc/GMT-2")
    np.testing.assert_array_equal(t.column("mean_kwh").to_numpy()[:3], [22, 23, 0])


def test_seasonal_shape_only_lists_seasons_with_data():
    m = matrix(np.tile(np.arange(24.0), 2)[None, :])
    t = shapes.seasonal_shape(m)
    assert set(t.column("season").to_pylist()) == {"winter"} and t.num_rows == 24


def test_class_shape_averages_meters_of_a_class():
    hour = np.tile(np.arange(24.0), 2)
    m = matrix(np.stack([hour, 3 * hour, 10 * hour]))
    classes = pa.table({"meter_idx": pa.array([0, 1, 2], pa.int32()),
                        "customer_class": ["residential", "residential", "commercial"]})
    t = shapes.class_shape(shapes.daily_shape(m), classes)
    rows = {(r["customer_class"], r["hour"]): (r["mean_kwh"], r["meters"]) for r in t.to_pylist()}
    assert rows[("residential", 5)] == (10.0, 2)
    assert rows[("commercial", 5)] == (50.0, 1)


def test_asset_loading_against_rating():
    x = np.zeros((3, 24))
    x[0, 10], x[1, 10], x[2, 11] = 20.0, 10.0, 5.0  # T1 peaks at 30 kW at hour 11 end
    x[0, 3] = 26.0
    m = matrix(x)
    group = np.array(["T1", "T1", "T2"], dtype=object)
    t = shapes.asset_loading(m, group, {"T1": 25.0, "T2": 50.0})
    r = t.to_pylist()
    assert [a["asset_id"] for a in r] == ["T1", "T2"]
    assert r[0]["peak_kw"] == 30.0 and r[0]["meters"] == 2
    assert r[0]["peak_loading_pct"] == 120.0 and r[0]["hours_over_rating"] == 2
    assert int(r[0]["peak_hour_end"].timestamp()) == T0 + 11 * 3600
    assert r[1]["peak_loading_pct"] == 10.0 and r[1]["hours_over_rating"] == 0


def test_billing_determinants_tou_energy_and_max_demand():
    # 15-min reads of 1 kWh on Mon 2024-01-01 and Sat 2024-01-06; one 3 kWh interval
    t = np.r_[T0 + 900 * np.arange(1, 97), T0 + 5 * 86_400 + 900 * np.arange(1, 97)]
    v = np.full(len(t), 1000)
    v[100] = 3000  # Saturday 01:15
    reads = pa.table({"meter_idx": pa.array(np.zeros(len(t)), pa.int32()),
                      "reading_type": pa.array(np.zeros(len(t)), pa.uint8()),
                      "interval_end": pa.array(t).cast(TS), "value": pa.array(v, pa.int32()),
                      "quality": pa.array(np.zeros(len(t)), pa.uint32())}, schema=READS)
    energy, demand = shapes.billing_determinants(reads, np.array([900], np.int32))
    assert energy.to_pylist() == [
        {"meter_idx": 0, "period": "2024-01", "tou": "off_peak", "kwh": 76.0 + 98.0},
        {"meter_idx": 0, "period": "2024-01", "tou": "peak", "kwh": 20.0}]
    d = demand.to_pylist()[0]
    assert d["max_kw"] == 12.0 and d["kwh"] == 194.0
    assert int(d["max_interval_end"].timestamp()) == T0 + 5 * 86_400 + 900 * 5
