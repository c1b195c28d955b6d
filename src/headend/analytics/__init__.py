"""Analytics on interval reads: the Liu et al. benchmark tasks, load shapes, asset
loading, billing determinants and a day-ahead feeder forecast.

Kernels are pure NumPy (:mod:`~headend.analytics.liu`, :mod:`~headend.analytics.shapes`,
:mod:`~headend.analytics.forecast`); engines (:func:`open_engine`: ``duckdb`` embedded,
``spark``) feed them. See docs/analytics.md.
"""

from __future__ import annotations

from headend.analytics.engine import ENGINES, EmbeddedEngine, Engine, open_engine
from headend.analytics.matrix import HourlyMatrix, matrix_from_hourly, temperature_vector
from headend.analytics.weather import WeatherStore

__all__ = ["ENGINES", "EmbeddedEngine", "Engine", "HourlyMatrix", "WeatherStore",
           "matrix_from_hourly", "open_engine", "temperature_vector"]
