"""Leave-one-site-out (issue 15, internal-external validation): each site is scored by the procedure
trained on the other sites only, and the figures reach metadata.json and metrics.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import contracts, evaluate, train
from pipeline.config import parse_config
from pipeline.model import build_feature_specs
from pipeline.training.cv import run_site_fold
from pipeline.training.final import prepare_target, site_folds
from tests.helpers import in_workdir, paths_in
from tests.pipeline.test_train import make_landmarks, small_config, write_landmarks


def test_site_folds_hold_out_exactly_one_site_and_keep_unknown_sites_in_training() -> None:
    sites = np.array(["A", "B", None, "C", "A", "D", "B"], dtype=object)
    folds = site_folds(sites, small_config().train)
    assert [name for name, _, _ in folds] == ["A", "B", "C", "D"]
    name, tr, te = folds[0]
    assert te.tolist() == [0, 4] and tr.tolist() == [1, 2, 3, 5, 6]  # row 2 (no site) always trains
    assert site_folds(np.array(["A", "B", "A"], dtype=object), small_config().train) == []  # < 3 sites
    assert site_folds(sites, small_config(site_validation="off").train) == []


def _with_sites(df: pd.DataFrame, n_sites: int = 3) -> pd.DataFrame:
    codes = pd.factorize(df["patient_id"])[0] % n_sites
    return df.assign(**{contracts.SITE_GROUP: pd.array([f"S{c}" for c in codes], dtype="str")})


def test_a_held_out_sites_labels_never_move_its_predictions() -> None:
    config = small_config(monotone_constraints={})
    df = _with_sites(make_landmarks(n_patients=150, seed=4))
    specs = build_feature_specs(df, contracts.feature_columns(df.columns))
    assert contracts.SITE_GROUP not in [s.name for s in specs]  # a grouping column, never a feature
    prepared = prepare_target(df, "crs_severe", config.train, specs, {})
    name, tr, te = prepared.site_splits[1]
    assert set(prepared.data.groups[te]).isdisjoint(prepared.data.groups[tr])

    def scored(rows: np.ndarray) -> np.ndarray:
        y = prepared.data.y.copy()
        y[rows] = 1 - y[rows]
        return run_site_fold(dataclasses.replace(prepared.data, y=y), config.train, 1, tr, te)["prob__model"].to_numpy()

    honest = run_site_fold(prepared.data, config.train, 1, tr, te)["prob__model"].to_numpy()
    assert np.isfinite(honest).all()
    np.testing.assert_array_equal(scored(te), honest)
    assert not np.allclose(scored(tr), honest)  # training labels do matter: the check can fail


def test_train_and_evaluate_report_each_held_out_site(tmp_path: Path) -> None:
    config = paths_in(parse_config({"train": {"n_splits": 3, "n_repeats": 1, "n_estimators": 20, "tune": False,
                                              "calibration_fraction": 0.34, "n_bootstrap": 20}}), tmp_path)
    df = _with_sites(make_landmarks(n_patients=150, seed=6, icans=False))
    config.paths.landmarks.parent.mkdir(parents=True, exist_ok=True)
    write_landmarks(df, config)
    train.main(config)
    meta = json.loads((config.paths.models_dir / "crs_severe" / "metadata.json").read_text())
    sites = meta["leave_one_site_out"]["sites"]
    assert sorted(sites) == ["S0", "S1", "S2"]
    assert sum(s["n_patients"] for s in sites.values()) == 150
    assert all(0 <= s["auroc"] <= 1 for s in sites.values() if s["auroc"] is not None)
    with in_workdir(tmp_path):
        evaluate.main(config)
    metrics = json.loads(config.paths.metrics.read_text())
    assert metrics["crs_severe"]["all"]["leave_one_site_out"] == sites
