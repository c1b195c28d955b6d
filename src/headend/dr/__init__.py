"""Homes and demand response (issue 13): tariffs, pricing, measured shed (M&V).

Pure core: :mod:`~headend.dr.tariff` (the tariff schema), :mod:`~headend.dr.pricing`
(prices and billing determinants of interval reads), :mod:`~headend.dr.baseline` (the
M&V kernels on meter x day x slot arrays). At the edge: :mod:`~headend.dr.tariffs`
(versions kept in the data directory) and :mod:`~headend.dr.measure` (an event's M&V
from a store). See docs/dr.md.
"""

from __future__ import annotations

from headend.dr.pricing import determinants, interval_kwh, price_intervals
from headend.dr.tariff import Tariff, load_tariff, parse_tariff

__all__ = ["Tariff", "determinants", "interval_kwh", "load_tariff", "parse_tariff",
           "price_intervals"]
