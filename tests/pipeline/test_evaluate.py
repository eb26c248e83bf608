"""crs evaluate: metrics.json schema, honest comparisons, skipped landmarks, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import evaluate, train
from pipeline.config import parse_config
from pipeline.io import write_parquet
from tests.helpers import in_workdir
from tests.pipeline.test_train import LANDMARKS, make_landmarks

SPARSE_LANDMARK = 96.0  # only 3 events at risk here -> reported as skipped
EMPTY_LANDMARK = 120.0  # in params but no rows at all


def eval_config(**train_overrides):
    return parse_config(
        {
            "targets": {"crs_severe": {"event": "CRS", "min_grade": 3}, "icans_severe": {"event": "ICANS", "min_grade": 3}},
            "landmarks_hours": [*LANDMARKS, SPARSE_LANDMARK, EMPTY_LANDMARK],
            "train": {
                "n_splits": 3,
                "n_repeats": 2,
                "n_estimators": 40,
                "n_bootstrap": 100,
                "calibration_fraction": 0.34,
                **train_overrides,
            },
        }
    )


def landmark_frame(seed: int = 11) -> pd.DataFrame:
    df = make_landmarks(220, seed=seed, with_scores=True)
    df = df.drop(columns=["car_hematotox__baseline"])  # an unavailable baseline
    late = df[df["landmark_hours"] == 72.0].copy()
    late["landmark_hours"] = SPARSE_LANDMARK
    late["label__crs_severe"] = 0.0
    late.iloc[:3, late.columns.get_loc("label__crs_severe")] = 1.0
    out = pd.concat([df, late], ignore_index=True)
    out["product"] = out["product"].astype("category")
    return out


def run_pipeline(workdir: Path, config, df: pd.DataFrame) -> dict:
    """train + evaluate inside ``workdir`` with a private MLflow store."""
    with in_workdir(workdir):
        write_parquet(df, config.featurize.output_path)
        train.main(config)
        evaluate.main(config)
        return json.loads((workdir / evaluate.METRICS_PATH).read_text())


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("run_a")
    return workdir, run_pipeline(workdir, eval_config(n_jobs=2), landmark_frame())


def test_metrics_schema(run_a):
    _, metrics = run_a
    assert list(metrics) == ["crs_severe", "icans_severe"]
    assert list(metrics["crs_severe"]) == ["0", "24", "48", "72", "96", "120", "all"]
    entry = metrics["crs_severe"]["48"]
    assert isinstance(entry["n"], int) and isinstance(entry["events"], int)
    model = entry["model"]
    for key in ("auroc", "auprc", "brier", "calibration_slope", "calibration_intercept", "sensitivity",
                "specificity", "ppv", "npv", "threshold"):
        assert isinstance(model[key], float), key
    assert len(model["auroc_ci"]) == 2
    assert list(model["net_benefit"]) == ["0.05", "0.10", "0.15", "0.20", "0.25", "0.30", "0.35", "0.40", "0.45", "0.50"]
    assert set(entry["baselines"]) == set(train.BASELINES)
    assert "auroc" in entry["baselines"]["easix"] and "auroc_ci" in entry["baselines"]["logistic_regression"]


def test_counts_match_landmark_rows(run_a):
    _, metrics = run_a
    df = landmark_frame()
    at_risk = df[(df["landmark_hours"] == 24.0) & df["label__crs_severe"].notna()]
    assert metrics["crs_severe"]["24"]["n"] == len(at_risk)
    assert metrics["crs_severe"]["24"]["events"] == int(at_risk["label__crs_severe"].sum())
    all_rows = df[df["label__crs_severe"].notna()]
    assert metrics["crs_severe"]["all"]["n"] == len(all_rows)


def test_model_beats_noise_baselines_with_honest_ci(run_a):
    _, metrics = run_a
    entry = metrics["crs_severe"]["all"]
    model = entry["model"]
    assert model["auroc"] > 0.75
    lo, hi = model["auroc_ci"]
    assert lo <= model["auroc"] <= hi
    for name in ("easix", "il6_latest", "crp_latest", "ferritin_latest"):
        assert entry["baselines"][name]["auroc"] < 0.65, name  # pure noise in the synthetic frame
        assert model["auroc"] > entry["baselines"][name]["auroc_ci"][1]
    # 90%-sensitivity threshold chosen in training folds: close to, not exactly, 0.9 on test folds.
    assert 0.75 < model["sensitivity"] <= 1.0
    assert 0.5 < model["calibration_slope"] < 2.0


def test_unavailable_and_skipped(run_a):
    _, metrics = run_a
    baselines = metrics["crs_severe"]["all"]["baselines"]
    assert baselines["car_hematotox"] == {"unavailable": "column 'car_hematotox__baseline' not in landmarks.parquet"}
    assert 0 < baselines["m_easix"]["missing_fraction"] < 0.5
    sparse = metrics["crs_severe"]["96"]
    assert "skipped" in sparse and sparse["events"] == 3 and "model" not in sparse
    empty = metrics["crs_severe"]["120"]
    assert empty == {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}


def test_plots_and_figures(run_a):
    workdir, _ = run_a
    for kind in evaluate.PLOT_KINDS:
        frame = pd.read_csv(workdir / evaluate.PLOTS_DIR / kind / "crs_severe.csv")
        assert len(frame) > 2
    roc = pd.read_csv(workdir / evaluate.PLOTS_DIR / "roc" / "crs_severe.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and roc["fpr"].is_monotonic_increasing
    assert (workdir / evaluate.FIGURES_DIR / "crs_severe.png").stat().st_size > 10_000


def test_mlflow_runs_have_metrics_and_artifacts(run_a):
    workdir, _ = run_a
    import mlflow
    from mlflow.tracking import MlflowClient

    runs = json.loads((workdir / train.RUNS_PATH).read_text())
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient()
    child = client.get_run(runs["targets"]["crs_severe"])
    assert "L48/auroc" in child.data.metrics and "Lall/baseline/easix/auroc" in child.data.metrics
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"metrics.json", "plots", "figures", "model_files"} <= names
    models = mlflow.search_logged_models(experiment_ids=[runs["experiment_id"]], output_format="list")
    assert any(m.source_run_id == child.info.run_id for m in models)


def test_same_inputs_same_bytes(run_a, tmp_path: Path):
    """Identical metrics.json and model files on a second run (also with a different n_jobs)."""
    workdir_a, _ = run_a
    run_pipeline(tmp_path, eval_config(n_jobs=1), landmark_frame())
    assert (tmp_path / evaluate.METRICS_PATH).read_bytes() == (workdir_a / evaluate.METRICS_PATH).read_bytes()
    files_a = sorted(p.relative_to(workdir_a) for p in (workdir_a / "models").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path) for p in (tmp_path / "models").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == "runs.json":  # MLflow run ids differ by design
            continue
        assert (tmp_path / rel).read_bytes() == (workdir_a / rel).read_bytes(), rel
    oof_a = pd.read_parquet(workdir_a / train.OOF_PATH)
    oof_b = pd.read_parquet(tmp_path / train.OOF_PATH)
    pd.testing.assert_frame_equal(oof_a, oof_b)


def test_evaluate_without_oof_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pipeline.errors import UserError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="oof.parquet"):
        evaluate.main(eval_config())


def test_evaluate_rows_skips_single_class():
    rows = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(20)],
            "repeat": 0,
            "fold": np.arange(20) % 2,
            "label": [1.0] * 3 + [0.0] * 17,
            "prob__model": np.linspace(0, 1, 20),
            "threshold__model": 0.5,
        }
    )
    out = evaluate.evaluate_rows(rows, {}, 10, 0)
    assert out["events"] == 3 and "skipped" in out
