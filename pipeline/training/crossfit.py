"""The training procedure, one function for outer folds and the deployed model alike.

Inside a training set: K patient-grouped inner folds; K boosters, each trained on K-1 folds; each
patient's raw score comes from the booster that never saw that patient. Those held-out scores choose
the boosting rounds (early stopping on the mean held-out log-loss) and the hyperparameters (the
search, :mod:`pipeline.training.search`), choose the blends with simpler models
(:mod:`pipeline.training.blend`), and fit the calibrator and the alert thresholds. The deployed unit
averages the K boosters' log-odds, blended as chosen (:class:`pipeline.model.LandmarkModel`). Every outer
fold runs exactly this on its training patients, so the reported out-of-fold performance is that of
the procedure that builds the deployed model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.config import TrainConfig
from pipeline.model import Calibrator, FeatureSpec, LandmarkModel, expit, fit_calibrator
from pipeline.training.blend import choose_blend, choose_simple_blend
from pipeline.training.booster import fit_booster, predict_booster
from pipeline.training.inner import InnerFolds
from pipeline.training.search import choose_candidate
from pipeline.training.splits import grouped_splits


def _thresholds(y: np.ndarray, p: np.ndarray, landmarks: np.ndarray, cfg: TrainConfig) -> tuple[float, dict]:
    """Pooled threshold for ``sensitivity_target`` and one per landmark with enough events."""
    pooled = metrics.threshold_for_sensitivity(y, p, cfg.sensitivity_target)
    per_landmark = {}
    for h in np.unique(landmarks):
        rows = landmarks == h
        if y[rows].sum() >= cfg.landmark_min_events:
            per_landmark[float(h)] = metrics.threshold_for_sensitivity(y[rows], p[rows], cfg.sensitivity_target)
    return pooled, per_landmark


@dataclass
class Procedure:
    """The fitted unit plus what the search chose (logged in metadata)."""

    model: LandmarkModel
    chosen: dict[str, Any]


def _too_few_events(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> Procedure:
    booster = fit_booster(X, y, cfg, specs, seed)
    raw = predict_booster(booster, X, cfg.n_threads)
    threshold = metrics.threshold_for_sensitivity(y, raw, cfg.sensitivity_target)
    model = LandmarkModel([booster], Calibrator("identity"), threshold)
    return Procedure(model, {"note": "too few events for inner folds: one booster, uncalibrated, in-sample threshold"})


def fit_procedure(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, landmarks: np.ndarray, cfg: TrainConfig,
                  specs: list[FeatureSpec], seed: int) -> Procedure:
    """Cross-fitted (and, with ``tune``, searched) boosters, calibrator and thresholds from (X, y) alone."""
    splits = grouped_splits(y, groups, cfg.inner_folds, seed + 1)
    if not splits:
        return _too_few_events(X, y, cfg, specs, seed)
    folds = InnerFolds(X, y, splits)
    fit, feature_set = choose_candidate(folds, cfg, specs, seed)
    simple = choose_simple_blend(folds, fit.held_out_margin, feature_set, specs, cfg, seed)
    blend = choose_blend(folds, simple.held_out_margin, specs, cfg, seed)
    raw = expit(blend.held_out_margin)
    calibrator = fit_calibrator(raw, y, cfg.calibration, landmarks, cfg.landmark_min_events, cfg.isotonic_min_events)
    pooled, per_landmark = _thresholds(y, calibrator.predict(raw, landmarks), landmarks, cfg)
    chosen = {"rounds": fit.rounds, "held_out_logloss": round(fit.loss, 5), "feature_set": feature_set,
              **{k: fit.params[k] for k in ("max_depth", "eta", "subsample", "colsample_bytree", "min_child_weight", "lambda")},
              "simple_weight": simple.weight, "linear_weight": blend.weight}
    model = LandmarkModel(fit.boosters, calibrator, pooled, per_landmark, blend.models, blend.weight,
                          simple.boosters, simple.weight)
    return Procedure(model, chosen)
