"""The one-patient API (``Scorer.score_patient``) gives exactly what batch scoring gives for that patient:
the same probability, band, landmark and SHAP drivers, to the last bit (messages differ by design: the
batch run was given events, the single patient none, so its message says so)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.frames import read_new_cohort
from pipeline.predict import Scorer
from pipeline.scoring import score_cohort
from tests.pipeline.test_predict import build_bundle


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory):
    config, cohort, models = build_bundle(tmp_path_factory.mktemp("patient"), n_patients=40, seed=5)
    scorer = Scorer(models, config)
    batch = score_cohort(read_new_cohort(cohort), scorer.setup)  # every patient at once, with SHAP
    tables = {name: pd.read_csv(cohort / f"{name}.csv", dtype=str) for name in ("patients", "measurements")}
    return config, scorer, batch, tables


def test_one_patient_equals_batch_scoring(scored):
    config, scorer, batch, tables = scored
    patients, measurements = tables["patients"], tables["measurements"]
    n_checked = 0
    for pid in patients["patient_id"].iloc[:12]:
        risk = scorer.score_patient(measurements[measurements["patient_id"] == pid].drop(columns="patient_id"),
                                    patients[patients["patient_id"] == pid].iloc[0])
        expected = batch.predictions[batch.predictions["patient_id"] == pid].reset_index(drop=True)
        assert risk.landmark_hours == expected["landmark_hours"].iloc[0]
        assert risk.band == dict(zip(expected["target"], expected["band"], strict=True))
        row = np.flatnonzero((batch.landmarks["patient_id"].astype(str) == pid).to_numpy()
                             & (batch.landmarks["landmark_hours"].to_numpy() == risk.landmark_hours))
        for target in config.targets:
            want = float(expected.loc[expected["target"] == target, "probability"].iloc[0])
            got = risk.probability[target]
            assert got == want or (math.isnan(got) and math.isnan(want)), (pid, target)  # bit-identical
            if math.isnan(want):
                continue
            n_checked += 1
            shap = batch.scores[target].shap[row[0]]
            drivers = risk.drivers[target]
            order = np.argsort(-np.abs(shap), kind="stable")[:config.report.top_drivers]
            names = [scorer.setup.bundle.targets[target].specs[j].name for j in order]
            assert drivers["feature"].tolist() == names
            assert np.array_equal(drivers["shap"].to_numpy(dtype=float), shap[order])  # exact SHAP, same bits
    assert n_checked >= 10  # not vacuous: most of these patients are scored
