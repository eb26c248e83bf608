"""Local recalibration: an intercept (and optionally slope) update of a trained model on a new cohort.

The update maps the model's probability p to expit(a + b logit(p)) (``TargetModel.recalibrated``):
the booster and its calibrator are untouched, so the ranking (AUROC) cannot change, only the level
(a) and spread (b) of the risks. It is fitted per target over all landmarks, and its benefit is
reported honestly: "after" figures come from patient-grouped cross-validation on the new cohort (each
patient's recalibrated risk uses an update fitted without that patient); the update written with the
model is then fitted on all of the cohort's patients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from pipeline import contracts as C
from pipeline.metrics import brier, calibration_slope_intercept, json_number
from pipeline.model import expit, fit_logistic, logit

#: Folds of the cross-validated "after" figures (patient-grouped).
N_FOLDS = 5


def fit_update(y: np.ndarray, p: np.ndarray, with_slope: bool) -> tuple[float, float]:
    """(intercept, slope) of the logistic recalibration; the slope stays 1 unless ``with_slope``, and a
    fitted slope <= 0 (which would reverse the ranking) falls back to an intercept-only update."""
    lp = logit(p)
    if with_slope and np.ptp(lp) > 0:
        intercept, slope = (float(v) for v in fit_logistic(lp, y, np.zeros_like(lp))[:2])
        if slope > 0:
            return intercept, slope
    return float(fit_logistic(None, y, lp)[0]), 1.0


def apply_update(p: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return expit(intercept + slope * logit(p))


def cross_validated(y: np.ndarray, p: np.ndarray, groups: np.ndarray, with_slope: bool) -> np.ndarray:
    """Each row's recalibrated probability from an update fitted on the other patients' rows."""
    out = np.full(len(y), np.nan)
    n_splits = min(N_FOLDS, pd.unique(groups).size)
    for train, test in GroupKFold(n_splits=n_splits).split(p, y, groups):
        if 0 < y[train].sum() < len(train):
            out[test] = apply_update(p[test], *fit_update(y[train], p[train], with_slope))
        else:
            out[test] = p[test]
    return out


def _calibration(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    slope, intercept = calibration_slope_intercept(y, p)
    return {"calibration_intercept": json_number(intercept), "calibration_slope": json_number(slope),
            "brier": json_number(brier(y, p)), "observed_rate": json_number(y.mean()), "mean_predicted": json_number(p.mean())}


def recalibrate(scored: pd.DataFrame, with_slope: bool = False) -> dict[str, dict[str, Any]]:
    """Per target with events and non-events: the update (fitted on every patient) and the calibration
    before it and after it (cross-validated)."""
    out: dict[str, dict[str, Any]] = {}
    for target, rows in scored.groupby("target", sort=True):
        y = rows["label"].to_numpy(dtype=float)
        p = rows["probability"].to_numpy(dtype=float)
        if not 0 < y.sum() < len(y):
            out[str(target)] = {"skipped": "needs both events and non-events"}
            continue
        groups = rows[C.PATIENT_ID].to_numpy(dtype=object)
        intercept, slope = fit_update(y, p, with_slope)
        out[str(target)] = {
            "intercept": round(intercept, 6), "slope": round(slope, 6), "with_slope": with_slope,
            "before": _calibration(y, p),
            "after_cross_validated": _calibration(y, cross_validated(y, p, groups, with_slope)),
            "after_in_sample": _calibration(y, apply_update(p, intercept, slope)),
        }
    return out
