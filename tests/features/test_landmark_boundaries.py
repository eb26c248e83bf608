"""Every documented edge of the landmark cut, with patients a person can check by hand.

A fast, deterministic look-ahead guard next to the hypothesis test: one value moved to exactly L, or to
L + 1 minute, decides which features change. Labels and the competing death use the same edges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import analyte_feature_name
from features.landmarks import LandmarkSpec, Target, landmark_matrix
from tests.features.test_features_values import events, measurements

L = 24.0
MINUTE = 1 / 60
CRS3 = Target("crs_severe", "CRS", 3)
SPEC = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6",), targets=(CRS3,), horizon_hours=48.0,
                    baseline_window_hours=168.0, baseline_fallback_hours=0.0)
PATIENTS = pd.DataFrame({"patient_id": pd.array(["A"], dtype="str")})


def row(measurement_rows: list[tuple], event_rows: list[tuple] | None = None) -> pd.Series:
    tables = {"measurements": measurements(measurement_rows), "patients": PATIENTS,
              "events": events(event_rows or [])}
    frame = landmark_matrix(tables, SPEC)
    assert len(frame) == 1
    return frame.iloc[0]


def feature(name: str) -> str:
    return analyte_feature_name("IL6", name)


BASE = [("A", -10.0, "IL6", 5.0), ("A", 12.0, "IL6", 20.0)]


def test_a_value_at_exactly_L_is_used():
    at_l = row([*BASE, ("A", L, "IL6", 80.0)])
    assert at_l[feature("latest")] == 80.0
    assert at_l[feature("count")] == 3
    assert at_l[feature("max")] == 80.0


def test_a_value_one_minute_after_L_changes_nothing():
    without = row(BASE)
    late = row([*BASE, ("A", L + MINUTE, "IL6", 80.0)])
    pd.testing.assert_series_equal(without, late)
    assert late[feature("latest")] == 20.0 and late[feature("count")] == 2


def test_baseline_window_lower_edge_is_inclusive():
    edge = -SPEC.baseline_window_hours
    inside = row([("A", edge, "IL6", 7.0), ("A", 12.0, "IL6", 20.0)])
    outside = row([("A", edge - MINUTE, "IL6", 7.0), ("A", 12.0, "IL6", 20.0)])
    assert inside[feature("baseline")] == 7.0
    assert np.isnan(outside[feature("baseline")])


def test_baseline_upper_edge_is_the_anchor():
    at_anchor = row([("A", 0.0, "IL6", 7.0), ("A", 12.0, "IL6", 20.0)])
    assert at_anchor[feature("baseline")] == 7.0
    just_after = row([("A", MINUTE, "IL6", 7.0), ("A", 12.0, "IL6", 20.0)])
    assert np.isnan(just_after[feature("baseline")])  # fallback is off in SPEC


@pytest.mark.parametrize(("onset", "label"), [
    (L, np.nan),                       # onset at exactly L: already had it, not at risk
    (L + MINUTE, 1.0),                 # one minute later: a future event
    (L + SPEC.horizon_hours, 1.0),     # the horizon's end is inside
    (L + SPEC.horizon_hours + MINUTE, 0.0),
])
def test_onset_edges(onset, label):
    got = row(BASE, [("A", "CRS", 3, onset)])["label__crs_severe"]
    assert (np.isnan(got) and np.isnan(label)) or got == label


def test_grade_below_target_is_no_onset():
    assert row(BASE, [("A", "CRS", 2, L + 1)])["label__crs_severe"] == 0.0


@pytest.mark.parametrize(("death", "label"), [(L, np.nan), (L - MINUTE, np.nan), (L + MINUTE, 0.0)])
def test_death_at_or_before_L_ends_the_time_at_risk(death, label):
    got = row(BASE, [("A", "DEATH", 5, death)])["label__crs_severe"]
    assert (np.isnan(got) and np.isnan(label)) or got == label
