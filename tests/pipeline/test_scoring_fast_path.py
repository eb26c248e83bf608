"""One scorer, two paths (issue 14): the few-patients paths of featurize, covariates and grading that make
``Scorer.score_patient`` fast give exactly what the cohort paths give. Every switch is turned off (the
cohort path for any size) and each request is scored both ways: risks, bands, landmarks, messages, SHAP
drivers and every feature of the scored row must be identical, on simulated patients and on hand-built
edge cases (no measurements, censored values, values only after the landmark, no baseline, unknown
analytes, missing covariates, treatments and events)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import covariates, landmarks
from pipeline import lookup
from pipeline.grading import crs
from pipeline.ingestion import IngestResult
from pipeline.predict import PatientRisk, Scorer
from pipeline.scoring import cohort, messages
from tests.pipeline.test_predict import build_bundle

PARAMS = {
    "static_features": ["age", "sex", "product", "disease", "tumor_burden", "dose", "lymphodepletion"],
    "train": {"n_estimators": 30, "calibration": "isotonic"},
}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory):
    config, cohort, models = build_bundle(tmp_path_factory.mktemp("fast"), n_patients=60, seed=11, params=PARAMS)
    tables = {name: pd.read_csv(cohort / f"{name}.csv", dtype=str)
              for name in ("patients", "measurements", "treatments", "events")}
    return Scorer(models, config), tables


def _cohort_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landmarks, "FEW_PATIENTS", -1)
    monkeypatch.setattr(covariates, "FEW_ROWS", 0)
    monkeypatch.setattr(crs, "_FEW_ROWS", -1)
    monkeypatch.setattr(messages, "FEW_ROWS", -1)
    monkeypatch.setattr(lookup, "FEW_IDS", -1)
    monkeypatch.setattr(cohort, "FEW_PATIENTS", -1)


def _rows(table: pd.DataFrame, pid: str) -> pd.DataFrame:
    return table[table["patient_id"] == pid].drop(columns="patient_id").reset_index(drop=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame):
        return isinstance(b, pd.DataFrame) and list(a.dtypes) == list(b.dtypes) and a.equals(b) and (
            list(a.columns) == list(b.columns))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _assert_same(fast: PatientRisk, general: PatientRisk) -> None:
    for name in ("patient_id", "landmark_hours", "probability", "band", "drivers", "message", "predictions"):
        assert _same(getattr(fast, name), getattr(general, name)), name


def _both(scorer: Scorer, monkeypatch: pytest.MonkeyPatch, *args: Any, **kwargs: Any) -> PatientRisk:
    fast = scorer.score_patient(*args, **kwargs)
    tables = {"patients": pd.DataFrame([dict(args[1])]), "measurements": args[0].assign(patient_id=fast.patient_id)}
    fast_rows = scorer.score_tables(tables, kwargs.get("at_hours"), trajectory=False).landmarks
    with monkeypatch.context() as m:
        _cohort_paths(m)
        general = scorer.score_patient(*args, **kwargs)
        general_rows = scorer.score_tables(tables, kwargs.get("at_hours"), trajectory=False).landmarks
    _assert_same(fast, general)
    pd.testing.assert_frame_equal(fast_rows, general_rows, check_exact=True)  # every feature, every label
    return fast


@pytest.mark.parametrize("k", range(12))
def test_simulated_patients_score_alike_on_both_paths(scored, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer, tables = scored
    pid = tables["patients"]["patient_id"].iloc[k]
    patient = tables["patients"].iloc[k]
    kwargs: dict[str, Any] = {"at_hours": [None, 0.0, 24.0, 36.5, 72.0, None][k % 6]}
    if k % 3 == 1:
        kwargs["treatments"] = _rows(tables["treatments"], pid)
    if k % 3 == 2:
        kwargs["events"] = _rows(tables["events"], pid)
    risk = _both(scorer, monkeypatch, _rows(tables["measurements"], pid), patient, **kwargs)
    assert risk.patient_id == pid


def _hand_built() -> pd.DataFrame:
    rows = [("-30", "IL6", "5", "pg/mL"), ("-2", "IL6", "<1.5", "pg/mL"), ("3", "IL6", "12", "pg/mL"),
            ("3", "IL6", "12", "pg/mL"), ("20", "CRP", ">300", "mg/L"), ("23.5", "interleukin-6", "5000", "pg/mL"),
            ("100", "IL6", "80", "pg/mL"), ("2", "MADE_UP_MARKER", "1", "U"), ("10", "FERRITIN", "0", "ng/mL"),
            ("30", "TEMP", "39.1", "C"), ("31", "SBP", "85", "mmHg"), ("40", "CRP", "abc", "mg/L")]
    return pd.DataFrame(rows, columns=["time", "analyte", "value", "unit"])


EDGE_CASES: dict[str, dict[str, Any]] = {
    "no measurements": {"measurements": _hand_built().iloc[0:0]},
    "censored, duplicate, unknown and unreadable rows": {"measurements": _hand_built()},
    "values only after the landmark": {"measurements": _hand_built().iloc[[6]], "at_hours": 24.0},
    "no baseline (nothing before the anchor)": {"measurements": _hand_built().iloc[2:]},
    "missing covariates": {"measurements": _hand_built(), "patient": {"patient_id": "E1", "age": None, "sex": ""}},
    "unknown product and unit": {"measurements": _hand_built(), "patient": {
        "patient_id": "E1", "age": "55", "product": "newcel", "dose": "2", "dose_unit": "mg",
        "tumor_burden": "12", "tumor_burden_unit": "furlongs", "disease": "LBCL"}},
    "treatments and events": {
        "measurements": _hand_built(),
        "treatments": pd.DataFrame({"time": ["25", "26"], "drug": ["tocilizumab", "norepinephrine"],
                                    "dose": ["8", "0.1"], "unit": ["mg/kg", "ug/kg/min"]}),
        "events": pd.DataFrame({"time": ["22"], "event": ["CRS"], "grade": ["3"]})},
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_score_alike_on_both_paths(scored, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer, _ = scored
    spec = dict(EDGE_CASES[case])
    patient = spec.pop("patient", {"patient_id": "E1", "age": "61", "sex": "F", "product": "axi-cel",
                                   "disease": "LBCL", "dose": "2000000", "dose_unit": "cells/kg",
                                   "tumor_burden": "40", "tumor_burden_unit": "SPD cm2", "lymphodepletion": "flu_cy"})
    _both(scorer, monkeypatch, spec.pop("measurements"), patient, **spec)


def test_the_switches_choose_the_path(scored, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: one patient takes the few-patients code by default, and none of it with the switches off."""
    scorer, tables = scored
    pid = tables["patients"]["patient_id"].iloc[0]
    args = (_rows(tables["measurements"], pid), tables["patients"].iloc[0])
    for switched_off in (False, True):
        calls: list[str] = []
        with monkeypatch.context() as m:
            for module, name in ((landmarks, "_few_static_columns"), (landmarks, "_stacked_blocks")):
                original = getattr(module, name)
                m.setattr(module, name, lambda *a, _f=original, _n=name, _c=calls: _c.append(_n) or _f(*a))
            if switched_off:
                _cohort_paths(m)
            scorer.score_patient(*args)
        assert (calls == []) == switched_off, calls


def _quarantine(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["source_file", "source_line", "reason", "detail", "source_column", "patient_id", "analyte", "drug"]
    return pd.DataFrame([{c: row.get(c, np.nan) for c in columns} for row in rows], columns=columns).astype(
        {c: object for c in columns if c != "source_line"})


M, T, P = "request/measurements.csv", "request/treatments.csv", "request/patients.csv"
QUARANTINES = {
    "one bad value": [{"source_file": M, "reason": "unparseable_value", "detail": "x", "patient_id": "P1",
                       "analyte": "CRP"}],
    "several patients, reasons and analytes": [
        {"source_file": M, "reason": r, "detail": "d", "patient_id": pid, "analyte": a}
        for pid, r, a in [(" P2", "out_of_range", "IL6"), ("P1", "missing_value", "CRP"), ("P1", "bad_time", "CRP"),
                          ("P2 ", "out_of_range", "IL6"), ("P1", "missing_value", "CRP"), ("P1", "bad_time", None),
                          ("P1", "missing_value", ""), ("P3", "unknown_unit", "FERRITIN")]],
    "no anchor": [{"source_file": M, "reason": "bad_time", "detail": "no anchor_time for an ISO time",
                   "patient_id": "P1", "analyte": "CRP"},
                  {"source_file": M, "reason": "missing_value", "detail": np.nan, "patient_id": "P1", "analyte": "IL6"}],
    "only no anchor": [{"source_file": M, "reason": "bad_time", "detail": "no anchor_time", "patient_id": "P1"}],
    "treatments and missing ids": [
        {"source_file": T, "reason": "bad_time", "detail": "d", "patient_id": "P1", "drug": "tocilizumab"},
        {"source_file": M, "reason": "missing_patient_id", "detail": "d", "patient_id": np.nan, "analyte": "CRP"}],
    "a rejected patients row": [{"source_file": P, "reason": "bad_time", "detail": "anchor", "patient_id": "P1"},
                                {"source_file": M, "reason": "unknown_patient", "detail": "d", "patient_id": "P1"}],
    "a blanked cell": [{"source_file": P, "reason": "non_finite_value", "detail": "d", "patient_id": "P1",
                        "source_column": "age"}],
}


@pytest.mark.parametrize("case", sorted(QUARANTINES))
def test_quarantine_messages_alike_on_both_paths(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    result = IngestResult(tables={}, quarantine=_quarantine(QUARANTINES[case]), report={})
    fast = messages.quarantine_messages(result, P)
    monkeypatch.setattr(messages, "FEW_ROWS", -1)
    assert fast == messages.quarantine_messages(result, P)
    assert fast  # every case words something
