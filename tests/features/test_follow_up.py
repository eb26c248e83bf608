"""Labels that a short follow-up cannot support are censored, and any grade-5 event is a death
(issue 11: "a patient followed for 10 days is not a 'no CRS' for a 30-day horizon")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.landmarks import LandmarkSpec, Target, landmark_matrix
from tests.features.test_features_values import events, measurements

SPEC = LandmarkSpec(landmarks_hours=(24.0, 72.0), analytes=("IL6",), horizon_hours=240.0,
                    targets=(Target("crs_severe", "CRS", 3), Target("icans_severe", "ICANS", 3)))


def _labels(patients: pd.DataFrame, ev: pd.DataFrame, target: str = "crs_severe") -> dict[str, list[float]]:
    m = measurements([(p, 1.0, "IL6", 5.0) for p in patients["patient_id"]])
    out = landmark_matrix({"measurements": m, "patients": patients, "events": ev}, SPEC)
    return {p: rows[f"label__{target}"].tolist() for p, rows in out.groupby("patient_id")}


def test_a_short_follow_up_censors_no_event_labels_but_keeps_events():
    patients = pd.DataFrame({"patient_id": pd.array(["A", "B", "C", "D"], dtype="str"),
                             "follow_up_end_hours": [100.0, 60.0, 20.0, np.nan]})
    ev = events([("B", "CRS", 3, 50.0)])
    labels = _labels(patients, ev)
    assert np.isnan(labels["A"]).all()  # followed 100 h < L + 240 h, no event: unknown, not 0
    assert labels["B"][0] == 1.0 and np.isnan(labels["B"][1])  # the event stands; after it, not at risk
    assert np.isnan(labels["C"]).all()  # follow-up ended before the first landmark
    assert labels["D"] == [0.0, 0.0]  # no follow-up end given: followed to the end, as before


def test_without_the_column_nothing_changes():
    patients = pd.DataFrame({"patient_id": pd.array(["A"], dtype="str")})
    assert _labels(patients, events([]).astype({"grade": "int8"})) == {"A": [0.0, 0.0]}


def test_a_grade_5_event_of_any_kind_is_a_death():
    """CRS grade 5 at 30 h: dead, so not at risk of ICANS at 72 h, without a DEATH row."""
    patients = pd.DataFrame({"patient_id": pd.array(["A", "B"], dtype="str")})
    ev = events([("A", "CRS", 5, 30.0), ("B", "CRS", 4, 30.0)])
    labels = _labels(patients, ev, "icans_severe")
    assert labels["A"][0] == 0.0 and np.isnan(labels["A"][1])
    assert labels["B"] == [0.0, 0.0]


def test_published_scores_take_their_baseline_before_lymphodepletion_when_known():
    """EASIX = LDH x creatinine / platelets. A: lymphodepletion at -120 h: the values at -130 h (before it),
    not the later -10 h ones. B: no start known: the usual last value in [-168, 0] h, never the values
    measured after the infusion (+12 h, before the landmark)."""
    rows = []
    for pid in ("A", "B"):
        rows += [(pid, -130.0, "LDH", 200.0), (pid, -130.0, "CREAT", 1.0), (pid, -130.0, "PLT", 100.0),
                 (pid, -10.0, "LDH", 400.0), (pid, -10.0, "CREAT", 2.0), (pid, -10.0, "PLT", 50.0),
                 (pid, 12.0, "LDH", 800.0), (pid, 12.0, "CREAT", 4.0), (pid, 12.0, "PLT", 25.0)]
    patients = pd.DataFrame({"patient_id": pd.array(["A", "B"], dtype="str"),
                             "lymphodepletion_start_hours": [-120.0, np.nan]})
    spec = LandmarkSpec(landmarks_hours=(24.0,), analytes=("LDH",))
    out = landmark_matrix({"measurements": measurements(rows), "patients": patients}, spec).set_index("patient_id")
    assert out.loc["A", "easix__baseline"] == 200.0 * 1.0 / 100.0
    assert out.loc["B", "easix__baseline"] == 400.0 * 2.0 / 50.0
    assert out.loc["A", "ldh__baseline"] == 400.0  # the kinetic baseline stays the pre-infusion one
