"""``encode_cohort(until_hours=L)`` (issue 14: the landmark matrix does not copy rows no landmark can see)
holds exactly the rows of the whole encoded cohort cut at L, in the same order, result times included."""

from __future__ import annotations

import numpy as np
import pytest

from features.landmarks import SortedRows, cut_at_landmark, encode_cohort, patient_index
from tests.features.test_patient_chunks import cohort


def _same(a: SortedRows, b: SortedRows) -> None:
    for name in ("patient", "hours", "value", "censoring", "known"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name


@pytest.mark.parametrize("result_times", [False, True])
@pytest.mark.parametrize("until", [-10.0, 0.0, 24.0, 72.0])
def test_encoded_until_equals_the_whole_cohort_cut_at_that_hour(until: float, result_times: bool) -> None:
    tables = cohort()
    m = tables["measurements"]
    if result_times:
        rng = np.random.default_rng(5)
        lagged = m["hours_since_anchor"] + rng.choice([np.nan, 0.0, 30.0], len(m))
        m = m.assign(result_hours_since_anchor=lagged)
    ids = patient_index(tables["patients"])
    codes = ["IL6", "CRP", "FERRITIN", "TEMP", "LDH"]
    lags = {"CRP": 12.0}
    whole = encode_cohort(m, ids, tables["treatments"], codes, result_lag_hours=lags)
    early = encode_cohort(m, ids, tables["treatments"], codes, result_lag_hours=lags, until_hours=until)
    cut = cut_at_landmark(whole, until)
    assert list(early.analytes) == codes
    for code in codes:
        _same(early.analytes[code], cut.analytes[code])
    assert sum(len(s.hours) for s in early.analytes.values()) < sum(len(s.hours) for s in whole.analytes.values())
