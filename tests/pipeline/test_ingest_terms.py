"""Outcome terms, grade spellings, drug brand names and Greek letters as real cohorts write them
(issue 13): the right patients count as outcomes, and a quarantined outcome row is never silent."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import LandmarkFeaturizer
from pipeline import cohort
from pipeline.ingestion import ingest_tables
from pipeline.ingestion.records import parse_grades
from tests.pipeline.test_ingest import in_memory

EVENT_COLUMNS = ["patient_id", "event", "grade", "time"]


def _raw(events: list[tuple], treatments: list[tuple] | None = None, analyte: str = "CRP") -> dict:
    ids = sorted({e[0] for e in events} | {"Z"})
    raw = {
        "patients": in_memory(cohort.PATIENTS, ["patient_id", "age"], [(p, "60") for p in ids]),
        "measurements": in_memory(cohort.MEASUREMENTS, ["patient_id", "time", "analyte", "value", "unit"],
                                  [(p, "1", analyte, "5", "pg/mL" if analyte != "CRP" else "mg/L") for p in ids]),
        "events": in_memory(cohort.EVENTS, EVENT_COLUMNS, events),
    }
    if treatments is not None:
        raw["treatments"] = in_memory(cohort.TREATMENTS, ["patient_id", "time", "drug"], treatments)
    return raw


def test_grade_spellings() -> None:
    text = pd.Series(["Grade 3", "G3", "grade III", "Gr. 2", "gr4", "3", "3.0", "iv", "Grade 0", "2.5", "severe", None])
    expected = [3, 3, 3, 2, 4, 3, 3, 4, 0, 2.5, np.nan, np.nan]
    np.testing.assert_array_equal(parse_grades(text), np.array(expected, dtype=float))


def test_messy_outcome_terms_count_the_right_patients() -> None:
    # A hand-built cohort as a site exports it: 7 patients with CRS >= 3 under four spellings.
    events = [
        ("A", "CRS", "3", "24"), ("B", "Cytokine release syndrome", "Grade 3", "30"), ("C", "crs", "G4", "10"),
        ("D", "Cytokine Release Syndrome", "grade III", "12"), ("E", "CRS", "Grade 2", "5"),
        ("F", "cytokine release syndrome (CRS)", "3", "40"), ("G", "CRS", "Gr. 4", "8"), ("H", " CRS ", "3.0", "9"),
        ("I", "Neurotoxicity", "Grade 3", "50"), ("J", "Immune effector cell-associated neurotoxicity syndrome", "4", "60"),
    ]
    result = ingest_tables(_raw(events))
    accepted = result.tables["events"]
    assert len(result.quarantine) == 0
    severe_crs = accepted[(accepted["event"] == "CRS") & (accepted["grade"] >= 3)]["patient_id"]
    assert sorted(severe_crs) == ["A", "B", "C", "D", "F", "G", "H"]
    severe_icans = accepted[(accepted["event"] == "ICANS") & (accepted["grade"] >= 3)]["patient_id"]
    assert sorted(severe_icans) == ["I", "J"]
    assert result.report["warnings"] == []


def test_a_quarantined_outcome_row_is_a_warning_with_counts() -> None:
    events = [("A", "CRS", "severe", "24"), ("B", "CRS", "Grade 3", "30"), ("B", "CRS", "grade 3.5", "31"),
              ("C", "ICANS", "1", "5")]
    result = ingest_tables(_raw(events))
    assert result.report["quarantine_by_reason"] == {"invalid_grade": 2}
    outcome_warnings = [w for w in result.report["warnings"] if w.startswith("events: ")]
    assert outcome_warnings == [
        "events: 2 patient(s) have CRS rows quarantined (invalid_grade); for 1 of them no CRS row was accepted, "
        "so their CRS outcome is not counted"]
    assert "severe" not in " ".join(result.report["warnings"])  # counts and reasons, never a cell value


def test_drug_brand_names_and_parentheses_count_as_the_drug() -> None:
    treatments = [("A", "20", "Tocilizumab (Actemra)"), ("B", "20", "RoActemra"), ("C", "20", "Decadron"),
                  ("D", "20", "Solu-Medrol (methylprednisolone)"), ("E", "20", "ruxolitinib")]
    events = [(p, "CRS", "1", "10") for p in "ABCDE"]
    result = ingest_tables(_raw(events, treatments))
    drugs = dict(zip(result.tables["treatments"]["patient_id"], result.tables["treatments"]["drug"], strict=True))
    assert drugs == {"A": "tocilizumab", "B": "tocilizumab", "C": "dexamethasone", "D": "methylprednisolone",
                     "E": "ruxolitinib"}
    frame = LandmarkFeaturizer(landmarks_hours=[24], analytes=["CRP"]).fit_transform(result.tables)
    given = dict(zip(frame["patient_id"], frame["tocilizumab__given"], strict=True))
    steroids = dict(zip(frame["patient_id"], frame["steroids__given"], strict=True))
    assert [given[p] for p in "ABCDE"] == [1, 1, 0, 0, 0]
    assert [steroids[p] for p in "ABCDE"] == [0, 0, 1, 1, 0]


def test_greek_letters_in_analyte_names() -> None:
    for name, code in (("IFN-γ", "IFNG"), ("TNF-α", "TNFA"), ("IL-1β", "IL1B"), ("MIP-1α", "MIP1A")):
        result = ingest_tables(_raw([("A", "CRS", "1", "3")], analyte=name))
        assert set(result.tables["measurements"]["analyte"]) == {code}, name
