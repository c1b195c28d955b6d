"""The allocator tuning of the ``headend`` process (glibc mallopt)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from headend import _allocator

#: page faults of five rounds of a 40 MB temporary, in a fresh interpreter
_PROBE = """
import resource, sys
import numpy as np
from headend import _allocator
if sys.argv[1] == "tuned":
    assert _allocator.tune()
n = 40_000_000 // 8
np.ones(n)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    np.ones(n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_tuning_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_MALLOC_TUNING", "0")
    assert _allocator.tune() is False


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuning_on_glibc_keeps_large_temporaries_in_the_heap() -> None:
    untuned, tuned = _faults("default"), _faults("tuned")
    assert tuned * 4 < untuned, (tuned, untuned)
