"""The grade reached at the landmark as a feature: hand-built timelines, one cut at L, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.landmarks import LandmarkSpec, Target, grades_from_events, landmark_matrix
from tests.features.test_features_values import events, measurements, treatments

SPEC = LandmarkSpec(landmarks_hours=(0.0, 24.0, 48.0, 72.0), analytes=("IL6",),
                    targets=(Target("crs_severe", "CRS", 3), Target("icans_severe", "ICANS", 3)))
PATIENTS = pd.DataFrame({"patient_id": pd.array(["A", "B"], dtype="str")})
MEASUREMENTS = measurements([("A", 1.0, "IL6", 5.0), ("B", 1.0, "IL6", 5.0)])
GRADE_FEATURES = ["crs_grade__current", "crs_grade__max", "crs_grade__hours_since_onset",
                  "icans_grade__current", "icans_grade__max", "icans_grade__hours_since_onset"]


def grades(rows: list[tuple]) -> pd.DataFrame:
    """A grade timeline as ``crs grade`` writes it for featurize: (patient, hours, event, grade)."""
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "event", "grade"])
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "event": "str", "grade": "int8"})


def matrix(**tables: pd.DataFrame) -> pd.DataFrame:
    out = landmark_matrix({"measurements": MEASUREMENTS, "patients": PATIENTS, **tables}, SPEC)
    return out.set_index(["patient_id", "landmark_hours"])


def test_given_onsets_give_the_highest_grade_so_far():
    """Events are onsets: CRS 1 at 10 h, 2 at 30 h; ICANS 3 at 60 h (patient A). B has none: grade 0."""
    ev = events([("A", "CRS", 1, 10.0), ("A", "CRS", 2, 30.0), ("A", "ICANS", 3, 60.0)])
    a = matrix(events=ev).loc["A", GRADE_FEATURES]
    assert a["crs_grade__current"].tolist() == [0, 1, 2, 2]
    assert a["crs_grade__max"].tolist() == [0, 1, 2, 2]
    np.testing.assert_array_equal(a["crs_grade__hours_since_onset"], [np.nan, 14.0, 38.0, 62.0])
    assert a["icans_grade__current"].tolist() == [0, 0, 0, 3]
    b = matrix(events=ev).loc["B", GRADE_FEATURES]
    assert (b[["crs_grade__current", "crs_grade__max", "icans_grade__max"]] == 0).all().all()
    assert b["crs_grade__hours_since_onset"].isna().all()


def test_a_derived_timeline_can_fall_back():
    """Graded from observations (first assessment at -2 h): CRS 2 from hypoxia at 10 h, back to 0 at 40 h:
    current 0 at 48 h, max 2; the hypoxia component is 0 before, 2 from 10 h; B never assessed: NaN."""
    timeline = grades([("A", -2.0, "HYPOXIA", 0), ("A", -2.0, "HYPOTENSION", 0), ("A", 10.0, "CRS", 2),
                       ("A", 10.0, "HYPOXIA", 2), ("A", 40.0, "CRS", 0), ("A", 40.0, "HYPOXIA", 0)])
    out = matrix(grades=timeline)
    a = out.loc["A"]
    assert a["crs_grade__current"].tolist() == [0, 2, 0, 0]
    assert a["crs_grade__max"].tolist() == [0, 2, 2, 2]
    assert a["hypoxia__max_grade"].tolist() == [0, 2, 2, 2]
    assert a["hypotension__max_grade"].tolist() == [0, 0, 0, 0]
    assert out.loc["B", ["hypoxia__max_grade", "hypotension__max_grade"]].isna().all().all()


def test_components_are_nan_without_graded_observations():
    """Given onsets carry no hypotension / hypoxia component: those features are missing, never 0."""
    out = matrix(events=events([("A", "CRS", 2, 10.0)]))
    assert out["hypoxia__max_grade"].isna().all() and out["hypotension__max_grade"].isna().all()


def test_vasopressors_so_far():
    tr = treatments([("A", 30.0, "norepinephrine"), ("B", 80.0, "vasopressin")])
    out = matrix(treatments=tr)
    assert out.loc["A", "vasopressors__given"].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(out.loc["A", "vasopressors__hours_since"], [np.nan, np.nan, 18.0, 42.0])
    assert out.loc["B", "vasopressors__given"].tolist() == [0, 0, 0, 0]


def test_patients_at_the_target_grade_are_not_at_risk_but_lower_grades_are():
    ev = events([("A", "CRS", 2, 10.0), ("A", "CRS", 3, 30.0)])
    a = matrix(events=ev).loc["A"]
    assert a["label__crs_severe"].tolist()[:2] == [1.0, 1.0]  # grade 2 at 24 h: still at risk, with its grade
    assert a["crs_grade__current"].tolist()[:2] == [0, 2]
    assert np.isnan(a["label__crs_severe"].tolist()[2:]).all()


def test_grades_from_events_keeps_the_running_maximum():
    ev = events([("A", "CRS", 3, 20.0), ("A", "CRS", 2, 30.0), ("A", "DEATH", 5, 40.0)])
    assert grades_from_events(ev)["grade"].tolist() == [3, 3]
    assert grades_from_events(events([("A", "DEATH", 5, 40.0)])).empty  # deaths only (e.g. a mortality cohort)


KEYS = ["CRS", "ICANS", "HYPOTENSION", "HYPOXIA"]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["A", "B"]), st.floats(-24, 120), st.sampled_from(KEYS),
                            st.integers(0, 4)), max_size=12),
    landmark=st.sampled_from([0.0, 24.0, 48.0, 72.0]),
    later=st.lists(st.tuples(st.sampled_from(["A", "B"]), st.floats(0.001, 200), st.sampled_from(KEYS),
                             st.integers(0, 5)), min_size=1, max_size=6),
)
def test_grade_rows_after_the_landmark_change_nothing(rows, landmark, later):
    """Adding timeline rows after L never moves a feature at L."""
    before = grades(rows)
    after = pd.concat([before, grades([(p, landmark + dt, e, g) for p, dt, e, g in later])],
                      ignore_index=True)
    features = [*GRADE_FEATURES, "hypotension__max_grade", "hypoxia__max_grade"]
    a = matrix(grades=before).xs(landmark, level="landmark_hours")[features]
    b = matrix(grades=after).xs(landmark, level="landmark_hours")[features]
    pd.testing.assert_frame_equal(a, b)
