"""External validation figures: a trained model scored on a labelled cohort it never saw.

Per target and landmark: discrimination (AUROC with a patient-bootstrap CI, AUPRC), calibration
(calibration-in-the-large: the intercept with logit(p) as offset; slope; observed rate vs mean
predicted; Brier; a binned calibration curve), the model's validated alert rule (sensitivity,
specificity, PPV, NPV at the thresholds stored with the model) and the decision curve, next to the
model's own cross-validation figures (``metadata["cross_validation"]``, written by ``crs train``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline.config import landmark_key
from pipeline.metrics import (
    NET_BENEFIT_THRESHOLDS,
    auprc,
    auroc,
    bootstrap_auroc_ci,
    brier,
    calibration_curve_bins,
    calibration_slope_intercept,
    classification_at_threshold,
    json_number,
    net_benefit,
    net_benefit_treat_all,
)
from pipeline.model import ScoringSetup

SCORED_COLUMNS = [C.PATIENT_ID, C.LANDMARK_HOURS, "target", "label", "probability", "threshold"]


def score_labelled(frame: pd.DataFrame, setup: ScoringSetup) -> pd.DataFrame:
    """One row per (target, labelled landmark row): the model's probability and validated threshold."""
    parts = []
    for target, model in setup.bundle.targets.items():
        label = C.label_column(target)
        if label not in frame.columns:
            continue
        rows = frame[frame[label].notna() & frame[C.LANDMARK_HOURS].isin(setup.trained_landmarks)]
        hours = rows[C.LANDMARK_HOURS].to_numpy(dtype=float)
        scores = model.score_array(model.matrix_array(rows), hours, with_shap=False)
        parts.append(pd.DataFrame({
            C.PATIENT_ID: rows[C.PATIENT_ID].astype(str).to_numpy(), C.LANDMARK_HOURS: hours, "target": target,
            "label": rows[label].to_numpy(dtype=float), "probability": scores.probability,
            "threshold": model.threshold_array(hours)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SCORED_COLUMNS)


def figures(y: np.ndarray, p: np.ndarray, groups: np.ndarray, threshold: np.ndarray, n_bootstrap: int,
            seed: int) -> dict[str, Any]:
    """Every figure for one set of rows (one target, one landmark or all)."""
    n_events = int(y.sum())
    both = 0 < n_events < len(y)
    slope, intercept = calibration_slope_intercept(y, p) if both else (math.nan, math.nan)
    ci = bootstrap_auroc_ci(y, p, groups, n_bootstrap, seed) if both else (math.nan, math.nan)
    rule = classification_at_threshold(y, p, threshold) if len(y) and np.isfinite(threshold).all() else {}
    predicted, observed, counts = calibration_curve_bins(y, p) if len(y) else ([], [], [])
    return {
        "n": int(len(y)), "n_patients": int(pd.unique(groups).size), "n_events": n_events,
        "auroc": json_number(auroc(y, p)) if both else None, "auroc_ci": [json_number(ci[0]), json_number(ci[1])],
        "auprc": json_number(auprc(y, p)) if both else None, "brier": json_number(brier(y, p)) if len(y) else None,
        "calibration_intercept": json_number(intercept), "calibration_slope": json_number(slope),
        "observed_rate": json_number(y.mean()) if len(y) else None,
        "mean_predicted": json_number(p.mean()) if len(y) else None,
        "threshold": json_number(np.median(threshold)) if len(threshold) else None,
        **{k: json_number(v) for k, v in rule.items()},
        "calibration_curve": {"predicted": [json_number(v) for v in predicted],
                              "observed": [json_number(v) for v in observed], "n": [int(c) for c in counts]},
        "decision_curve": {"thresholds": [json_number(t) for t in NET_BENEFIT_THRESHOLDS],
                           "net_benefit": [json_number(v) for v in net_benefit(y, p)] if len(y) else [],
                           "treat_all": [json_number(v) for v in net_benefit_treat_all(y)] if len(y) else []},
    }


def validation_figures(scored: pd.DataFrame, setup: ScoringSetup, n_bootstrap: int = 500, seed: int = 0
                       ) -> dict[str, Any]:
    """``targets`` section of ``validation.json``: per target, per landmark and over all landmarks."""
    out: dict[str, Any] = {}
    for target, model in setup.bundle.targets.items():
        rows = scored[scored["target"] == target]
        cv = model.metadata.get("cross_validation", {})
        landmarks = {}
        for hours, part in rows.groupby(C.LANDMARK_HOURS, sort=True):
            key = landmark_key(float(hours))
            landmarks[key] = {**_figures_of(part, n_bootstrap, seed), "training_cv": cv.get(key)}
        out[target] = {"landmarks": landmarks, "all_landmarks": _figures_of(rows, n_bootstrap, seed)}
    return out


def _figures_of(rows: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, Any]:
    return figures(rows["label"].to_numpy(dtype=float), rows["probability"].to_numpy(dtype=float),
                   rows[C.PATIENT_ID].to_numpy(dtype=object), rows["threshold"].to_numpy(dtype=float),
                   n_bootstrap, seed)
