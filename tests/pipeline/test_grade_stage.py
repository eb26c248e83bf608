"""The ``crs grade`` stage: given / derive / compare on a hand-built cohort a human can check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import grade
from pipeline.config import GradingConfig, parse_config
from pipeline.errors import UserError
from pipeline.grading import GradingRules
from pipeline.grading.graded import GIVEN_REASON

PATIENTS = pd.DataFrame({"patient_id": pd.array(["A", "B", "C"], dtype="str"), "age": [60.0, 50.0, 40.0]})


def _measurements(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "analyte", "value"])
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "analyte": "str", "value": "float64"})


def _events(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "event", "grade", "hours_since_anchor"])
    return df.astype({"patient_id": "str", "event": "str", "grade": "int8", "hours_since_anchor": "float64"})


def _treatments(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "drug", "end_hours_since_anchor"])
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "drug": "str",
                      "end_hours_since_anchor": "float64"}).assign(dose=np.nan, unit=pd.NA)


def _observations(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "item", "value"])
    score = pd.to_numeric(df["value"], errors="coerce")
    return df.astype({"patient_id": "str", "hours_since_anchor": "float64", "item": "str", "value": "str"}).assign(
        score=score.where(df["item"].str.endswith("_SCORE")).astype("float64"))


# A: fever at 10 h, SBP 80 at 20 h (CRS 2 from hypotension), norepinephrine 30-40 h (CRS 3), died at 200 h.
# B: fever at 12 h, nasal cannula at 14 h (CRS 2 from hypoxia); ICE 2 at 50 h (ICANS 3).
# C: afebrile, normal pressure, ICE 10: never graded above 0.
TABLES = {
    "patients": PATIENTS,
    "measurements": _measurements([
        ("A", 0.0, "TEMP", 37.0), ("A", 10.0, "TEMP", 38.6), ("A", 0.0, "SBP", 120.0), ("A", 20.0, "SBP", 80.0),
        ("B", 0.0, "TEMP", 36.8), ("B", 12.0, "TEMP", 38.2), ("B", 0.0, "SBP", 125.0), ("B", 14.0, "O2_FLOW", 2.0),
        ("C", 0.0, "TEMP", 36.9), ("C", 24.0, "TEMP", 37.1), ("C", 0.0, "SBP", 118.0), ("C", 24.0, "SBP", 121.0),
    ]),
    "treatments": _treatments([("A", 30.0, "norepinephrine", 40.0)]),
    "observations": _observations([
        ("B", 14.0, "O2_DEVICE", "nasal_cannula"), ("B", 50.0, "ICE_SCORE", "2"), ("C", 12.0, "ICE_SCORE", "10"),
    ]),
    "events": _events([("A", "CRS", 1, 10.0), ("A", "CRS", 2, 20.0), ("A", "CRS", 3, 30.0), ("A", "DEATH", 5, 200.0),
                       ("B", "CRS", 1, 12.0), ("B", "CRS", 2, 14.0), ("B", "ICANS", 2, 50.0)]),
}


def _config(**cohort):
    return parse_config({"cohort": {"grades": "given", **cohort}})


def _first_onsets(events: pd.DataFrame) -> dict[tuple[str, str, int], float]:
    return {(r.patient_id, r.event, int(r.grade)): r.hours_since_anchor for r in events.itertuples()}


def test_given_passes_the_events_and_grades_them_as_onsets():
    result = grade.run(_config(), TABLES)
    pd.testing.assert_frame_equal(result.tables["events"].reset_index(drop=True),
                                  TABLES["events"].reset_index(drop=True), check_dtype=False)
    g = result.tables["grades"]
    crs_a = g[(g["patient_id"] == "A") & (g["event"] == "CRS")]
    assert crs_a["grade"].tolist() == [1, 2, 3] and set(crs_a["reason"]) == {GIVEN_REASON}
    # Components graded from the observations all the same: A hypotension 2 at 20 h until the reading's
    # 8 h hold ends (28 h), 3 on norepinephrine from 30 h (rows where the derived CRS grade changes;
    # featurize reads the highest so far).
    hypo_a = g[(g["patient_id"] == "A") & (g["event"] == "HYPOTENSION")]
    assert list(zip(hypo_a["hours_since_anchor"], hypo_a["grade"], strict=True)) == [
        (0.0, 0), (20.0, 2), (28.0, 0), (30.0, 3)]
    oxygen_b = g[(g["patient_id"] == "B") & (g["event"] == "HYPOXIA")]
    assert list(zip(oxygen_b["hours_since_anchor"], oxygen_b["grade"], strict=True)) == [(14.0, 2)]
    assert g[(g["patient_id"] == "C") & (g["event"] == "HYPOXIA")].empty  # C never assessed for oxygen


def test_derive_labels_from_observations_and_keeps_deaths():
    result = grade.run(_config(grades="derive"), TABLES)
    onsets = _first_onsets(result.tables["events"])
    assert onsets[("A", "CRS", 1)] == 10.0 and onsets[("A", "CRS", 2)] == 20.0 and onsets[("A", "CRS", 3)] == 30.0
    assert onsets[("A", "DEATH", 5)] == 200.0
    assert onsets[("B", "CRS", 2)] == 14.0 and onsets[("B", "ICANS", 3)] == 50.0
    assert not any(pid == "C" for pid, _, _ in onsets)
    reasons = result.tables["grades"].query("patient_id == 'A' and event == 'CRS'")["reason"].tolist()
    assert any("norepinephrine" in r for r in reasons)


def test_compare_reports_agreement_counts_only():
    result = grade.run(_config(grades="compare"), TABLES)
    crs, icans = result.report["agreement"]["CRS"], result.report["agreement"]["ICANS"]
    assert crs["exact_agreement"] == 1.0  # A 3 / 3, B 2 / 2, C 0 / 0
    assert icans["exact_agreement"] == round(2 / 3, 4)  # B: given 2, derived 3
    assert icans["confusion_max_grade"]["rows_given_columns_derived"][2][3] == 1
    assert crs["onset_grade_ge3"] == {"patients_given": 1, "patients_derived": 1, "found": 1, "within_8_hours": 1,
                                      "share_within": 1.0, "median_abs_gap_hours": 0.0}
    text = json.dumps(result.report)
    assert '"A"' not in text and "norepinephrine" not in text  # no id, no clinical detail: kept in git


def test_legacy_grades_without_a_mapping_are_an_error_naming_the_rows():
    with pytest.raises(UserError, match=r"5 Lee2014 grade\(s\) have no ASTCT equivalent.*\(CRS grade 1: 2, CRS grade 2: 2, ICANS grade 2: 1\).*derive"):
        grade.run(_config(grading_scale="Lee2014"), {**TABLES, "events": TABLES["events"].query("grade < 3 or event == 'DEATH'")})


def test_derive_without_observations_is_an_error():
    bare = {"patients": PATIENTS, "measurements": _measurements([("A", 1.0, "IL6", 3.0)]), "events": TABLES["events"]}
    with pytest.raises(UserError, match="cohort.grades: derive needs raw observations"):
        grade.run(_config(grades="derive"), bare)


def test_params_defaults_are_the_engines():
    assert GradingRules(**GradingConfig().model_dump()) == GradingRules()


def test_main_writes_the_folder_and_report(tmp_path, capsys):
    interim = tmp_path / "interim"
    interim.mkdir()
    for name, frame in TABLES.items():
        frame.to_parquet(interim / f"{name}.parquet", index=False)
    config = parse_config({"cohort": {"grades": "compare"},
                           "paths": {"interim_dir": str(interim), "graded_dir": str(tmp_path / "graded"),
                                     "grading_report": str(tmp_path / "grading.json")}})
    grade.main(config)
    assert sorted(p.name for p in (tmp_path / "graded").iterdir()) == [
        "daily_grades.parquet", "events.parquet", "grades.parquet", "timeline.parquet"]
    report = json.loads((tmp_path / "grading.json").read_text())
    assert report["mode"] == "compare" and report["patients_by_max_grade"]["CRS"] == {"0": 1, "2": 1, "3": 1}
    assert "CRS kappa 1.000" in capsys.readouterr().out


def test_every_treatment_class_has_a_chart_style():
    """Pages mark every treatment class on the risk chart (vasopressors came with grading)."""
    from features.definitions import TREATMENT_CLASSES
    from pipeline.reporting.charts import TREATMENT_STYLE

    assert set(TREATMENT_STYLE) == set(TREATMENT_CLASSES)


def test_model_code_digest_covers_the_code_that_ran(tmp_path):
    """Train's ``code_sha256`` digests the modules it imported (all in its DVC deps), so a change to a
    report template cannot make a fresh clone's retrain differ from the committed dvc.lock."""
    import subprocess
    import sys

    def digest(imports: str) -> str:
        code = f"import {imports}; from pipeline.tracking import code_digest; print(code_digest())"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert digest("pipeline.train") == digest("pipeline.train")
    assert digest("pipeline.train") != digest("pipeline.train, pipeline.report")
