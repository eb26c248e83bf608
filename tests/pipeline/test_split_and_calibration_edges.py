"""Invariants of the splits and the calibrator that no summary metric would notice when broken.

- every split (outer folds, the baselines' inner hold-out, the cross-fitted inner folds) keeps a
  patient's rows on one side;
- each CV repeat reshuffles the patients (a repeat with the same seed adds nothing);
- isotonic calibration never tells a patient 0 % or 100 % (add-one smoothing, values by hand).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import parse_config
from pipeline.model import FeatureSpec, apply_feature_specs
from pipeline.model.calibration import fit_calibrator
from pipeline.training import crossfit
from pipeline.training.splits import inner_holdout, outer_splits
from tests.pipeline.test_train import make_landmarks


def _patients(n_patients: int = 60, rows_per_patient: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], rows_per_patient)
    y = np.repeat((rng.random(n_patients) < 0.3).astype(int), rows_per_patient)
    return y, groups


def _assert_grouped(tr: np.ndarray, te: np.ndarray, groups: np.ndarray) -> None:
    assert len(set(groups[tr]) & set(groups[te])) == 0, "a patient is on both sides of a split"


def test_outer_folds_are_grouped_and_each_repeat_reshuffles():
    y, groups = _patients()
    cfg = parse_config({"train": {"n_splits": 5, "n_repeats": 3}}).train
    splits = outer_splits(y, groups, cfg)
    assert len(splits) == 15
    assignments = []
    for repeat in range(3):
        fold_of = {}
        for r, fold, tr, te in splits:
            if r != repeat:
                continue
            _assert_grouped(tr, te, groups)
            fold_of.update({g: fold for g in groups[te]})
        assert len(fold_of) == 60, "every patient is tested once per repeat"
        # Partition of patients into folds, independent of the folds' numbering.
        assignments.append(frozenset(frozenset(g for g in fold_of if fold_of[g] == f) for f in range(5)))
    assert len(set(assignments)) == 3, "the repeats must shuffle the patients differently"


def test_inner_holdout_keeps_patients_together():
    y, groups = _patients(seed=1)
    cfg = parse_config({}).train
    split = inner_holdout(y, groups, cfg, seed=3)
    assert split is not None
    fit_rows, calibration_rows = split
    _assert_grouped(fit_rows, calibration_rows, groups)
    share = len(set(groups[calibration_rows])) / len(set(groups))
    assert share == pytest.approx(cfg.calibration_fraction, abs=0.05)


def test_cross_fitted_inner_folds_keep_patients_together(monkeypatch):
    rows = make_landmarks(90, seed=4)
    rows = rows[rows["label__crs_severe"].notna()].reset_index(drop=True)
    specs = [FeatureSpec("il6__fold_change", "float64"), FeatureSpec("il6__latest", "float64")]
    X = apply_feature_specs(rows, specs)
    y = rows["label__crs_severe"].to_numpy(int)
    patients = rows["patient_id"].astype(str).to_numpy()
    assert len(patients) > len(set(patients)), "the fixture has several landmark rows per patient"
    seen = []
    real = crossfit.grouped_splits

    def checked(y_, groups_, n_splits, seed):
        splits = real(y_, groups_, n_splits, seed)
        for tr, te in splits:
            _assert_grouped(tr, te, patients)  # the true patients, whatever the caller passed as groups
        seen.append(len(splits))
        return splits

    monkeypatch.setattr(crossfit, "grouped_splits", checked)
    cfg = parse_config({"train": {"tune": False, "n_estimators": 20, "linear_weights": []}}).train
    crossfit.fit_procedure(X, y, patients, rows["landmark_hours"].to_numpy(float), cfg, specs, seed=5)
    assert seen == [cfg.inner_folds]


def test_isotonic_blocks_are_smoothed_by_hand():
    # Scores sort the patients into two pure blocks: 4 non-events, then 4 events.
    raw = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    calibrator = fit_calibrator(raw, y, "isotonic")
    p = calibrator.predict(raw)
    # (events + 1) / (n + 2): 1/6 for the all-negative block, 5/6 for the all-positive one.
    assert np.allclose(p[:4], 1 / 6) and np.allclose(p[4:], 5 / 6)
    assert 0 < p.min() and p.max() < 1


def test_baseline_threshold_hold_out_keeps_patients_together():
    # fit_baseline_fold fits on the training fold, then on its fitting part to score its held-out
    # calibration patients: no patient may be in both parts.
    from pipeline.training.baselines import fit_baseline_fold

    y, groups = _patients(seed=2)
    X = pd.DataFrame({"x": np.arange(len(y), dtype=float)}, index=groups)
    seen: list[pd.Index] = []

    def fitter(X_fit: pd.DataFrame, y_fit: np.ndarray):
        seen.append(X_fit.index)
        return lambda X_score: (seen.append(X_score.index), np.full(len(X_score), 0.5))[1]

    fit_baseline_fold(fitter, X, y, groups, X.iloc[:4], parse_config({}).train, seed=5)
    # Calls: whole fold, its test rows; then the fitting part and the calibration part.
    fitting_patients, calibration_patients = set(seen[2]), set(seen[3])
    assert calibration_patients and fitting_patients
    assert not fitting_patients & calibration_patients, "a patient is in both parts of the hold-out"


def test_thresholds_per_landmark_by_hand():
    """Each landmark with at least `landmark_min_events` events gets its own threshold: the highest score
    that still flags 90 % of that landmark's events; a landmark with fewer falls back to the pooled one."""
    cfg = parse_config({"train": {"sensitivity_target": 0.9, "landmark_min_events": 10}}).train
    # Landmark 0: 10 events scored 0.10..0.19 -> flag 9 of 10 -> threshold 0.11. Landmark 24: 10 events
    # scored 0.50..0.59 -> 0.51. Landmark 48: 3 events only (below the minimum) -> no threshold of its own.
    events = {0.0: 0.10 + 0.01 * np.arange(10), 24.0: 0.50 + 0.01 * np.arange(10), 48.0: np.array([0.9, 0.8, 0.7])}
    p = np.concatenate([*events.values(), np.full(30, 0.05)])
    y = np.concatenate([np.ones(23), np.zeros(30)]).astype(int)
    hours = np.concatenate([np.full(10, 0.0), np.full(10, 24.0), np.full(3, 48.0), np.repeat([0.0, 24.0, 48.0], 10)])
    pooled, per_landmark = crossfit._thresholds(y, p, hours, cfg)
    assert per_landmark == pytest.approx({0.0: 0.11, 24.0: 0.51})
    # Pooled: 23 events, ceil(0.9 * 23) = 21 must be flagged -> the 21st highest event score, 0.12.
    assert pooled == pytest.approx(0.12)
    for h, t in per_landmark.items():  # the sensitivity target holds at each landmark on these scores
        rows = (hours == h) & (y == 1)
        assert (p[rows] >= t).mean() >= 0.9
