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
    """Unpenalised logistic regression y ~ 1 (+ x) with an offset, by damped Newton-Raphson:
    [intercept(, slope)].

    Small and exact (no regularisation), unlike sklearn's default L2 penalty: calibration slope and
    intercept are defined on the unpenalised fit. Each Newton step is halved until the log-likelihood
    does not fall: plain Newton overshoots to +-1e11 when the offsets are far from the outcome rate
    (an external cohort whose risks are all near 0), the case calibration-in-the-large exists for.
    """
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    loglik = _log_likelihood(design, y, offset, beta)
    for _ in range(n_iter):
        mu = expit(offset + design @ beta)
        grad = design.T @ (y - mu)
        hess = (design * (mu * (1 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess + 1e-10 * np.eye(len(beta)), grad)
        except np.linalg.LinAlgError:
            break
        scale = 1.0
        while scale > 1e-8 and _log_likelihood(design, y, offset, beta + scale * step) < loglik - 1e-12:
            scale /= 2
        beta = beta + scale * step
        loglik = _log_likelihood(design, y, offset, beta)
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return beta


def _log_likelihood(design: np.ndarray, y: np.ndarray, offset: np.ndarray, beta: np.ndarray) -> float:
    eta = offset + design @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


@dataclass
class Calibrator:
    """Maps raw booster probabilities (at a landmark) to calibrated ones; serialised as JSON numbers.

    ``sigmoid``: p = expit(a * logit(raw) + b + b_L), with ``b_L`` a landmark-specific intercept offset
    (``landmark_offsets``: landmark hours -> offset; linear in hours between trained landmarks, flat
    beyond them; none = 0). ``isotonic``: monotone step map through the knots ``x -> y``, one map per
    landmark when ``by_landmark`` is set (hours -> knots), else one map. ``identity``: too few events.
    """

    method: str
    x: list[float] = field(default_factory=list)  # isotonic knots (raw score)
    y: list[float] = field(default_factory=list)  # isotonic knots (calibrated probability)
    a: float = 1.0
    b: float = 0.0
    landmark_offsets: dict[float, float] = field(default_factory=dict)
    by_landmark: dict[float, tuple[list[float], list[float]]] = field(default_factory=dict)

    def predict(self, raw: np.ndarray, landmark_hours: np.ndarray | float | None = None) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "sigmoid":
            return expit(self.a * logit(raw) + self.b + self._offsets(raw, landmark_hours))
        if self.method == "isotonic":
            return self._isotonic(raw, landmark_hours)
        return raw

    def _offsets(self, raw: np.ndarray, landmark_hours: np.ndarray | float | None) -> np.ndarray | float:
        if not self.landmark_offsets or landmark_hours is None:
            return 0.0
        hours = sorted(self.landmark_offsets)
        return np.interp(np.broadcast_to(np.asarray(landmark_hours, dtype=float), raw.shape), hours,
                         [self.landmark_offsets[h] for h in hours])

    def _isotonic(self, raw: np.ndarray, landmark_hours: np.ndarray | float | None) -> np.ndarray:
        if not self.by_landmark or landmark_hours is None:
            return np.interp(raw, self.x, self.y) if self.x else raw  # constant beyond the ends ("clip")
        hours = np.broadcast_to(np.asarray(landmark_hours, dtype=float), raw.shape)
        trained = np.asarray(sorted(self.by_landmark))
        # Nearest trained landmark at or below (the first one below the grid): no look-ahead in hours.
        nearest = trained[np.clip(np.searchsorted(trained, hours, side="right") - 1, 0, len(trained) - 1)]
        out = np.empty_like(raw)
        for h in trained:
            rows = nearest == h
            knots_x, knots_y = self.by_landmark[float(h)]
            out[rows] = np.interp(raw[rows], knots_x, knots_y)
        return out

    def to_json(self) -> dict[str, Any]:
        if self.method == "isotonic":
            out: dict[str, Any] = {"method": "isotonic", "x": self.x, "y": self.y}
            if self.by_landmark:
                out["by_landmark"] = {repr(float(h)): {"x": kx, "y": ky} for h, (kx, ky) in sorted(self.by_landmark.items())}
            return out
        if self.method == "sigmoid":
            return {"method": "sigmoid", "a": self.a, "b": self.b,
                    "landmark_offsets": {repr(float(h)): v for h, v in sorted(self.landmark_offsets.items())},
                    "formula": "1/(1+exp(-(a*logit(p)+b+offset(landmark))))"}
        return {"method": "identity"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        """Inverse of :meth:`to_json`; KeyError / TypeError / ValueError on a malformed mapping or an
        unknown method (silently treating it as identity would serve uncalibrated risks)."""
        method = data.get("method", "identity")
        if method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {method!r}")
        if method == "isotonic":
            by_landmark = {float(h): (list(map(float, k["x"])), list(map(float, k["y"])))
                           for h, k in data.get("by_landmark", {}).items()}
            return cls("isotonic", list(map(float, data["x"])), list(map(float, data["y"])), by_landmark=by_landmark)
        if method == "sigmoid":
            offsets = {float(h): float(v) for h, v in data.get("landmark_offsets", {}).items()}
            return cls("sigmoid", a=float(data["a"]), b=float(data["b"]), landmark_offsets=offsets)
        return cls("identity")

    def range_problem(self) -> str | None:
        """Why this calibrator could give a value outside [0, 1] (or not a number), else None.

        Checked when a model is loaded: parameters first (finite; isotonic knots ordered, levels in
        [0, 1]), then the map itself on a grid of raw scores at every landmark it knows, so a damaged
        calibrator.json is refused before it shows a patient "500 %".
        """
        knots = [(self.x, self.y), *self.by_landmark.values()]
        if self.method == "isotonic":
            for kx, ky in knots:
                if len(kx) != len(ky):
                    return "isotonic knots x and y differ in length"
                if not (np.all(np.isfinite(kx)) and np.all(np.diff(kx) >= 0)):
                    return "isotonic knots x are not finite and increasing"
                if not np.all((np.asarray(ky) >= 0) & (np.asarray(ky) <= 1)):
                    return "isotonic levels y outside [0, 1]"
        params = [self.a, self.b, *self.landmark_offsets.values(), *self.landmark_offsets, *self.by_landmark]
        if not np.all(np.isfinite(np.asarray(params, dtype=float))):
            return "a parameter is not a finite number"
        grid = np.concatenate([[0.0, _EPS, 1 - _EPS, 1.0], np.linspace(0, 1, 101)])
        for hours in [None, 0.0, *self.landmark_offsets, *self.by_landmark, 1e4]:
            out = self.predict(grid, hours)
            if not np.all((out >= 0) & (out <= 1)):  # NaN fails too
                return "its output on a grid of scores is outside [0, 1]"
        return None


#: The methods :meth:`Calibrator.from_json` accepts.
CALIBRATION_METHODS = ("identity", "isotonic", "sigmoid")


def _isotonic_knots(raw: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
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
    return [float(v) for v in knots_x], [float(v) for v in knots_y]


def _enough(y: np.ndarray, min_events: int) -> bool:
    """At least ``min_events`` events and as many non-events."""
    return min(int(y.sum()), int(len(y) - y.sum())) >= min_events


def _platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's (1999) smoothed targets, (events + 1) / (events + 2) and 1 / (non-events + 2): the fit stays
    finite when held-out scores separate the classes (no risk of exactly 0 or 1)."""
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    return np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def _sigmoid_with_offsets(raw: np.ndarray, y: np.ndarray, landmarks: np.ndarray | None, min_events: int) -> Calibrator:
    """Platt on logit(raw) (slope a, intercept b), then one intercept offset per landmark with enough
    events (slope fixed, so a landmark's offset moves its risks up or down only); others get none.

    The map never reverses the boosters' ranking: a fitted slope <= 0 (no usable signal in the held-out
    scores) is replaced by slope 1 with only the intercepts fitted.
    """
    z = logit(raw)
    targets = _platt_targets(y)
    beta = fit_logistic(z, targets, np.zeros_like(z))
    a, b = float(beta[1]), float(beta[0])
    if not np.isfinite(a) or a <= 0:
        a, b = 1.0, float(fit_logistic(None, targets, z)[0])
    offsets: dict[float, float] = {}
    if landmarks is not None and len(np.unique(landmarks)) > 1:
        for h in np.unique(landmarks):
            rows = landmarks == h
            if _enough(y[rows], min_events):
                offsets[float(h)] = float(fit_logistic(None, _platt_targets(y[rows]), a * z[rows] + b)[0])
        if offsets and len(offsets) < len(np.unique(landmarks)):
            # Landmarks without their own offset interpolate between fitted ones; pin them at 0 instead.
            offsets.update({float(h): 0.0 for h in np.unique(landmarks) if float(h) not in offsets})
    return Calibrator("sigmoid", a=a, b=b, landmark_offsets=offsets)


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str, landmarks: np.ndarray | None = None,
                   min_landmark_events: int = 10, isotonic_min_events: int = 200) -> Calibrator:
    """Calibrator for raw probabilities ``raw`` with outcomes ``y`` (identity with one class).

    ``sigmoid``: Platt (smoothed targets, slope kept positive) with landmark-specific intercepts (landmarks
    with at least ``min_landmark_events`` events and non-events). ``isotonic``: add-one smoothed isotonic, one map per landmark when every
    landmark has ``min_landmark_events``. ``auto``: isotonic per landmark when every landmark has at least
    ``isotonic_min_events`` events and non-events, else sigmoid (isotonic steps and overfits on less).
    """
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        return Calibrator("identity")
    groups = [] if landmarks is None else [np.asarray(landmarks) == h for h in np.unique(landmarks)]
    if method == "auto":
        rich = bool(groups) and all(_enough(y[g], isotonic_min_events) for g in groups)
        method = "isotonic" if rich or (not groups and _enough(y, isotonic_min_events)) else "sigmoid"
    if method == "isotonic":
        knots_x, knots_y = _isotonic_knots(raw, y)
        by_landmark = {}
        if len(groups) > 1 and all(_enough(y[g], min_landmark_events) for g in groups):
            by_landmark = {float(h): _isotonic_knots(raw[g], y[g]) for h, g in zip(np.unique(landmarks), groups, strict=True)}
        return Calibrator("isotonic", knots_x, knots_y, by_landmark=by_landmark)
    return _sigmoid_with_offsets(raw, y, None if landmarks is None else np.asarray(landmarks, dtype=float),
                                 min_landmark_events)
