"""``crs evaluate``: honest metrics from the out-of-fold predictions of ``crs train``.

Reads ``data/processed/oof.parquet`` (and ``models/<target>/metadata.json`` for baseline availability)
and writes ``reports/metrics.json`` (public schema, see docs/training.md), dvc-plots data under
``reports/plots/<kind>/<target>.csv``, PNG figures under ``reports/figures/`` and logs everything into
the MLflow runs that ``crs train`` opened (ids in ``models/runs.json``).

Repeats: every metric is computed within each CV repeat (each row predicted exactly once) and then
averaged over repeats. The AUROC CI is a patient-level percentile bootstrap: patients are resampled
with replacement (all their landmark rows with them); each replicate's AUROC is the mean over repeats.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics as M
from pipeline import tracking
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_stage_parquet, write_json
from pipeline.train import BASELINES, MODEL, MODELS_DIR, OOF_PATH, RUNS_PATH, SCORE_BASELINES

METRICS_PATH = Path("reports/metrics.json")
PLOTS_DIR = Path("reports/plots")
FIGURES_DIR = Path("reports/figures")
PLOT_KINDS = ("roc", "pr", "calibration", "decision_curve")

ALL_LANDMARKS = "all"
MIN_EVENTS = 5  # fewer events (or non-events) than this at a landmark: reported as skipped
DIGITS = 4  # rounding in metrics.json: stable, readable diffs in `dvc metrics diff`


def _r(value: float) -> float | None:
    """Round for metrics.json; NaN (undefined) becomes null."""
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), DIGITS)


def _nb_key(pt: float) -> str:
    return f"{pt:.2f}"


def score_metrics(
    y_by_repeat: list[np.ndarray],
    p_by_repeat: list[np.ndarray],
    thr_by_repeat: list[np.ndarray],
    fold_by_repeat: list[np.ndarray],
    boot: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """Metrics of one scorer on one row set, averaged over repeats (see module docstring)."""
    per_repeat: list[dict[str, float]] = []
    nb_rows = []
    boot_aurocs = []
    for y, p, thr, fold in zip(y_by_repeat, p_by_repeat, thr_by_repeat, fold_by_repeat, strict=True):
        slope, intercept = M.calibration_slope_intercept(y, p)
        # One threshold per training fold: report their mean (each row was judged by its own fold's).
        fold_thresholds = pd.Series(thr).groupby(fold).first().to_numpy(dtype=float)
        row = {
            "auroc": M.auroc(y, p),
            "auprc": M.auprc(y, p),
            "brier": M.brier(y, p),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
            **M.classification_at_threshold(y, p, thr),
            "threshold": float(np.nanmean(fold_thresholds)) if np.isfinite(fold_thresholds).any() else math.nan,
        }
        per_repeat.append(row)
        nb_rows.append(M.net_benefit(y, p))
        if boot is not None:  # same resampled patients for every repeat and scorer (paired)
            boot_aurocs.append(M.grouped_auroc_matrix(y, p, *boot))
    out: dict[str, Any] = {}
    for key in per_repeat[0]:
        values = np.array([r[key] for r in per_repeat], dtype=float)
        out[key] = _r(float(np.nanmean(values))) if np.isfinite(values).any() else None
    ci = M.percentile_ci(np.mean(boot_aurocs, axis=0)) if boot_aurocs else (math.nan, math.nan)
    out["auroc_ci"] = [_r(ci[0]), _r(ci[1])]
    nb = np.mean(nb_rows, axis=0)
    out["net_benefit"] = {_nb_key(pt): _r(v) for pt, v in zip(M.NET_BENEFIT_THRESHOLDS, nb, strict=True)}
    ordered = ["auroc", "auroc_ci", "auprc", "brier", "calibration_slope", "calibration_intercept",
               "sensitivity", "specificity", "ppv", "npv", "threshold", "net_benefit"]
    return {k: out[k] for k in ordered}


def evaluate_rows(
    rows: pd.DataFrame, baselines: dict[str, str | None], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """metrics.json entry for one target and landmark (or all landmarks pooled)."""
    repeats = sorted(rows["repeat"].unique())
    by_repeat = [rows[rows["repeat"] == r].reset_index(drop=True) for r in repeats]
    first = by_repeat[0]
    n, events = len(first), int(first["label"].sum())
    if events < MIN_EVENTS or n - events < MIN_EVENTS:
        return {
            "skipped": f"{events} events and {n - events} non-events; need at least {MIN_EVENTS} of each",
            "n": n,
            "events": events,
        }
    for other in by_repeat[1:]:  # paired rows across repeats (train sorts them identically)
        if not other["patient_id"].equals(first["patient_id"]):
            raise UserError(f"{OOF_PATH}: repeats do not cover the same rows; rerun `crs train`")
    boot = M.patient_bootstrap_counts(first["patient_id"].to_numpy(), n_bootstrap, seed) if n_bootstrap > 0 else None
    ys = [d["label"].to_numpy(dtype=float) for d in by_repeat]
    folds = [d["fold"].to_numpy() for d in by_repeat]

    def scorer(name: str) -> dict[str, Any]:
        ps = [d[f"prob__{name}"].to_numpy(dtype=float) for d in by_repeat]
        thrs = [d[f"threshold__{name}"].to_numpy(dtype=float) for d in by_repeat]
        return score_metrics(ys, ps, thrs, folds, boot)

    entry: dict[str, Any] = {"n": n, "events": events, "model": scorer(MODEL), "baselines": {}}
    for name in BASELINES:
        reason = baselines.get(name)
        if reason is None and f"prob__{name}" not in first.columns:
            reason = "not scored by crs train"
        if reason is None and name in SCORE_BASELINES and first[f"score__{name}"].isna().all():
            reason = f"no '{SCORE_BASELINES[name]}' values at this landmark"
        if reason is not None:
            entry["baselines"][name] = {"unavailable": reason}
            continue
        result = scorer(name)
        if name in SCORE_BASELINES:
            # Missing scores were imputed with the training-fold median; say how many.
            result["missing_fraction"] = _r(float(first[f"score__{name}"].isna().mean()))
        entry["baselines"][name] = result
    return entry


def _baseline_reasons(target: str) -> dict[str, str | None]:
    path = MODELS_DIR / target / "metadata.json"
    if not path.exists():
        return {}
    meta = json.loads(path.read_text())
    return {
        name: (None if info.get("available") else info.get("reason", "unavailable"))
        for name, info in meta.get("baselines", {}).items()
    }


def _target_skip_reason(target: str) -> str:
    path = MODELS_DIR / target / "metadata.json"
    if path.exists():
        meta = json.loads(path.read_text())
        if "skipped" in meta:
            return f"not trained: {meta['skipped']}"
    return "no out-of-fold predictions for this target (rerun `crs train`)"


def compute_metrics(oof: pd.DataFrame, config: Config) -> dict[str, Any]:
    cfg = config.train
    out: dict[str, Any] = {}
    keys = [(landmark_key(h), h) for h in config.landmarks_hours] + [(ALL_LANDMARKS, None)]
    for t_index, target in enumerate(config.targets):
        sub = oof[oof["target"] == target]
        out[target] = {}
        if sub.empty:
            reason = _target_skip_reason(target)
            for key, _ in keys:
                out[target][key] = {"skipped": reason, "n": 0, "events": 0}
            continue
        reasons = _baseline_reasons(target)
        for k_index, (key, hours) in enumerate(keys):
            rows = sub if hours is None else sub[sub["landmark_hours"] == hours]
            if rows.empty:
                out[target][key] = {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}
                continue
            # Seed per (target, landmark): results do not depend on which other targets are evaluated.
            seed = cfg.seed * 1009 + t_index * 101 + k_index
            out[target][key] = evaluate_rows(rows, reasons, cfg.n_bootstrap, seed)
    return out


# --------------------------------------------------------------------------- plots


def plot_frames(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """dvc-plots data for one target: the model's out-of-fold predictions, first repeat, all landmarks."""
    first = rows[rows["repeat"] == rows["repeat"].min()]
    y = first["label"].to_numpy(dtype=float)
    p = first[f"prob__{MODEL}"].to_numpy(dtype=float)
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    predicted, observed, counts = M.calibration_curve_bins(y, p, n_bins=10)
    grid = np.round(np.arange(0.01, 0.51, 0.01), 2)
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(5),
        "pr": pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]}).round(5),
        "calibration": pd.DataFrame({"predicted": predicted, "observed": observed, "n": counts}).round(5),
        "decision_curve": pd.DataFrame(
            {
                "threshold": grid,
                "net_benefit": M.net_benefit(y, p, grid),
                "treat_all": M.net_benefit_treat_all(y, grid),
                "treat_none": 0.0,
            }
        ).round(5),
    }


def plot_figure(target: str, rows: pd.DataFrame, available: list[str], path: Path) -> None:
    """2x2 PNG: ROC, PR, calibration, decision curve; model and available baselines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    first = rows[rows["repeat"] == rows["repeat"].min()]
    y = first["label"].to_numpy(dtype=float)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    grid = np.arange(0.01, 0.51, 0.01)
    for name in [MODEL, *available]:
        p = first[f"prob__{name}"].to_numpy(dtype=float)
        style = {"lw": 2.2, "color": "black"} if name == MODEL else {"lw": 1.0, "alpha": 0.8}
        fpr, tpr, _ = roc_curve(y, p)
        axes[0, 0].plot(fpr, tpr, label=f"{name} ({M.auroc(y, p):.2f})", **style)
        precision, recall, _ = precision_recall_curve(y, p)
        axes[0, 1].plot(recall, precision, label=name, **style)
        axes[1, 1].plot(grid, M.net_benefit(y, p, grid), label=name, **style)
    predicted, observed, _ = M.calibration_curve_bins(y, first[f"prob__{MODEL}"].to_numpy(dtype=float))
    axes[1, 0].plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    axes[1, 0].plot(predicted, observed, marker="o", color="black", label=MODEL)
    axes[1, 1].plot(grid, M.net_benefit_treat_all(y, grid), ls="--", color="grey", label="treat all")
    axes[1, 1].axhline(0, color="grey", lw=1)
    axes[1, 1].set_ylim(-0.05, max(0.05, y.mean() * 1.1))
    axes[0, 0].plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    titles = [("ROC", "false positive rate", "true positive rate"), ("Precision-recall", "recall", "precision"),
              ("Calibration (deciles)", "predicted risk", "observed rate"),
              ("Decision curve", "threshold probability", "net benefit")]
    for ax, (title, xlabel, ylabel) in zip(axes.ravel(), titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{target}: out-of-fold predictions, all landmarks, repeat 0 (n={len(y)}, events={int(y.sum())})")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def write_plots(oof: pd.DataFrame, metrics: dict[str, Any], config: Config) -> None:
    """Replace reports/plots and reports/figures as a whole (no stale files from removed targets)."""
    with atomic_dir(PLOTS_DIR) as plots_tmp, atomic_dir(FIGURES_DIR) as fig_tmp:
        for kind in PLOT_KINDS:
            (plots_tmp / kind).mkdir()
        for target in config.targets:
            entry = metrics.get(target, {}).get(ALL_LANDMARKS, {})
            if "skipped" in entry or not entry:
                continue
            rows = oof[oof["target"] == target]
            for kind, frame in plot_frames(rows).items():
                frame.to_csv(plots_tmp / kind / f"{target}.csv", index=False)
            available = [n for n, v in entry["baselines"].items() if "unavailable" not in v]
            plot_figure(target, rows, available, fig_tmp / f"{target}.png")


# --------------------------------------------------------------------------- MLflow


def _flat_metrics(entry_by_landmark: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for lk, entry in entry_by_landmark.items():
        prefix = f"L{lk}"
        out[tracking.metric_key(prefix, "n")] = entry.get("n", 0)
        out[tracking.metric_key(prefix, "events")] = entry.get("events", 0)
        if "skipped" in entry:
            continue
        for key, value in entry["model"].items():
            if key == "auroc_ci":
                if value[0] is not None:
                    out[tracking.metric_key(prefix, "auroc_ci_lo")] = value[0]
                    out[tracking.metric_key(prefix, "auroc_ci_hi")] = value[1]
            elif key == "net_benefit":
                for pt, nb in value.items():
                    if nb is not None:
                        out[tracking.metric_key(prefix, f"net_benefit_{pt}")] = nb
            elif value is not None:
                out[tracking.metric_key(prefix, key)] = value
        for name, b in entry["baselines"].items():
            for key in ("auroc", "auprc", "brier"):
                if b.get(key) is not None:
                    out[tracking.metric_key(prefix, "baseline", name, key)] = b[key]
    return out


def log_to_mlflow(metrics: dict[str, Any], config: Config) -> None:
    import mlflow

    runs = json.loads(RUNS_PATH.read_text()) if RUNS_PATH.exists() else {}
    with tracking.quiet_mlflow():
        tracking.setup(config.train.experiment_name)
        parent_id = runs.get("parent_run_id")
        if not (runs.get("tracking_uri") == tracking.tracking_uri() and parent_id and tracking.run_exists(parent_id)):
            print("evaluate: training runs not found in this tracking store; logging to a new run")
            parent_id, runs = None, {"targets": {}}
        with mlflow.start_run(run_id=parent_id, run_name=None if parent_id else "evaluate") as parent:
            mlflow.log_artifact(str(METRICS_PATH))
            for target, by_landmark in metrics.items():
                run_id = runs.get("targets", {}).get(target)
                kwargs = {"run_id": run_id} if run_id else {"run_name": target}
                with mlflow.start_run(nested=True, parent_run_id=parent.info.run_id, **kwargs):
                    mlflow.log_metrics(_flat_metrics(by_landmark))
                    mlflow.log_dict(by_landmark, "metrics.json")
                    for kind in PLOT_KINDS:
                        csv = PLOTS_DIR / kind / f"{target}.csv"
                        if csv.exists():
                            mlflow.log_artifact(str(csv), artifact_path="plots")
                    png = FIGURES_DIR / f"{target}.png"
                    if png.exists():
                        mlflow.log_artifact(str(png), artifact_path="figures")


def main(config: Config) -> None:
    started = time.perf_counter()
    oof = read_stage_parquet(OOF_PATH, "out-of-fold predictions", "crs train")
    metrics = compute_metrics(oof, config)
    write_json(metrics, METRICS_PATH)
    write_plots(oof, metrics, config)
    for target, by_landmark in metrics.items():
        entry = by_landmark.get(ALL_LANDMARKS, {})
        if "model" in entry:
            lo, hi = entry["model"]["auroc_ci"]
            print(f"evaluate: {target}: AUROC {entry['model']['auroc']} (95% CI {lo}-{hi}), all landmarks")
        else:
            print(f"evaluate: {target}: skipped ({entry.get('skipped')})")
    compute_seconds = time.perf_counter() - started
    log_to_mlflow(metrics, config)
    print(f"evaluate: metrics and plots {compute_seconds:.1f} s, total {time.perf_counter() - started:.1f} s")
