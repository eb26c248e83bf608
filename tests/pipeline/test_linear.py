"""The linear component: exact additive contributions, JSON round trip, and the blend choice."""

from __future__ import annotations

import json

import numpy as np

from pipeline.config import parse_config
from pipeline.model import FeatureSpec
from pipeline.model.linear import LinearModel, fit_linear, signed_log
from pipeline.training.blend import choose_blend, linear_columns
from pipeline.training.inner import InnerFolds
from pipeline.training.splits import grouped_splits
from tests.pipeline.test_train import make_landmarks


def test_logit_by_hand_and_contributions_sum_to_it():
    # One column, coef 2 on the standardised signed log; x = e - 1 gives signed_log = 1 = mean + scale.
    model = LinearModel([1], median=[0.5], mean=[0.0], scale=[1.0], coef=[2.0], indicator_coef=[0.7],
                        intercept=-1.0, background=[0.3])
    X = np.array([[99.0, np.e - 1], [99.0, np.nan]])
    assert np.allclose(model.logit(X), [-1.0 + 2.0 * 1.0, -1.0 + 2.0 * 0.5 + 0.7])  # missing -> median + indicator
    contributions = model.contributions(X, n_features=2)
    assert np.allclose(contributions[:, 0], 0.0)  # column 0 is not in the model
    assert np.allclose(contributions[:, -1], -1.0 + 0.3)  # base value: intercept + training mean term
    assert np.allclose(contributions.sum(axis=1), model.logit(X))
    assert np.allclose(signed_log(np.array([-3.0, 0.0])), [-np.log(4.0), 0.0])


def test_fit_round_trips_through_json_and_learns_the_direction():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=400), rng.lognormal(size=400)])
    X[rng.uniform(size=400) < 0.1, 1] = np.nan
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-2 * X[:, 0]))).astype(int)
    model = fit_linear(X, y, [0, 1], C=1.0, seed=0)
    assert model.coef[0] > 0.5  # risk rises with column 0
    again = LinearModel.from_json(json.loads(json.dumps(model.to_json())))
    assert np.array_equal(again.logit(X), model.logit(X))
    # Training-mean contributions: the mean contribution of each column over the training rows is 0.
    assert np.allclose(model.contributions(X, 2)[:, :2].mean(axis=0), 0.0, atol=1e-9)


def _folds(n_patients: int, seed: int):
    df = make_landmarks(n_patients, seed=seed)
    rows = df[df["label__crs_severe"].notna()].reset_index(drop=True)
    specs = [FeatureSpec("il6__latest", "float64"), FeatureSpec("il6__fold_change", "float64"),
             FeatureSpec("il6__first", "float64"), FeatureSpec("il6__count", "float64")]
    from pipeline.model import apply_feature_specs

    rows["il6__first"] = rows["il6__latest"] / 2
    rows["il6__count"] = 1.0
    X = apply_feature_specs(rows, specs)
    y = rows["label__crs_severe"].to_numpy(int)
    splits = grouped_splits(y, rows["patient_id"].astype(str).to_numpy(), 3, seed)
    return InnerFolds(X, y, splits), specs


def test_blend_is_chosen_on_held_out_loss_and_can_be_switched_off():
    folds, specs = _folds(150, 3)
    # The simple-summaries numeric columns: latest and first (count is not one of the four summaries).
    assert linear_columns(specs) == [0, 2]
    useless_trees = np.zeros(len(folds.y))  # a "booster" that knows nothing: the blend must take the linear side
    config = parse_config({"train": {"linear_weights": [0.5, 1.0]}})
    blend = choose_blend(folds, useless_trees, specs, config.train, seed=1)
    assert blend.weight > 0 and len(blend.models) == 3
    off = choose_blend(folds, useless_trees, specs, parse_config({"train": {"linear_weights": []}}).train, seed=1)
    assert off.weight == 0.0 and off.models == [] and np.array_equal(off.held_out_margin, useless_trees)


def test_blended_unit_contributions_sum_to_its_log_odds():
    import xgboost as xgb

    from pipeline.model import Calibrator, LandmarkModel

    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(size=300), rng.lognormal(size=300), rng.normal(size=300)])
    X[rng.uniform(size=300) < 0.2, 1] = np.nan
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-X[:, 0] - X[:, 2]))).astype(int)
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, y), 20)
    unit = LandmarkModel([booster], Calibrator("identity"), 0.5, linear=[fit_linear(X, y, [0, 1], 1.0, 0)],
                         linear_weight=0.5)
    margin = unit.margin(X)
    tree_only = booster.predict(xgb.DMatrix(X), output_margin=True)
    assert not np.allclose(margin, tree_only)  # the linear half is really there
    assert np.allclose(unit.contributions(X).sum(axis=1), margin, atol=1e-5)
