"""headend: an open-source head-end system for smart-meter (AMI) networks."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
