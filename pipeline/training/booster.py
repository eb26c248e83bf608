"""XGBoost: parameters from ``train`` params, fitting and raw prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import TrainConfig
from pipeline.errors import UserError
from pipeline.model import FeatureSpec
from pipeline.model.specs import matrix_values


def check_monotone_constraints(constraints: dict[str, int], specs: list[FeatureSpec]) -> None:
    """A constraint on a feature the model does not have is a typo, not something to skip silently."""
    numeric = {s.name for s in specs if s.dtype == "float64"}
    for name in constraints:
        if name not in numeric:
            kind = "a categorical feature" if name in {s.name for s in specs} else "not a model feature"
            raise UserError(f"params.yaml: key 'train.monotone_constraints.{name}': {kind} (see `crs featurize --list`)")


#: Hyperparameters the search may set (names of ``train`` params), see :mod:`pipeline.training.search`.
TUNABLE = ("max_depth", "learning_rate", "subsample", "colsample_bytree", "min_child_weight", "reg_lambda")


def xgb_params(cfg: TrainConfig, specs: list[FeatureSpec], seed: int, overrides: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """XGBoost parameters from ``train`` params, with ``overrides`` (a search trial's values) on top."""
    if overrides:
        cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if k in TUNABLE})
    numeric = {s.name for s in specs if s.dtype == "float64"}
    # Constraints only for present numeric features (XGBoost rejects them on categoricals).
    monotone = {k: int(v) for k, v in cfg.monotone_constraints.items() if k in numeric and v != 0}
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "min_child_weight": cfg.min_child_weight,
        "lambda": cfg.reg_lambda,
        "max_bin": cfg.max_bin,
        "seed": seed,
        "nthread": cfg.n_threads,
        "verbosity": 0,
    }
    if monotone:  # by position: the boosters' matrix carries no feature names
        params["monotone_constraints"] = "(" + ",".join(str(monotone.get(s.name, 0)) for s in specs) + ")"
    return params


def dmatrix(X: pd.DataFrame, y: np.ndarray | None, n_threads: int) -> Any:
    """The boosters' input: the model matrix as plain float64 (:func:`pipeline.model.specs.matrix_values`)."""
    import xgboost as xgb

    return xgb.DMatrix(matrix_values(X), label=y, nthread=n_threads)


def fit_booster(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> Any:
    """One booster with the ``train`` params as they are (baselines, too-few-events fallback)."""
    import xgboost as xgb

    return xgb.train(xgb_params(cfg, specs, seed), dmatrix(X, y, cfg.n_threads), num_boost_round=cfg.n_estimators)


def predict_booster(booster: Any, X: pd.DataFrame, n_threads: int) -> np.ndarray:
    return booster.predict(dmatrix(X, None, n_threads))
