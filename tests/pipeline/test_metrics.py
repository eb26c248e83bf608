"""Metric functions against sklearn and hand-computed values (undefined cases are NaN, never an error)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from pipeline import metrics as M


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(float)
    p = np.round(np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(scale=0.2, size=400), 0, 1), 2)  # ties on purpose
    return y, p


def test_auroc_auprc_brier_match_sklearn(scored):
    y, p = scored
    assert M.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert M.auprc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_weighted_auroc_equals_repeated_rows(scored):
    y, p = scored
    w = np.random.default_rng(1).integers(0, 3, len(y)).astype(float)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    assert M.auroc(y, p, weights=w) == pytest.approx(roc_auc_score(y[rep], p[rep]), abs=1e-12)
    many = M.weighted_auroc_matrix(y, p, np.vstack([w, np.ones(len(y))]))
    assert many[1] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auroc_hand_computed():
    # pairs (pos, neg): (0.8>0.1) (0.8>0.4) (0.4=0.4 tie) (0.4>0.1) -> (1 + 1 + 0.5 + 1) / 4
    assert M.auroc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    # Weight 2 on the tied negative (3 negative units): pos 0.8 beats all 3, pos 0.4 beats 0.1 (1) and
    # ties 0.4 twice (2 x 0.5) -> (3 + 1 + 1) / (2 positives x 3 negatives)
    assert M.auroc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1], weights=[1, 1, 2, 1]) == pytest.approx(5 / 6)
    assert math.isnan(M.auroc([1, 1], [0.2, 0.3]))
    assert math.isnan(M.auroc([1, 0, 0], [0.2, 0.3, 0.1], weights=[0, 1, 1]))  # no weighted positive


def test_auprc_and_brier_hand_computed():
    # Ranked 0.9 (event), 0.8, 0.7 (event), 0.1: recall steps 0.5 at precision 1/1 and 0.5 at precision 2/3.
    assert M.auprc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert math.isnan(M.auprc([0, 0], [0.2, 0.3]))  # no events: undefined (sklearn says 0)
    # ((0.8 - 1)^2 + (0.4 - 0)^2) / 2
    assert M.brier([1, 0], [0.8, 0.4]) == pytest.approx(0.1)


def test_classification_at_threshold_one_class_is_nan():
    stats = M.classification_at_threshold([0, 0, 0], [0.1, 0.5, 0.9], 0.6)
    assert math.isnan(stats["sensitivity"])  # no events
    assert stats["ppv"] == 0.0  # 0.9 flagged: 0 TP of 1 flagged
    assert stats["specificity"] == pytest.approx(2 / 3) and stats["npv"] == pytest.approx(1.0)
    # Per-row thresholds (each row judged by its own training fold's threshold).
    per_row = M.classification_at_threshold([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.2], [0.4, 0.6, 0.4, 0.1])
    assert per_row["sensitivity"] == pytest.approx(0.5) and per_row["specificity"] == pytest.approx(0.0)


def test_calibration_slope_and_intercept():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.random(20000) < p).astype(float)
    slope, intercept = M.calibration_slope_intercept(y, p)
    assert slope == pytest.approx(1.0, abs=0.05)
    assert intercept == pytest.approx(0.0, abs=0.05)
    # Over-confident predictions (logit doubled) have slope ~0.5.
    logit = np.log(p / (1 - p))
    slope2, _ = M.calibration_slope_intercept(y, 1 / (1 + np.exp(-2 * logit)))
    assert slope2 == pytest.approx(0.5, abs=0.05)
    # Systematic under-prediction gives a positive intercept.
    _, intercept3 = M.calibration_slope_intercept(y, p * 0.5)
    assert intercept3 > 0.3


def test_calibration_handles_extreme_probabilities():
    slope, intercept = M.calibration_slope_intercept([0, 0, 1, 1, 0, 1], [0.0, 0.1, 1.0, 0.9, 0.2, 0.7])
    assert np.isfinite(slope) and np.isfinite(intercept)


def test_threshold_for_sensitivity_hand_computed():
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05, 0.5])
    # 90% of 10 events = 9 must be flagged -> 9th highest event score = 0.2.
    assert M.threshold_for_sensitivity(y, p, 0.9) == pytest.approx(0.2)
    stats = M.classification_at_threshold(y, p, 0.2)
    assert stats["sensitivity"] == pytest.approx(0.9)
    assert stats["specificity"] == pytest.approx(0.5)  # 0.05 below, 0.5 flagged
    assert stats["ppv"] == pytest.approx(9 / 10)
    assert stats["npv"] == pytest.approx(1 / 2)
    assert M.threshold_for_sensitivity(y, p, 1.0) == pytest.approx(0.1)


def test_threshold_for_specificity_hand_computed():
    # 20 non-events scored 0.01..0.20 and 2 events; 90% specificity allows 2 false positives (0.20, 0.19),
    # so the rule must not flag 0.18: the threshold sits just above it.
    y = np.array([0] * 20 + [1, 1])
    p = np.array([k / 100 for k in range(1, 21)] + [0.5, 0.05])
    t = M.threshold_for_specificity(y, p, 0.9)
    assert 0.18 < t < 0.1800001
    assert M.classification_at_threshold(y, p, t)["specificity"] == pytest.approx(0.9)
    assert M.classification_at_threshold(y, p, 0.18)["specificity"] < 0.9  # one lower would flag a third
    assert M.threshold_for_specificity(y, p, 1.0) > 0.20  # no false positive allowed
    assert M.threshold_for_specificity(y, p, 0.0) == pytest.approx(0.01)  # everyone may be flagged
    assert np.isnan(M.threshold_for_specificity(np.ones(3), np.array([0.1, 0.2, 0.3]), 0.9))


def test_net_benefit_hand_computed():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.6, 0.2, 0.4, 0.1, 0.05])
    # pt = 0.2: flagged 0.6, 0.2, 0.4 -> TP 2, FP 1 -> 2/5 - 1/5 * 0.25
    assert M.net_benefit(y, p, [0.2])[0] == pytest.approx(0.4 - 0.2 * 0.25)
    assert M.net_benefit_treat_all(y, [0.2])[0] == pytest.approx(0.4 - 0.6 * 0.25)
    assert [f"{t:.2f}" for t in M.NET_BENEFIT_THRESHOLDS][0] == "0.05"
    assert M.NET_BENEFIT_THRESHOLDS[-1] == pytest.approx(0.5)


def test_bootstrap_ci_contains_estimate_and_resamples_patients(scored):
    y, p = scored
    groups = np.repeat(np.arange(100), 4)  # 4 landmark rows per patient
    lo, hi = M.bootstrap_auroc_ci(y, p, groups, n_bootstrap=300, seed=3)
    assert lo < M.auroc(y, p) < hi
    assert hi - lo < 0.3
    assert M.bootstrap_auroc_ci(y, p, groups, n_bootstrap=300, seed=3) == (lo, hi)  # seeded
    weights = M.patient_bootstrap_weights(groups, 5, seed=1)
    assert weights.shape == (5, len(y))
    # Every row of a patient has the same multiplicity; each replicate draws 100 patients.
    assert np.all(weights.reshape(5, 100, 4).std(axis=2) == 0)
    assert np.all(weights.sum(axis=1) == 400)


def test_calibration_curve_bins_hand_computed():
    # Quantile edges of 0.1..0.5 in 2 bins: 0.1, 0.3, 0.5. Bins are [0.1, 0.3) and [0.3, 0.5]: 0.3 goes up
    # (sklearn's calibration_curve would put it in the lower bin: predicted 0.2 and 0.45).
    predicted, observed, counts = M.calibration_curve_bins([0, 0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.5], n_bins=2)
    assert predicted == pytest.approx([0.15, 0.4])
    assert observed == pytest.approx([0.0, 2 / 3])
    assert list(counts) == [2, 3]
    # Constant predictions: one bin.
    predicted, observed, counts = M.calibration_curve_bins([0, 1, 1, 0], [0.3] * 4)
    assert list(predicted) == [0.3] and list(observed) == [0.5] and list(counts) == [4]


def test_calibration_curve_bins():
    p = np.linspace(0.05, 0.95, 100)
    y = (np.arange(100) % 2).astype(float)
    predicted, observed, counts = M.calibration_curve_bins(y, p, n_bins=5)
    assert counts.sum() == 100 and len(predicted) == 5
    assert np.all(np.diff(predicted) > 0)
    assert np.allclose(observed, 0.5, atol=0.1)


def _replicate_rows(groups: np.ndarray, counts_row: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Row indices of one bootstrap replicate, each row repeated as often as its patient was drawn."""
    return np.repeat(np.arange(len(groups)), counts_row[codes].astype(int))


def test_bootstrap_calibration_equals_fits_on_repeated_rows(scored):
    from pipeline.model import fit_logistic, logit

    y, p = scored
    p = np.clip(p, 0.02, 0.98)
    groups = np.repeat(np.arange(len(y) // 2), 2)  # two rows per patient
    codes, counts = M.patient_bootstrap_counts(groups, 12, seed=5)
    slopes, intercepts = M.bootstrap_calibration(y, p, codes, counts)
    for b in (0, 7):
        rows = _replicate_rows(groups, counts[b], codes)
        lp = logit(p[rows])
        assert slopes[b] == pytest.approx(fit_logistic(lp, y[rows], np.zeros(len(rows)))[1], abs=1e-7)
        assert intercepts[b] == pytest.approx(fit_logistic(None, y[rows], lp)[0], abs=1e-7)
    # All weights 1: the point estimates.
    ones = np.ones((1, len(np.unique(groups))))
    slope, intercept = M.calibration_slope_intercept(y, p)
    assert M.bootstrap_calibration(y, p, codes, ones)[0][0] == pytest.approx(slope, abs=1e-8)
    assert M.bootstrap_calibration(y, p, codes, ones)[1][0] == pytest.approx(intercept, abs=1e-8)


def test_bootstrap_calibration_one_class_sets_are_nan():
    y = np.array([1.0, 0.0, 0.0, 1.0])
    p = np.array([0.8, 0.3, 0.2, 0.6])
    counts = np.array([[0.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # first set: only non-events drawn
    codes = np.array([0, 1, 2, 3])
    slopes, intercepts = M.bootstrap_calibration(y, p, codes, counts)
    assert math.isnan(slopes[0]) and math.isnan(intercepts[0])


def test_bootstrap_net_benefit_equals_repeated_rows(scored):
    y, p = scored
    groups = np.repeat(np.arange(len(y) // 4), 4)
    codes, counts = M.patient_bootstrap_counts(groups, 5, seed=2)
    nb = M.bootstrap_net_benefit(y, p, codes, counts)
    assert nb.shape == (5, len(M.NET_BENEFIT_THRESHOLDS))
    for b in range(5):
        rows = _replicate_rows(groups, counts[b], codes)
        np.testing.assert_allclose(nb[b], M.net_benefit(y[rows], p[rows]), atol=1e-12)
    # By hand: 4 rows, pt = 0.25 -> flag p >= 0.25: TP 1, FP 1 -> 1/4 - 1/4 x 1/3 = 1/6
    assert M.bootstrap_net_benefit([1, 0, 1, 0], [0.5, 0.3, 0.1, 0.2], [0, 1, 2, 3], np.ones((1, 4)), [0.25])[0, 0] \
        == pytest.approx(1 / 6)
