"""analytes="auto" and the real-data semantics, on hand-built cohorts a human can check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer
from features.selection import choose_analytes


def measurements(rows: list[tuple]) -> pd.DataFrame:
    """Rows (patient, hours, analyte, value, unit, known[, censoring]) as ingest writes them."""
    rows = [(*r, "none") if len(r) == 6 else r for r in rows]
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "analyte", "value", "unit", "known_analyte",
                                     "censoring"])
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "analyte": "str", "value": "float64",
                      "unit": "str", "known_analyte": bool, "censoring": "str"})


PATIENTS = pd.DataFrame({"patient_id": pd.array(["P1", "P2", "P3", "P4"], dtype="str"), "age": [50.0, 60, 70, 80]})

COHORT = measurements([
    # CRP: P1 and P2 by 48 h (P3 only at 60 h, after the last landmark) -> 2 of 4 patients = 0.5
    ("P1", 10.0, "CRP", 20.0, "mg/L", True),
    ("P2", 30.0, "CRP", 40.0, "mg/L", True),
    ("P3", 60.0, "CRP", 80.0, "mg/L", True),
    # IL6: P1 only -> 1 patient = 0.25
    ("P1", 5.0, "IL6", 10.0, "pg/mL", True),
    # LDH: pre-anchor values count too (at or before the last landmark) -> 2 patients = 0.5
    ("P1", -5.0, "LDH", 300.0, "U/L", True),
    ("P2", -5.0, "LDH", 250.0, "U/L", True),
    # Unknown to the registry, one unit, 3 patients = 0.75 -> kept, with a feature-safe name.
    ("P1", 2.0, "Troponin I (hs)", 12.0, "ng/L", False),
    ("P2", 2.0, "Troponin I (hs)", 15.0, "ng/L", False),
    ("P3", 2.0, "Troponin I (hs)", 9.0, "ng/L", False),
    # Unknown with two units (ingest cannot convert it), 3 patients -> excluded with the reason.
    ("P1", 3.0, "Galectin-3", 12.0, "ng/mL", False),
    ("P2", 3.0, "Galectin-3", 15.0, "ug/L", False),
    ("P3", 3.0, "Galectin-3", 15.0, "ug/L", False),
])


def test_choose_analytes_coverage_rule_and_reasons() -> None:
    table = choose_analytes(COHORT, np.array(["P1", "P2", "P3", "P4"], dtype=object), last_landmark=48.0,
                            min_coverage=0.5, min_patients=2).set_index("analyte")
    assert list(table.index) == ["CRP", "GALECTIN-3", "IL6", "LDH", "TROPONIN I (HS)"]
    assert table["n_patients"].to_dict() == {"CRP": 2, "GALECTIN-3": 3, "IL6": 1, "LDH": 2, "TROPONIN I (HS)": 3}
    assert table.loc["CRP", "coverage"] == 0.5 and table.loc["TROPONIN I (HS)", "coverage"] == 0.75
    assert table["used"].to_dict() == {"CRP": True, "GALECTIN-3": False, "IL6": False, "LDH": True,
                                       "TROPONIN I (HS)": True}
    assert "2 units (ng/mL, ug/L)" in table.loc["GALECTIN-3", "reason"]
    assert table.loc["IL6", "reason"] == "1 patients with a value at or before 48 h (min_patients 2)"
    assert not table.loc["TROPONIN I (HS)", "known"] and table.loc["TROPONIN I (HS)", "units"] == ["ng/L"]
    # Coverage below min_coverage with enough patients: 2 of 4 = 0.5 < 0.6.
    strict = choose_analytes(COHORT, np.array(["P1", "P2", "P3", "P4"], dtype=object), 48.0, 0.6, 2)
    assert strict.set_index("analyte").loc["CRP", "reason"] == "coverage 0.500 at or before 48 h (min_coverage 0.6)"
    # The last landmark decides: at 72 h P3's CRP at 60 h counts (3 of 4).
    later = choose_analytes(COHORT, np.array(["P1", "P2", "P3", "P4"], dtype=object), 72.0, 0.6, 2)
    assert later.set_index("analyte").loc["CRP", "used"]


def test_auto_featurizer_learns_analytes_in_fit() -> None:
    fz = LandmarkFeaturizer(landmarks_hours=[24.0, 48.0], min_coverage=0.5, min_patients=2)  # analytes="auto"
    out = fz.fit(COHORT, patients=PATIENTS).transform(COHORT, patients=PATIENTS)
    assert fz.analytes_ == ["CRP", "LDH", "TROPONIN I (HS)"]
    assert "troponin_i_hs__latest" in out.columns and "il6__latest" not in out.columns
    assert fz.get_feature_names_out() == [c for c in out.columns if c != "patient_id"]
    p2 = out[(out["patient_id"] == "P2") & (out["landmark_hours"] == 24.0)].iloc[0]
    assert p2["troponin_i_hs__latest"] == 15.0  # the cohort's own name matched after trim + upper-case
    with pytest.raises(ValueError, match="not fitted"):
        LandmarkFeaturizer().spec()


def test_explicit_list_uses_exactly_the_list() -> None:
    fz = LandmarkFeaturizer(landmarks_hours=[24.0], analytes=["il6", "IFNG"]).fit(COHORT, patients=PATIENTS)
    assert fz.analytes_ == ["IL6", "IFNG"]
    choice = fz.analyte_choice_.set_index("analyte")
    assert choice.loc["IFNG", "used"] and choice.loc["IFNG", "n_patients"] == 0  # listed, absent from the data
    assert choice.loc["CRP", "reason"] == "not in the analytes list"


SEMANTICS = measurements([
    # Q1: no pre-anchor value; IL6 first after the anchor at 6 h (fallback baseline), then 12 and 30 h.
    ("Q1", 6.0, "IL6", 10.0, "pg/mL", True, "left"),  # "<10": below the limit
    ("Q1", 12.0, "IL6", 40.0, "pg/mL", True),
    ("Q1", 30.0, "IL6", 5000.0, "pg/mL", True, "right"),  # ">5000": above the limit
    # Q2: a true baseline at -2 h: the fallback is not used.
    ("Q2", -2.0, "IL6", 4.0, "pg/mL", True),
    ("Q2", 6.0, "IL6", 8.0, "pg/mL", True),
    # Q3: the first value after the anchor comes at 30 h, after the 24 h fallback window.
    ("Q3", 30.0, "IL6", 100.0, "pg/mL", True),
])
Q_PATIENTS = pd.DataFrame({"patient_id": pd.array(["Q1", "Q2", "Q3"], dtype="str")})


@pytest.fixture(scope="module")
def semantics() -> pd.DataFrame:
    fz = LandmarkFeaturizer(landmarks_hours=[0.0, 24.0, 48.0], analytes=["IL6"])
    return fz.fit(SEMANTICS, patients=Q_PATIENTS).transform(SEMANTICS, patients=Q_PATIENTS)


def row(frame: pd.DataFrame, patient: str, landmark: float) -> pd.Series:
    return frame[(frame["patient_id"] == patient) & (frame["landmark_hours"] == landmark)].iloc[0]


def test_fallback_baseline_used_and_flagged(semantics: pd.DataFrame) -> None:
    q1 = row(semantics, "Q1", 24.0)
    assert (q1["il6__baseline"], q1["il6__has_baseline"], q1["il6__baseline_after_anchor"]) == (10.0, 1.0, 1.0)
    assert q1["il6__latest"] == 40.0 and q1["il6__hours_since_latest"] == 12.0  # 24 - 12
    assert q1["il6__fold_change"] == 4.0 and q1["il6__log2_fold_change"] == 2.0  # 40 / 10
    # AUC: (0,0) -> (6,0) -> (12,2) held at 2 to 24: 0 + 6 + 24
    assert q1["il6__auc_log2_fold_change"] == pytest.approx(30.0)
    q1_48 = row(semantics, "Q1", 48.0)
    assert q1_48["il6__baseline"] == 10.0 and q1_48["il6__fold_change"] == 500.0  # 5000 / 10


def test_true_baseline_unchanged(semantics: pd.DataFrame) -> None:
    q2 = row(semantics, "Q2", 24.0)
    assert (q2["il6__baseline"], q2["il6__baseline_after_anchor"]) == (4.0, 0.0)
    assert q2["il6__fold_change"] == 2.0  # 8 / 4
    q2_0 = row(semantics, "Q2", 0.0)  # at L = 0: a baseline but no post-anchor sample yet
    assert q2_0["il6__baseline"] == 4.0 and math.isnan(q2_0["il6__latest"]) and math.isnan(q2_0["il6__fold_change"])
    assert q2_0["il6__first"] == 4.0 and math.isnan(q2_0["il6__log2_latest_over_first"])


def test_latest_is_nan_before_the_first_post_anchor_sample(semantics: pd.DataFrame) -> None:
    q3 = row(semantics, "Q3", 24.0)
    assert q3["il6__count"] == 0.0 and math.isnan(q3["il6__latest"]) and math.isnan(q3["il6__hours_since_latest"])
    assert math.isnan(q3["il6__baseline_after_anchor"]) and q3["il6__has_baseline"] == 0.0
    q3_48 = row(semantics, "Q3", 48.0)
    # 30 h is after min(48, 24): no fallback; the value is the latest, not a baseline.
    assert q3_48["il6__latest"] == 100.0 and math.isnan(q3_48["il6__baseline"])
    assert math.isnan(q3_48["il6__baseline_after_anchor"]) and math.isnan(q3_48["il6__fold_change"])


def test_first_log2_ratio_and_censoring_direction(semantics: pd.DataFrame) -> None:
    q1 = row(semantics, "Q1", 48.0)
    assert q1["il6__first"] == 10.0 and q1["il6__latest"] == 5000.0
    assert q1["il6__log2_latest_over_first"] == pytest.approx(math.log2(500.0))
    assert (q1["il6__n_below_limit"], q1["il6__n_above_limit"]) == (1.0, 1.0)
    q1_24 = row(semantics, "Q1", 24.0)  # the ">5000" at 30 h is not yet known
    assert (q1_24["il6__n_below_limit"], q1_24["il6__n_above_limit"]) == (1.0, 0.0)
    assert q1_24["il6__log2_latest_over_first"] == 2.0  # log2(40 / 10)


def test_fallback_window_parameter() -> None:
    # With a 4 h fallback window Q1's first post-anchor value at 6 h is too late to stand in.
    fz = LandmarkFeaturizer(landmarks_hours=[24.0], analytes=["IL6"], baseline_fallback_hours=4.0)
    out = fz.fit(SEMANTICS, patients=Q_PATIENTS).transform(SEMANTICS, patients=Q_PATIENTS)
    q1 = row(out, "Q1", 24.0)
    assert math.isnan(q1["il6__baseline"]) and math.isnan(q1["il6__baseline_after_anchor"])
