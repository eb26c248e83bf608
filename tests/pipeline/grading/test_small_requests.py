"""One new patient's treatments are classed per row (issue 14): the same classes the cohort path's
``Series.map`` of the registry table gives, missing for a drug the registry does not class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.grading import crs
from pipeline.registry import drug_classes

DRUGS = [[], ["tocilizumab"], ["norepinephrine", "vasopressin", "dexamethasone", "nan", "aspirin"],
         ["paracetamol", "tocilizumab", "tocilizumab", "unknown drug", ""]]


@pytest.mark.parametrize("drugs", DRUGS)
def test_few_rows_classes_equal_the_cohort_path(drugs: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.array(drugs, dtype=object)
    fast = crs._drug_classes(rows)
    monkeypatch.setattr(crs, "_FEW_ROWS", -1)
    general = crs._drug_classes(rows)
    expected = pd.Series(rows, dtype=object).map(drug_classes()).to_numpy(dtype=object)
    for got in (fast, general):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert [type(v) for v in got] == [type(v) for v in expected]
        assert pd.Series(got).equals(pd.Series(expected))
