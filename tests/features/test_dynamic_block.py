"""The landmark matrix's feature block, filled feature by feature as each is computed (issue 14), holds
exactly what :func:`features.landmarks.features_at_landmark` returns at every landmark, in its order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.landmarks import (
    LandmarkSpec,
    _dynamic_block,
    cut_at_landmark,
    dynamic_feature_names,
    encode_cohort,
    features_at_landmark,
    patient_index,
)
from tests.features.test_patient_chunks import cohort


def _spec() -> LandmarkSpec:
    return LandmarkSpec(landmarks_hours=(0.0, 24.0, 72.0), analytes=("IL6", "CRP", "FERRITIN", "TEMP"))


def _timeline():
    tables = cohort()
    spec = _spec()
    analytes = tuple(dict.fromkeys((*spec.analytes, "LDH", "CREAT", "PLT", "ANC", "HGB")))
    timeline = encode_cohort(tables["measurements"], patient_index(tables["patients"]), tables["treatments"], analytes)
    return timeline, spec


def test_feature_names_are_those_features_at_landmark_returns() -> None:
    timeline, spec = _timeline()
    assert dynamic_feature_names(spec) == list(features_at_landmark(cut_at_landmark(timeline, 24.0), spec))


def test_block_equals_features_at_each_landmark_bit_for_bit() -> None:
    timeline, spec = _timeline()
    block = _dynamic_block(timeline, spec)
    k = len(spec.landmarks_hours)
    assert list(block.columns) == dynamic_feature_names(spec)
    assert (block.dtypes == np.float64).all()
    for j, landmark in enumerate(spec.landmarks_hours):
        expected = pd.DataFrame(features_at_landmark(cut_at_landmark(timeline, landmark), spec))
        got = block.iloc[j::k].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert block["il6__latest"].notna().any() and block["il6__slope_24h"].notna().any()
