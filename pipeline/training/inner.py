"""Inner folds of one training set and a candidate fitted on them (cross-fitted boosters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.model.specs import matrix_values


@dataclass
class InnerFolds:
    """The K inner folds of one training set, with their DMatrices (built once, reused by every trial)."""

    X: pd.DataFrame
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    _cache: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    _values: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        """The model matrix as float64 (:func:`pipeline.model.specs.matrix_values`), converted once."""
        if self._values is None:
            self._values = matrix_values(self.X)
        return self._values

    def matrices(self, feature_set: str, columns: list[str]) -> list[tuple[Any, Any]]:
        """(train, held-out) DMatrix per fold; features outside ``columns`` are blanked (all missing), so
        no tree can split on them and the model matrix keeps one layout for every feature set."""
        if feature_set not in self._cache:
            import xgboost as xgb

            values = self.values
            blanked = ~self.X.columns.isin(columns)
            if blanked.any():
                values = values.copy()
                values[:, blanked] = np.nan
            self._cache[feature_set] = [
                (xgb.DMatrix(values[tr], label=self.y[tr], nthread=1), xgb.DMatrix(values[te], label=self.y[te], nthread=1))
                for tr, te in self.splits
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


def fit_fixed(folds: InnerFolds, params: dict[str, Any], rounds: int, feature_set: tuple[str, list[str]]) -> InnerFit:
    """K boosters on the inner folds with exactly ``rounds`` rounds and no per-round evaluation (a fixed
    reference model: nothing to stop early on), and their held-out log-odds; ``loss`` is not computed (NaN)."""
    import xgboost as xgb

    boosters, margin = [], np.full(len(folds.y), np.nan)
    for (dtrain, dval), (_, te) in zip(folds.matrices(*feature_set), folds.splits, strict=True):
        booster = xgb.train(params, dtrain, num_boost_round=rounds)
        margin[te] = booster.predict(dval, output_margin=True)
        boosters.append(booster)
    return InnerFit(boosters, margin, rounds, float("nan"), params)
