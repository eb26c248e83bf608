"""Harmonised covariates (features.covariates): hand-computed values a person can check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer
from features.covariates import (
    CovariateReference,
    default_covariate_tables,
    fit_covariate_reference,
    harmonise,
    model_covariates,
    parse_dose_unit,
    source_columns,
)


@pytest.mark.parametrize(("unit", "expected"), [
    ("cells", (1.0, False)),
    ("cells/kg", (1.0, True)),
    ("x10^6 cells/kg", (1e6, True)),
    ("10^6 CAR+ T cells/kg", (1e6, True)),
    ("10E8 cells", (1e8, False)),
    ("× 10^6 cells / kg", (1e6, True)),
    ("million cells", (1e6, False)),
    ("viable cells", (1.0, False)),
    ("mg", None),
    ("", None),
    ("cells/m2", None),
])
def test_dose_units(unit: str, expected: tuple[float, bool] | None) -> None:
    assert parse_dose_unit(unit) == expected


def test_model_covariates_expand_only_the_harmonised_columns() -> None:
    assert model_covariates(["age", "tumor_burden", "product", "dose", "costim"]) == [
        "age", "tumor_burden_std", "product", "costim", "target_antigen", "dose_rel"]
    assert source_columns(["tumor_burden"]) == ["tumor_burden", "tumor_burden_unit", "disease"]


def _patients(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], **columns})


def test_products_by_brand_generic_or_code_share_one_code_and_attributes() -> None:
    patients = _patients(product=["Kymriah", "tisagenlecleucel", " TISA-CEL ", "Yescarta", "Carvykti", "newcel", None])
    out = harmonise(patients, ["product"], default_covariate_tables(), CovariateReference())
    assert out.patients["product"].tolist()[:6] == ["tisa-cel", "tisa-cel", "tisa-cel", "axi-cel", "cilta-cel", "newcel"]
    assert out.patients["costim"].tolist()[:5] == ["4-1BB", "4-1BB", "4-1BB", "CD28", "4-1BB"]
    assert out.patients["target_antigen"].tolist()[4] == "BCMA"
    assert pd.isna(out.patients["costim"].iloc[5]) and pd.isna(out.patients["product"].iloc[6])
    reasons = dict(zip(out.problems["patient_id"], out.problems["reason"], strict=True))
    assert reasons == {"P5": "not_in_registry", "P6": "not_recorded"}


def test_unknown_product_keeps_the_cohorts_own_costim() -> None:
    patients = _patients(product=["newcel", "axi-cel"], costim=["CD28", "4-1BB"])
    out = harmonise(patients, ["product"], default_covariate_tables(), CovariateReference())
    # The registry wins for a product it knows (axi-cel is CD28 whatever the cell says).
    assert out.patients["costim"].tolist() == ["CD28", "CD28"]


def test_dose_relative_to_the_products_reference_dose() -> None:
    patients = _patients(
        product=["axi-cel", "Yescarta", "liso-cel", "tisa-cel", "tisa-cel", "axi-cel", "axi-cel", "newcel", "axi-cel"],
        dose=[1.0, 3.0e6, 50e6, 1.5e8, 6.0e6, 2e8, 1.0, 1.0, None],
        dose_unit=["x10^6 cells/kg", "cells/kg", "cells", "cells", "cells/kg", "cells", "mg", "cells", "cells/kg"])
    out = harmonise(patients, ["dose"], default_covariate_tables(), CovariateReference())
    rel = out.patients["dose_rel"].to_numpy()
    # axi-cel reference 2e6/kg; liso-cel 1e8 flat; tisa-cel 3e8 flat or 3e6/kg (product_doses.csv).
    np.testing.assert_allclose(rel[:5], [0.5, 1.5, 0.5, 0.5, 2.0])
    assert np.isnan(rel[5:]).all()
    reasons = dict(zip(out.problems["patient_id"], out.problems["reason"], strict=True))
    assert reasons == {"P5": "no_reference_dose", "P6": "unit_not_recognised", "P7": "product_not_recognised",
                       "P8": "not_recorded"}


def test_burden_standardised_on_the_log_scale_per_unit_with_unit_conversion() -> None:
    # log(SPD cm2) = 1, 2, 3: mean 2, SD 1; 100 * e^2 mm2 = e^2 cm2 -> z 0.
    train = _patients(tumor_burden=[math.e, math.e ** 2, math.e ** 3],
                      tumor_burden_unit=["SPD cm2", "cm2", "SPD cm2"])
    tables = default_covariate_tables()
    reference = fit_covariate_reference(train, tables)
    assert reference.burden["*|SPD cm2"].mean == pytest.approx(2.0)
    assert reference.burden["*|SPD cm2"].sd == pytest.approx(1.0)
    new = _patients(tumor_burden=[100 * math.e ** 2, math.e ** 4, 5.0, 7.0, -1.0],
                    tumor_burden_unit=["SPD mm2", "SPD cm2", "% marrow blasts", None, "SPD cm2"])
    out = harmonise(new, ["tumor_burden"], tables, reference)
    z = out.patients["tumor_burden_std"].to_numpy()
    np.testing.assert_allclose(z[:2], [0.0, 2.0], atol=1e-12)
    assert np.isnan(z[2:]).all()
    reasons = dict(zip(out.problems["patient_id"], out.problems["reason"], strict=True))
    assert reasons == {"P2": "unit_not_in_reference", "P3": "no_unit", "P4": "out_of_scale"}


def test_percentages_use_the_logit_and_diseases_with_enough_patients_get_their_own_reference() -> None:
    blasts = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0]  # 10 B-ALL patients
    train = _patients(tumor_burden=[*blasts, 50.0], tumor_burden_unit=["% blasts"] * 11,
                      disease=["B-ALL"] * 10 + ["AML"])
    reference = fit_covariate_reference(train, default_covariate_tables())
    logits = np.log(np.array(blasts) / (100 - np.array(blasts)))
    own = reference.burden["B-ALL|% marrow blasts"]
    assert (own.transform, own.n_patients) == ("logit", 10)
    assert own.mean == pytest.approx(logits.mean()) and own.sd == pytest.approx(logits.std(ddof=1))
    assert "AML|% marrow blasts" not in reference.burden  # 1 patient: the pooled reference applies
    assert reference.burden["*|% marrow blasts"].n_patients == 11


def test_reference_round_trips_through_json() -> None:
    train = _patients(tumor_burden=[1.0, 2.0, 4.0], tumor_burden_unit=["SPD cm2"] * 3)
    reference = fit_covariate_reference(train, default_covariate_tables())
    assert CovariateReference.from_json(reference.to_json()) == reference


def test_a_unit_the_table_does_not_know_is_standardised_on_its_own() -> None:
    train = _patients(tumor_burden=[-1.0, 0.0, 1.0], tumor_burden_unit=["z"] * 3)
    reference = fit_covariate_reference(train, default_covariate_tables())
    assert reference.burden["*|z"].transform == "identity"  # not all positive: no log
    out = harmonise(train, ["tumor_burden"], default_covariate_tables(), reference)
    np.testing.assert_allclose(out.patients["tumor_burden_std"], [-1.0, 0.0, 1.0])


def test_featurizer_uses_the_harmonised_columns_and_keeps_a_given_reference() -> None:
    patients = _patients(tumor_burden=[1.0, 2.0, 4.0], tumor_burden_unit=["SPD cm2"] * 3,
                         product=["Kymriah", "axi-cel", "axi-cel"])
    measurements = pd.DataFrame({"patient_id": ["P0", "P1", "P2"], "hours_since_anchor": [1.0, 1.0, 1.0],
                                 "analyte": "CRP", "value": [1.0, 2.0, 3.0], "censoring": "none"})
    fz = LandmarkFeaturizer(landmarks_hours=[24], analytes=["CRP"], static_features=["tumor_burden", "product"])
    frame = fz.fit(measurements, patients=patients).transform(measurements, patients=patients)
    assert {"tumor_burden_std", "product", "costim", "target_antigen"} <= set(frame.columns)
    assert "tumor_burden" not in fz.get_feature_names_out()
    assert frame["product"].astype(str).tolist() == ["tisa-cel", "axi-cel", "axi-cel"]
    fixed = CovariateReference.from_json({"tumor_burden": {"*|SPD cm2": {
        "transform": "log", "mean": 0.0, "sd": 1.0, "n_patients": 3}}})
    other = LandmarkFeaturizer(landmarks_hours=[24], analytes=["CRP"], static_features=["tumor_burden"],
                               covariate_reference=fixed)
    scored = other.fit(measurements, patients=patients).transform(measurements, patients=patients)
    np.testing.assert_allclose(scored["tumor_burden_std"], np.log([1.0, 2.0, 4.0]))


@pytest.mark.parametrize("n_patients", [3, 200])  # both code paths: per cell (few rows) and per distinct value
def test_missing_burden_units_are_not_a_unit(n_patients: int) -> None:
    """A blank, None or NaN tumour-burden unit is 'no unit' (the patient's burden is scored as missing),
    never a unit of its own: NaN among the unit names made the reference fit raise TypeError."""
    from features.covariates import default_covariate_tables, fit_covariate_reference

    units = (["SPD cm2", None, np.nan, " "] * n_patients)[:n_patients]
    patients = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n_patients)],
                             "tumor_burden": np.linspace(5.0, 50.0, n_patients), "tumor_burden_unit": units,
                             "disease": (["LBCL", None] * n_patients)[:n_patients]})
    reference = fit_covariate_reference(patients, default_covariate_tables())
    assert all(key.endswith("|SPD cm2") for key in reference.burden)
    assert ("*|SPD cm2" in reference.burden) == (n_patients >= 10)


@pytest.mark.parametrize("n_patients", [30, 200])  # both code paths: per cell (few rows) and per distinct value
@pytest.mark.parametrize("dtype", [object, "str"])  # "str": what read_csv gives a text column in pandas 3
def test_a_blank_disease_is_no_disease_not_a_disease_called_nan(n_patients: int, dtype: object) -> None:
    """Patients with a burden and a unit but a blank disease: the per-disease references are built from
    the others, the blank ones use the pooled reference (before, NaN among the diseases raised TypeError)."""
    from features.covariates import default_covariate_tables, fit_covariate_reference

    disease = pd.Series((["LBCL", "", None] * n_patients)[:n_patients], dtype=dtype)
    patients = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n_patients)],
                             "tumor_burden": np.linspace(5.0, 50.0, n_patients),
                             "tumor_burden_unit": "SPD cm2", "disease": disease})
    reference = fit_covariate_reference(patients, default_covariate_tables())
    assert set(reference.burden) == {"*|SPD cm2", "LBCL|SPD cm2"}
    assert reference.burden["LBCL|SPD cm2"].n_patients == (n_patients + 2) // 3
    out = harmonise(patients, ["tumor_burden", "disease"], default_covariate_tables(), reference)
    assert np.isfinite(out.patients["tumor_burden_std"]).all()
