"""Look-ahead proof: perturbing, deleting or adding rows after L never moves a feature at L."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.landmarks import LandmarkSpec, Target, landmark_matrix

LANDMARKS = (-12.0, 0.0, 24.0, 48.0)
ANALYTES = ("IL6", "CRP", "LDH", "CREAT", "PLT", "ANC", "HGB", "FERRITIN", "TEMP")
DRUGS = ("tocilizumab", "dexamethasone", "methylprednisolone", "aspirin")
SPEC = LandmarkSpec(
    landmarks_hours=LANDMARKS,
    analytes=("IL6", "CRP", "PLT", "TEMP"),
    baseline_window_hours=100.0,
    horizon_hours=100.0,
    targets=(Target("crs_severe", "CRS", 3), Target("icans_severe", "ICANS", 3)),
    static_features=("age", "product"),
    baseline_fallback_hours=36.0,  # beyond L = 24: the fallback window must still stop at L
)
# Times on a coarse grid hit the landmarks, just after them, the anchor and window edges, plus free floats.
hours_st = st.one_of(
    st.sampled_from([-150.0, -100.0, -24.0, -12.0, -11.5, 0.0, 0.5, 6.0, 24.0, 24.5, 36.0, 48.0, 48.5, 72.0]),
    st.floats(-160.0, 120.0, allow_nan=False),
)
value_st = st.one_of(st.just(0.0), st.floats(1e-3, 1e5, allow_nan=False))
measurement_st = st.tuples(
    st.integers(0, 4), hours_st, st.sampled_from(ANALYTES), value_st, st.sampled_from(["none", "left", "right"])
)
treatment_st = st.tuples(st.integers(0, 4), hours_st, st.sampled_from(DRUGS))
event_st = st.tuples(st.integers(0, 4), st.sampled_from(["CRS", "ICANS"]), st.integers(0, 5), hours_st)


def tables(meas: list[tuple], treat: list[tuple], ev: list[tuple]) -> dict[str, pd.DataFrame]:
    m = pd.DataFrame(meas, columns=["p", "hours_since_anchor", "analyte", "value", "censoring"])
    m = pd.DataFrame({
        "patient_id": pd.array([f"p{i}" for i in m["p"]], dtype="str"),
        "hours_since_anchor": m["hours_since_anchor"].astype("float64"),
        "analyte": pd.array(m["analyte"].tolist(), dtype="str"),
        "value": m["value"].astype("float64"),
        "unit": pd.array(["u"] * len(m), dtype="str"),
        "censoring": pd.array(m["censoring"].tolist(), dtype="str"),
        "known_analyte": np.ones(len(m), dtype=bool),
    })
    t = pd.DataFrame(treat, columns=["p", "hours_since_anchor", "drug"])
    t = pd.DataFrame({
        "patient_id": pd.array([f"p{i}" for i in t["p"]], dtype="str"),
        "hours_since_anchor": t["hours_since_anchor"].astype("float64"),
        "drug": pd.array(t["drug"].tolist(), dtype="str"),
    })
    e = pd.DataFrame(ev, columns=["p", "event", "grade", "hours_since_anchor"])
    e = pd.DataFrame({
        "patient_id": pd.array([f"p{i}" for i in e["p"]], dtype="str"),
        "event": pd.array(e["event"].tolist(), dtype="str"),
        "grade": e["grade"].astype("int8"),
        "hours_since_anchor": e["hours_since_anchor"].astype("float64"),
    })
    patients = pd.DataFrame({
        "patient_id": pd.array([f"p{i}" for i in range(5)], dtype="str"),
        "age": [50.0, 61.0, np.nan, 33.0, 70.0],
        "product": pd.array(["axi-cel", "tisa-cel", "axi-cel", None, "cilta-cel"], dtype="str"),
    })
    return {"measurements": m, "treatments": t, "events": e, "patients": patients}


def perturb_after(rows: list[tuple], hour_index: int, L: float, rng: np.random.Generator,
                  new_rows: list[tuple]) -> list[tuple]:
    """Delete, change (value, time within (L, inf), any field) or keep each row after L; append new ones."""
    out = []
    for row in rows:
        if row[hour_index] <= L:
            out.append(row)  # untouched, same relative order
            continue
        action = rng.integers(4)
        if action == 0:
            continue  # delete
        row = list(row)
        if action == 1:  # move to another time after L
            row[hour_index] = L + float(rng.uniform(1e-6, 200.0))
        elif action == 2:  # change every other field
            for i in range(len(row)):
                if i != hour_index and isinstance(row[i], float):
                    row[i] = float(rng.uniform(0.0, 1e4))
            row[0] = int(rng.integers(5))
        out.append(tuple(row))
    extra = [tuple(L + abs(x) + 1e-9 if i == hour_index else x for i, x in enumerate(r)) for r in new_rows]
    return out + extra


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    meas=st.lists(measurement_st, max_size=40),
    treat=st.lists(treatment_st, max_size=6),
    ev=st.lists(event_st, max_size=6),
    new_meas=st.lists(measurement_st, max_size=10),
    new_treat=st.lists(treatment_st, max_size=3),
    new_ev=st.lists(event_st, max_size=3),
    landmark=st.sampled_from(LANDMARKS),
    seed=st.integers(0, 2**32 - 1),
    sort_input=st.booleans(),
)
def test_rows_after_landmark_never_change_features_at_landmark(
    meas, treat, ev, new_meas, new_treat, new_ev, landmark, seed, sort_input
) -> None:
    rng = np.random.default_rng(seed)
    before = tables(meas, treat, ev)
    after = tables(
        perturb_after(meas, 1, landmark, rng, new_meas),
        perturb_after(treat, 1, landmark, rng, new_treat),
        perturb_after(ev, 3, landmark, rng, new_ev),
    )
    if sort_input:  # exercise the already-sorted fast path (stable: ties keep their order)
        for frames in (before, after):
            frames["measurements"] = frames["measurements"].sort_values(
                ["patient_id", "hours_since_anchor"], kind="stable"
            )

    def features_at_l(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        out = landmark_matrix(frames, SPEC)
        out = out[out["landmark_hours"] == landmark].reset_index(drop=True)
        return out.drop(columns=[c for c in out.columns if c.startswith(("label__", "onset_hours__"))])

    pd.testing.assert_frame_equal(features_at_l(before), features_at_l(after), check_exact=True)


@settings(max_examples=40, deadline=None)
@given(meas=st.lists(measurement_st, max_size=40), treat=st.lists(treatment_st, max_size=6),
       landmark=st.sampled_from(LANDMARKS))
def test_features_equal_those_from_data_truncated_at_landmark(meas, treat, landmark) -> None:
    full = tables(meas, treat, [])
    cut = tables([r for r in meas if r[1] <= landmark], [r for r in treat if r[1] <= landmark], [])
    a = landmark_matrix(full, SPEC)
    b = landmark_matrix(cut, SPEC)
    rows = a["landmark_hours"] == landmark
    pd.testing.assert_frame_equal(a[rows].reset_index(drop=True), b[rows].reset_index(drop=True), check_exact=True)


def test_the_properties_cover_every_summary_including_the_new_ones() -> None:
    from features.definitions import SUMMARIES, analyte_feature_name

    out = landmark_matrix(tables([(0, 6.0, "IL6", 5.0, "left")], [], []), SPEC)
    names = {s.name for s in SUMMARIES}
    assert {"first", "log2_latest_over_first", "baseline_after_anchor", "n_below_limit", "n_above_limit"} <= names
    assert all(analyte_feature_name(code, s) in out.columns for code in SPEC.analytes for s in names)
