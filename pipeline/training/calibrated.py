"""Booster + calibrator + alert threshold from one outer training fold, never seeing its test fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.config import TrainConfig
from pipeline.model import Calibrator, FeatureSpec, fit_calibrator
from pipeline.training.booster import fit_booster, predict_booster
from pipeline.training.splits import inner_holdout


@dataclass
class FittedModel:
    booster: Any
    calibrator: Calibrator
    threshold: float


def fit_calibrated_model(
    X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int
) -> FittedModel:
    """Booster + calibrator + threshold from (X, y) alone (one outer training fold).

    A booster fitted on the inner fitting part scores the held-out calibration patients; the calibrator
    and the sensitivity threshold are fitted on those scores. The returned booster is then refitted on
    all of (X, y) (the same refit-then-calibrate scheme as the final model). One inner split, not an
    inner K-fold, keeps ``make run`` within its time budget.
    """
    booster = fit_booster(X, y, cfg, specs, seed)
    split = inner_holdout(y, groups, cfg, seed + 1)
    if split is None:  # too few events for an inner split: uncalibrated, in-sample threshold
        raw = predict_booster(booster, X, cfg.n_threads)
        threshold = metrics.threshold_for_sensitivity(y, raw, cfg.sensitivity_target)
        return FittedModel(booster, Calibrator("identity"), threshold)
    fit_idx, cal_idx = split
    inner = fit_booster(X.iloc[fit_idx], y[fit_idx], cfg, specs, seed)
    raw_cal = predict_booster(inner, X.iloc[cal_idx], cfg.n_threads)
    calibrator = fit_calibrator(raw_cal, y[cal_idx], cfg.calibration)
    threshold = metrics.threshold_for_sensitivity(y[cal_idx], calibrator.predict(raw_cal), cfg.sensitivity_target)
    return FittedModel(booster, calibrator, threshold)
