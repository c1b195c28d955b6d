"""The allocator tuning of the ``headend`` process (glibc mallopt)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import resource

import numpy as np
import pytest

from headend import _allocator


def test_tuning_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADEND_MALLOC_TUNING", "0")
    assert _allocator.tune() is False


def _faults_of_temporaries() -> int:
    """Page faults of five rounds of a 40 MB temporary (after a first one)."""
    n = 40_000_000 // 8
    np.ones(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones(n)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuning_on_glibc_keeps_large_temporaries_in_the_heap() -> None:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    try:
        assert mallopt(-3, 128 * 1024)  # glibc's default mmap threshold
        untuned = _faults_of_temporaries()
        assert _allocator.tune() is True
        tuned = _faults_of_temporaries()
    finally:
        _allocator.tune()  # the state headend runs in
    assert tuned * 4 < untuned, (tuned, untuned)
