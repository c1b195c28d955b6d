"""Day-ahead feeder load forecast with its error on held-back days.

For each feeder and hour of day ``k`` (UTC), a linear model is fitted on the training
days::

    L[d,k] = c + a1 L[d-1,k] + a7 L[d-7,k] + b_cool max(T[d,k] - 18, 0)
             + b_heat max(18 - T[d,k], 0)

(``L`` the feeder's hourly load [kW], ``T`` the temperature [degC]). The last
``holdout`` days are held back: each is forecast a day ahead from the actual loads of
the days before it and the day's temperature (a perfect weather forecast), without
refitting. The error is the mean absolute percentage error over the held-back hours
with a positive load:

    MAPE = 100 / n * sum |L - F| / L

References
----------
T. Hong, S. Fan, "Probabilistic electric load forecasting: A tutorial review",
International Journal of Forecasting 32(3), 2016 (linear models with lagged load and
temperature terms; MAPE as the customary point-forecast error).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headend.errors import ConfigError

__all__ = ["BALANCE_C", "FORECAST_LAGS", "day_ahead_forecast"]

F64 = npt.NDArray[np.float64]
FORECAST_LAGS = (1, 7)
#: balance temperature of the heating and cooling terms [degC]
BALANCE_C = 18.0


def _features(load: F64, temp: F64, lags: tuple[int, ...]) -> F64:
    """(G, D, 24, P) features of every day (NaN where a lag is before the data)."""
    g, d, _ = load.shape
    p = 1 + len(lags) + 2
    f = np.full((g, d, 24, p), np.nan)
    f[..., 0] = 1.0
    for i, lag in enumerate(lags):
        f[:, lag:, :, 1 + i] = load[:, :d - lag, :]
    f[..., -2] = np.maximum(temp - BALANCE_C, 0.0)[None]
    f[..., -1] = np.maximum(BALANCE_C - temp, 0.0)[None]
    return f


def day_ahead_forecast(load: F64, temp: F64, t0: int, names: list[str], *,
                       holdout: int = 7, lags: tuple[int, ...] = FORECAST_LAGS
                       ) -> tuple[pa.Table, pa.Table]:
    """Fit on all but the last ``holdout`` days, forecast those days, report MAPE.

    Parameters
    ----------
    load : ndarray, shape (G, 24 * D)
        Hourly load of each feeder [kW] (= kWh per hour); columns whole UTC days.
    temp : ndarray, shape (24 * D,)
        Temperature [degC]; NaN hours are left out of the fit.
    t0 : int
        Hour end of column 0 [Unix s].
    names : list of str
        Feeder of each row.

    Returns
    -------
    forecast : pyarrow.Table
        ``feeder_id, hour_end, actual_kw, forecast_kw`` for the held-back hours.
    error : pyarrow.Table
        ``feeder_id, mape_pct, hours``.
    """
    g, ncol = load.shape
    d = ncol // 24
    need = max(lags) + 2 + holdout
    if d < need:
        raise ConfigError(f"forecast needs at least {need} days of load, got {d}")
    y = load.reshape(g, d, 24)
    if np.isnan(temp).all():  # no weather: the temperature terms vanish
        temp = np.full(ncol, BALANCE_C)
    tt = temp.reshape(d, 24)
    f = _features(y, tt, lags)
    train = np.zeros(d, bool)
    train[max(lags):d - holdout] = True
    w = (train[None, :, None] & ~np.isnan(y) & ~np.isnan(f).any(axis=-1)).astype(np.float64)
    fz = np.nan_to_num(f) * w[..., None]
    yz = np.nan_to_num(y) * w
    xtx = np.einsum("gdki,gdkj->gkij", fz, fz)
    xty = np.einsum("gdki,gdk->gki", fz, yz)
    coef = np.einsum("gkij,gkj->gki", np.linalg.pinv(xtx, hermitian=True), xty)
    fc = np.einsum("gdki,gki->gdk", f[:, d - holdout:], coef)
    act = y[:, d - holdout:]
    ok = ~np.isnan(act) & ~np.isnan(fc) & (act > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ape = np.where(ok, np.abs(act - fc) / np.where(ok, act, 1.0), 0.0)
        n = ok.sum(axis=(1, 2))
        mape = 100.0 * ape.sum(axis=(1, 2)) / n
    cols = np.arange((d - holdout) * 24, d * 24, dtype=np.int64)
    forecast = pa.table({
        "feeder_id": pa.array(np.repeat(np.array(names, dtype=object), len(cols)).astype(str)),
        "hour_end": pa.array(np.tile(t0 + cols * 3600, g), pa.int64()).cast(
            pa.timestamp("s", tz="UTC")),
        "actual_kw": act.reshape(g, -1).ravel(),
        "forecast_kw": fc.reshape(g, -1).ravel(),
    })
    error = pa.table({"feeder_id": pa.array([str(n) for n in names]),
                      "mape_pct": mape, "hours": pa.array(n, pa.int64())})
    return forecast, error
