"""Results count from when they were known, not from when the sample was drawn: a research cytokine panel
reported two days later is not a feature at a landmark before it came back (issue 11)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.landmarks import LandmarkSpec, landmark_matrix
from tests.features.test_features_values import measurements

PATIENTS = pd.DataFrame({"patient_id": pd.array(["A"], dtype="str")})
SPEC = LandmarkSpec(landmarks_hours=(24.0, 48.0), analytes=("IL6", "CRP"))


def _matrix(m: pd.DataFrame, spec: LandmarkSpec = SPEC) -> pd.DataFrame:
    return landmark_matrix({"measurements": m, "patients": PATIENTS}, spec).set_index("landmark_hours")


def test_a_result_counts_from_its_result_time():
    """IL-6 sampled at 10 h, reported at 30 h: unknown at 24 h; at 48 h the latest, 38 h old (sample time)."""
    m = measurements([("A", 10.0, "IL6", 50.0), ("A", 12.0, "CRP", 20.0)]).assign(
        result_hours_since_anchor=[30.0, np.nan])
    out = _matrix(m)
    assert np.isnan(out.loc[24.0, "il6__latest"]) and out.loc[24.0, "il6__count"] == 0
    assert out.loc[48.0, "il6__latest"] == 50.0 and out.loc[48.0, "il6__hours_since_latest"] == 38.0
    assert out.loc[24.0, "crp__latest"] == 20.0  # no result time: known when sampled


def test_a_lag_per_analyte_stands_in_for_missing_result_times():
    spec = LandmarkSpec(landmarks_hours=(24.0, 48.0, 72.0), analytes=("IL6", "CRP"), result_lag_hours=(("IL6", 48.0),))
    m = measurements([("A", 10.0, "IL6", 50.0), ("A", 12.0, "CRP", 20.0)])
    out = _matrix(m, spec)
    assert out["il6__count"].tolist() == [0, 0, 1]  # known at 58 h
    assert out["crp__count"].tolist() == [1, 1, 1]
    # A given result time wins over the lag (never earlier than the sample).
    m = m.assign(result_hours_since_anchor=[20.0, np.nan])
    assert _matrix(m, spec)["il6__count"].tolist() == [1, 1, 1]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.floats(-48, 100), st.floats(0, 100), st.floats(0.1, 500)), min_size=1, max_size=10),
    changed=st.floats(0.1, 500),
)
def test_values_known_after_the_landmark_change_nothing(rows, changed):
    """Changing a value whose result came back after L never moves a feature at L."""
    m = measurements([("A", t, "IL6", v) for t, _, v in rows]).assign(
        result_hours_since_anchor=[t + lag for t, lag, _ in rows])
    before = _matrix(m).loc[24.0]
    late = (m["result_hours_since_anchor"] > 24.0).to_numpy()
    after = _matrix(m.assign(value=np.where(late, changed, m["value"]))).loc[24.0]
    pd.testing.assert_series_equal(before, after)
