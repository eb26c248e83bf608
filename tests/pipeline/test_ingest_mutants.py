"""Ingest row validation on small hand-built cohorts, written to kill surviving mutants (issue 16).

Each test states, line by line, what a human expects: the reason and detail of each quarantined line,
the accepted rows and their converted values, and the counts in the report. Times are numbers of hours
(no anchors needed) unless a test is about anchors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import cohort
from pipeline.ingestion import UNKNOWN_PATIENT_DETAIL, IngestResult, ingest_tables
from pipeline.registry import load_registry
from tests.pipeline.test_ingest import in_memory

MEASUREMENT_COLUMNS = ["patient_id", "time", "analyte", "value", "unit"]
EVENT_COLUMNS = ["patient_id", "event", "grade", "time"]
CONFLICT_DETAIL = "same patient, time and analyte with a different value"


def _ingest(
    measurements: list[tuple],
    patients: list[tuple] = (("A", "50"), ("B", "61")),
    patient_columns: tuple[str, ...] = ("patient_id", "age"),
    events: list[tuple] = (("A", "CRS", "1", "3"),),
    treatments: list[tuple] | None = None,
) -> IngestResult:
    raw = {
        "patients": in_memory(cohort.PATIENTS, list(patient_columns), list(patients)),
        "measurements": in_memory(cohort.MEASUREMENTS, MEASUREMENT_COLUMNS, measurements),
        "events": in_memory(cohort.EVENTS, EVENT_COLUMNS, list(events)),
    }
    if treatments is not None:
        raw["treatments"] = in_memory(cohort.TREATMENTS, ["patient_id", "time", "drug", "dose", "unit"], treatments)
    return ingest_tables(raw)


def _lines(result: IngestResult, table: str) -> dict[int, tuple[str, str]]:
    """Quarantined line of ``table`` -> (reason, detail)."""
    q = result.quarantine[result.quarantine["source_file"] == f"{table}.csv"]
    return {int(line): (reason, detail) for line, reason, detail in q[["source_line", "reason", "detail"]].values}


def _cells(frame: pd.DataFrame) -> list[list]:
    """Rows as lists, a missing cell (NaN in a pandas string column) as None."""
    return [[None if pd.isna(x) else x for x in row] for row in frame.values.tolist()]


def _accepted(result: IngestResult) -> list[list]:
    m = result.tables["measurements"]
    return m[["patient_id", "hours_since_anchor", "analyte", "value", "unit", "censoring"]].values.tolist()


# ----------------------------------------------------------------------------------------------
# Reason and detail of each quarantined measurement line (quarantine.csv is read by people).
# ----------------------------------------------------------------------------------------------


def test_each_measurement_line_has_its_reason_and_detail():
    result = _ingest(
        [
            ("", "1", "CRP", "3", "mg/L"),                  # line 2
            ("ZZ", "1", "CRP", "3", "mg/L"),                # line 3
            ("A", "1", " ", "3", "mg/L"),                   # line 4
            ("A", "2", "CRP", "NA", "mg/L"),                # line 5
            ("A", "3", "CRP", "high", "mg/L"),              # line 6
            ("A", "4", "CRP", "1e39", "mg/L"),              # line 7: beyond float32
            ("A", "5", "CRP", "3", "furlongs"),             # line 8
            ("A", "6", "C-reactive protein", "3", ""),      # line 9: a known analyte needs a unit
            ("A", "7", "CRP", "150", "mg/dL"),              # line 10: 1500 mg/L, above the maximum 1000
            ("A", "8", "CRP", "3", "mg/L"),                 # line 11: conflicts with line 12
            ("A", "8", "CRP", "4", "mg/L"),                 # line 12
            ("A", "9", "CRP", "2", "mg/L"),                 # line 13: accepted
        ]
    )
    assert _lines(result, "measurements") == {
        2: ("missing_patient_id", "patient_id is empty"),
        3: ("unknown_patient", UNKNOWN_PATIENT_DETAIL),
        4: ("missing_value", "analyte is empty"),
        5: ("missing_value", "value is empty"),
        6: ("unparseable_value", "value is not a number or censored number"),
        7: ("non_finite_value", "value is infinite or beyond the float32 range"),
        8: ("unknown_unit", "unit 'furlongs' has no conversion for CRP"),
        9: ("unknown_unit", "unit '' has no conversion for C-reactive protein"),
        10: ("out_of_range", "1500 mg/L outside plausible range [0, 1000]"),
        11: ("conflicting_duplicate", CONFLICT_DETAIL),
        12: ("conflicting_duplicate", CONFLICT_DETAIL),
    }
    assert _accepted(result) == [["A", 9.0, "CRP", 2.0, "mg/L", "none"]]
    counts = result.report["files"]["measurements"]
    assert (counts["rows_read"], counts["rows_accepted"], counts["rows_quarantined"]) == (12, 1, 11)
    assert counts["quarantine_by_reason"] == {
        "missing_patient_id": 1, "unknown_patient": 1, "missing_value": 2, "unparseable_value": 1,
        "non_finite_value": 1, "unknown_unit": 2, "out_of_range": 1, "conflicting_duplicate": 2,
    }


def test_plausible_range_bounds_are_inclusive_after_conversion():
    """CRP is plausible in [0, 1000] mg/L: both bounds are accepted, just outside them is not."""
    result = _ingest(
        [
            ("A", "1", "CRP", "0", "mg/L"),        # line 2: the minimum
            ("A", "2", "CRP", "1000", "mg/L"),     # line 3: the maximum
            ("A", "3", "CRP", "100", "mg/dL"),     # line 4: 1000 mg/L after conversion
            ("A", "4", "CRP", "1000.5", "mg/L"),   # line 5: just above
            ("A", "5", "CRP", "-0.5", "mg/L"),     # line 6: just below
        ]
    )
    assert [row[3] for row in _accepted(result)] == [0.0, 1000.0, 1000.0]
    assert _lines(result, "measurements") == {
        5: ("out_of_range", "1000.5 mg/L outside plausible range [0, 1000]"),
        6: ("out_of_range", "-0.5 mg/L outside plausible range [0, 1000]"),
    }


# ----------------------------------------------------------------------------------------------
# Repeats: same patient, time and analyte.
# ----------------------------------------------------------------------------------------------


def test_different_analytes_at_the_same_time_are_not_repeats():
    """Known and unknown analytes measured together are separate results, whatever their registry position."""
    last = load_registry().analytes.iloc[-1]  # the last registry code (its index is len(codes) - 1)
    result = _ingest(
        [
            ("A", "1", "C-reactive protein", "3", "mg/L"),          # name 0 -> CRP, the first registry code
            ("A", "1", "Troponin I", "0.5", ""),                    # name 1: unknown, no unit
            ("A", "1", last.name, str(last.plausible_min), last.canonical_unit),  # name 2: the last code
            ("A", "1", "KL-6", "300", "U/mL"),                      # name 3: unknown
            ("A", "1", "IL-6", "12", "pg/mL"),                      # name 4 -> IL6
            ("B", "1", "Troponin I", "0.7", "ng/mL"),               # another patient
        ]
    )
    assert result.quarantine.empty
    assert result.report["duplicates_dropped"] == 0
    m = result.tables["measurements"]
    assert m["analyte"].tolist() == ["CRP", "Troponin I", last.name, "KL-6", "IL6", "Troponin I"]
    assert _cells(m[["unit"]]) == [["mg/L"], [None], [last.canonical_unit], ["U/mL"], ["pg/mL"], ["ng/mL"]]
    assert m["known_analyte"].tolist() == [True, False, True, False, True, False]
    assert m["value"].tolist() == [3.0, 0.5, float(last.plausible_min), 300.0, 12.0, 0.7]
    assert m["patient_id"].tolist() == ["A"] * 5 + ["B"]


def test_censoring_is_part_of_the_value_when_settling_repeats():
    result = _ingest(
        [
            ("A", "1", "CRP", "<5", "mg/L"),   # line 2: below 5 ...
            ("A", "1", "CRP", "5", "mg/L"),    # line 3: ... is not 5: a conflict
            ("A", "2", "CRP", ">5", "mg/L"),   # line 4: the same bound and censoring twice: kept once
            ("A", "2", "CRP", "> 5", "mg/L"),  # line 5
        ]
    )
    assert _lines(result, "measurements") == {
        2: ("conflicting_duplicate", CONFLICT_DETAIL),
        3: ("conflicting_duplicate", CONFLICT_DETAIL),
    }
    assert _accepted(result) == [["A", 2.0, "CRP", 5.0, "mg/L", "right"]]
    assert result.report["duplicates_dropped"] == 1


def test_hour_zero_and_minus_zero_are_the_same_time():
    result = _ingest(
        [
            ("A", "0", "CRP", "3", "mg/L"),    # line 2
            ("A", "-0", "CRP", "4", "mg/L"),   # line 3: same time, another value
            ("A", "0.0", "IL-6", "7", "pg/mL"),  # line 4
            ("A", "-0", "IL6", "7", "pg/mL"),    # line 5: same time and value: kept once
        ]
    )
    assert _lines(result, "measurements") == {
        2: ("conflicting_duplicate", CONFLICT_DETAIL),
        3: ("conflicting_duplicate", CONFLICT_DETAIL),
    }
    assert [row[2:4] for row in _accepted(result)] == [["IL6", 7.0]]
    assert result.report["duplicates_dropped"] == 1


def test_same_treatment_spelled_differently_is_kept_once():
    result = _ingest(
        [("A", "1", "CRP", "3", "mg/L")],
        treatments=[
            ("A", "30", "Tocilizumab", "8", "mg/kg"),     # line 2: accepted
            ("A", "30", "tocilizumab ", "8.0", "mg/kg"),  # line 3: the same dose: dropped as a repeat
            ("A", "31", "dexamethasone", "10", "mg"),     # line 4: conflicts with line 5
            ("A", "31", "Dexamethasone", "10", "mg/kg"),  # line 5
        ],
    )
    treatments = result.tables["treatments"]
    assert treatments[["drug", "dose", "unit", "hours_since_anchor"]].values.tolist() == [
        ["tocilizumab", 8.0, "mg/kg", 30.0]
    ]
    detail = "same patient, time and drug with a different dose"
    assert _lines(result, "treatments") == {4: ("conflicting_duplicate", detail), 5: ("conflicting_duplicate", detail)}
    counts = result.report["files"]["treatments"]
    assert (counts["rows_read"], counts["rows_accepted"], counts["rows_quarantined"], counts["duplicates_dropped"]) == (
        4, 1, 2, 1
    )


# ----------------------------------------------------------------------------------------------
# What was normalised: counts per code, conversion and synonym, summed over (name, unit) pairs.
# ----------------------------------------------------------------------------------------------


def test_normalisation_report_sums_over_names_and_units():
    result = _ingest(
        [
            ("A", "1", "CRP", "3", "mg/L"),          # canonical name and unit
            ("A", "2", "CRP", "4", "mg/L"),
            ("B", "1", "CRP", "5", "mg/L"),
            ("A", "3", "CRP", "0.5", "mg/dL"),       # converted: 5 mg/L
            ("B", "2", "hsCRP", "0.6", "mg/dL"),     # synonym and converted: 6 mg/L
            ("B", "3", "hsCRP", "7", "mg/L"),        # synonym
            ("A", "4", "Troponin I", "0.5", "ng/mL"),  # unknown, in two units
            ("B", "4", "Troponin I", "500", "ng/L"),
            ("B", "5", "CRP", "-1", "mg/L"),         # quarantined: not counted below
        ]
    )
    report = result.report
    assert report["analytes_found"] == {"CRP": 6}
    assert report["unit_conversions"] == {"CRP: mg/dL -> mg/L": 2}
    assert report["synonyms_mapped"] == {"hsCRP -> CRP": 2}
    assert report["unknown_analytes"] == {"n_names": 1, "n_rows": 2}
    assert _accepted(result) == [
        ["A", 1.0, "CRP", 3.0, "mg/L", "none"],
        ["A", 2.0, "CRP", 4.0, "mg/L", "none"],
        ["A", 3.0, "CRP", 5.0, "mg/L", "none"],
        ["A", 4.0, "Troponin I", 0.5, "ng/mL", "none"],
        ["B", 1.0, "CRP", 5.0, "mg/L", "none"],
        ["B", 2.0, "CRP", 6.0, "mg/L", "none"],
        ["B", 3.0, "CRP", 7.0, "mg/L", "none"],
        ["B", 4.0, "Troponin I", 500.0, "ng/L", "none"],
    ]
    assert _lines(result, "measurements") == {10: ("out_of_range", "-1 mg/L outside plausible range [0, 1000]")}


# ----------------------------------------------------------------------------------------------
# Patient ids of the small tables, and a cohort whose every patient is quarantined.
# ----------------------------------------------------------------------------------------------


def test_blank_and_unknown_patient_ids_in_patients_and_events():
    result = _ingest(
        [("A", "1", "CRP", "3", "mg/L")],
        patients=[("A", "50"), ("  ", "61"), ("B", "")],
        events=[
            ("A", "CRS", "1", "3"),   # line 2: accepted
            (" ", "CRS", "2", "4"),   # line 3
            ("", "CRS", "2", "4"),    # line 4
            ("ZZ", "CRS", "2", "5"),  # line 5
        ],
    )
    assert _lines(result, "patients") == {3: ("missing_patient_id", "patient_id is empty")}
    assert _lines(result, "events") == {
        3: ("missing_patient_id", "patient_id is empty"),
        4: ("missing_patient_id", "patient_id is empty"),
        5: ("unknown_patient", UNKNOWN_PATIENT_DETAIL),
    }
    assert result.tables["patients"]["patient_id"].tolist() == ["A", "B"]
    assert result.tables["events"][["patient_id", "grade"]].values.tolist() == [["A", 1]]
    assert result.report["quarantine_by_reason"] == {"missing_patient_id": 3, "unknown_patient": 1}


def test_no_accepted_patient_quarantines_every_measurement():
    """Every patient has an unreadable anchor: a timestamped measurement with an empty id is still
    ``missing_patient_id``, the others ``unknown_patient``; nothing is accepted."""
    result = _ingest(
        [
            ("", "2024-01-01T06:00:00", "CRP", "3", "mg/L"),    # line 2
            ("P1", "2024-01-01T06:00:00", "CRP", "3", "mg/L"),  # line 3
        ],
        patients=[("P1", "garbage"), ("P2", "also garbage")],
        patient_columns=("patient_id", "anchor_time"),
        events=[("P1", "CRS", "1", "2024-01-02T00:00:00")],
    )
    assert _lines(result, "measurements") == {
        2: ("missing_patient_id", "patient_id is empty"),
        3: ("unknown_patient", UNKNOWN_PATIENT_DETAIL),
    }
    m = result.tables["measurements"]
    assert m.empty and result.report["patients"] == 0
    # Still the contract's schema (docs/CONTRACTS.md): text columns stay strings in an empty table.
    assert all(isinstance(m[c].dtype, pd.StringDtype) for c in ("patient_id", "analyte", "unit", "censoring"))


# ----------------------------------------------------------------------------------------------
# The quarantine frame of the whole cohort: one row per line, meta columns first.
# ----------------------------------------------------------------------------------------------


def test_quarantine_frame_is_numbered_and_its_meta_columns_come_first():
    ages = [(f"P{i}", str(50 + i)) for i in range(12)]
    result = _ingest(
        [("P1", "1", "CRP", "-3", "mg/L"), ("P2", "1", "CRP", "x", "mg/L"), ("P3", "1", "CRP", "4", "mg/L")],
        patients=[*ages, ("P12", "unknown"), ("", "40")],
        events=[("P1", "CRS", "9", "3"), ("P1", "CRS", "1", "3")],
    )
    q = result.quarantine
    assert list(q.columns[:5]) == ["source_file", "source_line", "reason", "detail", "source_column"]
    assert isinstance(q.index, pd.RangeIndex) and q.index.tolist() == list(range(5))
    assert _cells(q[["source_file", "source_line", "reason", "source_column"]]) == [
        ["patients.csv", 15, "missing_patient_id", None],
        ["measurements.csv", 2, "out_of_range", None],
        ["measurements.csv", 3, "unparseable_value", None],
        ["events.csv", 2, "invalid_grade", None],
        ["patients.csv", 14, "unparseable_value", "age"],
    ]
    assert result.report["rows_quarantined"] == 4 and result.report["cells_quarantined"] == 1
    assert np.isnan(result.tables["patients"].set_index("patient_id").loc["P12", "age"])


@pytest.mark.parametrize("blank", ["", "   "])
def test_unknown_analyte_without_unit_keeps_a_null_unit(blank):
    result = _ingest([("A", "1", "KL-6", "300", blank), ("A", "2", "CRP", "3", "mg/L")])
    m = result.tables["measurements"]
    assert _cells(m[["analyte", "unit", "known_analyte"]]) == [["KL-6", None, False], ["CRP", "mg/L", True]]
    assert result.quarantine.empty
