"""The simple-summaries boosters blended into the model: chosen on held-out loss, blended exactly, stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import parse_config
from pipeline.model import Calibrator, LandmarkModel
from pipeline.model.artifacts import landmark_model_files, sha256_hex
from pipeline.training.blend import choose_simple_blend
from pipeline.training.search import feature_sets
from tests.pipeline.test_linear import _folds

# The simple summaries of _folds' specs are il6__latest and il6__first (columns 0 and 2).
SIMPLE_COLUMNS = {0, 2}


def _split_columns(booster) -> set[int]:
    frame = booster.trees_to_dataframe()
    features = frame.loc[frame["Feature"] != "Leaf", "Feature"]
    return {int(name[1:]) for name in features}  # XGBoost names unnamed columns f0, f1, ...


def test_simple_blend_is_taken_when_the_trees_know_nothing_and_uses_only_simple_columns():
    folds, specs = _folds(150, 3)
    useless_trees = np.zeros(len(folds.y))
    cfg = parse_config({"train": {"simple_weights": [0.5, 1.0]}}).train
    blend = choose_simple_blend(folds, useless_trees, "all", specs, cfg, seed=1)
    assert blend.weight > 0 and len(blend.boosters) == 3
    # Each patient's held-out simple log-odds come from the booster that never saw that patient.
    held_out = [d for _, d in folds.matrices("simple", feature_sets(specs)["simple"])]
    for booster, dval, (_, rows) in zip(blend.boosters, held_out, folds.splits, strict=True):
        simple = booster.predict(dval, output_margin=True)
        assert np.allclose(blend.held_out_margin[rows], blend.weight * simple, atol=1e-6)
    assert set().union(*(_split_columns(b) for b in blend.boosters)) <= SIMPLE_COLUMNS


def test_simple_blend_is_skipped_when_off_or_already_simple():
    folds, specs = _folds(150, 3)
    trees = np.linspace(-1, 1, len(folds.y))
    off = choose_simple_blend(folds, trees, "all", specs, parse_config({"train": {"simple_weights": []}}).train, 1)
    already = choose_simple_blend(folds, trees, "simple", specs, parse_config({}).train, 1)
    for blend in (off, already):
        assert blend.weight == 0.0 and blend.boosters == [] and np.array_equal(blend.held_out_margin, trees)


def _unit(simple_weight: float = 0.25) -> tuple[LandmarkModel, np.ndarray]:
    import xgboost as xgb

    rng = np.random.default_rng(5)
    X = np.column_stack([rng.normal(size=300), rng.lognormal(size=300), rng.normal(size=300)])
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-X[:, 0] - X[:, 2]))).astype(int)
    params = {"max_depth": 2, "objective": "binary:logistic", "nthread": 1}
    trees = [xgb.train({**params, "seed": k}, xgb.DMatrix(X, y), 15) for k in range(2)]
    blanked = X.copy()
    blanked[:, 1:] = np.nan  # a "simple" booster: only column 0 present
    simple = [xgb.train({**params, "seed": k}, xgb.DMatrix(blanked, y), 10) for k in range(2)]
    return LandmarkModel(trees, Calibrator("identity"), 0.5, simple=simple, simple_weight=simple_weight), X


def test_blended_margin_by_hand_and_contributions_sum_to_it():
    import xgboost as xgb

    unit, X = _unit(0.25)
    d = xgb.DMatrix(X)
    trees = np.mean([b.predict(d, output_margin=True) for b in unit.boosters], axis=0)
    simple = np.mean([b.predict(d, output_margin=True) for b in unit.simple], axis=0)
    assert np.allclose(unit.margin(X), 0.75 * trees + 0.25 * simple, atol=1e-6)
    assert not np.allclose(unit.margin(X), trees)  # the simple quarter is really there
    assert np.allclose(unit.contributions(X).sum(axis=1), unit.margin(X), atol=1e-5)


def test_simple_boosters_are_stored_digested_and_loaded_back(tmp_path: Path):
    from pipeline.model.artifacts import _landmark_model

    unit, X = _unit(0.5)
    files, entry = landmark_model_files(unit)
    assert entry["simple"] == ["simple_0.json", "simple_1.json"] and entry["simple_weight"] == 0.5
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    digests = {name: sha256_hex(data) for name, data in files.items()}
    loaded = _landmark_model(tmp_path, "all", entry, digests)
    assert loaded.simple_weight == 0.5 and len(loaded.simple) == 2
    assert np.array_equal(loaded.margin(X), unit.margin(X))
