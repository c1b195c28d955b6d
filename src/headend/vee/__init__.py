"""Validation, estimation and editing (VEE) of interval reads, with a version store.

The core (:mod:`~headend.vee.grid`, :mod:`~headend.vee.validate`,
:mod:`~headend.vee.estimate`, :func:`~headend.vee.run.vee_tables`) is pure and works
on dense (meter x interval) NumPy matrices; :class:`VersionStore` and :func:`run_vee`
are the I/O around it. See docs/vee.md for the rules and their references.
"""

from __future__ import annotations

from headend.vee.config import DEFAULT_CONFIG, VeeConfig
from headend.vee.estimate import Estimation, estimate
from headend.vee.grid import Grid, LocalCalendar, build_grids, local_calendar
from headend.vee.listener import VeeListener
from headend.vee.run import VeeSummary, run_vee, vee_tables, vee_window
from headend.vee.validate import Validation, register_spans, validate
from headend.vee.versions import VersionStore, current_reads

__all__ = [
    "DEFAULT_CONFIG",
    "Estimation",
    "Grid",
    "LocalCalendar",
    "Validation",
    "VeeConfig",
    "VeeListener",
    "VeeSummary",
    "VersionStore",
    "build_grids",
    "current_reads",
    "estimate",
    "local_calendar",
    "register_spans",
    "run_vee",
    "validate",
    "vee_tables",
    "vee_window",
]
