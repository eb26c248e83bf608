"""crs validate: external figures against independent oracles, recalibration that fixes a shifted
level, drift flags for a mislabelled unit and a new product mix, and a real-shaped cohort that lacks
covariates scored and validated with messages instead of a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score

from pipeline import predict, simulate, validate
from pipeline.config import parse_config
from pipeline.errors import UserError
from pipeline.metrics import calibration_slope_intercept
from pipeline.model import expit, fit_logistic, logit
from pipeline.validation.external import figures
from pipeline.validation.recalibration import apply_update, fit_update, recalibrate
from tests.pipeline.test_predict import build_bundle

PARAMS = {
    "static_features": ["age", "sex", "product", "disease", "tumor_burden", "dose"],
    # Platt: in-sample isotonic gives risks of exactly 0 or 1, which no intercept update can move.
    "train": {"n_estimators": 30, "calibration": "sigmoid"},
}


def test_intercept_update_moves_a_constant_risk_to_the_observed_rate() -> None:
    # Everyone predicted 10 %, 20 % observed: the intercept is logit(0.2) - logit(0.1), slope stays 1.
    y = np.array([1.0] * 20 + [0.0] * 80)
    p = np.full(100, 0.1)
    intercept, slope = fit_update(y, p, with_slope=False)
    assert slope == 1.0
    assert intercept == pytest.approx(float(logit(np.array([0.2]))[0] - logit(np.array([0.1]))[0]), abs=1e-6)
    np.testing.assert_allclose(apply_update(p, intercept, slope), 0.2, atol=1e-6)


def test_calibration_in_the_large_converges_when_every_risk_is_far_too_low() -> None:
    # An external cohort: 15 % observed, predicted risks around 0.5 %. Plain Newton overshot to -2.8e11
    # here; the oracle solves the score equation sum(y - expit(logit(p) + a)) = 0 by bracketing.
    rng = np.random.default_rng(3)
    p = expit(rng.normal(-5.5, 1.2, 300))
    y = (rng.random(300) < 0.15).astype(float)
    oracle = brentq(lambda a: float(np.sum(y - expit(logit(p) + a))), -20, 20, xtol=1e-12)
    assert fit_logistic(None, y, logit(p))[0] == pytest.approx(oracle, abs=1e-6)
    assert calibration_slope_intercept(y, p)[1] == pytest.approx(oracle, abs=1e-6)


def test_a_reversing_slope_falls_back_to_an_intercept_update() -> None:
    p = np.linspace(0.05, 0.95, 40)
    y = (p < 0.5).astype(float)  # ranking reversed: a negative slope would flip every risk
    assert fit_update(y, p, with_slope=True)[1] == 1.0


def test_figures_match_independent_oracles() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0], dtype=float)
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7, 0.05, 0.6])
    groups = np.array([f"P{i}" for i in range(8)], dtype=object)
    out = figures(y, p, groups, np.full(8, 0.5), n_bootstrap=50, seed=0)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    # p >= 0.5 flags rows 3, 5, 7: 2 of 3 events, 4 of 5 non-events spared.
    assert out["sensitivity"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["specificity"] == pytest.approx(4 / 5, abs=1e-4)
    assert out["observed_rate"] == pytest.approx(3 / 8) and out["n_events"] == 3
    assert out["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-4)


def test_recalibration_cross_validated_after_is_reported_and_in_sample_level_is_fixed() -> None:
    rng = np.random.default_rng(0)
    n = 600
    risk = expit(rng.normal(-2.0, 1.0, n))
    y = (rng.random(n) < risk).astype(float)
    scored = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "landmark_hours": 24.0, "target": "t",
                           "label": y, "probability": expit(logit(risk) - 1.0), "threshold": 0.1})
    out = recalibrate(scored)["t"]
    assert out["intercept"] == pytest.approx(1.0, abs=0.3)  # the model was shifted down by 1 logit
    assert abs(out["before"]["calibration_intercept"]) > 0.7
    assert abs(out["after_cross_validated"]["calibration_intercept"]) < 0.2
    assert abs(out["after_in_sample"]["calibration_intercept"]) < 1e-3


def _shift_cohort(cohort: Path) -> None:
    """CRP values in mg/dL but labelled mg/L (10x too low) and a product mix the model never saw."""
    measurements = pd.read_csv(cohort / "measurements.csv", dtype=str, keep_default_na=False)
    crp = measurements["analyte"].str.upper() == "CRP"
    values = pd.to_numeric(measurements.loc[crp, "value"], errors="coerce")
    measurements.loc[crp & values.notna().reindex(measurements.index, fill_value=False), "value"] = (
        (values.dropna() / 10).map(lambda v: f"{v:.4g}"))
    measurements.loc[crp, "unit"] = "mg/L"
    measurements.to_csv(cohort / "measurements.csv", index=False)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    patients["product"] = np.where(np.arange(len(patients)) % 2 == 0, "Carvykti", "Kymriah")
    patients.to_csv(cohort / "patients.csv", index=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("validate"), n_patients=300, seed=5, params=PARAMS)


def test_validate_flags_unit_shift_and_product_drift_and_recalibrates(trained, tmp_path: Path) -> None:
    config, _, models = trained
    other = tmp_path / "other"
    simulate.main(config, out=other, n_patients=300, seed=11)
    _shift_cohort(other)
    out = tmp_path / "out"
    output = validate.main(config, other, models, out, with_recalibration=True)
    validation = json.loads((out / "validation.json").read_text())
    assert validation == json.loads(json.dumps(output.validation))
    text = json.dumps(validation["drift"])
    assert "CRP" in text and "mg/dL" in text  # unit-shift suspicion names the analyte and the unit
    flagged = {f["feature"] for f in validation["drift"]["features"] if f["level"] in ("major", "moderate")}
    assert {"product", "target_antigen"} & flagged
    for target, update in validation["recalibration"].items():
        scored = output.scored[output.scored["target"] == target]
        after = apply_update(scored["probability"].to_numpy(), update["intercept"], update["slope"])
        observed, predicted = scored["label"].mean(), after.mean()
        assert abs(float(logit(np.array([observed]))[0] - logit(np.array([predicted]))[0])) < 0.1
        assert abs(update["after_in_sample"]["calibration_intercept"]) < 0.1
    # The recalibrated model loads (resealed) and scores with the update applied.
    setup = predict.load_setup(out / "model", config)
    assert all("recalibration" in m.metadata for m in setup.bundle.targets.values())
    html = (out / "validation.html").read_text()
    assert "<html" in html.lower() and "crs_severe" in html


def test_real_shaped_cohort_without_product_or_disease_is_scored_and_validated(trained, tmp_path: Path) -> None:
    config, _, models = trained
    cohort = tmp_path / "real"
    simulate.main(config, out=cohort, n_patients=80, seed=21)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    keep = ["patient_id", "anchor_time", "age", "sex", "tumor_burden", "tumor_burden_unit", "dose", "dose_unit"]
    patients[keep].to_csv(cohort / "patients.csv", index=False)
    (cohort / "treatments.csv").unlink(missing_ok=True)
    result = predict.main(config, cohort, models, tmp_path / "pred", reports=False)
    assert result.predictions["probability"].notna().any()
    assert any("product, disease" in w for w in result.warnings)
    validation = validate.main(config, cohort, models, tmp_path / "val").validation
    assert any("product, disease" in w for w in validation["warnings"])
    assert validation["targets"]["crs_severe"]["landmarks"]


def test_validate_refuses_an_unrelated_output_directory(trained, tmp_path: Path) -> None:
    config, cohort, models = trained
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a crs validate output"):
        validate.main(config, cohort, models, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_parse_config_accepts_the_contract_static_features() -> None:
    assert parse_config(PARAMS).static_features[-1] == "dose"


def test_recalibrated_model_is_registered_with_its_lineage(trained, tmp_path: Path) -> None:
    import mlflow

    from pipeline.serving.registry import MODEL_NAME
    from tests.helpers import in_workdir

    config, cohort, models = trained
    with in_workdir(tmp_path):  # a private MLflow store
        validate.main(config, cohort, models, tmp_path / "out", with_recalibration=True, register=True)
        version = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "candidate")
    assert version.tags["recalibrated"] == "true"
    assert version.tags["parent_model"] == str(models)
    assert version.tags["cohort_fingerprint"] == validate.cohort_fingerprint(cohort)
    assert len(version.tags["cohort_fingerprint"]) == 64
