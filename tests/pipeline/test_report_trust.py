"""What a clinician's page must not hide (issue 13): the validated alert rule in words, and a model
trained on simulated patients recognised as such (banner on pages, note on predictions)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np


def test_a_model_trained_on_the_simulated_cohort_is_recognised(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pipeline.model.setup import trained_on_simulated

    def bundle(path: str) -> SimpleNamespace:
        return SimpleNamespace(targets={"crs_severe": SimpleNamespace(metadata={"cohort_path": path})})

    assert trained_on_simulated(bundle("data/raw/synthetic"))
    (tmp_path / "truth.json").write_text("{}")  # crs simulate writes truth.json beside the tables
    assert trained_on_simulated(bundle(str(tmp_path)))
    assert not trained_on_simulated(bundle(str(tmp_path / "real_cohort")))
    assert not trained_on_simulated(bundle(""))


def test_alert_status_states_the_validated_rule_in_words() -> None:
    from types import SimpleNamespace

    from pipeline.reporting.sections import alert_status

    rows = SimpleNamespace(probability=np.array([0.08, 0.05]), hours=np.array([24.0, 24.0]))
    metrics = {"crs_severe": {"24": {"model": {"sensitivity": 0.9, "ppv": 0.25}}}}
    data = SimpleNamespace(thresholds={"crs_severe": np.array([0.067, 0.067])}, rows={"crs_severe": rows},
                           metrics=metrics)
    # A patient at 8 % is above a 6.7 % threshold even though the 10 % band calls that "low".
    assert alert_status(data, "crs_severe", 0) == (
        "Above the validated alert threshold (6.7%): in cross-validation 90% of these events at this landmark "
        "were above it, and 1 in 4 alerts was followed by one.")
    assert alert_status(data, "crs_severe", 1).startswith("Below the validated alert threshold (6.7%)")
    data.metrics = None  # no validation figures: the rule alone
    assert alert_status(data, "crs_severe", 0) == "Above the validated alert threshold (6.7%)."


def test_il6_after_tocilizumab_carries_a_caveat() -> None:
    from pipeline.reporting import clinical_text as ct

    row = {"il6__latest": 80.0, "il6__baseline": 5.0, "il6__fold_change": 16.0, "tocilizumab__given": 1.0}
    assert ct.describe_analyte("IL6", row, "pg/mL").endswith(
        "after tocilizumab, which itself raises serum IL-6: read with care")
    assert "tocilizumab" not in ct.describe_analyte("IL6", {**row, "tocilizumab__given": 0.0}, "pg/mL")
    assert "tocilizumab" not in ct.describe_analyte("CRP", {"crp__latest": 50.0, "tocilizumab__given": 1.0}, "mg/L")


def test_data_as_of_names_the_newest_value_used_and_hides_dates_when_pseudonymised() -> None:
    import pandas as pd

    from pipeline.reporting.patient_data import PatientSlices, anchor_times
    from pipeline.reporting.sections import data_as_of

    measurements = pd.DataFrame({"patient_id": ["P1", "P1", "P1"], "hours_since_anchor": [-24.0, 20.5, 50.0],
                                 "analyte": "CRP", "value": 1.0, "censoring": "none"})
    slices = PatientSlices.build(measurements, {"hours_since_anchor": "float"})
    patients = pd.DataFrame({"patient_id": ["P1"], "anchor_time": pd.to_datetime(["2024-01-03T09:30:00Z"])})
    view = SimpleNamespace(pid="P1", scored=True, measurements=slices.upto("P1", 48.0))  # the 50 h value is after L
    data = SimpleNamespace(measurements=slices, anchors=anchor_times(patients), pseudonymise=False)
    # 09:30 + 20.5 h = next day 06:00.
    assert data_as_of(data, view) == "Data as of 2024-01-04 06:00 UTC, 20.5 h after infusion (newest value used)"
    data.pseudonymise = True  # a date identifies a patient: hours only
    assert data_as_of(data, view) == "Data as of 20.5 h after infusion (newest value used)"
    data.pseudonymise, data.anchors = False, {}  # a cohort in hours since infusion
    assert data_as_of(data, view) == "Data as of 20.5 h after infusion (newest value used)"
