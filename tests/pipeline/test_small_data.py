"""Small-data guard (issue 13): too few patients with the event is flagged where people look, and
blocks registration as a deployable model unless forced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline import register
from pipeline.config import parse_config
from pipeline.model.guards import small_data_warning
from pipeline.training.final import small_data


def test_flag_counts_patients_with_the_event_overall_and_per_landmark() -> None:
    # 6 patients, landmarks 0 and 24 h; patients P0-P2 have the event (at both landmarks, P2 only at 0 h).
    groups = np.repeat([f"P{i}" for i in range(6)], 2)
    landmarks = np.tile([0.0, 24.0], 6)
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    flag = small_data(y, groups, landmarks, n_features=30, min_events=3)
    assert flag == {"min_events": 3, "patients_with_event": 3, "events_by_landmark": {"0": 3, "24": 2},
                    "landmarks_below": ["24"], "events_per_feature": 0.1}
    assert small_data(y, groups, landmarks, n_features=30, min_events=2) is None
    assert "landmarks 24 h have fewer events" in small_data_warning("crs_severe", flag)
    few = small_data(y, groups, landmarks, n_features=30, min_events=20)
    assert "3 patients with the event; minimum 20" in small_data_warning("crs_severe", few)


def _models_dir(root: Path, flag: dict | None) -> Path:
    (root / "crs_severe").mkdir(parents=True)
    (root / "crs_severe" / "metadata.json").write_text(json.dumps({"target": "crs_severe", "small_data": flag}))
    return root


def test_register_refuses_a_small_data_model_unless_forced(tmp_path: Path) -> None:
    config = parse_config({})
    flag = {"min_events": 20, "patients_with_event": 5, "events_by_landmark": {"0": 5}, "landmarks_below": ["0"],
            "events_per_feature": 0.02}
    models = _models_dir(tmp_path / "models", flag)
    refused = register.run(config, models, {})
    assert refused["registered"] is False
    assert "small data (5 patients with the event" in refused["reason"] and "--force" in refused["reason"]
    # Forced: the guard steps aside (this directory holds no booster, so registration stops there).
    forced = register.run(config, models, {}, force=True)
    assert forced["reason"] == "no trained target" and forced["small_data"]


def test_no_flag_means_no_guard(tmp_path: Path) -> None:
    models = _models_dir(tmp_path / "models", None)
    assert register.run(parse_config({}), models, {})["reason"] == "no trained target"

