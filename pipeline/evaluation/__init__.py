"""Evaluation library behind ``crs evaluate``: metrics.json from out-of-fold predictions, plots, MLflow.

:mod:`.scores` computes metrics.json (pure), :mod:`.plots` the dvc-plots frames and PNG figures,
:mod:`.runs` logs into the training runs. May import ``pipeline.metrics``, ``pipeline.model``,
``pipeline.contracts``, ``pipeline.config``, ``pipeline.errors``, ``pipeline.io`` and ``pipeline.tracking``;
no stage module.
"""

from pipeline.evaluation.plots import LANDMARK_PLOT_KINDS, PLOT_KINDS, plot_figure, plot_frames
from pipeline.evaluation.runs import flat_metrics, log_to_mlflow
from pipeline.evaluation.scores import (
    ALL_LANDMARKS,
    CALIBRATION_BOOTSTRAP,
    DIGITS,
    MIN_EVENTS,
    baseline_reasons,
    compute_metrics,
    evaluate_rows,
    score_medians,
    score_metrics,
    target_skip_reason,
)

__all__ = [
    "ALL_LANDMARKS",
    "CALIBRATION_BOOTSTRAP",
    "DIGITS",
    "LANDMARK_PLOT_KINDS",
    "MIN_EVENTS",
    "PLOT_KINDS",
    "baseline_reasons",
    "compute_metrics",
    "evaluate_rows",
    "flat_metrics",
    "log_to_mlflow",
    "plot_figure",
    "plot_frames",
    "score_medians",
    "score_metrics",
    "target_skip_reason",
]
