"""Weather kept in the data directory: its home is :mod:`headend.store.weather`.

Re-exported here, where analytics users have found it (``headend.analytics.WeatherStore``).
"""

from headend.store.weather import WeatherAppend, WeatherStore

__all__ = ["WeatherAppend", "WeatherStore"]
