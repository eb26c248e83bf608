"""Logging evaluation results into the MLflow runs that ``crs train`` opened (ids in ``models/runs.json``)."""

from __future__ import annotations

import json
from typing import Any

from pipeline import tracking
from pipeline.config import Config
from pipeline.evaluation.plots import LANDMARK_PLOT_KINDS, PLOT_KINDS


def _flatten(prefix: str, key: str, value: Any, out: dict[str, float]) -> None:
    """One metrics.json value as MLflow metrics: [lo, hi] -> key_lo / key_hi, dicts by their keys
    (``net_benefit_0.10``, ``net_benefit_0.10_ci_lo``, ``auroc_difference_estimate``), nulls dropped."""
    if isinstance(value, list):
        _flatten(prefix, f"{key}_lo", value[0], out)
        _flatten(prefix, f"{key}_hi", value[1], out)
    elif isinstance(value, dict):
        for sub, v in value.items():
            _flatten(prefix, f"net_benefit_{sub}_ci" if key == "net_benefit_ci" else f"{key}_{sub}", v, out)
    elif value is not None and not isinstance(value, str):
        out[tracking.metric_key(prefix, key)] = value


def _model_metrics(prefix: str, model: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in model.items():
        _flatten(prefix, key, value, out)
    return out


#: Baseline keys logged to MLflow (the rest stays in metrics.json, also logged as an artifact).
_BASELINE_KEYS = ("auroc", "auprc", "brier", "auroc_difference")


def flat_metrics(entry_by_landmark: dict[str, Any]) -> dict[str, float]:
    """One target's metrics.json entries as flat MLflow metric keys ("L48/auroc", "Lall/baseline/easix/auroc",
    "L48/baseline/easix/auroc_difference_ci_lo")."""
    out: dict[str, float] = {}
    for lk, entry in entry_by_landmark.items():
        prefix = f"L{lk}"
        out[tracking.metric_key(prefix, "n")] = entry.get("n", 0)
        out[tracking.metric_key(prefix, "events")] = entry.get("events", 0)
        if "skipped" in entry:
            continue
        out.update(_model_metrics(prefix, entry["model"]))
        for name, b in entry["baselines"].items():
            for key in _BASELINE_KEYS:
                _flatten(tracking.metric_key(prefix, "baseline", name), key, b.get(key), out)
    return out


def _log_target(target: str, by_landmark: dict[str, Any], config: Config) -> None:
    import mlflow

    mlflow.log_metrics(flat_metrics(by_landmark))
    mlflow.log_dict(by_landmark, "metrics.json")
    for kind in PLOT_KINDS:
        csv = config.paths.plots_dir / kind / f"{target}.csv"
        if csv.exists():
            mlflow.log_artifact(str(csv), artifact_path="plots")
    for kind in LANDMARK_PLOT_KINDS:
        for csv in sorted((config.paths.plots_dir / kind).glob(f"*/{target}.csv")):
            mlflow.log_artifact(str(csv), artifact_path=f"plots/{kind}/{csv.parent.name}")
    png = config.paths.figures_dir / f"{target}.png"
    if png.exists():
        mlflow.log_artifact(str(png), artifact_path="figures")


def log_to_mlflow(metrics: dict[str, Any], config: Config) -> None:
    """Metrics, plot data and figures into the training runs (or a new "evaluate" run if they are gone)."""
    import mlflow

    runs_path = config.paths.runs
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    with tracking.training_runs(runs, config.train.experiment_name, "evaluate") as open_target:
        mlflow.log_artifact(str(config.paths.metrics))
        for target, by_landmark in metrics.items():
            with open_target(target):
                _log_target(target, by_landmark, config)
