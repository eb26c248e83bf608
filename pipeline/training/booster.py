"""XGBoost: parameters from ``train`` params, fitting and raw prediction."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import TrainConfig
from pipeline.errors import UserError
from pipeline.model import FeatureSpec


def check_monotone_constraints(constraints: dict[str, int], specs: list[FeatureSpec]) -> None:
    """A constraint on a feature the model does not have is a typo, not something to skip silently."""
    numeric = {s.name for s in specs if s.dtype == "float64"}
    for name in constraints:
        if name not in numeric:
            kind = "a categorical feature" if name in {s.name for s in specs} else "not a model feature"
            raise UserError(f"params.yaml: key 'train.monotone_constraints.{name}': {kind} (see `crs featurize --list`)")


def xgb_params(cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> dict[str, Any]:
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
        "seed": seed,
        "nthread": cfg.n_threads,
        "verbosity": 0,
    }
    if monotone:
        params["monotone_constraints"] = monotone
    return params


def fit_booster(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> Any:
    import xgboost as xgb

    dtrain = xgb.DMatrix(X, label=y, enable_categorical=True, nthread=cfg.n_threads)
    return xgb.train(xgb_params(cfg, specs, seed), dtrain, num_boost_round=cfg.n_estimators)


def predict_booster(booster: Any, X: pd.DataFrame, n_threads: int) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(X, enable_categorical=True, nthread=n_threads))
