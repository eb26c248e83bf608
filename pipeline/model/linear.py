"""The linear component of the model: an L2 logistic regression on the numeric features, as JSON numbers.

Small cohorts often rank as well with a penalised logistic model as with trees (COVID-19 Tongji: 0.951
vs 0.951 at 48 h), and the two make different errors, so the procedure may blend their log-odds
(:mod:`pipeline.training.crossfit` chooses the weight on held-out patients). Transform, fixed at fit:
``z = sign(x) log(1 + |x|)`` (tames heavy-tailed markers), a missing value takes the training median
and sets that column's missing indicator, then standardisation. Its contributions are exact and
additive: ``coef * (standardised z)`` per column minus that term's training mean, so base value plus
contributions equals the log-odds, like tree SHAP.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)  # frozen: the cached arrays below can never go stale
class LinearModel:
    columns: list[int]  # positions in the model matrix (numeric features)
    median: list[float]  # of signed_log(x), training rows
    mean: list[float]  # of the imputed signed_log(x)
    scale: list[float]
    coef: list[float]
    indicator_coef: list[float]  # per column; 0 where training had no missing value
    intercept: float
    background: list[float]  # training mean of each column's contribution (value + indicator)

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The parameter lists as arrays, converted once (each call converted six lists of ~400 numbers:
        ~0.5 ms of one new patient's scoring). A model is never changed after it is built
        (:func:`fit_linear` makes a new one)."""
        arrays = tuple(np.asarray(v, dtype=float) for v in (self.median, self.mean, self.scale, self.coef,
                                                            self.indicator_coef, self.background))
        for array in arrays:
            array.setflags(write=False)
        return arrays

    def _terms(self, X: np.ndarray) -> np.ndarray:
        median, mean, scale, coef, indicator_coef, _ = self._arrays
        z = signed_log(X[:, self.columns])
        missing = np.isnan(z)
        z = np.where(missing, median, z)
        standardised = (z - mean) / scale
        return standardised * coef + missing * indicator_coef

    def logit(self, X: np.ndarray) -> np.ndarray:
        """Log-odds per row of the model matrix ``X`` (float64, spec order)."""
        return self.intercept + self._terms(X).sum(axis=1)

    def contributions(self, X: np.ndarray, n_features: int) -> np.ndarray:
        """(rows, n_features + 1): each feature's contribution relative to the training mean, then the
        base value (last column); rows sum to :meth:`logit`."""
        out = np.zeros((len(X), n_features + 1))
        background = self._arrays[-1]
        out[:, self.columns] = self._terms(X) - background
        out[:, -1] = self.intercept + float(np.sum(background))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": "l2_logistic", **{k: getattr(self, k) for k in (
            "columns", "median", "mean", "scale", "coef", "indicator_coef", "intercept", "background")}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearModel:
        return cls([int(c) for c in data["columns"]], *(list(map(float, data[k])) for k in (
            "median", "mean", "scale", "coef", "indicator_coef")), float(data["intercept"]),
            list(map(float, data["background"])))


def fit_linear(X: np.ndarray, y: np.ndarray, columns: list[int], C: float, seed: int) -> LinearModel:
    """L2 logistic regression (``C``) on ``columns`` of the model matrix, transform as in the module doc."""
    from sklearn.linear_model import LogisticRegression

    z = signed_log(X[:, columns])
    missing = np.isnan(z)
    with np.errstate(all="ignore"):
        median = np.where(missing.all(axis=0), 0.0, np.nanmedian(np.where(missing.all(axis=0), 0.0, z), axis=0))
    z = np.where(missing, median, z)
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    has_missing = missing.any(axis=0) & ~missing.all(axis=0)
    design = np.column_stack([(z - mean) / scale, missing[:, has_missing]])
    fit = LogisticRegression(C=C, solver="newton-cholesky", max_iter=200, random_state=seed).fit(design, y)
    coef = fit.coef_[0]
    indicator = np.zeros(len(columns))
    indicator[has_missing] = coef[len(columns):]
    draft = LinearModel(list(columns), median.tolist(), mean.tolist(), scale.tolist(), coef[: len(columns)].tolist(),
                        indicator.tolist(), float(fit.intercept_[0]), [0.0] * len(columns))
    # A new object, not an update: the model's arrays are cached when first used.
    return dataclasses.replace(draft, background=draft._terms(X).mean(axis=0).tolist())
