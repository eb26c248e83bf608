"""``crs evaluate``: honest metrics from the out-of-fold predictions of ``crs train``.

Reads ``config.paths.oof`` (and ``<models_dir>/<target>/metadata.json`` for baseline availability) and
writes ``config.paths.metrics`` (public schema, see docs/training.md), dvc-plots data under
``<plots_dir>/<kind>/<target>.csv`` (per landmark: ``<plots_dir>/<kind>_by_landmark/L<h>/<target>.csv``), PNG figures under ``figures_dir`` and logs everything into the
MLflow runs that ``crs train`` opened. ``run`` is pure (frames in, metrics and plot frames out); the
library is :mod:`pipeline.evaluation` (how repeats and the patient bootstrap work: its ``scores``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import contracts
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.evaluation import (
    ALL_LANDMARKS,
    LANDMARK_PLOT_KINDS,
    PLOT_KINDS,
    compute_metrics,
    log_to_mlflow,
    plot_figure,
    plot_frames,
)
from pipeline.io import atomic_dir, read_stage_parquet, to_csv, write_json

#: target -> kind ("roc", "pr", "calibration", "decision_curve", "calibration_by_landmark/L48", ...) -> frame.
PlotFrames = dict[str, dict[str, pd.DataFrame]]


def _evaluated(metrics: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The all-landmarks entry of ``target`` if it was evaluated (not skipped)."""
    entry = metrics.get(target, {}).get(ALL_LANDMARKS, {})
    return entry if entry and "skipped" not in entry else None


def available_baselines(entry: dict[str, Any]) -> list[str]:
    return [name for name, value in entry["baselines"].items() if "unavailable" not in value]


def run(
    config: Config, oof: pd.DataFrame, metadata_by_target: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], PlotFrames]:
    """metrics.json content and the dvc-plots frames of every evaluated target.

    ``oof``: the out-of-fold table (``contracts.OOF``); ``metadata_by_target``: each trained target's
    parsed ``metadata.json`` (targets without one may be absent).
    """
    metrics = compute_metrics(oof, config, metadata_by_target)
    plots = {
        target: plot_frames(oof[oof["target"] == target])
        for target in config.targets
        if _evaluated(metrics, target) is not None
    }
    return metrics, plots


def read_metadata(models_dir: Path, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Parsed ``<models_dir>/<target>/metadata.json`` of every target that has one."""
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        path = Path(models_dir) / target / "metadata.json"
        if not path.exists():
            continue
        try:
            out[target] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable model metadata ({exc}); rerun `crs train`") from None
    return out


def write_plots(plots: PlotFrames, oof: pd.DataFrame, metrics: dict[str, Any], config: Config) -> None:
    """Replace the plots and figures folders as a whole (no stale files from removed targets)."""
    with atomic_dir(config.paths.plots_dir) as plots_tmp, atomic_dir(config.paths.figures_dir) as fig_tmp:
        for kind in (*PLOT_KINDS, *LANDMARK_PLOT_KINDS):
            (plots_tmp / kind).mkdir()
        for target, frames in plots.items():
            for kind, frame in frames.items():  # kind may be "<kind>/L<landmark>"
                path = plots_tmp / kind / f"{target}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                to_csv(frame, path)
            available = available_baselines(_evaluated(metrics, target))
            plot_figure(target, oof[oof["target"] == target], available, fig_tmp / f"{target}.png")


def headline(metrics: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per target, the model's all-landmark AUROC and calibration slope (``paths.metrics_summary``): few
    enough columns for `dvc metrics show` and `dvc exp show` to fit one screen. Skipped targets: None."""
    out = {}
    for target, by_landmark in metrics.items():
        model = by_landmark.get(ALL_LANDMARKS, {}).get("model", {})
        out[target] = {"auroc": model.get("auroc"), "slope": model.get("calibration_slope")}
    return out


def _print_summary(metrics: dict[str, Any]) -> None:
    for target, by_landmark in metrics.items():
        entry = by_landmark.get(ALL_LANDMARKS, {})
        if "model" in entry:
            lo, hi = entry["model"]["auroc_ci"]
            print(f"evaluate: {target}: AUROC {entry['model']['auroc']} (95% CI {lo}-{hi}), all landmarks")
        else:
            print(f"evaluate: {target}: skipped ({entry.get('skipped')})")


def main(config: Config) -> None:
    started = time.perf_counter()
    paths = config.paths
    oof = read_stage_parquet(paths.oof, "out-of-fold predictions", "crs train")
    oof = contracts.check_frame(oof, contracts.OOF, paths.oof, "crs train")
    metrics, plots = run(config, oof, read_metadata(paths.models_dir, list(config.targets)))
    write_json(metrics, paths.metrics)
    write_json(headline(metrics), paths.metrics_summary)
    write_plots(plots, oof, metrics, config)
    _print_summary(metrics)
    compute_seconds = time.perf_counter() - started
    log_to_mlflow(metrics, config)
    print(f"evaluate: metrics and plots {compute_seconds:.1f} s, total {time.perf_counter() - started:.1f} s")
