"""The few-patients path of the landmark matrix (issue 14: one new patient scored in milliseconds) gives
exactly the cohort path's matrix: same values, dtypes, categories, to the last bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import covariates, landmarks
from features.covariates import (
    CovariateReference,
    default_covariate_tables,
    fit_covariate_reference,
    harmonise,
)
from features.landmarks import LandmarkSpec, Target, landmark_matrix
from tests.features.test_patient_chunks import IDS, cohort

SPEC = LandmarkSpec(landmarks_hours=(0.0, 24.0, 72.0), analytes=("IL6", "CRP", "FERRITIN", "TEMP"),
                    targets=(Target("crs", "CRS", 3),), static_features=("age", "sex", "product"))


def _general(tables: dict[str, pd.DataFrame | None], monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    with monkeypatch.context() as m:
        m.setattr(landmarks, "FEW_PATIENTS", -1)  # the cohort path for any size
        return landmark_matrix(tables, SPEC)


def _patients(ids: list[str], **columns: object) -> pd.DataFrame:
    rng = np.random.default_rng(len(ids))
    frame = pd.DataFrame({"patient_id": pd.array(ids, dtype="str"), "age": rng.uniform(20, 80, len(ids)),
                          "sex": pd.array(rng.choice(["F", "M"], len(ids)), dtype="str"),
                          "product": pd.array(rng.choice(["axi-cel", "tisa-cel"], len(ids)), dtype="str")})
    return frame.assign(**columns)


def _one(tables: dict[str, pd.DataFrame], pid: str) -> dict[str, pd.DataFrame | None]:
    return {name: table[table["patient_id"] == pid].reset_index(drop=True) for name, table in tables.items()}


def _hand_built() -> pd.DataFrame:
    """One patient: zero and negative values (no log), repeated times, censored values, a value only
    after every landmark, an analyte no spec asks for, pre-anchor rows only for FERRITIN."""
    rows = [(-30.0, "IL6", 5.0, "none"), (-2.0, "IL6", 0.0, "left"), (3.0, "IL6", 12.0, "none"),
            (3.0, "IL6", 14.0, "none"), (20.0, "IL6", -1.0, "none"), (23.5, "IL6", 5000.0, "right"),
            (100.0, "IL6", 80.0, "none"), (-5.0, "FERRITIN", 300.0, "none"), (-400.0, "CRP", 2.0, "none"),
            (10.0, "CRP", 9.0, "none"), (50.0, "CRP", 20.0, "left"), (1.0, "TEMP", 38.2, "none"),
            (30.0, "TEMP", 39.1, "none"), (2.0, "XYZ", 1.0, "none"), (500.0, "LDH", 250.0, "none")]
    hours, analyte, value, censoring = zip(*rows, strict=True)
    return pd.DataFrame({"patient_id": pd.array(["P03"] * len(rows), dtype="str"), "hours_since_anchor": hours,
                         "analyte": pd.array(analyte, dtype="str"), "value": value,
                         "censoring": pd.array(censoring, dtype="str")})


def _cases() -> list[dict[str, pd.DataFrame | None]]:
    tables = cohort()
    tables["patients"] = _patients(IDS[::-1])
    empty = tables["measurements"].iloc[0:0]
    one = _one(tables, "P03")
    return [
        tables,  # 23 patients: few enough for the small path too
        one,
        {**one, "events": None, "treatments": None},
        {**one, "measurements": empty},  # no measurements at all
        {**one, "patients": _patients(["P03"], sex=pd.array([None], dtype="str"))},  # missing category
        {**one, "patients": _patients(["P03"], age=np.nan, product=pd.array([pd.NA], dtype="str"))},
        {**one, "patients": _patients(["P03", "P99"])},  # a patient without any row
        {**one, "patients": _patients(["P03"]).astype({"sex": "object"})},  # not a string column: cohort path
        {**one, "patients": _patients(["P03"]).astype({"age": "int64"})},
        {**one, "measurements": _hand_built()},
        {**one, "measurements": _hand_built(), "patients": _patients(["P03", "P04", "P05"])},
    ]


@pytest.mark.parametrize("case", range(11))
def test_few_patients_matrix_equals_the_cohort_path(case: int, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _cases()[case]
    fast = landmark_matrix(tables, SPEC)
    pd.testing.assert_frame_equal(fast, _general(tables, monkeypatch), check_exact=True)
    assert len(fast) == len(tables["patients"]) * len(SPEC.landmarks_hours)


def test_categories_learnt_from_the_request_and_unseen_ones_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _one(cohort(), "P03") | {"patients": _patients(["P03"], sex=pd.array(["X"], dtype="str"))}
    encoding = landmarks.StaticEncoding({"age": None, "sex": ["F", "M"], "product": ["axi-cel", "tisa-cel"]})
    patient_ids = landmarks.patient_index(tables["patients"])
    fast = landmarks._static_columns(tables["patients"], patient_ids, encoding, 3)
    monkeypatch.setattr(landmarks, "FEW_PATIENTS", -1)
    general = landmarks._static_columns(tables["patients"], patient_ids, encoding, 3)
    assert list(fast) == list(general)
    for column in fast:
        if isinstance(general[column], pd.Categorical):
            assert fast[column].dtype == general[column].dtype
            assert np.array_equal(fast[column].codes, general[column].codes)
            assert fast[column].codes.dtype == general[column].codes.dtype
        else:
            assert np.array_equal(fast[column], general[column], equal_nan=True)
    assert (fast["sex"].codes == -1).all()  # "X" was never learnt: missing, not a new level


def _covariate_rows() -> pd.DataFrame:
    """Covariates as ingest gives them: known and unknown products, units the table knows, does not know
    or lacks, blanks, a disease with and without its own burden reference."""
    text = {
        "product": ["Yescarta", "tisa-cel", "newcel", None, " Carvykti ", "axi-cel", "liso-cel"],
        "disease": ["LBCL", "LBCL", "MM", "LBCL", None, "MCL", "LBCL"],
        "tumor_burden_unit": ["SPD cm2", "mm2", None, "furlongs", "% marrow plasma cells", "SPD cm2", ""],
        "dose_unit": ["cells/kg", "x10^6 cells", "cells/kg", None, "mg", "10^6 CAR+ T cells/kg", "cells"],
        "costim": [None, None, "CD28", None, None, None, None],
    }
    frame = pd.DataFrame({"patient_id": pd.array([f"P{i}" for i in range(7)], dtype="str"),
                          **{k: pd.array(v, dtype="str") for k, v in text.items()}})
    return frame.assign(tumor_burden=[50.0, 12.0, np.nan, 3.0, 40.0, -1.0, 7.0],
                        dose=[2e6, 300.0, 7.5e5, 1e6, 5.0, 2.0, np.nan])


@pytest.mark.parametrize("rows", [[0], [1], [2], [3], [4], [5], [6], list(range(7))])
def test_few_patients_harmonise_equals_the_cohort_path(rows: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    tables = default_covariate_tables()
    everyone = pd.concat([_covariate_rows()] * 3, ignore_index=True).assign(patient_id=lambda f: f.index.astype(str))
    for reference in (CovariateReference(), fit_covariate_reference(everyone, tables)):
        patients = _covariate_rows().iloc[rows]
        static = ["product", "disease", "tumor_burden", "dose"]
        fast = harmonise(patients, static, tables, reference)
        with monkeypatch.context() as m:
            m.setattr(covariates, "FEW_ROWS", 0)  # the cohort path for any size
            general = harmonise(patients, static, tables, reference)
        pd.testing.assert_frame_equal(fast.patients, general.patients, check_exact=True)
        pd.testing.assert_frame_equal(fast.problems, general.problems, check_exact=True)
