"""The CLI's allocator setting (planner/cli/allocator.py): applied on glibc, harmless elsewhere."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from planner.cli import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_glibc_takes_the_thresholds_and_numpy_still_computes():
    assert allocator.keep_freed_memory() is True
    x = np.arange(2_000_000, dtype=float)  # a block above glibc's default 128 KiB mmap threshold
    assert float((x * 2.0 - x).sum()) == pytest.approx(float(x.sum()))


def test_no_c_library_found_means_no_setting(monkeypatch):
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert allocator.keep_freed_memory() is False

