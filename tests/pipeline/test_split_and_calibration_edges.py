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
