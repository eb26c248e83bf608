"""The simple-summaries boosters blended into the model: chosen on held-out loss, blended exactly, stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import parse_config
from pipeline.model import Calibrator, FeatureSpec, LandmarkModel
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


def test_held_out_margin_is_exactly_the_blend_formula():
    # Non-zero tree log-odds and a weight other than 0.5, so swapped weights would not give the same numbers.
    folds, specs = _folds(150, 3)
    trees = np.full(len(folds.y), 0.3)
    cfg = parse_config({"train": {"simple_weights": [0.25]}}).train
    blend = choose_simple_blend(folds, trees, "all", specs, cfg, seed=1)
    assert blend.weight == 0.25
    simple = np.full(len(folds.y), np.nan)
    held_out = [d for _, d in folds.matrices("simple", feature_sets(specs)["simple"])]
    for booster, dval, (_, rows) in zip(blend.boosters, held_out, folds.splits, strict=True):
        simple[rows] = booster.predict(dval, output_margin=True)
    assert np.allclose(blend.held_out_margin, 0.75 * trees + 0.25 * simple, atol=1e-6)


def test_monotone_constraints_bind_the_simple_boosters():
    # Constrain il6__latest (a simple summary) against its effect: no simple booster may then raise risk with it.
    folds, specs = _folds(150, 3)
    cfg = parse_config({"train": {"simple_weights": [1.0], "monotone_constraints": {"il6__latest": -1}}}).train
    blend = choose_simple_blend(folds, np.zeros(len(folds.y)), "all", specs, cfg, seed=1)
    assert blend.boosters
    probe = np.tile(folds.values[:1], (25, 1))
    probe[:, 0] = np.linspace(np.nanmin(folds.values[:, 0]), np.nanmax(folds.values[:, 0]), 25)
    import xgboost as xgb

    for booster in blend.boosters:
        assert np.all(np.diff(booster.predict(xgb.DMatrix(probe), output_margin=True)) <= 1e-7)


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


def test_tampered_or_inconsistent_simple_entries_are_refused(tmp_path: Path):
    import pytest

    from pipeline.errors import UserError
    from pipeline.model.artifacts import _landmark_model

    unit, _ = _unit(0.5)
    files, entry = landmark_model_files(unit)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    digests = {name: sha256_hex(data) for name, data in files.items()}
    (tmp_path / "simple_1.json").write_bytes(files["simple_1.json"].replace(b'"', b"'", 1))
    with pytest.raises(UserError, match="simple_1.json: sha256 does not match"):
        _landmark_model(tmp_path, "all", entry, digests)
    (tmp_path / "simple_1.json").write_bytes(files["simple_1.json"])
    with pytest.raises(UserError, match="not a plain model file name"):
        _landmark_model(tmp_path, "all", {**entry, "simple": ["../simple_0.json"]}, digests)
    for bad in ({"simple_weight": 2.0}, {"simple_weight": float("nan")}, {"simple_weight": "0.5"},
                {"simple": [], "simple_weight": 0.5}, {"simple_weight": 0.0}, {"linear_weight": 0.3}):
        with pytest.raises(UserError, match="weight in \\[0, 1\\] that matches"):
            _landmark_model(tmp_path, "all", {**entry, **bad}, digests)


def test_calibrator_is_fitted_on_the_blended_held_out_scores(monkeypatch):
    """Wiring of the procedure: the linear blend starts from the simple blend's held-out log-odds, and the
    calibrator sees exactly the final blend's (what the deployed margin reproduces)."""
    import pipeline.training.crossfit as crossfit
    from pipeline.model import apply_feature_specs, expit
    from pipeline.training.crossfit import fit_procedure
    from tests.pipeline.test_train import make_landmarks

    rows = make_landmarks(200, seed=8)
    rows = rows[rows["label__crs_severe"].notna()].reset_index(drop=True)
    rows = rows.assign(il6__count=1.0, il6__first=rows["il6__fold_change"])  # the simple set carries the signal
    specs = [FeatureSpec(name, "float64") for name in ("il6__latest", "il6__fold_change", "il6__first", "il6__count")]
    X, y = apply_feature_specs(rows, specs), rows["label__crs_severe"].to_numpy(int)
    groups, landmarks = rows["patient_id"].astype(str).to_numpy(), rows["landmark_hours"].to_numpy(float)
    seen: dict = {}

    def spy(name, real):
        def wrapper(*args, **kwargs):
            seen[name] = (args, real(*args, **kwargs))
            return seen[name][1]
        return wrapper

    monkeypatch.setattr(crossfit, "choose_simple_blend", spy("simple", crossfit.choose_simple_blend))
    monkeypatch.setattr(crossfit, "choose_blend", spy("linear", crossfit.choose_blend))
    monkeypatch.setattr(crossfit, "fit_calibrator", spy("calibrator", crossfit.fit_calibrator))
    cfg = parse_config({"train": {"tune": False, "n_estimators": 1, "learning_rate": 0.01, "simple_weights": [0.25],
                                  "linear_weights": [0.5]}}).train
    model = fit_procedure(X, y, groups, landmarks, cfg, specs, seed=1).model
    simple, linear = seen["simple"][1], seen["linear"][1]
    assert simple.weight == 0.25 and model.simple_weight == 0.25 and len(model.simple) == 3
    assert np.array_equal(seen["linear"][0][1], simple.held_out_margin)
    assert np.array_equal(seen["calibrator"][0][0], expit(linear.held_out_margin))
