import numpy as np
import pytest

from headend.analytics.forecast import day_ahead_forecast
from headend.errors import ConfigError


def test_forecast_of_a_load_the_model_can_represent_has_zero_error():
    d = 30
    temp = 15 + 10 * np.sin(np.arange(d * 24) / 24 / 5)
    base = 100 + 20 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    load = (np.tile(base, d) + 2 * np.maximum(temp - 18, 0))[None]
    fc, err = day_ahead_forecast(load, temp, 3600, ["F1"], holdout=7)
    assert fc.column_names == ["feeder_id", "hour_end", "actual_kw", "forecast_kw"]
    assert fc.num_rows == 7 * 24
    np.testing.assert_allclose(fc.column("forecast_kw").to_numpy(),
                               fc.column("actual_kw").to_numpy(), rtol=1e-6)
    assert err.column("hours").to_pylist() == [168]
    assert err.column("mape_pct").to_numpy()[0] < 1e-4
    assert int(fc.column("hour_end")[0].as_py().timestamp()) == 3600 + 23 * 24 * 3600


def test_mape_is_mean_absolute_percentage_error():
    # a load that doubles on the last day: the forecast (yesterday's level) is off by 50 %
    d = 20
    load = np.ones((1, d * 24)) * 10.0
    load[0, -24:] = 20.0
    temp = np.full(d * 24, 18.0)
    fc, err = day_ahead_forecast(load, temp, 3600, ["F1"], holdout=1, lags=(1,))
    np.testing.assert_allclose(fc.column("forecast_kw").to_numpy(), 10.0, rtol=1e-9)
    np.testing.assert_allclose(err.column("mape_pct").to_numpy(), [50.0], rtol=1e-9)


def test_too_few_days_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 16 days"):
        day_ahead_forecast(np.ones((1, 24 * 10)), np.zeros(240), 3600, ["F"])
