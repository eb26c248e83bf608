"""``encode_cohort`` groups (patient, hours)-sorted measurements by analyte block by block (issue 14);
any block size gives the very series of one whole-table stable sort, and unsorted input still works."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.landmarks as landmarks
from features.landmarks import encode_cohort, patient_index
from tests.features.test_patient_chunks import cohort

CODES = ["IL6", "CRP", "FERRITIN", "TEMP", "LDH"]


def _sorted_measurements() -> tuple[pd.DataFrame, np.ndarray]:
    tables = cohort()
    m = tables["measurements"].sort_values(["patient_id", "hours_since_anchor"], kind="stable").reset_index(drop=True)
    return m, patient_index(tables["patients"])


def _reference(m: pd.DataFrame, ids: np.ndarray, code: str) -> pd.DataFrame:
    """The rows of ``code`` of known patients with finite time and value, by (patient, hours), ties in input order."""
    patient = pd.Index(ids).get_indexer(m["patient_id"].astype("str"))
    rows = m.assign(code=patient)[(m["analyte"] == code) & (patient >= 0) & np.isfinite(m["value"])]
    return rows.sort_values(["code", "hours_since_anchor"], kind="stable")


@pytest.mark.parametrize("block_rows", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("shuffle", [False, True])
def test_series_equal_the_whole_table_sort(monkeypatch: pytest.MonkeyPatch, block_rows: int, shuffle: bool) -> None:
    m, ids = _sorted_measurements()
    if shuffle:
        m = m.sample(frac=1.0, random_state=4).reset_index(drop=True)
    monkeypatch.setattr(landmarks, "BLOCK_ROWS", block_rows)
    timeline = encode_cohort(m, ids, None, CODES)
    for code in CODES:
        ref = _reference(m, ids, code)
        s = timeline.analytes[code]
        assert np.array_equal(s.patient, ref["code"].to_numpy()) and s.patient.dtype == np.int64
        assert np.array_equal(s.hours, ref["hours_since_anchor"].to_numpy())
        assert np.array_equal(s.value, ref["value"].to_numpy())
    assert len(timeline.analytes["IL6"].hours) > 0 and len(timeline.analytes["LDH"].hours) == 0
