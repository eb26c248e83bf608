"""Calibration: the map from a booster's raw probability to a calibrated risk, and its fit.

The calibrator is serialised as plain JSON numbers (no pickle). The logistic fit here is also the
one evaluation uses for calibration slope and intercept, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6] (isotonic output can be exactly 0 or 1)."""
    q = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def expit(eta: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-eta)), with eta clipped to [-30, 30] so nothing overflows."""
    return 1 / (1 + np.exp(-np.clip(np.asarray(eta, dtype=float), -30, 30)))


def fit_logistic(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, n_iter: int = 100) -> np.ndarray:
    """Unpenalised logistic regression y ~ 1 (+ x) with an offset, by Newton-Raphson: [intercept(, slope)].

    Small and exact (no regularisation), unlike sklearn's default L2 penalty: calibration slope and
    intercept are defined on the unpenalised fit.
    """
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(n_iter):
        mu = expit(offset + design @ beta)
        grad = design.T @ (y - mu)
        hess = (design * (mu * (1 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess + 1e-10 * np.eye(len(beta)), grad)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


@dataclass
class Calibrator:
    """Maps raw booster probabilities to calibrated ones; serialised as plain JSON numbers."""

    method: str
    x: list[float] = field(default_factory=list)  # isotonic knots (raw score)
    y: list[float] = field(default_factory=list)  # isotonic knots (calibrated probability)
    a: float = 1.0  # sigmoid: p = 1 / (1 + exp(-(a * logit(raw) + b)))
    b: float = 0.0

    def predict(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            if not self.x:
                return raw
            return np.interp(raw, self.x, self.y)  # constant beyond the ends, as sklearn's "clip"
        if self.method == "sigmoid":
            return expit(self.a * logit(raw) + self.b)
        return raw  # "identity": too few events to calibrate

    def to_json(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x, "y": self.y}
        if self.method == "sigmoid":
            return {"method": "sigmoid", "a": self.a, "b": self.b, "formula": "1/(1+exp(-(a*logit(p)+b)))"}
        return {"method": "identity"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        """Inverse of :meth:`to_json`; KeyError / TypeError / ValueError on a malformed mapping."""
        method = data.get("method", "identity")
        if method == "isotonic":
            return cls("isotonic", list(map(float, data["x"])), list(map(float, data["y"])))
        if method == "sigmoid":
            return cls("sigmoid", a=float(data["a"]), b=float(data["b"]))
        return cls("identity")


def _smoothed_isotonic(raw: np.ndarray, y: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    knots_x = np.asarray(iso.X_thresholds_, dtype=float)
    knots_y = np.asarray(iso.y_thresholds_, dtype=float)
    # Small calibration sets give isotonic blocks with no (or only) events, i.e. risks of exactly
    # 0 or 1. Shrink each block's event rate by add-one smoothing, (events + 1) / (n + 2), and
    # restore monotonicity, so no patient is ever told 0% or 100%.
    fitted = iso.predict(raw)
    levels, inverse = np.unique(fitted, return_inverse=True)
    n_block = np.bincount(inverse).astype(float)
    events = np.bincount(inverse, weights=y)
    smoothed = np.maximum.accumulate((events + 1) / (n_block + 2))
    knots_y = np.interp(knots_y, levels, smoothed) if len(levels) > 1 else np.full_like(knots_y, smoothed[0])
    return Calibrator("isotonic", [float(v) for v in knots_x], [float(v) for v in knots_y])


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    """Isotonic (add-one smoothed) or sigmoid (Platt on logit) calibrator; identity with one class."""
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        return Calibrator("identity")
    if method == "isotonic":
        return _smoothed_isotonic(raw, y)
    beta = fit_logistic(logit(raw), y, np.zeros_like(raw))
    return Calibrator("sigmoid", a=float(beta[1]), b=float(beta[0]))
