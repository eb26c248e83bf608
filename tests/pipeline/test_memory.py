"""The memory settings ingest and featurize run under (issue 14) change how fast they run, never what
they return, and are restored when the stage ends."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import featurize, memory
from tests.pipeline.test_featurize import _config, _tables

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _thp_disabled() -> int:
    return ctypes.CDLL(None, use_errno=True).prctl(memory._PR_GET_THP_DISABLE, 0, 0, 0, 0)


@linux_only
def test_small_pages_turns_huge_pages_off_and_restores_the_setting() -> None:
    before = _thp_disabled()
    with memory.small_pages():
        assert _thp_disabled() == 1
    assert _thp_disabled() == before


@linux_only
def test_small_pages_restores_the_setting_when_the_stage_fails() -> None:
    before = _thp_disabled()
    with pytest.raises(RuntimeError, match="boom"), memory.small_pages():
        raise RuntimeError("boom")
    assert _thp_disabled() == before


def test_featurize_under_small_pages_gives_the_same_table() -> None:
    config, tables = _config(), _tables()
    outside = featurize.landmark_table(config, tables)[0]
    with memory.small_pages():
        inside = featurize.landmark_table(config, tables)[0]
    pd.testing.assert_frame_equal(inside, outside, check_exact=True)


def test_reuse_freed_memory_changes_no_output() -> None:
    """The allocator setting featurize runs under (issue 14) only changes where arrays live: the matrix
    and summary equal those built outside it, and it can be entered again after it was left."""
    config, tables = _config(), _tables()
    outside = featurize.landmark_table(config, tables)[0]
    summary = featurize.training_summary(outside, tables["measurements"])
    for _ in range(2):
        with memory.reuse_freed_memory():
            inside = featurize.landmark_table(config, tables)[0]
            big = np.ones(5_000_000)  # 40 MB: from the heap while inside
            assert big.sum() == 5_000_000
            assert featurize.training_summary(inside, tables["measurements"]) == summary
        pd.testing.assert_frame_equal(inside, outside, check_exact=True)
