"""Pure metric functions for binary risk predictions (no I/O, no global state).

Every function takes 1-D arrays ``y_true`` (0/1) and ``p`` (scores or probabilities) and returns plain
floats or arrays, so the same code scores the model and the baselines and is easy to test against
sklearn or hand-computed values.
"""

from __future__ import annotations

import math

import numpy as np

#: Decision-curve threshold probabilities reported in metrics.json (5% to 50%).
NET_BENEFIT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 11))

_EPS = 1e-6


def _arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(p, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("y_true and p must be 1-D arrays of equal length")
    return y, s


def auroc(y_true, p, weights=None) -> float:
    """Area under the ROC curve (ties count one half); optional non-negative row weights.

    Weights make the patient bootstrap cheap: a resample is the same rows with multiplicities.
    """
    y, s = _arrays(y_true, p)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=float)
    return float(weighted_auroc_matrix(y, s, w[None, :])[0])


def weighted_auroc_matrix(y_true: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights`` (n_sets x n_rows) over the same scores, vectorised."""
    n = len(np.asarray(p))
    return grouped_auroc_matrix(y_true, p, np.arange(n), np.asarray(weights, dtype=float))


def grouped_auroc_matrix(y_true, p, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC for each weight set where row i has weight ``counts[:, codes[i]]`` (e.g. patient draws).

    Sum weights per distinct score (a sparse incidence product, cheap for 500 x thousands), then
    AUROC = sum over score groups of positive weight x (negative weight strictly below + half the tied
    negative weight) / (W_pos x W_neg). NaN where a weight set has no positives or no negatives.
    """
    from scipy import sparse

    y = np.asarray(y_true, dtype=float)
    s = np.asarray(p, dtype=float)
    codes = np.asarray(codes)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    _, score_group = np.unique(s, return_inverse=True)
    n_groups = int(score_group.max()) + 1 if len(s) else 0

    def incidence(mask: np.ndarray):
        return sparse.csr_matrix(
            (np.ones(int(mask.sum())), (score_group[mask], codes[mask])), shape=(n_groups, counts.shape[1])
        )

    counts_t = np.ascontiguousarray(counts.T)  # no copy for patient_bootstrap_counts output
    pos_g = incidence(y == 1) @ counts_t  # n_groups x n_sets
    neg_g = incidence(y == 0) @ counts_t
    neg_below = np.cumsum(neg_g, axis=0) - neg_g
    w_pos = pos_g.sum(axis=0)
    w_neg = neg_g.sum(axis=0)
    num = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / (w_pos * w_neg)
    out[(w_pos == 0) | (w_neg == 0)] = np.nan
    return np.asarray(out, dtype=float)


def auprc(y_true, p) -> float:
    """Average precision (step-wise area under the precision-recall curve, as sklearn)."""
    y, s = _arrays(y_true, p)
    n_pos = y.sum()
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Evaluate at the last index of each tied score block (thresholds are distinct scores).
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    flagged = last + 1.0
    precision = tp / flagged
    recall = tp / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def brier(y_true, p) -> float:
    y, s = _arrays(y_true, p)
    return float(np.mean((s - y) ** 2))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)  # isotonic output can be exactly 0 or 1
    return np.log(q / (1 - q))


def _fit_logistic(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, n_iter: int = 100) -> np.ndarray:
    """Unpenalised logistic regression y ~ 1 (+ x) with an offset, by Newton-Raphson.

    Small and exact (no regularisation), unlike sklearn's default L2 penalty.
    """
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(n_iter):
        eta = np.clip(offset + design @ beta, -30, 30)
        mu = 1 / (1 + np.exp(-eta))
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


def calibration_slope_intercept(y_true, p) -> tuple[float, float]:
    """Calibration slope and intercept (calibration-in-the-large) of probabilities ``p``.

    slope: coefficient of logit(p) in logistic regression of y on logit(p) (1 = ideal, < 1 = too
    extreme predictions). intercept: intercept of the logistic model with logit(p) as an offset
    (slope fixed at 1; 0 = ideal, > 0 = risks underestimated on average). Van Calster et al. 2019.
    """
    y, s = _arrays(y_true, p)
    if y.min() == y.max():
        return math.nan, math.nan
    lp = _logit(s)
    if np.ptp(lp) == 0:  # constant predictions have no slope
        slope = math.nan
    else:
        slope = float(_fit_logistic(lp, y, np.zeros_like(lp))[1])
    intercept = float(_fit_logistic(None, y, lp)[0])
    return slope, intercept


def threshold_for_sensitivity(y_true, p, target: float) -> float:
    """Highest threshold t such that flagging ``p >= t`` catches at least ``target`` of the events.

    Chosen on training data only; applied unchanged to the test fold (so test sensitivity may differ).
    """
    y, s = _arrays(y_true, p)
    pos = np.sort(s[y == 1])[::-1]
    if len(pos) == 0:
        return math.nan
    k = max(1, math.ceil(target * len(pos) - 1e-9))  # events that must be flagged
    return float(pos[k - 1])


def classification_at_threshold(y_true, p, threshold) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV of the rule ``p >= threshold`` (threshold may be per row)."""
    y, s = _arrays(y_true, p)
    flagged = s >= np.asarray(threshold, dtype=float)
    tp = float(np.sum(flagged & (y == 1)))
    fp = float(np.sum(flagged & (y == 0)))
    fn = float(np.sum(~flagged & (y == 1)))
    tn = float(np.sum(~flagged & (y == 0)))

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
    }


def net_benefit(y_true, p, thresholds=NET_BENEFIT_THRESHOLDS) -> np.ndarray:
    """Decision-curve net benefit of treating when ``p >= pt``: TP/n - FP/n x pt / (1 - pt)."""
    y, s = _arrays(y_true, p)
    n = len(y)
    out = []
    for pt in thresholds:
        flagged = s >= pt
        tp = np.sum(flagged & (y == 1))
        fp = np.sum(flagged & (y == 0))
        out.append(tp / n - fp / n * pt / (1 - pt))
    return np.asarray(out, dtype=float)


def net_benefit_treat_all(y_true, thresholds=NET_BENEFIT_THRESHOLDS) -> np.ndarray:
    y = np.asarray(y_true, dtype=float)
    prevalence = y.mean()
    pts = np.asarray(thresholds, dtype=float)
    return prevalence - (1 - prevalence) * pts / (1 - pts)


def patient_bootstrap_counts(groups, n_bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample *patients* with replacement: (row -> patient code, draws per patient (n_bootstrap x P)).

    A patient drawn k times contributes all of its rows k times, so the correlation between a patient's
    landmark rows is respected.
    """
    uniques, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.repeat(np.arange(n_bootstrap), n_groups), draws.ravel()), 1.0)
    # Fortran order: the (P x n_bootstrap) transpose used in grouped_auroc_matrix is then contiguous.
    return codes.ravel(), np.asfortranarray(counts)


def patient_bootstrap_weights(groups, n_bootstrap: int, seed: int) -> np.ndarray:
    """Row multiplicities (n_bootstrap x n_rows) of a patient-level bootstrap."""
    codes, counts = patient_bootstrap_counts(groups, n_bootstrap, seed)
    return counts[:, codes]


def bootstrap_auroc_ci(
    y_true, p, groups, n_bootstrap: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile CI of AUROC from a patient-level bootstrap (one-class resamples are dropped)."""
    y, s = _arrays(y_true, p)
    if n_bootstrap <= 0:
        return math.nan, math.nan
    codes, counts = patient_bootstrap_counts(groups, n_bootstrap, seed)
    return percentile_ci(grouped_auroc_matrix(y, s, codes, counts), level)


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def calibration_curve_bins(y_true, p, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted vs observed event rate in quantile bins of ``p`` (for calibration plots)."""
    y, s = _arrays(y_true, p)
    edges = np.unique(np.quantile(s, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        return np.array([s.mean()]), np.array([y.mean()]), np.array([len(y)])
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2)
    predicted, observed, counts = [], [], []
    for b in range(len(edges) - 1):
        mask = idx == b
        if mask.any():
            predicted.append(s[mask].mean())
            observed.append(y[mask].mean())
            counts.append(int(mask.sum()))
    return np.asarray(predicted), np.asarray(observed), np.asarray(counts)
