"""The small time-stamped tables: events (graded CRS / ICANS / death) and treatments (drug, dose)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.ingestion.checks import (
    RowChecks,
    TableOutcome,
    exact_duplicates,
    finish,
    patient_ids,
    settle,
    strip,
)
from pipeline.ingestion.text import arrow_trim, beyond_float32
from pipeline.ingestion.times import anchor_seconds, arrow_hours

_GRADES = [0, 1, 2, 3, 4, 5]


def _open_small_table(
    table: RawTable, patients: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, RowChecks, pd.Series, np.ndarray]:
    """Common first checks of the small time-stamped tables: duplicates, patient ids, times."""
    frame = table.frame
    duplicate = exact_duplicates(frame)
    checks = RowChecks(len(frame))
    checks.codes[duplicate] = -1  # excluded from every check; dropped and counted at the end
    known = pd.Index(patients["patient_id"].to_numpy(dtype=object))
    ids = patient_ids(frame, checks, known)
    patient_row = known.get_indexer(ids.to_numpy(dtype=object)).astype(np.int64)
    hours = arrow_hours(
        table, arrow_trim(table.arrow.column("time")), patient_row, anchor_seconds(patients), checks
    )
    return frame, duplicate, checks, ids, hours


def _optional_text(frame: pd.DataFrame, column: str) -> pd.Series:
    return strip(frame[column]) if column in frame.columns else pd.Series([None] * len(frame), dtype="str")


def validate_events(table: RawTable, patients: pd.DataFrame) -> TableOutcome:
    """Accepted events (upper-case event, integer grade 0-5, hours) and the quarantine."""
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    event = strip(frame["event"]).str.upper()
    grade_text = strip(frame["grade"])
    checks.flag((event.isna() | grade_text.isna()).to_numpy(), "missing_value", "event or grade is empty")
    grade = pd.to_numeric(grade_text, errors="coerce").to_numpy(dtype=float)
    checks.flag(~np.isin(grade, _GRADES), "invalid_grade", "grade is not an integer 0-5")
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "e": event.to_numpy(dtype=object), "h": hours})
    kept, good, dropped = settle(
        checks, duplicate, keys, pd.DataFrame({"g": grade}), "same patient, event and time with a different grade",
        checks.codes == 0,
    )
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "event": pd.array(event.to_numpy(dtype=object)[good], dtype="string"),
            "grade": grade[good].astype(np.int8),
            "hours_since_anchor": hours[good],
        }
    ).sort_values(["patient_id", "hours_since_anchor", "event"], kind="stable")
    return finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def validate_treatments(table: RawTable, patients: pd.DataFrame) -> TableOutcome:
    """Accepted treatments (lower-case drug, dose as a number, unit as given, hours) and the quarantine."""
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    drug = strip(frame["drug"]).str.lower()
    checks.flag(drug.isna().to_numpy(), "missing_value", "drug is empty")
    dose_text = _optional_text(frame, "dose")
    dose = pd.to_numeric(dose_text, errors="coerce").to_numpy(dtype=float)
    checks.flag((dose_text.notna().to_numpy() & np.isnan(dose)), "unparseable_value", "dose is not a number")
    checks.flag(beyond_float32(dose), "non_finite_value", "dose is infinite or beyond the float32 range")
    with np.errstate(invalid="ignore"):
        checks.flag(dose < 0, "out_of_range", "dose is negative")
    unit = _optional_text(frame, "unit")
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "h": hours, "d": drug.to_numpy(dtype=object)})
    payload = pd.DataFrame({"dose": dose, "u": unit.to_numpy(dtype=object)})
    kept, good, dropped = settle(
        checks, duplicate, keys, payload, "same patient, time and drug with a different dose", checks.codes == 0
    )
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "hours_since_anchor": hours[good],
            "drug": pd.array(drug.to_numpy(dtype=object)[good], dtype="string"),
            "dose": dose[good],
            "unit": pd.array(unit.to_numpy(dtype=object)[good], dtype="string"),
        }
    ).sort_values(["patient_id", "hours_since_anchor", "drug"], kind="stable")
    return finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def empty_treatments() -> pd.DataFrame:
    """The accepted treatments table of a cohort without a treatments file."""
    return pd.DataFrame(
        {
            "patient_id": pd.array([], dtype="string"),
            "hours_since_anchor": np.zeros(0),
            "drug": pd.array([], dtype="string"),
            "dose": np.zeros(0),
            "unit": pd.array([], dtype="string"),
        }
    )
