"""Scoring edge cases: damaged artifacts are one-line user errors; risk bands."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.io import read_stage_parquet
from pipeline.model import load_bundle, risk_band
from pipeline.model.artifacts import seal_models_dir
from tests.pipeline.test_explain import trained_run


def test_damaged_model_files_are_user_errors(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    models = tmp_path / "models"
    shutil.copytree(run.workdir / "models", models)
    (models / "crs_severe" / "booster_0.json").write_text("{not json")
    with pytest.raises(UserError, match=r"booster_0\.json: sha256 does not match metadata\.json"):
        load_bundle(models)
    seal_models_dir(models)  # digests that match: the parse error itself is still one line
    with pytest.raises(UserError, match=r"booster_0\.json: not a readable XGBoost model"):
        load_bundle(models)
    shutil.copy(run.workdir / "models" / "crs_severe" / "booster_0.json", models / "crs_severe" / "booster_0.json")
    (models / "crs_severe" / "calibrator.json").write_text('{"method": "isotonic"}')
    seal_models_dir(models)
    with pytest.raises(UserError, match=r"calibrator\.json: calibrator is incomplete"):
        load_bundle(models)
    with pytest.raises(UserError, match="models directory not found"):
        load_bundle(tmp_path / "absent")


def test_unreadable_intermediate_parquet_is_a_user_error(tmp_path):
    path = tmp_path / "landmarks.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(UserError, match=r"landmarks\.parquet: unreadable landmark table .*rerun `crs featurize`"):
        read_stage_parquet(path, "landmark table", "crs featurize")
    with pytest.raises(UserError, match="not found"):
        read_stage_parquet(tmp_path / "absent.parquet", "landmark table", "crs featurize")


def test_risk_bands_at_their_edges():
    bands = risk_band(np.array([0.0, 0.0999, 0.1, 0.2999, 0.3, 1.0, np.nan]), 0.1, 0.3)
    assert bands.tolist() == ["low", "low", "intermediate", "intermediate", "high", "high", ""]


def test_validated_bands_per_target_and_landmark_with_fixed_fallback():
    """Issue 13: bands from the model's validated operating points (stored at training, per landmark, pooled
    for other hours), on the recalibrated scale; fixed cut-offs for models without them or when asked."""
    from pipeline.config import parse_config
    from pipeline.model import TargetModel
    from pipeline.model.setup import band_cutoffs

    bands = {"by_landmark": {"24": {"low_below": 0.05, "high_from": 0.20}, "48": {"low_below": 0.08, "high_from": 0.40}},
             "pooled": {"low_below": 0.06, "high_from": 0.30}}
    crs = TargetModel("crs", [], {"bands": bands}, {})
    old = TargetModel("icans", [], {}, {})  # trained before bands were stored
    targets = np.array(["crs", "crs", "crs", "icans"], dtype=object)
    hours = np.array([24.0, 48.0, 36.0, 24.0])
    p = np.array([0.07, 0.07, 0.31, 0.07])
    low, high = band_cutoffs({"crs": crs, "icans": old}, parse_config({}), targets, hours)
    assert low.tolist() == [0.05, 0.08, 0.06, 0.10] and high.tolist() == [0.20, 0.40, 0.30, 0.30]
    assert risk_band(p, low, high).tolist() == ["intermediate", "low", "high", "low"]
    fixed = band_cutoffs({"crs": crs}, parse_config({"report": {"bands": "fixed"}}), targets, hours)
    assert fixed[0].tolist() == [0.10] * 4 and fixed[1].tolist() == [0.30] * 4
    # A local recalibration moves the cut-offs with the probabilities (same patients in each band).
    shifted = TargetModel("crs", [], {"bands": bands, "recalibration": {"intercept": 0.5, "slope": 1.0}}, {})
    moved_low, _ = band_cutoffs({"crs": shifted}, parse_config({}), targets[:1], hours[:1])
    assert moved_low[0] == pytest.approx(shifted.recalibrated(np.array([0.05]))[0]) and moved_low[0] > 0.05
