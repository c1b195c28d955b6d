"""Shared helpers for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children [MB]."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, list[float]]:
    """Median wall and CPU seconds of ``repeat`` runs of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), walls


def dir_bytes(path: Path, suffixes: tuple[str, ...] = ()) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if not suffixes or f.endswith(suffixes):
                total += os.path.getsize(os.path.join(root, f))
    return total


def report(name: str, figures: dict[str, Any], out_dir: Path | None = None) -> None:
    """Print figures as aligned lines and, if asked, save them as JSON."""
    print(f"== {name}")
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        if isinstance(v, float):
            v = f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        elif isinstance(v, int):
            v = f"{v:,}"
        print(f"  {k:<{width}}  {v}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
