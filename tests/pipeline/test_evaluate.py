"""crs evaluate: metrics.json schema, honest comparisons, skipped landmarks, plots, MLflow, errors.

Built on a hand-made out-of-fold table (the ``crs train`` output contract, docs/CONTRACTS.md), so these
tests exercise evaluate alone: ``run`` on in-memory frames, ``main`` with ``config.paths`` in tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline import evaluate
from pipeline import metrics as M
from pipeline.config import parse_config
from pipeline.errors import UserError
from pipeline.evaluation import LANDMARK_PLOT_KINDS, PLOT_KINDS, evaluate_rows
from pipeline.io import write_json, write_parquet
from pipeline.model.baselines import BASELINES, LOGISTIC_BASELINE, MODEL_BASELINES, SCORE_BASELINES

LANDMARKS = [0.0, 24.0, 48.0]
SPARSE_LANDMARK = 96.0  # only 3 events at risk here -> reported as skipped
EMPTY_LANDMARK = 120.0  # in params but no rows at all
N_PATIENTS, N_REPEATS, N_FOLDS = 90, 2, 3
UNAVAILABLE = "column 'car_hematotox__baseline' not in landmarks.parquet"
TEACHEY_AT_0 = "not computable: sgp130__latest has no values at this landmark"
NOISE = ("easix", "il6_latest", "crp_latest", "ferritin_latest", "hay_2017")
MODEL_KEYS = ["auroc", "auroc_ci", "auprc", "brier", "calibration_slope", "calibration_intercept", "sensitivity",
              "specificity", "ppv", "npv", "threshold", "net_benefit",
              "calibration_slope_ci", "calibration_intercept_ci", "net_benefit_ci"]


def eval_config(tmp_path: Path | None = None, targets=("crs_severe", "icans_severe", "never_trained")):
    definitions = {
        "crs_severe": {"event": "CRS", "min_grade": 3},
        "icans_severe": {"event": "ICANS", "min_grade": 3},
        "never_trained": {"event": "ICANS", "min_grade": 4},
    }
    raw = {
        "targets": {t: definitions[t] for t in targets},
        "landmarks_hours": [*LANDMARKS, SPARSE_LANDMARK, EMPTY_LANDMARK],
        "train": {"n_splits": N_FOLDS, "n_repeats": N_REPEATS, "n_bootstrap": 100},
    }
    if tmp_path is not None:
        raw["paths"] = {
            "oof": str(tmp_path / "oof.parquet"),
            "models_dir": str(tmp_path / "models"),
            "metrics": str(tmp_path / "reports" / "metrics.json"),
            "metrics_summary": str(tmp_path / "reports" / "summary.json"),
            "plots_dir": str(tmp_path / "reports" / "plots"),
            "figures_dir": str(tmp_path / "reports" / "figures"),
        }
    return parse_config(raw)


def _scorer_columns(name: str, signal: np.ndarray, y: np.ndarray, rng, score: bool) -> dict[str, np.ndarray]:
    """prob__/threshold__ (and score__) columns: a logistic of ``signal`` plus noise."""
    prob = 1 / (1 + np.exp(-(signal + rng.normal(scale=0.8, size=len(y)))))
    cols = {f"prob__{name}": prob, f"threshold__{name}": np.full(len(y), float(np.quantile(prob[y == 1], 0.1)))}
    if score:
        cols[f"score__{name}"] = np.log(prob / (1 - prob))
    return cols


def _target_rows(target: str, t_index: int, seed: int) -> pd.DataFrame:
    """OOF rows of one target: every patient at every landmark, N_REPEATS repeats in the same order."""
    rng = np.random.default_rng(seed + t_index)
    patients = np.repeat([f"P{i:03d}" for i in range(N_PATIENTS)], len(LANDMARKS))
    hours = np.tile(LANDMARKS, N_PATIENTS)
    y = (rng.random(len(patients)) < 0.3).astype(float)
    frames = []
    for repeat in range(N_REPEATS):
        fold = (np.arange(N_PATIENTS).repeat(len(LANDMARKS)) + repeat) % N_FOLDS
        frame = {"patient_id": patients, "landmark_hours": hours, "target": target, "repeat": repeat,
                 "fold": fold, "label": y, "raw__model": rng.random(len(y))}
        frame |= _scorer_columns("model", 3.0 * (y - 0.3), y, rng, score=False)
        for name in SCORE_BASELINES:
            if name != "car_hematotox":  # never scored: its column is not in the landmark table
                frame |= _scorer_columns(name, np.zeros(len(y)), y, rng, score=True)
        frame |= _scorer_columns(LOGISTIC_BASELINE, 1.5 * (y - 0.3), y, rng, score=False)
        for name in MODEL_BASELINES[1:]:
            frame |= _scorer_columns(name, 1.0 * (y - 0.3), y, rng, score=False)
        frames.append(pd.DataFrame(frame))
    out = pd.concat(frames, ignore_index=True)
    out.loc[out.index % 7 == 0, "score__m_easix"] = np.nan  # imputed by train: reported as missing_fraction
    out.loc[out["landmark_hours"] == 0.0, "score__m_easix"] = np.nan  # no m-EASIX at all at landmark 0
    return out


def make_oof(seed: int = 0) -> pd.DataFrame:
    """A small OOF table for crs_severe and icans_severe (never_trained has no rows)."""
    crs = _target_rows("crs_severe", 0, seed)
    sparse = crs[crs["landmark_hours"] == 48.0].copy()
    sparse["landmark_hours"] = SPARSE_LANDMARK
    sparse["label"] = 0.0
    sparse.loc[sparse["patient_id"].isin(["P000", "P001", "P002"]), "label"] = 1.0
    oof = pd.concat([crs, sparse, _target_rows("icans_severe", 1, seed)], ignore_index=True)
    return oof.sort_values(["target", "repeat", "patient_id", "landmark_hours"], kind="stable", ignore_index=True)


def make_metadata() -> dict[str, dict]:
    baselines = {name: {"available": True} for name in BASELINES}
    baselines["car_hematotox"] = {"available": False, "reason": UNAVAILABLE}
    crs = {**baselines, "teachey_2016": {"available": True, "unavailable_at": {"0": TEACHEY_AT_0}}}
    return {
        "crs_severe": {"baselines": crs},
        "icans_severe": {"baselines": baselines},
        "never_trained": {"skipped": "only 2 events"},
    }


@pytest.fixture(scope="module")
def result():
    return evaluate.run(eval_config(), make_oof(), make_metadata())


def test_metrics_schema(result):
    metrics, _ = result
    assert list(metrics) == ["crs_severe", "icans_severe", "never_trained"]
    assert list(metrics["crs_severe"]) == ["0", "24", "48", "96", "120", "all"]
    entry = metrics["crs_severe"]["48"]
    assert isinstance(entry["n"], int) and isinstance(entry["events"], int)
    model = entry["model"]
    assert list(model) == MODEL_KEYS  # the original 12 keys first, additions after
    for key in ("auroc", "auprc", "brier", "calibration_slope", "calibration_intercept", "sensitivity",
                "specificity", "ppv", "npv", "threshold"):
        assert isinstance(model[key], float), key
    assert len(model["auroc_ci"]) == 2
    assert list(model["net_benefit"]) == ["0.05", "0.10", "0.15", "0.20", "0.25", "0.30", "0.35", "0.40", "0.45", "0.50"]
    assert list(entry["baselines"]) == list(BASELINES)
    assert "auroc" in entry["baselines"]["easix"] and "auroc_ci" in entry["baselines"]["logistic_regression"]
    assert list(entry["baselines"]["easix"]) == [*MODEL_KEYS, "missing_fraction", "auroc_difference"]
    assert list(entry["baselines"]["simple_summaries"]) == [*MODEL_KEYS, "auroc_difference"]
    assert list(model["net_benefit_ci"]) == list(model["net_benefit"])


def test_every_ci_contains_its_estimate(result):
    metrics, _ = result
    for target in ("crs_severe", "icans_severe"):
        for key in ("0", "24", "48", "all"):
            entry = metrics[target][key]
            scorers = {"model": entry["model"]} | {
                name: b for name, b in entry["baselines"].items() if "unavailable" not in b
            }
            for name, m in scorers.items():
                for metric in ("auroc", "calibration_slope", "calibration_intercept"):
                    lo, hi = m[f"{metric}_ci"]
                    if lo is None:  # null only where the fits do not converge (near-separated model)
                        assert key != "all" and abs(m["calibration_slope"]) > 10, (target, key, name, metric)
                        continue
                    assert lo <= m[metric] <= hi, (target, key, name, metric)
                for pt, (lo, hi) in m["net_benefit_ci"].items():
                    assert lo - 1e-4 <= m["net_benefit"][pt] <= hi + 1e-4, (target, key, name, pt)
                if name != "model":
                    diff = m["auroc_difference"]
                    assert diff["estimate"] == pytest.approx(entry["model"]["auroc"] - m["auroc"], abs=2e-4)
                    assert diff["ci"][0] <= diff["estimate"] <= diff["ci"][1], (target, key, name)


def test_counts_and_auroc_by_hand(result):
    metrics, _ = result
    oof = make_oof()
    rows = oof[(oof["target"] == "crs_severe") & (oof["landmark_hours"] == 24.0)]
    first = rows[rows["repeat"] == 0]
    assert metrics["crs_severe"]["24"]["n"] == len(first) == N_PATIENTS
    assert metrics["crs_severe"]["24"]["events"] == int(first["label"].sum())
    # AUROC: computed within each repeat, then averaged over repeats, rounded to 4 digits.
    by_repeat = [roc_auc_score(r["label"], r["prob__model"]) for _, r in rows.groupby("repeat")]
    assert metrics["crs_severe"]["24"]["model"]["auroc"] == round(float(np.mean(by_repeat)), 4)
    assert metrics["crs_severe"]["all"]["n"] == N_PATIENTS * len(LANDMARKS) + N_PATIENTS


def test_model_beats_noise_baselines_with_honest_ci(result):
    metrics, _ = result
    entry = metrics["crs_severe"]["all"]
    model = entry["model"]
    assert model["auroc"] > 0.8
    lo, hi = model["auroc_ci"]
    assert lo <= model["auroc"] <= hi
    for name in NOISE:
        assert entry["baselines"][name]["auroc"] < 0.65, name  # pure noise
        assert model["auroc"] > entry["baselines"][name]["auroc_ci"][1]
    # Threshold from the 10% quantile of event probabilities: sensitivity about 0.9.
    assert 0.8 < model["sensitivity"] <= 1.0


def test_unavailable_and_skipped(result):
    metrics, _ = result
    baselines = metrics["crs_severe"]["all"]["baselines"]
    assert baselines["car_hematotox"] == {"unavailable": UNAVAILABLE}
    assert 0 < baselines["m_easix"]["missing_fraction"] < 0.5
    assert metrics["crs_severe"]["0"]["baselines"]["m_easix"] == {
        "unavailable": "no 'm_easix__latest' values at this landmark"
    }
    # A fitted baseline without inputs at one landmark (train's `unavailable_at`): unavailable there only.
    assert metrics["crs_severe"]["0"]["baselines"]["teachey_2016"] == {"unavailable": TEACHEY_AT_0}
    assert "auroc" in metrics["crs_severe"]["24"]["baselines"]["teachey_2016"]
    assert "auroc" in metrics["crs_severe"]["all"]["baselines"]["teachey_2016"]
    assert "auroc" in metrics["icans_severe"]["0"]["baselines"]["teachey_2016"]
    sparse = metrics["crs_severe"]["96"]
    assert "skipped" in sparse and sparse["events"] == 3 and "model" not in sparse
    assert metrics["crs_severe"]["120"] == {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}
    assert metrics["never_trained"]["all"] == {"skipped": "not trained: only 2 events", "n": 0, "events": 0}
    assert metrics["icans_severe"]["96"] == {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}


def test_same_inputs_same_numbers_whatever_else_is_evaluated(result):
    metrics, _ = result
    again, _ = evaluate.run(eval_config(), make_oof(), make_metadata())
    assert json.dumps(again) == json.dumps(metrics)
    # Seeds are per (target, landmark): dropping another target changes nothing for this one.
    alone, _ = evaluate.run(eval_config(targets=("crs_severe",)), make_oof(), make_metadata())
    assert alone["crs_severe"] == metrics["crs_severe"]


def test_plot_frames(result):
    _, plots = result
    assert list(plots) == ["crs_severe", "icans_severe"]  # not never_trained: nothing to plot
    for kind in PLOT_KINDS:
        assert len(plots["crs_severe"][kind]) > 2, kind
    roc = plots["crs_severe"]["roc"]
    assert list(roc.columns) == ["fpr", "tpr"] and roc["fpr"].is_monotonic_increasing
    calibration = plots["crs_severe"]["calibration"]
    assert calibration["n"].sum() == N_PATIENTS * len(LANDMARKS) + N_PATIENTS  # first repeat, all rows


def _write_inputs(config, oof: pd.DataFrame) -> None:
    write_parquet(oof, config.paths.oof)
    for target, meta in make_metadata().items():
        write_json(meta, config.paths.models_dir / target / "metadata.json")


def test_main_writes_outputs_at_config_paths_and_logs_to_mlflow(tmp_path, monkeypatch, result):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = eval_config(tmp_path)
    _write_inputs(config, make_oof())
    evaluate.main(config)
    metrics, plots = result
    assert json.loads(config.paths.metrics.read_text()) == json.loads(json.dumps(metrics))
    for kind in PLOT_KINDS:
        written = pd.read_csv(config.paths.plots_dir / kind / "crs_severe.csv")
        pd.testing.assert_frame_equal(written, plots["crs_severe"][kind], check_dtype=False)
    for kind in LANDMARK_PLOT_KINDS:
        written = pd.read_csv(config.paths.plots_dir / kind / "L24" / "crs_severe.csv")
        pd.testing.assert_frame_equal(written, plots["crs_severe"][f"{kind}/L24"], check_dtype=False)
    assert (config.paths.figures_dir / "crs_severe.png").stat().st_size > 10_000
    assert not (config.paths.figures_dir / "never_trained.png").exists()
    crs_all = metrics["crs_severe"]["all"]["model"]
    assert json.loads(config.paths.metrics_summary.read_text()) == {
        "crs_severe": {"auroc": crs_all["auroc"], "slope": crs_all["calibration_slope"]},
        "icans_severe": {"auroc": metrics["icans_severe"]["all"]["model"]["auroc"],
                         "slope": metrics["icans_severe"]["all"]["model"]["calibration_slope"]},
        "never_trained": {"auroc": None, "slope": None},
    }

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    child = next(r for r in runs if r.info.run_name == "crs_severe")  # no runs.json: a new "evaluate" run
    assert "L24/auroc" in child.data.metrics and "Lall/baseline/easix/auroc" in child.data.metrics
    for key in ("Lall/calibration_slope_ci_lo", "L24/net_benefit_0.10_ci_hi",
                "Lall/baseline/easix/auroc_difference_estimate", "Lall/baseline/easix/auroc_difference_ci_lo"):
        assert key in child.data.metrics, key
    names = {a.path for a in MlflowClient().list_artifacts(child.info.run_id)}
    assert {"metrics.json", "plots", "figures"} <= names


def test_missing_or_damaged_oof_is_a_user_error(tmp_path):
    config = eval_config(tmp_path)
    with pytest.raises(UserError, match="oof.parquet"):
        evaluate.main(config)
    _write_inputs(config, make_oof().drop(columns=["fold"]))
    with pytest.raises(UserError, match=r"oof.parquet: out-of-fold predictions: column 'fold' missing.*crs train"):
        evaluate.main(config)
    assert not config.paths.metrics.exists()


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
    out = evaluate_rows(rows, {}, 10, 0)
    assert out == {"skipped": "3 events and 17 non-events; need at least 5 of each", "n": 20, "events": 3}


def test_unpaired_repeats_are_a_user_error():
    oof = make_oof()
    rows = oof[(oof["target"] == "crs_severe") & (oof["landmark_hours"] == 24.0)]
    second = rows[rows["repeat"] == 1].iloc[::-1]
    shuffled = pd.concat([rows[rows["repeat"] == 0], second], ignore_index=True)
    with pytest.raises(UserError, match="oof.parquet: repeats do not cover the same rows"):
        evaluate_rows(shuffled, {}, 10, 0, source="data/processed/oof.parquet")


def _hand_rows(label, model_p, score, prob, fold) -> pd.DataFrame:
    n = len(label)
    return pd.DataFrame({
        "patient_id": [f"p{i:02d}" for i in range(n)], "landmark_hours": 24.0, "repeat": 0, "fold": fold,
        "label": np.asarray(label, dtype=float), "prob__model": model_p, "threshold__model": 0.5,
        "score__easix": score, "prob__easix": prob, "threshold__easix": 0.5,
    })


def test_published_score_auroc_is_the_raw_scores_even_when_a_fold_reverses_it():
    rng = np.random.default_rng(4)
    n = 80
    label = (rng.random(n) < 0.4).astype(float)
    score = np.round(label + rng.normal(size=n), 1)  # ties on purpose
    score[::9] = np.nan  # missing: ranked at the median of the observed raw values
    fold = np.arange(n) % 2
    filled = np.where(np.isnan(score), np.nanmedian(score), score)
    # Per-fold recalibration with a negative slope in fold 1 reverses that fold's ranking.
    prob = np.where(fold == 0, 1 / (1 + np.exp(-filled)), 1 / (1 + np.exp(filled)))
    assert roc_auc_score(label, prob) < roc_auc_score(label, filled) - 0.1
    rows = _hand_rows(label, rng.random(n), score, prob, fold)
    out = evaluate_rows(rows, {name: "absent" for name in BASELINES if name != "easix"}, 50, 0)
    easix = out["baselines"]["easix"]
    assert easix["auroc"] == round(roc_auc_score(label, filled), 4)
    assert easix["auprc"] == round(float(M.auprc(label, filled)), 4)
    assert easix["brier"] == round(float(M.brier(label, prob)), 4)  # probabilities still give Brier
    assert easix["missing_fraction"] == round(float(np.isnan(score).mean()), 4)
    lo, hi = easix["auroc_ci"]
    assert lo <= easix["auroc"] <= hi


def test_paired_auroc_difference_by_hand():
    label = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    model_p = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1, 0.05]  # AUROC 1
    # Event scores 5..1 vs non-event scores 4.5..0.5: 5 + 4 + 3 + 2 + 1 = 15 of 25 pairs -> AUROC 0.6
    score = np.array([5, 4, 3, 2, 1, 4.5, 3.5, 2.5, 1.5, 0.5])
    rows = _hand_rows(label, model_p, score, score / 10, np.arange(10) % 2)
    out = evaluate_rows(rows, {name: "absent" for name in BASELINES if name != "easix"}, 200, 11)
    diff = out["baselines"]["easix"]["auroc_difference"]
    assert out["model"]["auroc"] == 1.0 and out["baselines"]["easix"]["auroc"] == 0.6
    assert diff["estimate"] == 0.4
    # Same patient resamples for both: each replicate's difference is 1 - the baseline's replicate AUROC.
    codes, counts = M.patient_bootstrap_counts(rows["patient_id"].to_numpy(), 200, 11)
    replicate = 1 - M.grouped_auroc_matrix(np.asarray(label, float), score, codes, counts)
    lo, hi = M.percentile_ci(replicate)
    assert diff["ci"] == [round(lo, 4), round(hi, 4)]
    assert 0.0 <= diff["ci"][0] <= 0.4 <= diff["ci"][1] <= 1.0


def test_calibration_and_decision_curves_per_landmark_over_all_repeats(result):
    _, plots = result
    frames = plots["crs_severe"]
    oof = make_oof()
    for hours, key in ((0.0, "L0"), (24.0, "L24"), (48.0, "L48"), (SPARSE_LANDMARK, "L96")):
        calibration = frames[f"calibration_by_landmark/{key}"]
        at = oof[(oof["target"] == "crs_severe") & (oof["landmark_hours"] == hours)]
        assert calibration["n"].sum() == len(at) == N_REPEATS * N_PATIENTS  # every repeat's rows
        decision = frames[f"decision_curve_by_landmark/{key}"]
        assert list(decision.columns) == ["threshold", "net_benefit", "treat_all", "treat_none"]
        nb = M.net_benefit(at["label"], at["prob__model"], [0.1])[0]
        assert decision.loc[decision["threshold"] == 0.1, "net_benefit"].item() == round(nb, 5)
    assert {k.split("/")[0] for k in frames if "/" in k} == set(LANDMARK_PLOT_KINDS)


def test_dvc_metrics_show_fits_120_columns(tmp_path):
    """Issue 13: `dvc metrics show` on the headline file of two targets fits a 120-column terminal (the
    full metrics.json printed about 1,750 columns)."""
    import subprocess
    import sys

    metrics, _ = evaluate.run(eval_config(targets=("crs_severe", "icans_severe")), make_oof(), {})
    (tmp_path / "reports").mkdir()
    write_json(evaluate.headline(metrics), tmp_path / "reports" / "summary.json")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - reports/summary.json\n")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run([*dvc, "metrics", "show"], cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}).stdout
    lines = [line for line in shown.splitlines() if line.strip()]
    assert "crs_severe.auroc" in shown and "icans_severe.slope" in shown
    assert f"{metrics['crs_severe']['all']['model']['auroc']}"[:4] in shown
    assert max(map(len, lines)) <= 120, shown
