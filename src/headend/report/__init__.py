"""The operations report (``headend report``): tables as CSV, plots as PNG, one HTML page."""

from __future__ import annotations

from headend.report.render import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
