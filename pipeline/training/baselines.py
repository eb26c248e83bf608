"""Comparators fitted on exactly the rows and folds of the model: published scores and an L2 logistic
regression. Names and score columns are in :mod:`pipeline.model.baselines`."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics
from pipeline.config import TrainConfig
from pipeline.model import LOGISTIC_BASELINE, SCORE_BASELINES, FeatureSpec, expit, fit_logistic
from pipeline.training.splits import inner_holdout


def baseline_availability(df: pd.DataFrame) -> dict[str, str | None]:
    """None if available, else the reason it cannot be scored on this cohort."""
    out: dict[str, str | None] = {}
    for name, col in SCORE_BASELINES.items():
        if col not in df.columns:
            out[name] = f"column '{col}' not in landmarks.parquet"
        elif pd.to_numeric(df[col].astype("object"), errors="coerce").isna().all():
            out[name] = f"column '{col}' has no values"
        else:
            out[name] = None
    out[LOGISTIC_BASELINE] = None
    return out


def _score_transform(values: np.ndarray) -> np.ndarray:
    # arcsinh: monotone (AUROC unchanged), tames the heavy right tails of ferritin / EASIX for the
    # one-variable logistic recalibration.
    return np.arcsinh(values)


def score_baseline_fold(
    s_train: np.ndarray, y_train: np.ndarray, s_test: np.ndarray, sensitivity: float
) -> tuple[np.ndarray, float]:
    """Recalibrated probability of a raw score on the test fold, and its training-fold threshold.

    Missing scores get the training-fold median so every baseline is scored on the same rows. The
    one-variable logistic map is monotone (increasing for a risk score), so the ranking, and hence
    AUROC, is the raw score's; the threshold equals a cut-off on the raw score.
    """
    median = np.nanmedian(s_train) if np.isfinite(s_train).any() else 0.0
    z_train = _score_transform(np.where(np.isfinite(s_train), s_train, median))
    z_test = _score_transform(np.where(np.isfinite(s_test), s_test, median))
    if len(np.unique(y_train)) < 2:
        return np.full(len(s_test), float(np.mean(y_train))), math.nan
    beta = fit_logistic(z_train, y_train, np.zeros_like(z_train))
    p_train = expit(beta[0] + beta[1] * z_train)
    return expit(beta[0] + beta[1] * z_test), metrics.threshold_for_sensitivity(y_train, p_train, sensitivity)


def _logistic_pipeline(specs: list[FeatureSpec], seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [s.name for s in specs if s.dtype == "float64"]
    categorical = [s.name for s in specs if s.dtype == "category"]
    transformers = [
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
    ]
    if categorical:
        onehot = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ])
        transformers.append(("cat", onehot, categorical))
    return Pipeline([
        ("prep", ColumnTransformer(transformers)),
        ("lr", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),  # default penalty: L2
    ])


def _logistic_frame(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    out = {}
    for s in specs:
        if s.dtype == "category":
            out[s.name] = X[s.name].astype("object").where(X[s.name].notna(), np.nan).to_numpy(dtype=object)
        else:
            out[s.name] = X[s.name].to_numpy(dtype=float)
    return pd.DataFrame(out, index=X.index)


def fit_logistic_fold(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    X_test: pd.DataFrame,
    cfg: TrainConfig,
    specs: list[FeatureSpec],
    seed: int,
) -> tuple[np.ndarray, float]:
    """L2 logistic regression (imputer, scaler, one-hot inside the pipeline, i.e. fitted on the training
    fold); threshold from the same inner held-out calibration patients as the model."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(X_test), float(np.mean(y_train))), math.nan
    L_train, L_test = _logistic_frame(X_train, specs), _logistic_frame(X_test, specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-column imputer and convergence chatter
        pipe = _logistic_pipeline(specs, seed).fit(L_train, y_train)
        p_test = pipe.predict_proba(L_test)[:, 1]
        split = inner_holdout(y_train, groups_train, cfg, seed + 1)
        if split is None:
            p_train = pipe.predict_proba(L_train)[:, 1]
            return p_test, metrics.threshold_for_sensitivity(y_train, p_train, cfg.sensitivity_target)
        fit_idx, cal_idx = split
        inner = _logistic_pipeline(specs, seed).fit(L_train.iloc[fit_idx], y_train[fit_idx])
        p_cal = inner.predict_proba(L_train.iloc[cal_idx])[:, 1]
    return p_test, metrics.threshold_for_sensitivity(y_train[cal_idx], p_cal, cfg.sensitivity_target)
