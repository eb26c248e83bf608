"""crs explain: exact SHAP additivity and schema, summary table, files, MLflow (no patient rows)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import evaluate, explain, explanation, train
from pipeline.config import Config, parse_config
from pipeline.contracts import shap_column
from pipeline.io import write_parquet
from pipeline.model import ModelBundle, load_bundle
from tests.helpers import in_workdir
from tests.pipeline.test_train import LANDMARKS, make_landmarks

_CACHE: dict[str, Run] = {}


@dataclass
class Run:
    workdir: Path
    config: Config
    bundle: ModelBundle
    landmarks: pd.DataFrame
    measurements: pd.DataFrame
    treatments: pd.DataFrame


def paths_under(config: Config, root: Path) -> Config:
    """``config`` with every stage-to-stage path (``config.paths``) moved under ``root``."""
    moved = {name: root / value for name, value in config.paths if isinstance(value, Path)}
    return config.model_copy(update={"paths": config.paths.model_copy(update=moved)})


def synthetic_measurements(landmarks: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IL-6 / CRP series per patient (some censored) and tocilizumab for a few patients."""
    rng = np.random.default_rng(seed)
    rows, treat = [], []
    for i, pid in enumerate(landmarks["patient_id"].astype(str).unique()):
        level = rng.normal()
        for t in (-100.0, -2.0, 12.0, 24.0, 36.0, 48.0, 60.0, 72.0, 96.0):
            il6 = float(np.exp(1.5 + level * max(t, 0) / 40 + rng.normal(scale=0.3)))
            censored = il6 < 3.0
            rows.append((pid, t, "IL6", 3.0 if censored else round(il6, 1), "pg/mL", "left" if censored else "none"))
            rows.append((pid, t + 0.5, "CRP", round(float(np.exp(1 + level * max(t, 0) / 60)), 1), "mg/L", "none"))
        if i % 4 == 0:
            treat.append((pid, 30.0, "tocilizumab", 8.0, "mg/kg"))
        if i % 7 == 0:
            treat.append((pid, 50.0, "dexamethasone", 10.0, "mg"))
    m = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "analyte", "value", "unit", "censoring"])
    m["known_analyte"] = True
    t = pd.DataFrame(treat, columns=["patient_id", "hours_since_anchor", "drug", "dose", "unit"])
    for df in (m, t):
        df["patient_id"] = df["patient_id"].astype("string")
    return m, t


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """train + evaluate once per session on a small synthetic landmark frame (shared by report tests)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    workdir = tmp_path_factory.mktemp("explain_run")
    config = paths_under(parse_config(
        {
            "targets": {"crs_severe": {"event": "CRS", "min_grade": 3}, "icans_severe": {"event": "ICANS", "min_grade": 3}},
            "landmarks_hours": LANDMARKS,
            "featurize": {"analytes": ["IL6", "CRP", "FERRITIN"]},
            "train": {"n_splits": 3, "n_repeats": 1, "n_estimators": 30, "n_bootstrap": 30,
                      "calibration_fraction": 0.34, "n_jobs": 1},
            "explain": {"top_features": 2},
            "report": {"markers": ["IL6", "CRP"], "top_drivers": 3},
        }
    ), workdir)
    landmarks = make_landmarks(150, seed=5)
    measurements, treatments = synthetic_measurements(landmarks)
    write_parquet(landmarks, config.paths.landmarks)
    with in_workdir(workdir):  # the training runs go to a private MLflow store in workdir
        train.main(config)
        evaluate.main(config)
    bundle = load_bundle(config.paths.models_dir)
    _CACHE["run"] = Run(workdir, config, bundle, landmarks, measurements, treatments)
    return _CACHE["run"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return trained_run(tmp_path_factory)


def test_shap_additivity_and_schema(run: Run):
    frames = explanation.explain_landmarks(run.bundle, run.landmarks, run.config)
    assert set(frames) == {"crs_severe", "icans_severe"}
    seen: set[str] = set()
    for target, frame in frames.items():
        model = run.bundle.targets[target]
        assert list(frame.columns[:6]) == explanation.ID_COLUMNS
        assert list(frame.columns[6:]) == [shap_column(f) for f in model.feature_names]
        assert len(frame) == len(run.landmarks)
        assert frame["patient_id"].tolist() == run.landmarks["patient_id"].astype(str).tolist()
        _, values = explanation.shap_matrix(frame)
        # exact TreeSHAP: base + sum of contributions = the booster's log-odds margin
        np.testing.assert_allclose(frame["base_value"] + values.sum(axis=1), frame["margin"], atol=1e-4)
        np.testing.assert_allclose(frame["margin"], model.margin(run.landmarks), atol=1e-6)
        np.testing.assert_allclose(frame["probability"], model.predict(run.landmarks))
        # Bands from the model's validated operating points (issue 13): low below the alert threshold at
        # the row's landmark, high from the stored 90%-specificity cut-off.
        p, hours = frame["probability"].to_numpy(), frame["landmark_hours"].to_numpy()
        bands = model.metadata["bands"]["by_landmark"]
        low = np.array([bands[f"{h:g}"]["low_below"] for h in hours])
        high = np.array([bands[f"{h:g}"]["high_from"] for h in hours])
        np.testing.assert_allclose(low, model.threshold_array(hours))
        assert (high >= low).all() and (high > low).any()
        expected = np.where(p >= high, "high", np.where(p < low, "low", "intermediate"))
        assert frame["band"].tolist() == expected.tolist()
        seen |= set(expected)
    assert {"low", "intermediate", "high"} <= seen  # not vacuous: every band occurs


def test_explain_is_pure(run: Run):
    before = run.landmarks.copy()
    outputs = explain.run(run.config, run.landmarks, run.bundle)
    pd.testing.assert_frame_equal(run.landmarks, before)
    assert set(outputs) == {"crs_severe", "crs_severe_summary", "icans_severe", "icans_severe_summary"}


def test_summary_maps_features_to_clinical_terms(run: Run):
    frame = explanation.explain_landmarks(run.bundle, run.landmarks, run.config)["crs_severe"]
    summary = explanation.summary_table(frame, run.config, run.bundle.analytes)
    assert list(summary.columns) == explanation.SUMMARY_COLUMNS
    assert summary["rank"].tolist() == list(range(1, len(summary) + 1))
    assert summary["mean_abs_shap"].is_monotonic_decreasing
    il6 = summary.set_index("feature").loc["il6__fold_change"]
    assert (il6["analyte"], il6["summary"], il6["unit"]) == ("IL6", "fold_change", "ratio")
    assert il6["description"] == "latest / baseline IL6"
    crp = summary.set_index("feature").loc["crp__latest"]
    assert crp["unit"] == "mg/L"  # canonical unit from the analyte registry
    # the signal feature of make_landmarks must rank first
    assert summary["feature"].iloc[0] == "il6__fold_change"


def test_main_writes_outputs_and_logs_only_summaries(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{run.workdir / 'mlflow.db'}")
    out = tmp_path / "shap"
    config = run.config.model_copy(update={"paths": run.config.paths.model_copy(update={"shap_dir": out})})
    explain.main(config)
    for target in ("crs_severe", "icans_severe"):
        assert (out / f"{target}.parquet").exists()
        assert (out / f"{target}_summary.csv").exists()
        assert (out / f"{target}_bar.png").exists() and (out / f"{target}_beeswarm.png").exists()
        assert len(list(out.glob(f"{target}_dependence_*.png"))) == 2
    run_id = run.bundle.runs["targets"]["crs_severe"]
    logged = [a.path for a in MlflowClient().list_artifacts(run_id, "explain")]
    assert "explain/crs_severe_summary.csv" in logged
    assert "explain/crs_severe_beeswarm.png" in logged
    assert not any(p.endswith(".parquet") for p in logged)  # patient-level rows stay local


def test_main_rejects_a_damaged_landmark_table(run: Run, tmp_path: Path):
    from pipeline.errors import UserError

    bad = tmp_path / "landmarks.parquet"
    write_parquet(run.landmarks.drop(columns=["landmark_hours"]), bad)
    config = run.config.model_copy(update={"paths": run.config.paths.model_copy(update={"landmarks": bad})})
    with pytest.raises(UserError, match=r"landmarks\.parquet: .*'landmark_hours' missing .*crs featurize"):
        explain.main(config)
