"""Three bugs the mutation triage found in features/landmarks.py (issue 16), each pinned by a case a
person can check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer
from features.landmarks import label_at_landmark
from pipeline.config import parse_config
from pipeline.errors import UserError


def test_an_infinite_horizon_never_labels_a_patient_without_onset_as_an_event() -> None:
    onset = np.array([np.nan, 30.0, 10.0])
    np.testing.assert_array_equal(label_at_landmark(onset, 24.0, np.inf), [0.0, 1.0, np.nan])
    np.testing.assert_array_equal(label_at_landmark(onset, 24.0, 720.0), [0.0, 1.0, np.nan])


def test_params_refuse_an_infinite_horizon() -> None:
    with pytest.raises((UserError, ValueError)):
        parse_config({"featurize": {"horizon_hours": float("inf")}})


def _measurements(hours: list[float], values: list[float], patient_ids: pd.Series | None = None) -> pd.DataFrame:
    ids = patient_ids if patient_ids is not None else pd.Series(["1"] * len(hours), dtype="str")
    return pd.DataFrame({"patient_id": ids, "hours_since_anchor": hours, "analyte": "IL6", "value": values,
                         "censoring": "none"})


def test_samples_sharing_one_time_have_no_slope() -> None:
    # Three IL-6 values all drawn at 0.1 h: no time spread, so no slope (rounding once gave -0.0104).
    patients = pd.DataFrame({"patient_id": pd.Series(["1"], dtype="str")})
    fz = LandmarkFeaturizer(landmarks_hours=[24.0], analytes=["IL6"])
    frame = fz.fit_transform(_measurements([0.1, 0.1, 0.1], [2.0, 4.0, 8.0]), patients=patients)
    slopes = [c for c in frame.columns if c.startswith("il6__slope")]
    assert slopes and frame[slopes].isna().all(axis=None)
    spread = fz.fit_transform(_measurements([0.1, 1.1, 2.1], [2.0, 4.0, 8.0]), patients=patients)
    assert spread[slopes].notna().all(axis=None)  # one doubling per hour is a slope again


def test_object_ids_holding_numbers_match_the_text_ids() -> None:
    text = pd.DataFrame({"patient_id": pd.Series(["1", "2"], dtype="str")})
    fz = LandmarkFeaturizer(landmarks_hours=[24.0], analytes=["IL6"])
    as_text = fz.fit_transform(_measurements([1.0, 2.0], [5.0, 7.0], pd.Series(["1", "2"], dtype="str")), patients=text)
    as_ints = fz.fit_transform(_measurements([1.0, 2.0], [5.0, 7.0], pd.Series([1, 2], dtype=object)), patients=text)
    pd.testing.assert_frame_equal(as_text, as_ints)
    assert as_ints["il6__latest"].tolist() == [5.0, 7.0]
