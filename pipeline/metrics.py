"""Pure metric functions for binary risk predictions (no I/O, no global state).

Every function takes 1-D arrays ``y_true`` (0/1) and ``p`` (scores or probabilities) and returns plain
floats or arrays, so the same code scores the model and the baselines. AUROC, AUPRC, Brier score and
the confusion counts are scikit-learn's (undefined cases return NaN instead of raising or warning);
kept here by hand: the vectorised patient bootstrap (hundreds of weighted AUROCs in one sparse product),
the sensitivity threshold, decision-curve net benefit, quantile calibration bins (see
:func:`calibration_curve_bins`) and the calibration slope / intercept (on the model layer's unpenalised
logistic fit, the same one the calibrator uses).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, roc_auc_score

from pipeline.model import fit_logistic, logit

#: Decision-curve threshold probabilities reported in metrics.json (5% to 50%).
NET_BENEFIT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 11))


def _arrays(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(p, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("y_true and p must be 1-D arrays of equal length")
    return y, s


def _one_class(y: np.ndarray) -> bool:
    return len(y) == 0 or y.min() == y.max()


def auroc(y_true, p, weights=None) -> float:
    """Area under the ROC curve (ties count one half), sklearn's ``roc_auc_score``; optional row weights.

    Weights (non-negative multiplicities) give the AUROC of the rows repeated that often. NaN when the
    (positively weighted) rows hold only one class.
    """
    y, s = _arrays(y_true, p)
    w = None if weights is None else np.asarray(weights, dtype=float)
    if _one_class(y if w is None else y[w > 0]):
        return math.nan
    return float(roc_auc_score(y, s, sample_weight=w))


def weighted_auroc_matrix(y_true: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of ``weights`` (n_sets x n_rows) over the same scores, vectorised."""
    n = len(np.asarray(p))
    return grouped_auroc_matrix(y_true, p, np.arange(n), np.asarray(weights, dtype=float))


def grouped_auroc_matrix(y_true, p, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC for each weight set where row i has weight ``counts[:, codes[i]]`` (e.g. patient draws).

    Kept by hand because sklearn scores one weight set per call and the bootstrap needs hundreds: sum
    weights per distinct score (a sparse incidence product, cheap for 500 x thousands), then
    AUROC = sum over score groups of positive weight x (negative weight strictly below + half the tied
    negative weight) / (W_pos x W_neg). NaN where a weight set has no positives or no negatives.
    """
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
    """Average precision (step-wise area under the precision-recall curve), sklearn's; NaN without events."""
    y, s = _arrays(y_true, p)
    if not (y == 1).any():
        return math.nan  # sklearn would return 0 with a warning
    return float(average_precision_score(y, s))


def brier(y_true, p) -> float:
    """Mean squared difference between probability and outcome (sklearn's ``brier_score_loss``)."""
    y, s = _arrays(y_true, p)
    if len(y) == 0:
        return math.nan
    return float(brier_score_loss(y, s, labels=[0.0, 1.0]))


def calibration_slope_intercept(y_true, p) -> tuple[float, float]:
    """Calibration slope and intercept (calibration-in-the-large) of probabilities ``p``.

    slope: coefficient of logit(p) in logistic regression of y on logit(p) (1 = ideal, < 1 = too
    extreme predictions). intercept: intercept of the logistic model with logit(p) as an offset
    (slope fixed at 1; 0 = ideal, > 0 = risks underestimated on average). Van Calster et al. 2019.
    """
    y, s = _arrays(y_true, p)
    if y.min() == y.max():
        return math.nan, math.nan
    lp = logit(s)
    if np.ptp(lp) == 0:  # constant predictions have no slope
        slope = math.nan
    else:
        slope = float(fit_logistic(lp, y, np.zeros_like(lp))[1])
    intercept = float(fit_logistic(None, y, lp)[0])
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
    tn, fp, fn, tp = (float(c) for c in confusion_matrix(y.astype(int), flagged.astype(int), labels=[0, 1]).ravel())

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
    """Mean predicted vs observed event rate and row count in quantile bins of ``p`` (calibration plots).

    Not ``sklearn.calibration.calibration_curve(strategy="quantile")``, on purpose: sklearn keeps duplicate
    quantile edges (empty bins when isotonic output has ties) and puts a value equal to an inner edge in
    the lower bin; here duplicate edges are merged and bins are closed on the left, ``[lo, hi)`` (the last
    one ``[lo, hi]``). On the default run's out-of-fold predictions the two give different points (9 vs
    10 bins), so this wrapper keeps ``reports/plots/calibration`` unchanged and also returns the counts.
    """
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
