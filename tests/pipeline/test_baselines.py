"""Baselines: availability reasons, the Hay 2017 flag truth table, simple-summaries columns by suffix,
and what one outer fold returns (``fold_baselines``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features import scores
from features.definitions import DERIVED, hay_2017_flag_at_landmark
from features.landmarks import SortedRows
from pipeline.config import TrainConfig
from pipeline.contracts import simple_summary_columns
from pipeline.model import apply_feature_specs, build_feature_specs
from pipeline.model.baselines import BASELINES, SCORE_BASELINES, TEACHEY_COLUMNS
from pipeline.training.baselines import baseline_availability, fold_baselines, unavailable_by_landmark
from pipeline.training.data import FoldData


def test_hay_flag_truth_table():
    nan = np.nan
    #            fever + MCP-1 high, fever only, MCP-1 only, neither high, temp only (low), nothing, at cut-offs
    temp = np.array([39.5, 39.0, 37.0, 37.0, 37.5, nan, 38.9])
    mcp1 = np.array([2000.0, 500.0, 5000.0, 100.0, nan, nan, 1343.5])
    expected = [1.0, 0.0, 0.0, 0.0, 0.0, nan, 1.0]
    np.testing.assert_array_equal(scores.hay_2017_flag(temp, mcp1, 38.9, 1343.5), expected)
    assert "hay_2017__flag" in [d.name for d in DERIVED]


def _rows(patient, hours, value) -> SortedRows:
    return SortedRows(np.array(patient, dtype=np.int64), np.array(hours, dtype=float),
                      np.array(value, dtype=float), np.zeros(len(patient), dtype=np.int8))


def _context(landmark: float, analytes: dict[str, SortedRows], n: int = 4) -> SimpleNamespace:
    """What a Derived feature sees: a cut timeline (rows at or before L only) and the landmark."""
    cut = {code: s.take(s.hours <= landmark) for code, s in analytes.items()}
    return SimpleNamespace(cut=SimpleNamespace(analytes=cut), landmark_hours=landmark, n_patients=n)


def test_hay_flag_window_is_after_infusion_to_min_landmark_36h():
    # patient 0: fever at 10 h, MCP-1 high at 30 h -> flagged from L=30 on (not at L=24)
    # patient 1: fever at 10 h, MCP-1 high only at 40 h (after the 36 h window) -> never flagged
    # patient 2: fever and MCP-1 high before infusion (-5 h) and at the anchor (0 h, the pre-infusion
    #   sample) only, MCP-1 low at 5 h -> 0 (the window opens after 0 h); patient 3: no data -> NaN
    temp = _rows([0, 1, 2, 2], [10.0, 10.0, -5.0, 0.0], [39.2, 39.2, 39.5, 39.5])
    mcp1 = _rows([0, 1, 2, 2, 2], [30.0, 40.0, -5.0, 0.0, 5.0], [1500.0, 9000.0, 9000.0, 9000.0, 100.0])
    analytes = {"TEMP": temp, "MCP1": mcp1}
    np.testing.assert_array_equal(hay_2017_flag_at_landmark(_context(24.0, analytes)), [0.0, 0.0, 0.0, np.nan])
    np.testing.assert_array_equal(hay_2017_flag_at_landmark(_context(48.0, analytes)), [1.0, 0.0, 0.0, np.nan])
    # At L = 0 there is no post-infusion window: nobody has the rule (reported as not computable there).
    assert np.isnan(hay_2017_flag_at_landmark(_context(0.0, analytes))).all()
    # MCP-1 not in the feature set at all: the rule cannot be evaluated -> all NaN
    only_temp = _context(48.0, {"TEMP": temp})
    assert np.isnan(hay_2017_flag_at_landmark(only_temp)).all()


def test_availability_reasons():
    X = pd.DataFrame({"landmark_hours": [0.0, 24.0], "il6__latest": [1.0, 2.0], "il6__count": [1.0, 1.0],
                      "ifng__latest": [1.0, 2.0], "il1ra__latest": [np.nan, np.nan], "hay_2017__flag": np.nan})
    reasons = baseline_availability(X)
    assert list(reasons) == list(BASELINES)
    assert reasons["teachey_2016"] == "not computable: no sgp130__latest features in landmarks.parquet"
    assert reasons["hay_2017"].startswith("not computable: 'hay_2017__flag' has no values")
    assert reasons["easix"] == "column 'easix__latest' not in landmarks.parquet"
    assert reasons["il6_latest"] is None and reasons["logistic_regression"] is None
    assert reasons["simple_summaries"] is None
    X["sgp130__latest"] = 1.0
    assert baseline_availability(X)["teachey_2016"] == "not computable: il1ra__latest has no values"
    no_hay = baseline_availability(X.drop(columns=["hay_2017__flag"]))["hay_2017"]
    assert no_hay.startswith("not computable: no 'hay_2017__flag' feature in landmarks.parquet")
    bare = baseline_availability(X[["landmark_hours"]])["simple_summaries"]
    assert bare == "not computable: no per-analyte latest/first/max features in landmarks.parquet"


def test_fitted_baseline_without_inputs_at_one_landmark():
    # The Teachey cytokines are post-infusion values: none at 0 h, all three at 24 h. A published score
    # empty at 0 h is not listed (evaluation reads its raw values per landmark itself).
    X = pd.DataFrame({"landmark_hours": [0.0, 0.0, 24.0, 24.0], "il6__latest": [np.nan, np.nan, 1.0, 2.0],
                      "il6__count": [0.0, 0.0, 1.0, 1.0], "sgp130__latest": [np.nan, np.nan, 1.0, 2.0],
                      "ifng__latest": [np.nan, np.nan, 1.0, 2.0], "il1ra__latest": [np.nan, np.nan, 3.0, 4.0]})
    assert baseline_availability(X)["teachey_2016"] is None
    out = unavailable_by_landmark(X, X["landmark_hours"].to_numpy())
    assert out == {"teachey_2016": {"0": "not computable: sgp130__latest, ifng__latest, il1ra__latest have "
                                         "no values at this landmark"}}
    X.loc[0, "il1ra__latest"] = 5.0  # one cytokine at 0 h is not enough: the other two are still empty
    assert set(unavailable_by_landmark(X, X["landmark_hours"].to_numpy())) == {"teachey_2016"}
    X.loc[0, ["sgp130__latest", "ifng__latest"]] = 1.0
    assert unavailable_by_landmark(X, X["landmark_hours"].to_numpy()) == {}


def test_simple_summary_columns_by_suffix():
    columns = ["landmark_hours", "il6__latest", "il6__count", "il6__first", "il6__max", "il6__slope_24h",
               "il6__log2_latest_over_first", "easix__latest", "crp__latest", "crp__count", "crp__max",
               "temp__max", "age", "product"]
    assert simple_summary_columns(columns) == [
        "landmark_hours", "il6__latest", "il6__first", "il6__max", "il6__log2_latest_over_first",
        "crp__latest", "crp__max", "age", "product",
    ]  # easix__latest is a derived score (no easix__count); temp__max has no temp__count here
    older = [c for c in columns if not c.endswith(("__first", "__log2_latest_over_first"))]
    assert simple_summary_columns(older) == ["landmark_hours", "il6__latest", "il6__max", "crp__latest",
                                             "crp__max", "age", "product"]


def _fold_data(n_patients: int = 160, seed: int = 0) -> FoldData:
    rng = np.random.default_rng(seed)
    y = (rng.random(n_patients) < 0.3).astype(float)
    signal = 1.5 * y + rng.normal(scale=0.8, size=n_patients)
    df = pd.DataFrame({
        "landmark_hours": 24.0,
        "il6__latest": np.exp(signal + 3), "il6__count": 3.0, "il6__first": np.exp(rng.normal(3, 1, n_patients)),
        "il6__max": np.exp(signal + 3.5), "il6__log2_latest_over_first": signal,
        "crp__latest": np.where(rng.random(n_patients) < 0.2, np.nan, np.exp(rng.normal(size=n_patients))),
        "sgp130__latest": np.exp(signal), "ifng__latest": np.exp(rng.normal(size=n_patients)),
        "il1ra__latest": np.exp(signal + rng.normal(size=n_patients)),
        "hay_2017__flag": (signal > 1.2).astype(float),
        "product": pd.Categorical(rng.choice(["a", "b"], n_patients)),
    })
    specs = build_feature_specs(df, list(df.columns))
    X = apply_feature_specs(df, specs)
    groups = np.array([f"P{i}" for i in range(n_patients)])
    return FoldData(X, y, groups, np.full(n_patients, 24.0), specs, baseline_availability(X))


def test_fold_baselines_columns_rows_and_signal():
    data = _fold_data()
    cfg = TrainConfig(n_jobs=1)
    tr, te = np.arange(0, 120), np.arange(120, 160)
    out = fold_baselines(data, cfg, tr, te, seed=3)
    available = [name for name in BASELINES if data.available[name] is None]
    assert "easix" not in available and {"teachey_2016", "simple_summaries", "hay_2017"} <= set(available)
    expected = []
    for name in available:
        expected += ([f"score__{name}"] if name in SCORE_BASELINES else []) + [f"prob__{name}", f"threshold__{name}"]
    assert list(out.columns) == expected
    assert list(out.index) == list(range(len(te)))
    np.testing.assert_array_equal(out["score__crp_latest"], data.X["crp__latest"].to_numpy()[te])  # NaN kept
    assert (out.dtypes == np.float64).all()  # the OOF contract: float64 columns (XGBoost predicts float32)
    for name in available:
        assert out[f"prob__{name}"].between(0, 1).all(), name
        assert out[f"threshold__{name}"].nunique() == 1, name  # one threshold per fold
    from sklearn.metrics import roc_auc_score

    y_te = data.y[te]
    for name in ("teachey_2016", "simple_summaries", "logistic_regression"):
        assert roc_auc_score(y_te, out[f"prob__{name}"]) > 0.7, name
    # Same inputs, same outputs (seeded).
    pd.testing.assert_frame_equal(out, fold_baselines(data, cfg, tr, te, seed=3))


@pytest.mark.parametrize("column", TEACHEY_COLUMNS)
def test_teachey_not_computable_without_any_of_its_cytokines(column):
    data = _fold_data()
    reasons = baseline_availability(data.X.drop(columns=[column]))
    assert reasons["teachey_2016"] == f"not computable: no {column} features in landmarks.parquet"


def test_fitted_baselines_survive_inputs_empty_in_a_training_fold():
    """A covariate empty for everyone, and Teachey cytokines measured in one patient only, used to crash
    the whole training run inside sklearn (all-missing columns dropped by the imputer)."""
    from pipeline.config import parse_config
    from pipeline.model import apply_feature_specs, build_feature_specs
    from pipeline.training.final import prepare_target
    from tests.pipeline.test_train import make_landmarks

    df = make_landmarks(90, seed=5)
    df["product"] = pd.Categorical([None] * len(df), categories=["axi-cel"])
    for column in ("sgp130__latest", "ifng__latest", "il1ra__latest"):
        df[column] = np.nan
        df.loc[df["patient_id"] == df["patient_id"].iloc[0], column] = 5.0
    config = parse_config({"targets": {"crs_severe": {"event": "CRS", "min_grade": 3}},
                           "train": {"n_splits": 3, "n_repeats": 1, "n_estimators": 20, "calibration_fraction": 0.34}})
    specs = build_feature_specs(df, [c for c in df.columns if c != "patient_id" and not c.startswith(("label__", "onset"))])
    prep = prepare_target(df, "crs_severe", config.train, specs, {})
    assert prep.data.available["teachey_2016"] is None and prep.data.available["logistic_regression"] is None
    for _repeat, _fold, tr, te in prep.splits:
        out = fold_baselines(prep.data, config.train, tr, te, seed=1)
        assert out["prob__logistic_regression"].between(0, 1).all() and out["prob__teachey_2016"].between(0, 1).all()
    assert apply_feature_specs(df, specs)["product"].isna().all()
