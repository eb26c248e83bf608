"""Patient codes hashed once per run of equal ids give the same codes as hashing every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.landmarks import _arrow_strings, _codes, _codes_hashed

UNIVERSE = ["A", "B", "C"]


@pytest.mark.parametrize("values", [
    ["A", "A", "B", "B", "B", "C"],                    # runs (as ingest writes them)
    ["A", "B", "A", "C", "B", "A"],                    # no runs
    ["A", None, None, "Z", "Z", "B", None, "A"],       # nulls and unknown ids, in runs
    ["B"],
    [],
])
def test_run_codes_equal_row_codes(values: list[str | None]) -> None:
    series = pd.Series(values, dtype="str")
    expected = np.array([UNIVERSE.index(v) if v in UNIVERSE else -1 for v in values], dtype=np.int64)
    np.testing.assert_array_equal(_codes(series, UNIVERSE), expected)
    np.testing.assert_array_equal(_codes_hashed(_arrow_strings(series), UNIVERSE), expected)


def test_run_codes_on_a_long_shuffled_column() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(rng.choice([*UNIVERSE, "Q"], 300), rng.integers(1, 5, 300))
    series = pd.Series(ids, dtype="str")
    expected = np.array([UNIVERSE.index(v) if v in UNIVERSE else -1 for v in ids], dtype=np.int64)
    np.testing.assert_array_equal(_codes(series, UNIVERSE), expected)
