"""Hand-computed values on a tiny cohort for each summary, score and label rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer, feature_table
from features.errors import FeatureError
from features.landmarks import LandmarkSpec, Target, landmark_matrix
from pipeline.registry import load_registry, normalize_unit

TARGETS = (Target("crs_severe", "CRS", 3), Target("icans_severe", "ICANS", 3))


def canonical(code: str, value: float, unit: str) -> float:
    """Normalise like ingest does, with the registry's conversion table (canonical = v * scale + offset)."""
    scale, offset = load_registry().conversions[(code, normalize_unit(unit))]
    return value * scale + offset


def measurements(rows: list[tuple]) -> pd.DataFrame:
    """Rows (patient_id, hours, analyte, value[, censoring]) in the ingest output contract."""
    rows = [(*r, "none") if len(r) == 4 else r for r in rows]
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "analyte", "value", "censoring"])
    return df.assign(
        patient_id=df["patient_id"].astype("str"),
        hours_since_anchor=df["hours_since_anchor"].astype("float64"),
        analyte=df["analyte"].astype("str"),
        value=df["value"].astype("float64"),
        unit=pd.Series("x", index=df.index, dtype="str"),
        censoring=df["censoring"].astype("str"),
        known_analyte=True,
    )


def events(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "event", "grade", "hours_since_anchor"])
    return df.astype({"patient_id": "str", "event": "str", "grade": "int8", "hours_since_anchor": "float64"})


def treatments(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "drug"])
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "drug": "str"}).assign(
        dose=np.nan, unit=pd.Series(pd.NA, index=df.index, dtype="str")
    )


PATIENTS = pd.DataFrame({
    "patient_id": pd.array(["A", "B", "C", "D"], dtype="str"),
    "age": [60.0, 45.0, np.nan, 70.0],
    "product": pd.array(["tisa-cel", "axi-cel", None, "axi-cel"], dtype="str"),
})

MEASUREMENTS = measurements([
    # A: IL6 baseline 4 at -10 h, rising after infusion at irregular times; one censored value.
    ("A", -48.0, "IL6", 2.0, "left"),
    ("A", -10.0, "IL6", 4.0),
    ("A", 6.0, "IL6", 8.0),
    ("A", 20.0, "IL6", 32.0),
    ("A", 23.0, "IL6", 64.0),
    ("A", 30.0, "IL6", 1000.0),  # after every landmark used below
    # A: score inputs, given in mixed units and normalised with the registry (as ingest does).
    ("A", -24.0, "LDH", canonical("LDH", 5.0, "ukat/L")),  # 300 U/L
    ("A", -24.0, "CREAT", canonical("CREAT", 106.08, "umol/L")),  # 1.2 mg/dL
    ("A", -24.0, "PLT", canonical("PLT", 150_000.0, "/uL")),  # 150 x 10^9/L
    ("A", -24.0, "CRP", canonical("CRP", 5.0, "mg/dL")),  # 50 mg/L
    ("A", -24.0, "ANC", 1.0),
    ("A", -24.0, "HGB", canonical("HGB", 100.0, "g/L")),  # 10 g/dL
    ("A", -24.0, "FERRITIN", 700.0),
    ("A", 20.0, "LDH", 600.0),
    ("A", 20.0, "CREAT", 1.5),
    ("A", 20.0, "PLT", 100.0),
    ("A", 20.0, "CRP", 200.0),
    # A: temperature; the pre-infusion fever does not count.
    ("A", -5.0, "TEMP", 38.5),
    ("A", 2.0, "TEMP", 37.5),
    ("A", 10.0, "TEMP", 38.2),
    ("A", 20.0, "TEMP", 39.1),
    ("A", 30.0, "TEMP", 40.0),
    # B: only a value outside the baseline window before infusion -> baseline missing, never filled.
    ("B", -200.0, "IL6", 3.0),
    ("B", 10.0, "IL6", 50.0),
    # D: a value exactly at hour 0 is the baseline.
    ("D", -5.0, "IL6", 10.0),
    ("D", 0.0, "IL6", 20.0),
    ("D", 5.0, "IL6", 40.0),
    # An analyte not in the feature list and a patient not in the patients table are ignored.
    ("A", 1.0, "IL99", 1.0),
    ("Z", 1.0, "IL6", 1.0),
])

EVENTS = events([
    ("A", "CRS", 2, 5.0),  # grade below min_grade: not an onset
    ("A", "CRS", 3, 24.0),  # onset exactly at L=24: not at risk at 24
    ("B", "CRS", 4, 10.0),
    ("B", "ICANS", 3, 730.0),  # after the horizon from L=0, within it from L=24
    ("D", "ICANS", 3, -1.0),
])

TREATMENTS = treatments([
    ("A", 12.0, "tocilizumab"),
    ("A", 18.0, "tocilizumab"),
    ("A", 22.0, " Dexamethasone "),
    ("A", 23.0, "acetaminophen"),
    ("B", 40.0, "tocilizumab"),
])

SPEC = LandmarkSpec(
    landmarks_hours=(0.0, 24.0),
    analytes=("IL6", "CRP", "IFNG"),
    targets=TARGETS,
    static_features=("age", "product"),
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    tables = {"measurements": MEASUREMENTS, "patients": PATIENTS, "events": EVENTS, "treatments": TREATMENTS}
    return landmark_matrix(tables, SPEC)


def at(frame: pd.DataFrame, patient: str, landmark: float) -> pd.Series:
    row = frame[(frame["patient_id"] == patient) & (frame["landmark_hours"] == landmark)]
    assert len(row) == 1
    return row.iloc[0]


def test_shape_order_and_columns(frame: pd.DataFrame) -> None:
    assert list(frame["patient_id"]) == ["A", "A", "B", "B", "C", "C", "D", "D"]
    assert list(frame["landmark_hours"]) == [0.0, 24.0] * 4
    expected = ["patient_id", *feature_table(SPEC.analytes, SPEC.static_features)["name"]]
    expected += ["label__crs_severe", "onset_hours__crs_severe", "label__icans_severe", "onset_hours__icans_severe"]
    assert list(frame.columns) == expected
    assert frame["product"].dtype == pd.CategoricalDtype(["axi-cel", "tisa-cel"])
    assert frame["age"].dtype == np.float64


def test_latest_count_baseline_fold_change(frame: pd.DataFrame) -> None:
    a = at(frame, "A", 24.0)
    assert a["il6__latest"] == 64.0
    assert a["il6__hours_since_latest"] == 1.0
    assert a["il6__count"] == 5.0
    assert a["il6__baseline"] == 4.0
    assert a["il6__has_baseline"] == 1.0
    assert a["il6__fold_change"] == 16.0
    assert a["il6__log2_fold_change"] == 4.0
    assert a["il6__max"] == 64.0
    assert a["il6__max_fold_change"] == 16.0
    assert a["il6__n_below_limit"] == 1.0  # the "<2" at -48 h counted, and used at its bound
    assert a["il6__n_above_limit"] == 0.0
    assert a["il6__first"] == 2.0  # the "<2" at -48 h, at its bound
    assert a["il6__log2_latest_over_first"] == 5.0  # log2(64 / 2)
    assert a["il6__baseline_after_anchor"] == 0.0  # a true (pre-anchor) baseline
    a0 = at(frame, "A", 0.0)
    # At L = 0 nothing is after the anchor yet: latest is "not measured", not the baseline.
    assert math.isnan(a0["il6__latest"]) and math.isnan(a0["il6__hours_since_latest"]) and a0["il6__count"] == 2.0
    assert a0["il6__baseline"] == 4.0 and math.isnan(a0["il6__fold_change"])


def test_min_is_the_nadir_at_or_before_the_landmark(frame: pd.DataFrame) -> None:
    assert at(frame, "A", 24.0)["il6__min"] == 2.0  # the "<2" at -48 h, at its bound
    assert at(frame, "A", 0.0)["il6__min"] == 2.0 and at(frame, "A", 0.0)["il6__max"] == 4.0  # only rows <= 0 h
    assert at(frame, "A", 24.0)["crp__min"] == pytest.approx(50.0)  # 5 mg/dL before infusion, 200 mg/L at 20 h
    assert at(frame, "B", 24.0)["il6__min"] == 3.0  # outside the baseline window, still a value before L
    assert at(frame, "D", 0.0)["il6__min"] == 10.0
    assert math.isnan(at(frame, "C", 24.0)["il6__min"])


def test_slope_in_real_hours_and_doubling_time(frame: pd.DataFrame) -> None:
    a = at(frame, "A", 24.0)
    # 24 h window [0, 24]: (6, log2 8), (20, log2 32), (23, log2 64) -> Sxy / Sxx = (82/3) / (494/3)
    assert a["il6__slope_24h"] == pytest.approx(41 / 247, rel=1e-12)
    assert a["il6__doubling_time_24h"] == pytest.approx(247 / 41, rel=1e-12)
    # 48 h window [-24, 24] adds (-10, log2 4): Sxy = 80, Sxx = 684.75
    assert a["il6__slope_48h"] == pytest.approx(80 / 684.75, rel=1e-12)
    assert a["il6__slope_48h"] == pytest.approx(np.polyfit([-10, 6, 20, 23], np.log2([4, 8, 32, 64]), 1)[0])
    a0 = at(frame, "A", 0.0)
    assert math.isnan(a0["il6__slope_24h"])  # one point in [-24, 0]
    assert a0["il6__slope_48h"] == pytest.approx(1 / 38)  # (-48, 1), (-10, 2)
    b = at(frame, "B", 24.0)
    assert math.isnan(b["il6__slope_24h"]) and math.isnan(b["il6__doubling_time_24h"])


def test_auc_trapezoid_in_real_hours(frame: pd.DataFrame) -> None:
    # (0,0) -> (6,1) -> (20,3) -> (23,4), held at 4 to 24: 3 + 28 + 10.5 + 4
    assert at(frame, "A", 24.0)["il6__auc_log2_fold_change"] == pytest.approx(45.5)
    assert at(frame, "A", 0.0)["il6__auc_log2_fold_change"] == 0.0
    # D: baseline is the value at hour 0 (20); (0,0) -> (5,1) held to 24: 2.5 + 19
    d = at(frame, "D", 24.0)
    assert d["il6__baseline"] == 20.0
    assert d["il6__auc_log2_fold_change"] == pytest.approx(21.5)


def test_missing_baseline_stays_missing(frame: pd.DataFrame) -> None:
    # B: only -200 h (outside the 168 h window) before infusion and nothing in (0, 0] at L = 0.
    b = at(frame, "B", 0.0)
    assert math.isnan(b["il6__latest"]) and b["il6__count"] == 1.0
    assert math.isnan(b["il6__baseline"]) and b["il6__has_baseline"] == 0.0
    assert math.isnan(b["il6__baseline_after_anchor"])
    for name in ("fold_change", "log2_fold_change", "max_fold_change", "auc_log2_fold_change"):
        assert math.isnan(b[f"il6__{name}"]), name


def test_fallback_baseline_after_the_anchor(frame: pd.DataFrame) -> None:
    # B at 24 h: no value in [-168, 0]; the first in (0, min(24, 24)] is 50 at 10 h.
    b = at(frame, "B", 24.0)
    assert b["il6__latest"] == 50.0 and b["il6__count"] == 2.0
    assert (b["il6__baseline"], b["il6__has_baseline"], b["il6__baseline_after_anchor"]) == (50.0, 1.0, 1.0)
    assert b["il6__fold_change"] == 1.0  # latest 50 / fallback baseline 50
    assert b["il6__max_fold_change"] == 1.0  # max 50 (the -200 h value is 3) / 50
    assert b["il6__auc_log2_fold_change"] == 0.0  # (0,0) -> (10,0) held at 0 to 24


def test_patient_without_data_and_absent_analyte_are_nan_not_errors(frame: pd.DataFrame) -> None:
    c = at(frame, "C", 24.0)
    assert c["il6__count"] == 0.0 and c["il6__n_below_limit"] == 0.0 and c["il6__has_baseline"] == 0.0
    assert c[["il6__latest", "il6__baseline", "il6__slope_24h", "easix__baseline", "temp__max"]].isna().all()
    assert math.isnan(c["age"]) and pd.isna(c["product"])
    ifng = frame.filter(like="ifng__")  # IFNG appears nowhere in the data
    counts = ["ifng__count", "ifng__n_below_limit", "ifng__n_above_limit", "ifng__has_baseline"]
    assert ifng.drop(columns=counts).isna().all().all()
    assert (ifng["ifng__count"] == 0).all()


def test_scores_from_mixed_input_units(frame: pd.DataFrame) -> None:
    a = at(frame, "A", 24.0)
    assert a["easix__baseline"] == pytest.approx(300 * 1.2 / 150)
    assert a["m_easix__baseline"] == pytest.approx(300 * 5.0 / 150)  # CRP 50 mg/L = 5 mg/dL
    assert a["easix__latest"] == pytest.approx(600 * 1.5 / 100)
    assert a["m_easix__latest"] == pytest.approx(600 * 20.0 / 100)
    assert a["car_hematotox__baseline"] == 4.0  # PLT 150 ->1, ANC 1.0 ->1, HGB 10 ->0, CRP 5 ->1, ferritin 700 ->1
    assert a["crp__baseline"] == pytest.approx(50.0)


def test_fever_and_treatments(frame: pd.DataFrame) -> None:
    a = at(frame, "A", 24.0)
    assert a["temp__max"] == 39.1
    assert a["fever__hours_since_first"] == 14.0
    assert (a["tocilizumab__given"], a["tocilizumab__hours_since"]) == (1.0, 6.0)
    assert (a["steroids__given"], a["steroids__hours_since"]) == (1.0, 2.0)
    a0 = at(frame, "A", 0.0)
    assert math.isnan(a0["temp__max"]) and math.isnan(a0["fever__hours_since_first"])
    assert a0["tocilizumab__given"] == 0.0 and math.isnan(a0["tocilizumab__hours_since"])
    b = at(frame, "B", 24.0)  # tocilizumab at 40 h is after L
    assert b["tocilizumab__given"] == 0.0


def test_at_risk_and_labels(frame: pd.DataFrame) -> None:
    def labels(patient: str, target: str) -> list[float]:
        return [at(frame, patient, L)[f"label__{target}"] for L in (0.0, 24.0)]

    assert labels("A", "crs_severe") == [1.0, pytest.approx(np.nan, nan_ok=True)]  # onset exactly at 24
    assert labels("A", "icans_severe") == [0.0, 0.0]  # excluded for CRS only
    assert labels("B", "crs_severe")[0] == 1.0 and math.isnan(labels("B", "crs_severe")[1])
    assert labels("B", "icans_severe") == [0.0, 1.0]  # 730 h: beyond 0 + 720, within 24 + 720
    assert labels("C", "crs_severe") == [0.0, 0.0]
    assert all(math.isnan(x) for x in labels("D", "icans_severe"))  # onset before infusion
    assert at(frame, "A", 0.0)["onset_hours__crs_severe"] == 24.0
    assert math.isnan(at(frame, "C", 0.0)["onset_hours__crs_severe"])
    # At-risk rows keep their features: the row is present, only the label is missing.
    assert at(frame, "A", 24.0)["il6__latest"] == 64.0


def test_horizon_parameter() -> None:
    tables = {"measurements": MEASUREMENTS, "patients": PATIENTS, "events": EVENTS}
    spec = LandmarkSpec(landmarks_hours=(0.0,), analytes=("IL6",), horizon_hours=8.0, targets=TARGETS)
    out = landmark_matrix(tables, spec).set_index("patient_id")
    assert out.loc["A", "label__crs_severe"] == 0.0  # onset at 24 > 0 + 8
    assert out.loc["B", "label__crs_severe"] == 0.0  # onset at 10 > 8


def test_baseline_window_parameter() -> None:
    tables = {"measurements": MEASUREMENTS, "patients": PATIENTS}
    spec = LandmarkSpec(landmarks_hours=(24.0,), analytes=("IL6",), baseline_window_hours=300.0)
    out = landmark_matrix(tables, spec).set_index("patient_id")
    assert out.loc["B", "il6__baseline"] == 3.0
    assert out.loc["B", "il6__baseline_after_anchor"] == 0.0  # a true baseline: the fallback is not used


def test_missing_static_column_is_user_error() -> None:
    spec = LandmarkSpec(landmarks_hours=(0.0,), static_features=("age", "tumor_burden"))
    with pytest.raises(FeatureError, match="tumor_burden"):
        landmark_matrix({"measurements": MEASUREMENTS, "patients": PATIENTS}, spec)


def test_missing_measurement_column_is_user_error() -> None:
    with pytest.raises(FeatureError, match="'value'"):
        landmark_matrix({"measurements": MEASUREMENTS.drop(columns="value"), "patients": PATIENTS}, SPEC)


def test_transformer_categories_fixed_at_fit() -> None:
    fz = LandmarkFeaturizer(landmarks_hours=[0.0], analytes=["IL6"], static_features=["product"])
    fz.fit(MEASUREMENTS, patients=PATIENTS.iloc[:2])  # sees tisa-cel and axi-cel only
    new = PATIENTS.assign(product=pd.array(["liso-cel", "axi-cel", None, "tisa-cel"], dtype="str"))
    out = fz.transform(MEASUREMENTS, patients=new)
    assert list(out["product"].cat.categories) == ["axi-cel", "tisa-cel"]
    assert out["product"].isna().tolist() == [True, False, True, False]
    assert fz.get_feature_names_out() == [c for c in out.columns if c != "patient_id"]


def test_unsorted_input_gives_the_same_frame(frame: pd.DataFrame) -> None:
    shuffled = MEASUREMENTS.sample(frac=1.0, random_state=3).reset_index(drop=True)
    tables = {"measurements": shuffled, "patients": PATIENTS.iloc[::-1], "events": EVENTS, "treatments": TREATMENTS}
    pd.testing.assert_frame_equal(landmark_matrix(tables, SPEC), frame)


def test_death_ends_time_at_risk_for_every_target() -> None:
    # C dies at 30 h with no CRS/ICANS: at risk (label 0) at 24 h, not at risk at 48 h.
    # A dies at 60 h after severe CRS onset at 24 h: the ICANS label at 48 h is still 0.
    died = pd.concat([EVENTS, events([("C", "DEATH", 5, 30.0), ("A", "DEATH", 5, 60.0)])], ignore_index=True)
    spec = LandmarkSpec(landmarks_hours=(24.0, 48.0), analytes=("IL6",), targets=TARGETS)
    out = landmark_matrix({"measurements": MEASUREMENTS, "patients": PATIENTS, "events": died}, spec)
    c = out[out["patient_id"] == "C"].set_index("landmark_hours")
    assert c.loc[24.0, "label__crs_severe"] == 0.0 and c.loc[24.0, "label__icans_severe"] == 0.0
    assert math.isnan(c.loc[48.0, "label__crs_severe"]) and math.isnan(c.loc[48.0, "label__icans_severe"])
    a = out[out["patient_id"] == "A"].set_index("landmark_hours")
    assert a.loc[48.0, "label__icans_severe"] == 0.0
