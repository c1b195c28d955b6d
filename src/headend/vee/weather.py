"""Where ingest finds the weather store (kept in :mod:`headend.analytics.weather`)."""

from headend.analytics.weather import WeatherAppend, WeatherStore

__all__ = ["WeatherAppend", "WeatherStore"]
