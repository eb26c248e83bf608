"""Metric functions against independent oracles: hand values, scikit-learn, scipy and a textbook IRLS.

Complements test_metrics.py: the vectorised bootstrap internals (one-step starts, Newton steps, the
weighted logistic fits), the edge cases (one row, one event, empty input, constant predictions), the
defaults of the bootstrap, the coercion of inputs to float64 (text, float32 booster scores) and the
promise that undefined cases are NaN without a RuntimeWarning.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline import metrics as M


@contextmanager
def no_warnings():
    """Any warning (numpy's divide / invalid included, whatever the global setting) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="warn", invalid="warn"):
            yield


def irls(x, y, offset, w):
    """Textbook weighted IRLS for y ~ 1 (+ x) + offset (general linear solve, 100 steps, no ridge)."""
    y = np.asarray(y, dtype=float)
    X = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(X.shape[1])
    for _ in range(100):
        mu = 1.0 / (1.0 + np.exp(-(offset + X @ beta)))
        step = np.linalg.solve(X.T @ (X * (w * mu * (1 - mu))[:, None]), X.T @ (w * (y - mu)))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-14:
            break
    return beta


def one_newton_step(x, y, offset, w, beta):
    """beta + H^-1 g for the weighted log-likelihood at beta (np.linalg.solve, not Cramer's rule)."""
    y = np.asarray(y, dtype=float)
    X = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    mu = 1.0 / (1.0 + np.exp(-(offset + X @ beta)))
    return beta + np.linalg.solve(X.T @ (X * (w * mu * (1 - mu))[:, None]), X.T @ (w * (y - mu)))


def logit(p):
    p = np.asarray(p, dtype=float)
    return np.log(p / (1 - p))


# 4 patients, 2 rows each; x is not separating (events at both ends), so every fit below is finite.
X8 = np.array([-1.5, -0.7, -0.2, 0.4, 0.9, 1.3, 2.1, -2.2])
Y8 = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
CODES8 = np.array([0, 0, 1, 1, 2, 2, 3, 3])
COUNTS8 = np.array([[2.0, 0.0, 1.0, 1.0], [0.0, 1.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 0.0, 1.0]])
OFFSET8 = np.array([0.3, -0.4, 0.1, 0.8, -1.1, 0.5, 0.2, -0.6])


def test_irls_oracle_agrees_with_sklearn_and_brentq():
    w = COUNTS8[0][CODES8]
    model = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X8[:, None], Y8, sample_weight=w)
    assert irls(X8, Y8, np.zeros(8), w) == pytest.approx([model.intercept_[0], model.coef_[0, 0]], abs=1e-6)
    # Intercept with an offset: root of the weighted score equation sum w (y - expit(offset + b)) = 0.
    root = brentq(lambda b: np.sum(w * (Y8 - 1 / (1 + np.exp(-(OFFSET8 + b))))), -10, 10, xtol=1e-15)
    assert irls(None, Y8, OFFSET8, w)[0] == pytest.approx(root, abs=1e-12)


# ------------------------------------------------------------------------------------------------------
# _one_step_starts: one Newton step, per weight set, from the unweighted fit


def test_one_step_starts_with_slope_equal_one_newton_step_from_the_unweighted_fit():
    beta_hat = irls(X8, Y8, np.zeros(8), np.ones(8))
    assert abs(beta_hat[0]) > 0.1 and abs(beta_hat[1]) > 0.05  # both terms matter below
    starts = M._one_step_starts(X8, Y8, np.zeros(8), CODES8, COUNTS8)
    assert starts.shape == (4, 2)
    for b in range(4):
        expected = one_newton_step(X8, Y8, np.zeros(8), COUNTS8[b][CODES8], beta_hat)
        assert starts[b] == pytest.approx(expected, abs=1e-10)
    # All weights 1: the unweighted fit itself (its gradient is zero).
    assert starts[2] == pytest.approx(beta_hat, abs=1e-10)


def test_one_step_starts_intercept_only_with_offset():
    b_hat = irls(None, Y8, OFFSET8, np.ones(8))[0]
    assert abs(b_hat) > 0.1
    starts = M._one_step_starts(None, Y8, OFFSET8, CODES8, COUNTS8)
    assert starts.shape == (4, 1)
    for b in range(4):
        w = COUNTS8[b][CODES8]
        mu = 1 / (1 + np.exp(-(OFFSET8 + b_hat)))
        expected = b_hat + np.sum(w * (Y8 - mu)) / np.sum(w * mu * (1 - mu))
        assert starts[b, 0] == pytest.approx(expected, abs=1e-10)
    assert starts[0, 0] != pytest.approx(b_hat, abs=1e-3)  # a real step


def test_one_step_starts_degenerate_sets_do_not_warn():
    # One row per patient: a set that draws a single patient has one distinct x (singular Hessian), a set
    # that draws nobody has no information; neither may raise or warn (bootstrap_calibration maps them).
    x = np.array([-1.7, 1.0, -1.0, 0.5, 2.0, -0.5, 0.2, 0.6, 0.7, 1.8, 1.9, -1.4])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    codes = np.arange(12)
    counts = np.vstack([np.eye(12), np.zeros(12)])
    with no_warnings():
        with_slope = M._one_step_starts(x, y, np.zeros(12), codes, counts)
        intercept_only = M._one_step_starts(None, y, x, codes, counts)
    assert np.isnan(with_slope[-1]).all() and np.isnan(intercept_only[-1]).all()
    assert np.isfinite(intercept_only[:-1]).all()  # one row still pins an intercept


# ------------------------------------------------------------------------------------------------------
# _newton_step and weighted_logistic_matrix


def test_newton_step_equals_one_newton_step():
    w = np.vstack([COUNTS8[b][CODES8] for b in range(4)])
    beta = np.array([[0.3, -0.8], [-0.5, 0.6], [0.0, 0.0], [1.2, 0.4]])
    powers = np.column_stack([np.ones(8), X8, X8 * X8])
    steps = M._newton_step(X8, Y8, OFFSET8, w, beta, powers)
    for b in range(4):
        assert beta[b] + steps[b] == pytest.approx(one_newton_step(X8, Y8, OFFSET8, w[b], beta[b]), abs=1e-12)
    powers0 = np.column_stack([np.ones(8), np.zeros(8), np.zeros(8)])
    steps0 = M._newton_step(None, Y8, OFFSET8, w, beta[:, :1], powers0)
    for b in range(4):
        assert beta[b, 0] + steps0[b, 0] == pytest.approx(
            one_newton_step(None, Y8, OFFSET8, w[b], beta[b, :1])[0], abs=1e-12)


@pytest.mark.parametrize("offset", [-35.0, 35.0])
def test_newton_step_clips_the_linear_predictor_at_30(offset):
    # As pipeline.model.expit: eta is clipped to [-30, 30], so mu = expit(+-30) for eta = +-35.
    mu = 1 / (1 + math.exp(-math.copysign(30.0, offset)))
    y = np.array([1.0, 0.0])
    step = M._newton_step(None, y, np.full(2, offset), np.ones((1, 2)), np.zeros((1, 1)),
                          np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    # grad = (1 - mu) + (0 - mu), hess = 2 mu (1 - mu)
    assert step[0, 0] == pytest.approx(((1 - mu) - mu) / (2 * (mu * (1 - mu))), rel=1e-12)


def test_weighted_logistic_matrix_equals_irls_per_weight_set():
    w = np.vstack([COUNTS8[b][CODES8] for b in range(4)])
    fits = M.weighted_logistic_matrix(X8, Y8, np.zeros(8), w, np.zeros(2))  # one start for all sets
    intercepts = M.weighted_logistic_matrix(None, Y8, OFFSET8, w, np.zeros(1))
    for b in range(4):
        assert fits[b] == pytest.approx(irls(X8, Y8, np.zeros(8), w[b]), abs=1e-7)
        assert intercepts[b, 0] == pytest.approx(irls(None, Y8, OFFSET8, w[b])[0], abs=1e-7)


def test_weighted_logistic_matrix_integer_start():
    # start [0, 1] (identity calibration) given as integers still yields float fits
    w = COUNTS8[:1][:, CODES8]
    fit = M.weighted_logistic_matrix(X8, Y8, np.zeros(8), w, np.array([0, 1]))
    assert fit.dtype == np.float64
    assert fit[0] == pytest.approx(irls(X8, Y8, np.zeros(8), w[0]), abs=1e-7)


def test_weighted_logistic_matrix_stops_at_a_step_of_exactly_tol():
    # y = (1, 0) without offset: the MLE intercept is exactly 0, so from start 0 the step is exactly 0.
    out = M.weighted_logistic_matrix(None, np.array([1.0, 0.0]), np.zeros(2), np.ones((1, 2)), np.zeros(1),
                                     tol=0.0)
    assert out[0, 0] == 0.0


def test_weighted_logistic_matrix_one_step_with_float32_x():
    # n_iter=1 and a loose tol return exactly one Newton step; float32 x (booster scores) is used as float64.
    x32 = np.array([0.1, 0.7, 0.3, 0.9, 0.45, 0.2], dtype=np.float32)
    x = x32.astype(np.float64)
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    w = np.array([[1.0, 2.0, 1.0, 1.0, 3.0, 1.0]])
    out = M.weighted_logistic_matrix(x32, y, np.zeros(6), w, np.array([-0.3, 0.8]), n_iter=1, tol=10.0)
    assert out[0] == pytest.approx(one_newton_step(x, y, np.zeros(6), w[0], np.array([-0.3, 0.8])),
                                   rel=1e-13, abs=1e-15)


def test_weighted_logistic_matrix_degenerate_sets_are_nan_without_warnings():
    x = np.array([-1.7, 1.0, -1.0, 0.5, 2.0, -0.5, 0.2, 0.6, 0.7, 1.8, 1.9, -1.4])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    w = np.vstack([np.eye(12), np.zeros(12), np.ones(12)])  # single rows, nobody, everybody
    with no_warnings():
        fits = M.weighted_logistic_matrix(x, y, np.zeros(12), w, np.array([0.2, 0.5]))
        intercepts = M.weighted_logistic_matrix(None, y, x, w, np.zeros(1))
    assert np.isnan(fits[-2]).all() and np.isnan(intercepts[-2]).all()  # nobody drawn
    assert np.isnan(intercepts[:-2]).all()  # one row: the intercept diverges (separation)
    assert fits[-1] == pytest.approx(irls(x, y, np.zeros(12), np.ones(12)), abs=1e-7)
    assert intercepts[-1, 0] == pytest.approx(irls(None, y, x, np.ones(12))[0], abs=1e-7)


# ------------------------------------------------------------------------------------------------------
# bootstrap_calibration


def _calibration_data():
    p = np.array([0.42, 0.55, 0.47, 0.6, 0.4, 0.52, 0.58, 0.45, 0.5, 0.44])  # logit range 0.81 < 1
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    codes = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    return p, y, codes


def test_bootstrap_calibration_narrow_predictions_equal_irls():
    p, y, codes = _calibration_data()
    counts = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 1.0, 1.0]])
    slopes, intercepts = M.bootstrap_calibration(y, p, codes, counts)
    lp = logit(p)
    for b in range(3):
        w = counts[b][codes]
        assert slopes[b] == pytest.approx(irls(lp, y, np.zeros(10), w)[1], abs=1e-7)
        assert intercepts[b] == pytest.approx(irls(None, y, lp, w)[0], abs=1e-7)


def test_bootstrap_calibration_exactly_one_event_or_one_non_event():
    # Set 0 draws one event (row 1, in the middle of lp) and set 1 one non-event (row 4): still fits.
    p = np.array([0.2, 0.5, 0.7, 0.3, 0.55, 0.8, 0.35, 0.65])
    y = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    codes = np.arange(8)
    counts = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    assert list(counts @ y) == [1.0, 4.0] and list(counts @ (1 - y)) == [4.0, 1.0]
    slopes, intercepts = M.bootstrap_calibration(y, p, codes, counts)
    lp = logit(p)
    for b in range(2):
        assert slopes[b] == pytest.approx(irls(lp, y, np.zeros(8), counts[b])[1], abs=1e-7)
        assert intercepts[b] == pytest.approx(irls(None, y, lp, counts[b])[0], abs=1e-7)


def test_bootstrap_calibration_one_class_outcome_is_float_nan():
    slopes, intercepts = M.bootstrap_calibration([0, 0, 0], [0.2, 0.4, 0.6], [0, 1, 2], np.ones((2, 3)))
    assert slopes.dtype == np.float64 and intercepts.dtype == np.float64
    assert np.isnan(slopes).all() and np.isnan(intercepts).all()


@pytest.mark.parametrize("last_outcome", [0.0, 1.0])
def test_bootstrap_calibration_constant_predictions(last_outcome):
    # logit(0.3) for every row: no slope (NaN, silently); intercept = logit(weighted event rate) - logit(0.3)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0, last_outcome])
    codes = np.array([0, 0, 1, 1, 2, 2])
    counts = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    with no_warnings():
        slopes, intercepts = M.bootstrap_calibration(y, np.full(6, 0.3), codes, counts)
    assert np.isnan(slopes).all()
    rates = [(2 + last_outcome) / 6, (3 + last_outcome) / 8, (1 + 3 * last_outcome) / 8]
    expected = [math.log(r / (1 - r)) - math.log(0.3 / 0.7) for r in rates]
    assert intercepts == pytest.approx(expected, abs=1e-7)


def test_bootstrap_calibration_many_rows_few_sets():
    # 40000 rows: the chunk holds one set, so each set is its own chunk (and there are fewer patients than
    # sets). Deterministic outcomes: y = 1 when a low-discrepancy sequence falls below p.
    n = 40000
    p = np.linspace(0.05, 0.95, n)
    y = ((np.arange(n) * 0.6180339887498949) % 1.0 < p).astype(float)
    codes = np.arange(n) % 2
    counts = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    slopes, intercepts = M.bootstrap_calibration(y, p, codes, counts)
    lp = logit(p)
    for b in range(3):
        w = counts[b][codes]
        assert slopes[b] == pytest.approx(irls(lp, y, np.zeros(n), w)[1], abs=1e-7)
        assert intercepts[b] == pytest.approx(irls(None, y, lp, w)[0], abs=1e-7)


# ------------------------------------------------------------------------------------------------------
# grouped / weighted AUROC matrix


def test_grouped_auroc_matrix_against_sklearn_weights():
    # Ties across classes (0.4) and a set with exactly one positive unit and one with one negative unit.
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    p = np.array([0.8, 0.4, 0.4, 0.1, 0.6, 0.3])
    codes = np.array([0, 0, 1, 1, 2, 2])
    counts = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert counts[0][codes] @ y == 1.0 and counts[0][codes] @ (1 - y) == 1.0
    out = M.grouped_auroc_matrix(y, p, codes, counts)
    assert out.dtype == np.float64
    for b in range(4):
        assert out[b] == pytest.approx(roc_auc_score(y, p, sample_weight=counts[b][codes]), abs=1e-12)
    # Set 0 by hand: one positive unit (0.8) above one negative unit (0.4).
    assert out[0] == 1.0


def test_grouped_auroc_matrix_one_class_sets_are_nan_without_warnings():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.array([0.9, 0.2, 0.6, 0.7])
    counts = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    with no_warnings():
        out = M.weighted_auroc_matrix(y, p, counts)
    assert np.isnan(out[:3]).all()
    assert out[3] == pytest.approx(0.75)  # (0.9 > both) + (0.6 > 0.2, < 0.7): 3 of 4 pairs


def test_grouped_auroc_matrix_empty_input_is_nan():
    with no_warnings():
        out = M.grouped_auroc_matrix([], [], np.array([], dtype=int), np.zeros((3, 0)))
        out2 = M.weighted_auroc_matrix([], [], np.zeros((2, 0)))
    assert out.shape == (3,) and np.isnan(out).all()
    assert out2.shape == (2,) and np.isnan(out2).all()


def test_grouped_auroc_matrix_float32_counts_are_used_as_float64():
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    p = np.array([0.8, 0.4, 0.4, 0.1, 0.5])
    counts = np.array([[1.0, 1.0, 2.0, 1.0, 1.0], [0.3, 0.7, 1.1, 0.9, 1.7]], dtype=np.float32)
    out = M.weighted_auroc_matrix(y, p, counts)
    for b in range(2):
        w = counts[b].astype(np.float64)
        assert out[b] == pytest.approx(roc_auc_score(y, p, sample_weight=w), rel=1e-14)
    # Set 0 by hand: 0.8 beats 4 negative units; 0.4 beats 0.1 (1), ties 0.4 (2 x 0.5) -> 6 / (2 x 4)
    assert out[0] == pytest.approx(6 / 8, rel=1e-15)


# ------------------------------------------------------------------------------------------------------
# auroc, brier, threshold_for_sensitivity, classification_at_threshold, input checks


def test_auroc_undefined_cases_are_nan_without_warnings():
    with no_warnings():
        assert math.isnan(M.auroc([], []))
        assert math.isnan(M.auroc([0, 0, 0], [0.1, 0.5, 0.9]))
        assert math.isnan(M.auroc([1], [0.5]))
        # Weighted: the only event has weight 0.
        assert math.isnan(M.auroc([1, 0, 0], [0.9, 0.3, 0.1], weights=[0, 1, 1]))
        assert math.isnan(M.auroc([1, 0, 0], [0.9, 0.3, 0.1], weights=[1, 0, 0]))


def test_arrays_must_be_one_dimensional_and_equal_length():
    with pytest.raises(ValueError):
        M.net_benefit([1], [0.2, 0.6, 0.9], [0.5])  # would broadcast
    with pytest.raises(ValueError):
        M.net_benefit([[1, 0], [0, 1]], [[0.2, 0.3], [0.4, 0.5]], [0.5])


def test_brier_single_row():
    assert M.brier([1], [0.7]) == pytest.approx(0.09)
    assert math.isnan(M.brier([], []))


def test_threshold_for_sensitivity_edge_cases():
    # One event: it must be caught, so the threshold is its score.
    assert M.threshold_for_sensitivity([1, 0], [0.3, 0.6], 0.8) == 0.3
    # Low target with 4 events: ceil(0.1 x 4) = 1 event -> the highest event score.
    assert M.threshold_for_sensitivity([1, 1, 0, 1, 1], [0.9, 0.7, 0.8, 0.2, 0.4], 0.1) == 0.9
    assert math.isnan(M.threshold_for_sensitivity([0, 0], [0.3, 0.6], 0.8))


def test_classification_no_events_and_nothing_flagged():
    stats = M.classification_at_threshold([0, 0], [0.1, 0.2], 0.5)
    assert stats["specificity"] == 1.0 and stats["npv"] == 1.0
    assert math.isnan(stats["sensitivity"]) and math.isnan(stats["ppv"])


# ------------------------------------------------------------------------------------------------------
# net benefit


def test_net_benefit_treat_all_float32_input():
    y32 = np.array([1, 0, 0], dtype=np.float32)  # prevalence 1/3 (not a float32 number)
    pts32 = np.array([0.1, 0.3], dtype=np.float32)
    pts = pts32.astype(np.float64)
    expected = 1 / 3 - (2 / 3) * pts / (1 - pts)
    np.testing.assert_allclose(M.net_benefit_treat_all(y32, pts), expected, rtol=1e-15)
    np.testing.assert_allclose(M.net_benefit_treat_all([1, 0, 0], pts32), expected, rtol=1e-15)


def test_bootstrap_net_benefit_by_hand():
    # Patients 0 (rows 0, 1), 1 (row 2), 2 (no rows in this subset). Threshold 0.25 flags p >= 0.25.
    y = np.array([1.0, 0.0, 0.0])
    p = np.array([0.6, 0.3, 0.1])
    codes = np.array([0, 0, 1])
    counts = np.array([[1.0, 1.0, 5.0], [0.0, 1.0, 2.0], [2.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    with no_warnings():
        out = M.bootstrap_net_benefit(y, p, codes, counts, [0.25, 1.0])
    # set 0: n 3, TP 1, FP 1 -> (1 - 1/3) / 3; set 1: only row 2 (n = 1, nothing flagged) -> 0;
    # set 2: n 7, TP 2, FP 2 -> (2 - 2/3) / 7; set 3: no rows -> NaN
    assert out[:3, 0] == pytest.approx([(1 - 1 / 3) / 3, 0.0, (2 - 2 / 3) / 7], abs=1e-15)
    assert np.isnan(out[3]).all()


def test_bootstrap_net_benefit_float32_thresholds():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.array([0.5, 0.3, 0.1, 0.2])
    pts32 = np.array([0.15, 0.25], dtype=np.float32)
    pt = pts32.astype(np.float64)
    out = M.bootstrap_net_benefit(y, p, np.arange(4), np.ones((1, 4)), pts32)
    # pt 0.15: flagged 0.5, 0.3, 0.2 -> TP 1, FP 2; pt 0.25: 0.5, 0.3 -> TP 1, FP 1; n = 4
    expected = [(1 - 2 * pt[0] / (1 - pt[0])) / 4, (1 - pt[1] / (1 - pt[1])) / 4]
    assert out[0] == pytest.approx(expected, rel=1e-15)


# ------------------------------------------------------------------------------------------------------
# patient bootstrap, percentile CI, bootstrap AUROC CI


def test_patient_bootstrap_counts_string_ids_and_single_patient():
    codes, counts = M.patient_bootstrap_counts(["p2", "p1", "p2", "p10"], 4, seed=0)
    assert list(codes) == [2, 0, 2, 1]  # sorted ids: p1, p10, p2
    assert counts.shape == (4, 3) and (counts.sum(axis=1) == 3).all()
    codes, counts = M.patient_bootstrap_counts(["only"] * 3, 5, seed=0)
    assert list(codes) == [0, 0, 0] and (counts == 1).all()


def test_patient_bootstrap_counts_draw_every_patient_uniformly():
    _, counts = M.patient_bootstrap_counts(np.arange(4), 3000, seed=7)
    # 12000 draws over 4 patients: 3000 each expected (sd ~47); no patient is left out.
    assert np.all(np.abs(counts.sum(axis=0) - 3000) < 300)
    expected = np.zeros((3000, 4))
    draws = np.random.default_rng(7).integers(0, 4, size=(3000, 4))
    np.add.at(expected, (np.repeat(np.arange(3000), 4), draws.ravel()), 1.0)
    np.testing.assert_array_equal(counts, expected)


def test_patient_bootstrap_weights_are_seeded_row_multiplicities():
    groups = np.array([5, 5, 9, 7, 9])
    draws = np.random.default_rng(11).integers(0, 3, size=(6, 3))  # patients sorted: 5, 7, 9
    per_patient = np.stack([np.bincount(d, minlength=3) for d in draws]).astype(float)
    weights = M.patient_bootstrap_weights(groups, 6, seed=11)
    np.testing.assert_array_equal(weights, per_patient[:, [0, 0, 2, 1, 2]])


def test_percentile_ci_hand_computed():
    values = np.arange(101.0)
    assert M.percentile_ci(values) == pytest.approx((2.5, 97.5))  # default level 0.95
    assert M.percentile_ci(values, 0.9) == pytest.approx((5.0, 95.0))
    assert M.percentile_ci([np.nan, 0.7, np.nan]) == (0.7, 0.7)
    lo, hi = M.percentile_ci([np.nan])
    assert math.isnan(lo) and math.isnan(hi)


def test_percentile_ci_float32_values():
    v32 = np.array([0.1, 0.7, 0.3, 0.9, 0.45], dtype=np.float32)
    expected = np.quantile(v32.astype(np.float64), [0.05, 0.95])
    assert M.percentile_ci(v32, 0.9) == pytest.approx(tuple(expected), rel=1e-15)


def _bootstrap_data():
    # 30 patients of 2 rows, scores and outcomes from low-discrepancy sequences (deterministic, AUROC 0.65).
    i = np.arange(60)
    p = np.round((i * 0.6180339887498949) % 1.0, 3)
    y = (((i * 0.7548776662466927) % 1.0) < 0.25 + 0.5 * p).astype(float)
    return y, p, i // 2


def _pairwise_bootstrap_aurocs(y, p, groups, n_bootstrap, seed):
    """Mann-Whitney AUROC of each patient bootstrap replicate (numpy's default_rng draws, one-class dropped).

    AUROC = sum over (event i, non-event j) of w_i w_j ([p_i > p_j] + [p_i = p_j] / 2) / (W_events W_non-events)
    """
    ids = sorted({str(g) for g in groups})  # patients are numbered in the text order of their ids
    codes = np.array([ids.index(str(g)) for g in groups])
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(n_bootstrap, len(ids)))
    w = np.stack([np.bincount(d, minlength=len(ids)) for d in draws])[:, codes].astype(float)
    pos, neg = y == 1, y == 0
    wins = (p[pos][:, None] > p[neg][None, :]) + 0.5 * (p[pos][:, None] == p[neg][None, :])
    num = np.einsum("bi,ij,bj->b", w[:, pos], wins, w[:, neg])
    den = w[:, pos].sum(axis=1) * w[:, neg].sum(axis=1)
    keep = den > 0
    aurocs = num[keep] / den[keep]
    for b in np.flatnonzero(keep)[:3]:  # the pairwise formula is sklearn's weighted AUROC
        assert num[b] / den[b] == pytest.approx(roc_auc_score(y, p, sample_weight=w[b]), abs=1e-12)
    return aurocs


def test_bootstrap_auroc_ci_defaults_are_500_draws_seed_0():
    y, p, groups = _bootstrap_data()
    aurocs = _pairwise_bootstrap_aurocs(y, p, groups, 500, 0)
    assert M.bootstrap_auroc_ci(y, p, groups) == pytest.approx(tuple(np.quantile(aurocs, [0.025, 0.975])),
                                                               abs=1e-12)
    aurocs = _pairwise_bootstrap_aurocs(y, p, groups, 40, 4)
    assert M.bootstrap_auroc_ci(y, p, groups, n_bootstrap=40, seed=4, level=0.8) == pytest.approx(
        tuple(np.quantile(aurocs, [0.1, 0.9])), abs=1e-12)


def test_bootstrap_auroc_ci_one_replicate():
    y, p, groups = _bootstrap_data()
    aurocs = _pairwise_bootstrap_aurocs(y, p, groups, 1, 3)
    assert len(aurocs) == 1
    assert M.bootstrap_auroc_ci(y, p, groups, n_bootstrap=1, seed=3) == pytest.approx((aurocs[0], aurocs[0]),
                                                                                     abs=1e-12)
    lo, hi = M.bootstrap_auroc_ci(y, p, groups, n_bootstrap=0)
    assert math.isnan(lo) and math.isnan(hi)


# ------------------------------------------------------------------------------------------------------
# calibration curve bins, calibration slope / intercept


def test_calibration_curve_bins_default_is_ten_bins():
    p = (np.arange(100) + 0.5) / 100
    y = (np.arange(100) % 4 == 0).astype(float)
    predicted, observed, counts = M.calibration_curve_bins(y, p)
    assert list(counts) == [10] * 10
    assert predicted == pytest.approx([(10 * k + 5) / 100 for k in range(10)], abs=1e-12)


def test_calibration_curve_bins_float32_scores():
    p32 = np.array([0.1, 0.2, 0.7, 0.3, 0.9, 0.6], dtype=np.float32)
    p = p32.astype(np.float64)
    predicted, observed, counts = M.calibration_curve_bins([0, 0, 1, 0, 1, 1], p32, n_bins=2)
    # edges: min, median, max; [0.1, 0.45) holds 0.1, 0.2, 0.3; [0.45, 0.9] holds 0.6, 0.7, 0.9
    assert list(counts) == [3, 3]
    assert predicted.dtype == np.float64
    assert predicted == pytest.approx([(p[0] + p[1] + p[3]) / 3, (p[2] + p[4] + p[5]) / 3], rel=1e-15)
    assert observed == pytest.approx([0.0, 1.0])


def test_calibration_slope_intercept_constant_predictions():
    # logit(0.5) = 0 for every row: no slope; intercept = logit(event rate 1/4) = log(1/3).
    slope, intercept = M.calibration_slope_intercept([1, 0, 0, 0], [0.5] * 4)
    assert isinstance(slope, float) and math.isnan(slope)
    assert intercept == pytest.approx(math.log(1 / 3), abs=1e-9)


# ------------------------------------------------------------------------------------------------------
# Text input (a CSV read without type conversion): every array is coerced with dtype=float.


def test_text_input_is_coerced_to_float():
    y_txt = ["1", "0", "1", "0", "0", "1"]
    p_txt = ["0.8", "0.4", "0.4", "0.1", "0.6", "0.3"]
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    p = np.array([0.8, 0.4, 0.4, 0.1, 0.6, 0.3])
    w = np.array([1.0, 2.0, 1.0, 1.0, 3.0, 1.0])
    w_txt = ["1", "2", "1", "1", "3", "1"]
    # pt 0.35: flagged 0.8, 0.4, 0.4, 0.6 -> TP 2, FP 2 -> 2/6 - 2/6 x 0.35/0.65
    assert M.net_benefit(y_txt, p_txt, [0.35])[0] == pytest.approx(2 / 6 - 2 / 6 * 0.35 / 0.65)
    assert M.net_benefit_treat_all(y_txt, [0.35])[0] == pytest.approx(0.5 - 0.5 * 0.35 / 0.65)
    assert M.auroc(y_txt, p_txt, weights=w_txt) == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    stats = M.classification_at_threshold(y_txt, p_txt, "0.5")  # flagged 0.8, 0.6: TP 1, FP 1
    assert stats == pytest.approx({"sensitivity": 1 / 3, "specificity": 2 / 3, "ppv": 0.5, "npv": 0.5})
    scores_txt = ["2", "10", "10", "1", "3", "9"]  # as text "10" < "2"; as numbers 10 > 2
    scores = np.array([2.0, 10.0, 10.0, 1.0, 3.0, 9.0])
    out = M.grouped_auroc_matrix(y_txt, scores_txt, np.arange(6), np.array([w_txt]))
    assert out[0] == pytest.approx(roc_auc_score(y, scores, sample_weight=w))
    assert M.percentile_ci(["0.25", "0.75", "0.5"], 0.5) == pytest.approx((0.375, 0.625))
    fit = M.weighted_logistic_matrix(None, y_txt, np.zeros(6), np.array([w_txt]), np.zeros(1))
    assert fit[0, 0] == pytest.approx(math.log(1 / 2), abs=1e-7)  # weighted event rate 3/9
    codes = np.array([0, 0, 1, 1, 2, 2])
    counts_txt = np.array([["1", "2", "0"], ["0", "1", "1"]])
    nb = M.bootstrap_net_benefit(y, p, codes, counts_txt, [0.35])
    # set 0: rows 0, 1 once, rows 2, 3 twice: n 6, flagged 0.8 (TP), 0.4 (FP), 0.4 (TP x 2) -> (3 - 0.35/0.65) / 6
    assert nb[:, 0] == pytest.approx([(3 - 0.35 / 0.65) / 6, (1 - 0.35 / 0.65) / 4])
    slopes, intercepts = M.bootstrap_calibration(y, np.array([0.7, 0.4, 0.4, 0.2, 0.6, 0.35]), codes, counts_txt)
    lp = logit([0.7, 0.4, 0.4, 0.2, 0.6, 0.35])
    for b in range(2):
        wb = counts_txt[b].astype(float)[codes]
        assert intercepts[b] == pytest.approx(irls(None, y, lp, wb)[0], abs=1e-7)
