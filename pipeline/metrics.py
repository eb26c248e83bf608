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

from pipeline.model import expit, fit_logistic, logit

#: Decimals of every figure written to JSON reports (metrics.json, model metadata, validation.json):
#: stable, readable diffs in `dvc metrics diff`.
JSON_DIGITS = 4


def json_number(value: object, digits: int = JSON_DIGITS) -> float | None:
    """A figure for a JSON report: rounded, and None (null) for NaN, infinity or no number at all."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None

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


def threshold_for_specificity(y_true, p, target: float) -> float:
    """Lowest threshold t such that flagging ``p >= t`` keeps specificity at least ``target`` (at most
    ``(1 - target)`` of the non-events flagged): just above the score of the first non-event that would
    exceed that share. NaN without non-events."""
    y, s = _arrays(y_true, p)
    neg = np.sort(s[y == 0])[::-1]
    if len(neg) == 0:
        return math.nan
    allowed = math.floor((1 - target) * len(neg) + 1e-9)  # false positives the rule may make
    if allowed >= len(neg):
        return float(neg[-1])
    return float(np.nextafter(neg[allowed], np.inf))


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


def bootstrap_net_benefit(y_true, p, codes: np.ndarray, counts: np.ndarray,
                          thresholds=NET_BENEFIT_THRESHOLDS) -> np.ndarray:
    """Net benefit (n_sets x n_thresholds) for each weight set, row i weighted ``counts[:, codes[i]]``.

    Per patient, the flagged events and flagged non-events at each threshold are summed once; each
    replicate's TP, FP and n are then one matrix product with its patient draw counts.
    """
    y, s = _arrays(y_true, p)
    codes = np.asarray(codes)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    pts = np.asarray(thresholds, dtype=float)
    flagged = (s[:, None] >= pts[None, :]).astype(float)
    n_groups = counts.shape[1]
    tp_g = np.zeros((n_groups, len(pts)))
    fp_g = np.zeros((n_groups, len(pts)))
    np.add.at(tp_g, codes, flagged * (y == 1)[:, None])
    np.add.at(fp_g, codes, flagged * (y == 0)[:, None])
    rows_g = np.bincount(codes, minlength=n_groups).astype(float)
    n = counts @ rows_g
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (counts @ tp_g - counts @ fp_g * (pts / (1 - pts))[None, :]) / n[:, None]
    out[n == 0] = np.nan
    return out


def _newton_step(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, w: np.ndarray, beta: np.ndarray,
                 powers: np.ndarray) -> np.ndarray:
    """One Newton-Raphson step per weight set (rows of ``w``); in-place arithmetic on one sets x n buffer."""
    eta = np.multiply(beta[:, 1:2], x[None, :]) if x is not None else np.zeros_like(w)
    eta += offset[None, :]
    eta += beta[:, :1]
    np.clip(eta, -30, 30, out=eta)
    np.negative(eta, out=eta)
    np.exp(eta, out=eta)
    eta += 1.0
    mu = np.reciprocal(eta, out=eta)
    v = mu * (1.0 - mu)
    v *= w
    np.subtract(y[None, :], mu, out=mu)
    mu *= w  # now the weighted residuals
    grad = mu @ powers[:, :2]  # sets x 2: sum r, sum r x
    hess = v @ powers  # sets x 3: sum v, sum v x, sum v x^2
    with np.errstate(invalid="ignore", divide="ignore"):
        if x is None:
            return (grad[:, 0] / hess[:, 0])[:, None]
        det = hess[:, 0] * hess[:, 2] - hess[:, 1] ** 2
        return np.column_stack([(hess[:, 2] * grad[:, 0] - hess[:, 1] * grad[:, 1]) / det,
                                (hess[:, 0] * grad[:, 1] - hess[:, 1] * grad[:, 0]) / det])


def weighted_logistic_matrix(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, weights: np.ndarray,
                             start: np.ndarray, n_iter: int = 25, tol: float = 1e-4) -> np.ndarray:
    """Unpenalised logistic regression y ~ 1 (+ x) with an offset, once per row of ``weights``: (n_sets x k).

    The weighted variant of :func:`pipeline.model.fit_logistic`, vectorised over weight sets (bootstrap
    replicates): Newton-Raphson from ``start`` (k values, or one row per set), only on sets not yet
    converged. A set stops after a step of at most ``tol``: Newton converges quadratically, so its
    remaining error is of the order of ``tol`` squared. Sets that have not converged after ``n_iter``
    steps (separation) or have a singular Hessian are NaN.
    """
    w = np.asarray(weights, dtype=float)
    y = np.asarray(y, dtype=float)
    beta = np.array(np.broadcast_to(np.asarray(start, dtype=float), (w.shape[0], np.shape(start)[-1])))
    xs = np.zeros(len(y)) if x is None else np.asarray(x, dtype=float)
    powers = np.ascontiguousarray(np.stack([np.ones(len(y)), xs, xs * xs]).T)  # n x 3
    active = np.arange(w.shape[0])
    for _ in range(n_iter):
        step = _newton_step(x, y, offset, w[active], beta[active], powers)
        beta[active] += step
        size = np.max(np.abs(step), axis=1)
        active = active[~(size <= tol)]  # NaN steps stay active and end as NaN
        if len(active) == 0:
            break
    beta[active] = np.nan
    return beta


def _one_step_starts(x: np.ndarray | None, y: np.ndarray, offset: np.ndarray, codes: np.ndarray,
                     counts: np.ndarray) -> np.ndarray:
    """Per weight set, one Newton step from the unweighted fit with that set's weights (sets x k).

    At the unweighted fit the gradient and Hessian terms are fixed per row, so every set's are one
    product of its patient draw counts with per-patient sums: a cheap, close start for the exact fits.
    """
    zeros = np.zeros(len(y))
    xs = zeros if x is None else x
    beta = fit_logistic(x, y, offset)
    mu = expit(offset + beta[0] + (beta[1] * xs if x is not None else 0.0))
    r, v = y - mu, mu * (1 - mu)
    per_patient = np.zeros((counts.shape[1], 5))
    np.add.at(per_patient, codes, np.column_stack([r, r * xs, v, v * xs, v * xs * xs]))
    g0, g1, h00, h01, h11 = (counts @ per_patient).T
    with np.errstate(invalid="ignore", divide="ignore"):
        if x is None:
            return (beta[0] + g0 / h00)[:, None]
        det = h00 * h11 - h01**2
        return np.column_stack([beta[0] + (h11 * g0 - h01 * g1) / det, beta[1] + (h00 * g1 - h01 * g0) / det])


#: Weight sets fitted together in :func:`bootstrap_calibration`: about this many set x row elements per
#: buffer keeps the Newton arithmetic in cache (several times faster than all replicates at once).
_CHUNK_ELEMENTS = 1 << 16


def bootstrap_calibration(y_true, p, codes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibration slope and intercept (as :func:`calibration_slope_intercept`) for each weight set, row i
    weighted ``counts[:, codes[i]]`` (exact weighted fits, see :func:`weighted_logistic_matrix`, started
    from :func:`_one_step_starts`); NaN for one-class sets."""
    y, s = _arrays(y_true, p)
    codes = np.asarray(codes)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    slopes, intercepts = np.full(counts.shape[0], np.nan), np.full(counts.shape[0], np.nan)
    if y.min() == y.max():
        return slopes, intercepts
    lp = logit(s)
    zeros = np.zeros_like(lp)
    fit_slope = np.ptp(lp) > 0  # constant predictions have no slope
    slope_start = np.nan_to_num(_one_step_starts(lp, y, zeros, codes, counts)) if fit_slope else None
    intercept_start = np.nan_to_num(_one_step_starts(None, y, lp, codes, counts))
    size = max(1, _CHUNK_ELEMENTS // len(y))
    for lo in range(0, counts.shape[0], size):
        part = slice(lo, lo + size)
        w = counts[part][:, codes]
        if slope_start is not None:
            slopes[part] = weighted_logistic_matrix(lp, y, zeros, w, slope_start[part])[:, 1]
        intercepts[part] = weighted_logistic_matrix(None, y, lp, w, intercept_start[part])[:, 0]
        one_class = ((w @ y) == 0) | ((w @ (1 - y)) == 0)
        slopes[part][one_class] = np.nan
        intercepts[part][one_class] = np.nan
    return slopes, intercepts
