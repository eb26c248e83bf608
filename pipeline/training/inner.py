"""Inner folds of one training set and a candidate fitted on them (cross-fitted boosters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.training.booster import dmatrix


@dataclass
class InnerFolds:
    """The K inner folds of one training set, with their DMatrices (built once, reused by every trial)."""

    X: pd.DataFrame
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    _cache: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)

    def matrices(self, feature_set: str, columns: list[str]) -> list[tuple[Any, Any]]:
        """(train, held-out) DMatrix per fold; features outside ``columns`` are blanked (all missing), so
        no tree can split on them and the model matrix keeps one layout for every feature set."""
        if feature_set not in self._cache:
            X = self.X
            if set(columns) != set(X.columns):
                X = X.copy()
                X[[c for c in X.columns if c not in columns]] = np.nan
            self._cache[feature_set] = [
                (dmatrix(X.iloc[tr], self.y[tr], 1), dmatrix(X.iloc[te], self.y[te], 1)) for tr, te in self.splits
            ]
        return self._cache[feature_set]


@dataclass
class InnerFit:
    """One candidate fitted on the inner folds: its boosters and their held-out log-odds."""

    boosters: list[Any]
    held_out_margin: np.ndarray
    rounds: int
    loss: float
    params: dict[str, Any]


def fit_inner(folds: InnerFolds, params: dict[str, Any], rounds: int, early_stopping: int | None,
              feature_set: tuple[str, list[str]]) -> InnerFit:
    """K boosters on the inner folds; with ``early_stopping``, the rounds minimising the mean held-out
    log-loss (each booster cut there); without, exactly ``rounds``."""
    import xgboost as xgb

    curves, boosters = [], []
    for dtrain, dval in folds.matrices(*feature_set):
        history: dict = {}
        booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dval, "held_out")], evals_result=history,
                            early_stopping_rounds=early_stopping, verbose_eval=False)
        curves.append(np.asarray(history["held_out"]["logloss"]))
        boosters.append(booster)
    shortest = min(len(c) for c in curves)
    mean_curve = np.mean([c[:shortest] for c in curves], axis=0)
    best = int(np.argmin(mean_curve)) + 1 if early_stopping else shortest
    boosters = [b[:best] for b in boosters]
    margin = np.full(len(folds.y), np.nan)
    for booster, (_, dval), (_, te) in zip(boosters, folds.matrices(*feature_set), folds.splits, strict=True):
        margin[te] = booster.predict(dval, output_margin=True)
    return InnerFit(boosters, margin, best, float(mean_curve[best - 1]), params)
