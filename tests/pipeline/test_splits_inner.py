"""Grouped CV splits, the inner hold-out, landmark groups, and what one inner fit returns, on data small
enough to check by hand.

- splits: sklearn's StratifiedGroupKFold called directly is the oracle (the project computes the same
  assignment vectorised, checked on random cohorts); n_splits is cut to the number of
  patients with an event and without one; a seed gives one split, a repeat another;
- inner fits: two-valued feature, depth-1 trees, eta/lambda/base_score fixed, so every leaf is one Newton
  step ``margin += eta / p`` (p = sigmoid(margin)) and the held-out log-odds and log-loss follow by hand.
  Held-out blocks whose labels are the opposite of the training rule make the held-out loss rise from the
  first round, which pins what early stopping does.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.config import parse_config
from pipeline.errors import UserError
from pipeline.training.inner import InnerFolds, fit_inner
from pipeline.training.splits import grouped_splits, inner_holdout, landmark_groups, outer_splits

# ---------------------------------------------------------------------------------------------- splits


def _cohort(n_events: int, n_non_events: int, rows_per_patient: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Patients E00.. (all rows y=1) and N00.. (all rows y=0), each with several rows, interleaved."""
    names = [f"E{i:02d}" for i in range(n_events)] + [f"N{i:02d}" for i in range(n_non_events)]
    labels = [1] * n_events + [0] * n_non_events
    order = np.random.default_rng(0).permutation(len(names))  # events not all first
    groups = np.repeat(np.array(names)[order], rows_per_patient)
    y = np.repeat(np.array(labels)[order], rows_per_patient)
    return y, groups


def _oracle(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def _same_splits(got: list[tuple], want: list[tuple]) -> bool:
    return len(got) == len(want) and all(
        np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(got, want, strict=True)
    )


def _check_partition(splits: list[tuple], y: np.ndarray, groups: np.ndarray) -> None:
    """Grouped (no patient on both sides), every row tested exactly once, an event and a non-event in each."""
    tested = np.concatenate([te for _, te in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(y)))
    for tr, te in splits:
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
        assert not set(groups[tr]) & set(groups[te]), "a patient on both sides of a split"
        assert set(y[te]) == {0, 1} and set(y[tr]) == {0, 1}


def test_grouped_splits_are_sklearns_stratified_group_kfold_with_the_seed():
    y, groups = _cohort(8, 20)
    splits = grouped_splits(y, groups, 5, seed=11)
    assert len(splits) == 5
    _check_partition(splits, y, groups)
    assert _same_splits(splits, _oracle(y, groups, 5, 11))
    assert _same_splits(grouped_splits(y, groups, 5, seed=11), splits), "same seed, same split"
    other = grouped_splits(y, groups, 5, seed=12)
    assert {frozenset(groups[te]) for _, te in other} != {frozenset(groups[te]) for _, te in splits}


@pytest.mark.parametrize(
    ("n_events", "n_non_events", "n_splits", "k"),
    [
        (3, 12, 5, 3),  # cut to the 3 patients with an event
        (12, 3, 5, 3),  # cut to the 3 patients without one
        (2, 10, 5, 2),  # 2 folds is still a split
        (6, 6, 2, 2),
        (9, 9, 4, 4),  # enough of both: n_splits as asked
    ],
)
def test_n_splits_is_cut_to_the_patients_with_and_without_an_event(n_events, n_non_events, n_splits, k):
    y, groups = _cohort(n_events, n_non_events, rows_per_patient=2)
    splits = grouped_splits(y, groups, n_splits, seed=3)
    assert len(splits) == k
    _check_partition(splits, y, groups)
    assert _same_splits(splits, _oracle(y, groups, k, 3))


@pytest.mark.parametrize(("n_events", "n_non_events", "n_splits"), [(1, 10, 5), (10, 1, 5), (0, 10, 5), (10, 10, 1)])
def test_no_split_when_fewer_than_two_folds_are_possible(n_events, n_non_events, n_splits):
    y, groups = _cohort(n_events, n_non_events)
    assert grouped_splits(y, groups, n_splits, seed=0) == []


def test_event_counts_are_patients_not_rows():
    # One event patient with many rows: 6 event rows, but only one patient, so no split.
    y, groups = _cohort(1, 8, rows_per_patient=6)
    assert grouped_splits(y, groups, 3, seed=0) == []


@settings(max_examples=150, deadline=None)
@given(
    n_patients=st.integers(4, 120),
    rows_per_patient=st.integers(1, 4),
    event_share=st.floats(0.05, 0.6),
    rowwise_labels=st.booleans(),
    n_splits=st.integers(2, 6),
    seed=st.integers(0, 2**31 - 1),
    data_seed=st.integers(0, 2**16),
)
def test_the_fast_folds_equal_sklearns_on_any_cohort(n_patients, rows_per_patient, event_share, rowwise_labels,
                                                     n_splits, seed, data_seed):
    """The vectorised assignment reproduces scikit-learn's exactly: same folds, same row order, same dtype,
    also with patients of different row counts, ids that are not sorted, and labels that vary within a patient."""
    rng = np.random.default_rng(data_seed)
    rows = rng.integers(1, rows_per_patient + 1, size=n_patients)
    groups = np.repeat(np.array([f"P{i * 7 % 1000:03d}" for i in rng.permutation(n_patients)]), rows)
    y = (rng.random(len(groups)) < event_share) if rowwise_labels else np.repeat(rng.random(n_patients) < event_share, rows)
    y = y.astype(int)
    got = grouped_splits(y, groups, n_splits, seed)
    k = min(n_splits, len(np.unique(groups[y == 1])), len(np.unique(groups[y == 0])))
    if k < 2:
        assert got == []
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        want = _oracle(y, groups, k, seed)
    assert _same_splits(got, want)
    assert all(a.dtype == c.dtype and b.dtype == d.dtype for (a, b), (c, d) in zip(got, want, strict=True))


def _train_cfg(**train):
    return parse_config({"train": train}).train


def test_inner_holdout_is_the_first_fold_of_round_one_over_the_fraction():
    y, groups = _cohort(8, 16)
    for fraction, parts in [(0.5, 2), (0.25, 4), (0.2, 5), (0.34, 3)]:
        cfg = _train_cfg(calibration_fraction=fraction)
        split = inner_holdout(y, groups, cfg, seed=9)
        assert split is not None
        fit_rows, calibration_rows = split
        want_fit, want_cal = _oracle(y, groups, parts, 9)[0]
        assert np.array_equal(fit_rows, want_fit) and np.array_equal(calibration_rows, want_cal), fraction
        assert not set(groups[fit_rows]) & set(groups[calibration_rows])
    # Half the patients held out for calibration, grouped and stratified: 4 of 8 events, 8 of 16 non-events.
    fit_rows, calibration_rows = inner_holdout(y, groups, _train_cfg(calibration_fraction=0.5), seed=9)
    held = set(groups[calibration_rows])
    assert sum(g.startswith("E") for g in held) == 4 and sum(g.startswith("N") for g in held) == 8


def test_inner_holdout_is_cut_to_the_events_and_none_without_two():
    y, groups = _cohort(3, 20)
    cfg = _train_cfg(calibration_fraction=0.1)  # 10 parts asked, 3 event patients
    fit_rows, calibration_rows = inner_holdout(y, groups, cfg, seed=2)
    want_fit, want_cal = _oracle(y, groups, 3, 2)[0]
    assert np.array_equal(fit_rows, want_fit) and np.array_equal(calibration_rows, want_cal)
    y1, groups1 = _cohort(1, 20)
    assert inner_holdout(y1, groups1, _train_cfg(), seed=2) is None


def test_outer_splits_use_seed_plus_1000_per_repeat():
    # The seed schedule is part of reproducibility: the same params give the same folds (and metrics).
    y, groups = _cohort(10, 15)
    cfg = _train_cfg(n_splits=4, n_repeats=3, seed=21)
    out = outer_splits(y, groups, cfg)
    assert [(r, f) for r, f, _, _ in out] == [(r, f) for r in range(3) for f in range(4)]
    for repeat in range(3):
        got = [(tr, te) for r, _, tr, te in out if r == repeat]
        _check_partition(got, y, groups)
        assert _same_splits(got, _oracle(y, groups, 4, 21 + 1000 * repeat)), repeat
    assert _same_splits([(tr, te) for _, _, tr, te in outer_splits(y, groups, cfg)], [(tr, te) for *_, tr, te in out])


def test_auto_repeats_twice_only_below_the_patient_threshold():
    # 25 patients (10 with the event): below 30 -> two repeats of 4 folds; at 25 or fewer -> one.
    y, groups = _cohort(10, 15)
    assert {r for r, *_ in outer_splits(y, groups, _train_cfg(n_splits=4, repeat_twice_below_patients=30))} == {0, 1}
    assert {r for r, *_ in outer_splits(y, groups, _train_cfg(n_splits=4, repeat_twice_below_patients=25))} == {0}
    assert {r for r, *_ in outer_splits(y, groups, _train_cfg(n_splits=4, n_repeats=3,
                                                               repeat_twice_below_patients=25))} == {0, 1, 2}


def test_outer_splits_refuse_too_few_events():
    y, groups = _cohort(1, 30)
    with pytest.raises(UserError, match="^too few events or non-events for cross-validation$"):
        outer_splits(y, groups, _train_cfg())


def test_landmark_groups_pooled_and_per_landmark():
    landmarks = np.array([24.0, 0.0, 24.0, 72.0, 0.0, 24.0])
    [(hour, mask)] = landmark_groups(landmarks, per_landmark=False)
    assert hour is None
    assert mask.dtype == bool and mask.tolist() == [True] * 6
    per = landmark_groups(landmarks, per_landmark=True)
    assert [h for h, _ in per] == [0.0, 24.0, 72.0]
    assert all(type(h) is float for h, _ in per)
    assert [m.tolist() for _, m in per] == [
        [False, True, False, False, True, False],
        [True, False, True, False, False, True],
        [False, False, False, True, False, False],
    ]
    assert landmark_groups(np.array([6.0]), per_landmark=True)[0][0] == 6.0


# ------------------------------------------------------------------------------------------ inner fits

ETA = 0.5
PARAMS = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist", "max_depth": 1,
          "eta": ETA, "lambda": 0.0, "min_child_weight": 0.0, "base_score": 0.5, "seed": 0, "nthread": 1,
          "verbosity": 0}


def _block(rule: str) -> tuple[np.ndarray, np.ndarray]:
    """8 rows: feature a = 0,0,0,0,1,1,1,1; y = a ("same") or 1 - a ("opposite")."""
    a = np.repeat([0.0, 1.0], 4)
    return a, (a if rule == "same" else 1 - a).astype(int)


def _folds(rules: list[str], splits: list[tuple[list[int], list[int]]]) -> InnerFolds:
    """Blocks of 8 rows stacked (block i = rows 8i..8i+7); column b is constant (no split possible on it)."""
    a, y = zip(*(_block(r) for r in rules), strict=True)
    X = pd.DataFrame({"a": np.concatenate(a), "b": 0.0})
    rows = [(np.concatenate([np.arange(8 * i, 8 * i + 8) for i in tr]).astype(int),
             np.concatenate([np.arange(8 * i, 8 * i + 8) for i in te]).astype(int)) for tr, te in splits]
    return InnerFolds(X, np.concatenate(y), rows)


def _margin_after(rounds: int, eta: float = ETA) -> float:
    """Log-odds of a pure a=1, y=1 leaf after ``rounds`` Newton steps from 0: G/H = (p - 1) / (p (1 - p))."""
    m = 0.0
    for _ in range(rounds):
        m += eta / (1 / (1 + np.exp(-m)))
    return m


def _softplus(m: float) -> float:
    return float(np.log1p(np.exp(m)))


def _sign(folds: InnerFolds) -> np.ndarray:
    return np.where(folds.X["a"].to_numpy() == 1, 1.0, -1.0)


ALL = ("all", ["a", "b"])


def test_without_early_stopping_exactly_rounds_even_when_the_held_out_loss_rises(capfd):
    # Fold 1 learns y = a and is tested on y = 1 - a; fold 2 the other way round: held-out loss rises.
    folds = _folds(["same", "opposite"], [([0], [1]), ([1], [0])])
    fit = fit_inner(folds, PARAMS, rounds=4, early_stopping=None, feature_set=ALL)
    m4 = _margin_after(4)
    assert fit.rounds == 4
    assert len(fit.boosters) == 2 and [b.num_boosted_rounds() for b in fit.boosters] == [4, 4]
    # Fold 1 learned +a, fold 2 learned -a (y = 1 - a); each predicts the other block.
    expected = np.concatenate([-_sign(folds)[:8], _sign(folds)[8:]]) * m4
    assert fit.held_out_margin.dtype == np.float64
    assert np.allclose(fit.held_out_margin, expected, rtol=1e-5, atol=1e-5)
    assert fit.loss == pytest.approx(_softplus(m4), rel=1e-5)  # every held-out row is wrong by m4
    assert fit.params is PARAMS
    assert capfd.readouterr().out == "", "no per-round evaluation log on stdout"


def test_early_stopping_cuts_every_booster_at_the_best_mean_round(capfd):
    # Same folds: held-out loss is lowest after round 1, patience 2 stops at round 3, boosters cut at 1.
    folds = _folds(["same", "opposite"], [([0], [1]), ([1], [0])])
    fit = fit_inner(folds, PARAMS, rounds=20, early_stopping=2, feature_set=ALL)
    assert fit.rounds == 1
    assert [b.num_boosted_rounds() for b in fit.boosters] == [1, 1]
    expected = np.concatenate([-_sign(folds)[:8], _sign(folds)[8:]]) * ETA / 0.5  # one step: eta / p(0)
    assert np.allclose(fit.held_out_margin, expected, rtol=1e-5, atol=1e-5)
    assert fit.loss == pytest.approx(np.log1p(np.e), rel=1e-5)  # softplus(1)
    assert capfd.readouterr().out == ""


def test_early_stopping_stops_at_the_first_fold_that_stops():
    # eta 0.1; fold 1 is tested on the opposite rule (loss rises from round 1, patience 1: 2 rounds), folds
    # 2 and 3 on the same rule (loss falls for all 12 rounds). The mean over 3 folds,
    # (softplus(m) + 2 softplus(-m)) / 3, falls until m = log 2 (round 4), but only the 2 rounds every fold
    # has count: best = 2. Trained to the end instead, it would be round 4.
    params = {**PARAMS, "eta": 0.1}
    folds = _folds(["same", "same", "opposite"], [([0, 1], [2]), ([0], [1]), ([1], [0])])
    fit = fit_inner(folds, params, rounds=12, early_stopping=1, feature_set=ALL)
    m2 = _margin_after(2, eta=0.1)
    assert fit.rounds == 2
    assert [b.num_boosted_rounds() for b in fit.boosters] == [2, 2, 2]
    expected = _sign(folds) * m2  # every fold learned y = a; block 2's labels just disagree
    assert np.allclose(fit.held_out_margin, expected, rtol=1e-5, atol=1e-5)
    assert fit.loss == pytest.approx((_softplus(m2) + 2 * _softplus(-m2)) / 3, rel=1e-5)
    full = [(_softplus(_margin_after(t, 0.1)) + 2 * _softplus(-_margin_after(t, 0.1))) / 3 for t in range(1, 13)]
    assert int(np.argmin(full)) + 1 == 4  # the hand model: without early stopping the answer would differ


def test_blanked_features_cannot_be_split_on_and_rows_never_held_out_stay_missing():
    # Blocks 0, 1 follow y = a; block 2 is in no fold at all.
    folds = _folds(["same", "same", "same"], [([0], [1]), ([1], [0])])
    before = folds.X.copy()
    only_b = fit_inner(folds, PARAMS, rounds=3, early_stopping=None, feature_set=("only_b", ["b"]))
    # a blanked, b constant: no split, every leaf sums (0.5 - y) over a balanced block = 0.
    assert np.allclose(only_b.held_out_margin[:16], 0.0, atol=1e-6)
    assert only_b.loss == pytest.approx(np.log(2), rel=1e-5)
    assert np.isnan(only_b.held_out_margin[16:]).all()
    pd.testing.assert_frame_equal(folds.X, before)  # blanking works on a copy
    only_a = fit_inner(folds, PARAMS, rounds=3, early_stopping=None, feature_set=("only_a", ["a"]))
    both = fit_inner(folds, PARAMS, rounds=3, early_stopping=None, feature_set=("both", ["b", "a"]))
    for fit in (only_a, both):
        assert np.allclose(fit.held_out_margin[:16], _sign(folds)[:16] * _margin_after(3), rtol=1e-5, atol=1e-5)
        assert np.isnan(fit.held_out_margin[16:]).all()
    dtrain, dval = folds.matrices("only_b", ["b"])[0]
    assert (dtrain.num_row(), dtrain.num_col(), dval.num_row()) == (8, 2, 8)  # one layout for every set
    assert folds.matrices("only_b", ["b"]) is folds.matrices("only_b", ["b"])  # built once
