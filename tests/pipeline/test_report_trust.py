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
    # CRP falls after tocilizumab whatever the course of CRS (its synthesis is IL-6 driven); ferritin has no caveat.
    assert ct.describe_analyte("CRP", {"crp__latest": 50.0, "tocilizumab__given": 1.0}, "mg/L").endswith(
        "after tocilizumab, which itself lowers CRP: read with care")
    assert "tocilizumab" not in ct.describe_analyte("CRP", {"crp__latest": 50.0, "tocilizumab__given": 0.0}, "mg/L")
    assert "tocilizumab" not in ct.describe_analyte("FERRITIN", {"ferritin__latest": 900.0, "tocilizumab__given": 1.0},
                                                    "ng/mL")


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


def test_training_cohort_pages_explain_the_out_of_fold_risk_they_show(tmp_path_factory) -> None:
    """Issue 13: on a training-cohort page the risk, its drivers and its alert threshold all come from the
    fold model that never saw the patient. Per row of every target: base value + contributions (summed
    per clinical group, as the page draws them) = the margin the waterfall ends at; that margin is the
    score the fold model gave (expit(margin) = the out-of-fold raw score); the risk shown is the fold
    calibrator's out-of-fold probability, and the threshold the fold's."""
    import pandas as pd

    from pipeline import report
    from pipeline.contracts import MODEL, prob_column, raw_column, threshold_column
    from pipeline.explanation import explain_landmarks
    from pipeline.model import expit
    from pipeline.reporting import ReportData
    from tests.pipeline.test_explain import trained_run

    run = trained_run(tmp_path_factory)
    config = run.config
    oof = pd.read_parquet(config.paths.oof)
    oof_explanations = report.read_oof_explanations(config, list(run.bundle.targets))
    assert set(oof_explanations) == set(run.bundle.targets)
    deployed = explain_landmarks(run.bundle, run.landmarks, config)
    shown = reporting_rows(config, run, oof_explanations, deployed, ReportData)
    for target, frame in shown.items():
        first = oof[(oof["target"] == target) & (oof["repeat"] == 0)].set_index(["patient_id", "landmark_hours"])
        keys = list(zip(frame["patient_id"].astype(str), frame["landmark_hours"].astype(float), strict=True))
        scored = np.array([k in first.index for k in keys])
        assert scored.sum() == len(first) > 0
        expected = first.reindex(pd.MultiIndex.from_tuples(keys))
        rows = shown[target]
        np.testing.assert_allclose(rows["probability"][scored], expected[prob_column(MODEL)][scored], rtol=0, atol=1e-12)
        np.testing.assert_allclose(rows["threshold"][scored], expected[threshold_column(MODEL)][scored], atol=1e-12)
        np.testing.assert_allclose(rows["base"][scored] + rows["groups"][scored].sum(axis=1), rows["margin"][scored],
                                   atol=1e-6)
        np.testing.assert_allclose(expit(rows["margin"][scored]), expected[raw_column(MODEL)][scored], atol=1e-6)
        assert np.isnan(rows["probability"][~scored]).all()  # not at risk: no risk shown
        # Bands agree with the validated alert rule shown beside them: "low" exactly when below the
        # threshold of the model that scored the row; "high" from the stored 90%-specificity cut-off.
        p, band, (low, high) = rows["probability"][scored], rows["band"][scored], rows["cutoffs"]
        np.testing.assert_array_equal(band == "low", p < rows["threshold"][scored])
        np.testing.assert_array_equal(band == "high", p >= high[scored])
        assert (low[scored] == rows["threshold"][scored]).all() and (high >= low).all()
        # The deployed model scores the same rows differently (it trained on them): not what is shown.
        assert not np.allclose(deployed[target]["probability"].to_numpy()[scored], rows["probability"][scored])


def reporting_rows(config, run, oof_explanations, deployed, report_data) -> dict[str, dict[str, np.ndarray]]:
    """What the pages draw, per target: ReportData built as `crs report` builds it for the training cohort."""
    from pipeline import reporting

    explanations = reporting.out_of_fold_explanations(deployed, oof_explanations, config, run.bundle)
    data = report_data.build(config=config, bundle=run.bundle, explanations=explanations, landmarks=run.landmarks,
                             measurements=run.measurements, treatments=run.treatments, cohort_bands=None,
                             metrics=None)
    out = {}
    for target, rows in data.rows.items():
        out[target] = {"patient_id": explanations[target]["patient_id"], "landmark_hours": rows.hours,
                       "probability": rows.probability, "base": rows.base_value, "margin": rows.margin,
                       "groups": rows.group_shap, "threshold": data.thresholds[target], "band": rows.band,
                       "cutoffs": data.cutoffs[target]}
    return out
