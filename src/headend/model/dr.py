"""Tariffs and demand response: kinds, day types, baseline methods (the one source of truth).

A **tariff** prices energy [currency/kWh] by one of :data:`TARIFF_KINDS`; time-of-use and
critical-peak tariffs split each local day of a season into periods by
:data:`DAY_TYPES`. Tiers (consumption blocks per billing period) add to any kind.
docs/codes.md (the tables) and docs/dr.md (the YAML schema) are written from here.

**Measurement and verification (M&V)** of a demand-response event compares what each
meter used during the event with a *baseline*, what it would have used without the
event; :data:`BASELINE_METHODS` names the methods. The shed is baseline minus actual.

References
----------
CAISO tariff, section 4.13.4 (Customer Load Baseline Methodology, 10-in-10 with a day-of
adjustment capped at 20 %); NYISO Day-Ahead Demand Response Program Manual, section on
the weekday Average Day CBL (the 5 highest of the 10 most recent eligible weekdays).
See docs/dr.md for the exact rules headend implements.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

__all__ = [
    "BASELINE_METHODS",
    "CRITICAL_PEAK_PERIOD",
    "DAY_TYPES",
    "DR_RESULT",
    "FLAT_PERIOD",
    "REAL_TIME_PERIOD",
    "TARIFF_KINDS",
]

#: tariff kind -> what it prices
TARIFF_KINDS: Final[dict[str, str]] = {
    "flat": "one energy price at every hour",
    "tou": "time-of-use: a price per period of the local day, by season and day type",
    "cpp": "critical peak: time-of-use, with a critical-peak price in a window of the "
           "event days the utility calls",
    "rtp": "real-time: a price series (each price holds from its start to the next one)",
}

#: day type -> which local days it is (a holiday is a holiday whatever its weekday)
DAY_TYPES: Final[dict[str, str]] = {
    "weekday": "Monday to Friday, not a holiday of the tariff",
    "weekend": "Saturday and Sunday, not a holiday of the tariff",
    "holiday": "a date in the tariff's holiday list",
}

#: the period name every interval of a flat tariff gets
FLAT_PERIOD: Final = "flat"
#: the period name of an interval priced at a critical-peak price
CRITICAL_PEAK_PERIOD: Final = "critical_peak"
#: the period name of an interval priced by a real-time series
REAL_TIME_PERIOD: Final = "real_time"

#: baseline method -> how it is computed (docs/dr.md gives the rules in full)
BASELINE_METHODS: Final[dict[str, str]] = {
    "10of10": "mean of the 10 most recent eligible weekdays (CAISO 10-in-10), same hours, "
              "with a day-of adjustment capped at +/-20 %",
    "high5of10": "mean of the 5 of those 10 days with the highest use in the event window "
                 "(NYISO weekday Average Day CBL), same day-of adjustment",
}

#: per-meter result of an event's M&V (``headend.dr.measure``)
DR_RESULT: Final = pa.schema([
    pa.field("meter_id", pa.string(), nullable=False),
    pa.field("opted_out", pa.bool_(), nullable=False),
    pa.field("baseline_kwh", pa.float64()),  # null: too few eligible days
    pa.field("actual_kwh", pa.float64()),  # null: reads missing in the event window
    pa.field("shed_kwh", pa.float64()),  # baseline - actual; null if either is
])
