"""Comparators fitted on exactly the rows and folds of the model: published scores, an L2 logistic
regression, a Teachey 2016-style three-cytokine logistic model and the simple-summaries XGBoost
reference. Names and score columns are in :mod:`pipeline.model.baselines`.

:func:`fold_baselines` is what one outer fold calls; :func:`baseline_availability` says which baselines a
cohort can have (a readable reason for those it cannot).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline import metrics
from pipeline.config import TrainConfig, landmark_key
from pipeline.model import FeatureSpec, expit, fit_logistic
from pipeline.model.baselines import (
    BASELINES,
    LOGISTIC_BASELINE,
    SCORE_BASELINES,
    SIMPLE_SUMMARIES_BASELINE,
    TEACHEY_BASELINE,
    TEACHEY_COLUMNS,
)
from pipeline.model.specs import matrix_values
from pipeline.training.data import FoldData
from pipeline.training.splits import inner_holdout

#: The simple-summaries reference: fixed, untuned XGBoost parameters (issue 17's 60-line reference).
SIMPLE_SUMMARIES_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "max_depth": 2,
    "eta": 0.1,
    "verbosity": 0,
}
SIMPLE_SUMMARIES_ROUNDS = 200

#: A fitted baseline: (training rows, their labels) -> function scoring other rows.
Fitter = Callable[[pd.DataFrame, np.ndarray], Callable[[pd.DataFrame], np.ndarray]]


def _all_missing(X: pd.DataFrame, col: str) -> bool:
    return bool(pd.to_numeric(X[col].astype("object"), errors="coerce").isna().all())


def _score_availability(X: pd.DataFrame, name: str, col: str) -> str | None:
    if name == "hay_2017":
        if col not in X.columns:
            return f"not computable: no '{col}' feature in landmarks.parquet (needs TEMP and MCP1 measurements)"
        if _all_missing(X, col):
            return f"not computable: '{col}' has no values (no TEMP or MCP1 measurement in the Hay window)"
        return None
    if col not in X.columns:
        return f"column '{col}' not in landmarks.parquet"
    if _all_missing(X, col):
        return f"column '{col}' has no values"
    return None


def baseline_availability(df: pd.DataFrame) -> dict[str, str | None]:
    """Baseline name -> None if it can be scored on this table, else the one-line reason it cannot."""
    out: dict[str, str | None] = {name: _score_availability(df, name, col) for name, col in SCORE_BASELINES.items()}
    out[LOGISTIC_BASELINE] = None
    absent = [c for c in TEACHEY_COLUMNS if c not in df.columns]
    empty = [c for c in TEACHEY_COLUMNS if c in df.columns and _all_missing(df, c)]
    if absent:
        out[TEACHEY_BASELINE] = f"not computable: no {', '.join(absent)} features in landmarks.parquet"
    elif empty:
        out[TEACHEY_BASELINE] = f"not computable: {', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no values"
    else:
        out[TEACHEY_BASELINE] = None
    has_summaries = any("__" in c for c in C.simple_summary_columns(df.columns))
    out[SIMPLE_SUMMARIES_BASELINE] = (
        None if has_summaries else "not computable: no per-analyte latest/first/max features in landmarks.parquet"
    )
    return {name: out[name] for name in BASELINES}


def unavailable_by_landmark(df: pd.DataFrame, landmarks: np.ndarray,
                            cohort: dict[str, str | None] | None = None) -> dict[str, dict[str, str]]:
    """Fitted baseline name -> {landmark key: reason} for the baselines ``df`` can have that have no
    inputs at some landmark (the Teachey model at 0 h when its cytokines are post-infusion values only):
    the rule of :func:`baseline_availability` on that landmark's rows. Its AUROC there would rank a
    constant. Published scores are not listed: evaluation reads their raw values per landmark itself.
    ``cohort``: :func:`baseline_availability` of ``df`` when already computed."""
    cohort = baseline_availability(df) if cohort is None else cohort
    out: dict[str, dict[str, str]] = {}
    for hours in np.unique(landmarks):
        at = baseline_availability(df[landmarks == hours])
        for name, reason in at.items():
            if cohort[name] is None and reason is not None and name not in SCORE_BASELINES:
                out.setdefault(name, {})[landmark_key(float(hours))] = f"{reason} at this landmark"
    return out


def _score_transform(values: np.ndarray) -> np.ndarray:
    # arcsinh: monotone (AUROC unchanged), tames the heavy right tails of ferritin / EASIX for the
    # one-variable logistic recalibration.
    return np.arcsinh(values)


def score_baseline_fold(
    s_train: np.ndarray, y_train: np.ndarray, s_test: np.ndarray, sensitivity: float
) -> tuple[np.ndarray, float]:
    """Recalibrated probability of a raw score on the test fold, and its training-fold threshold.

    Missing scores get the training-fold median. The probability serves Brier, calibration and net
    benefit only: evaluate ranks the raw score itself (a fold's fitted slope may be negative).
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
        # keep_empty_features: a column empty in this training fold stays (as a constant) instead of
        # being dropped, which left no columns at all for Teachey's three cytokines and crashed the run.
        ("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                          ("scale", StandardScaler())]), numeric)
    ]
    if categorical:
        onehot = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ])
        transformers.append(("cat", onehot, categorical))
    return Pipeline([
        ("prep", ColumnTransformer(transformers)),
        # L2 (C=1); exact Newton steps: same optimum as lbfgs, about 7x faster on a few hundred features.
        ("lr", LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=200, random_state=seed)),
    ])


def _logistic_frame(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    out = {}
    for s in specs:
        if s.dtype == "category":
            out[s.name] = X[s.name].astype("object").where(X[s.name].notna(), np.nan).to_numpy(dtype=object)
        else:
            out[s.name] = X[s.name].to_numpy(dtype=float)
    return pd.DataFrame(out, index=X.index)


def _logistic_fitter(specs: list[FeatureSpec], seed: int) -> Fitter:
    def fit(X: pd.DataFrame, y: np.ndarray) -> Callable[[pd.DataFrame], np.ndarray]:
        pipe = _logistic_pipeline(specs, seed).fit(_logistic_frame(X, specs), y)
        return lambda Z: pipe.predict_proba(_logistic_frame(Z, specs))[:, 1]

    return fit


def teachey_frame(X: pd.DataFrame) -> pd.DataFrame:
    """log of sgp130, IFN-g and IL-1RA (latest values); non-positive or missing values are NaN."""
    values = X[list(TEACHEY_COLUMNS)].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)
    return pd.DataFrame(logs, columns=[f"log_{c}" for c in TEACHEY_COLUMNS], index=X.index)


def _teachey_fitter(seed: int) -> Fitter:
    specs = [FeatureSpec(f"log_{c}", "float64") for c in TEACHEY_COLUMNS]
    inner = _logistic_fitter(specs, seed)

    def fit(X: pd.DataFrame, y: np.ndarray) -> Callable[[pd.DataFrame], np.ndarray]:
        predict = inner(teachey_frame(X), y)
        return lambda Z: predict(teachey_frame(Z))

    return fit


def _simple_summaries_fitter(cfg: TrainConfig, seed: int) -> Fitter:
    import xgboost as xgb

    params = {**SIMPLE_SUMMARIES_PARAMS, "seed": seed, "nthread": cfg.n_threads}

    def matrix(Z: pd.DataFrame, cols: list[str], y: np.ndarray | None = None) -> Any:
        # Categories as codes with their feature type: the same trees as a pandas frame with
        # enable_categorical, without XGBoost re-checking feature names every round.
        types = ["c" if isinstance(Z[c].dtype, pd.CategoricalDtype) else "q" for c in cols]
        return xgb.DMatrix(matrix_values(Z[cols]), label=y, feature_types=types, enable_categorical=True,
                           nthread=cfg.n_threads)

    def fit(X: pd.DataFrame, y: np.ndarray) -> Callable[[pd.DataFrame], np.ndarray]:
        cols = C.simple_summary_columns(X.columns)
        booster = xgb.train(params, matrix(X, cols, y), num_boost_round=SIMPLE_SUMMARIES_ROUNDS)
        return lambda Z: booster.predict(matrix(Z, cols))

    return fit


def fit_baseline_fold(
    fitter: Fitter, X_train: pd.DataFrame, y_train: np.ndarray, groups_train: np.ndarray,
    X_test: pd.DataFrame, cfg: TrainConfig, seed: int, holdout: tuple[np.ndarray, np.ndarray] | None | str = "compute",
) -> tuple[np.ndarray, float]:
    """Test-fold probability of a baseline fitted on the whole training fold, and its threshold for
    ``sensitivity_target`` from the inner held-out calibration patients (``inner_holdout``, the same split
    for every baseline: ``holdout`` when the caller computed it); without such a split, from the training
    rows themselves."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(X_test), float(np.mean(y_train))), math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-column imputer and convergence chatter
        p_test = fitter(X_train, y_train)(X_test)
        split = inner_holdout(y_train, groups_train, cfg, seed + 1) if isinstance(holdout, str) else holdout
        if split is None:
            p_train = fitter(X_train, y_train)(X_train)
            return p_test, metrics.threshold_for_sensitivity(y_train, p_train, cfg.sensitivity_target)
        fit_idx, cal_idx = split
        p_cal = fitter(X_train.iloc[fit_idx], y_train[fit_idx])(X_train.iloc[cal_idx])
    return p_test, metrics.threshold_for_sensitivity(y_train[cal_idx], p_cal, cfg.sensitivity_target)


def _fitters(data: FoldData, cfg: TrainConfig, seed: int) -> dict[str, Fitter]:
    return {
        LOGISTIC_BASELINE: _logistic_fitter(data.specs, seed),
        TEACHEY_BASELINE: _teachey_fitter(seed),
        SIMPLE_SUMMARIES_BASELINE: _simple_summaries_fitter(cfg, seed),
    }


def fold_baselines(data: FoldData, cfg: TrainConfig, tr: np.ndarray, te: np.ndarray, seed: int) -> pd.DataFrame:
    """Every available baseline fitted on the training rows ``tr``, predicting the test rows ``te``.

    One row per ``te`` row (index 0..len(te)-1); per available baseline, in ``BASELINES`` order:
    ``score__<name>`` (raw score with NaN kept; score baselines only), ``prob__<name>``,
    ``threshold__<name>`` (that fold's threshold for ``sensitivity_target``).
    """
    out: dict[str, Any] = {}
    fitters = _fitters(data, cfg, seed)
    y_tr = data.y[tr]
    # One split for every fitted baseline (the stratified group split costs about 0.3 s per call).
    holdout = inner_holdout(y_tr, data.groups[tr], cfg, seed + 1) if len(np.unique(y_tr)) > 1 else None
    for name in BASELINES:
        if data.available.get(name, "not assessed") is not None:
            continue
        if name in SCORE_BASELINES:
            s = data.X[SCORE_BASELINES[name]].to_numpy(dtype=float)
            prob, thr = score_baseline_fold(s[tr], y_tr, s[te], cfg.sensitivity_target)
            out[C.score_column(name)] = s[te]
        else:
            prob, thr = fit_baseline_fold(fitters[name], data.X.iloc[tr], y_tr, data.groups[tr], data.X.iloc[te],
                                          cfg, seed, holdout)
        out[C.prob_column(name)] = np.asarray(prob, dtype=np.float64)  # XGBoost predicts float32
        out[C.threshold_column(name)] = np.full(len(te), thr, dtype=np.float64)
    return pd.DataFrame(out, index=pd.RangeIndex(len(te)))
