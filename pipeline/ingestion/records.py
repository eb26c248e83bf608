"""The small time-stamped tables: events (graded CRS / ICANS / death) and treatments (drug, dose, course end)."""

from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.adapters.canonical import RawTable
from pipeline.errors import UserError
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
from pipeline.ingestion.times import anchor_seconds, arrow_hours, present_times
from pipeline.registry import drug_synonyms, event_synonyms, normalize_name

_GRADES = [0, 1, 2, 3, 4, 5]
_ROMAN = {"0": 0, "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5}
#: "Grade 3", "grade III", "G3", "Gr. 3", "gr3", "3", "3.0": the prefix is dropped, Roman numerals read.
_GRADE_PREFIX = re.compile(r"^(?:grade|gr\.?|g)\s*", re.IGNORECASE)
_PARENTHESES = re.compile(r"^(?P<outer>[^()]*?)\s*\((?P<inner>[^()]*)\)\s*$")


def parse_grades(text: pd.Series) -> np.ndarray:
    """Grades as numbers (NaN when unreadable): digits, Roman numerals, with or without a "Grade"/"G"
    prefix. Only integers 0-5 are valid grades (checked by the caller)."""
    bare = text.str.strip().str.replace(_GRADE_PREFIX, "", regex=True).str.lower()
    roman = bare.map(_ROMAN).astype(float)
    return roman.fillna(pd.to_numeric(bare, errors="coerce")).to_numpy(dtype=float)


def lookup_name(name: str, synonyms: dict, key=lambda norm: norm) -> str | None:
    """``name`` through ``synonyms`` (normalised; for "a (b)" also a, then b), or None if not listed.
    ``key`` builds the dictionary key from the normalised text."""
    match = _PARENTHESES.match(name)
    for candidate in (name, *(match.group("outer", "inner") if match else ())):
        found = synonyms.get(key(normalize_name(candidate)))
        if found is not None:
            return found
    return None


def canonical_names(text: pd.Series, synonyms: dict[str, str], otherwise: str) -> pd.Series:
    """Each distinct name through ``synonyms`` (normalised; for "a (b)" also a, then b); a name not in
    the table is kept, ``otherwise`` = "upper" or "lower" cased as before."""

    def one(name: str) -> str:
        found = lookup_name(name, synonyms)
        if found is not None:
            return found
        return name.upper() if otherwise == "upper" else name.lower()

    uniques = text.dropna().unique()
    return text.map({u: one(u) for u in uniques})


def _open_small_table(
    table: RawTable, patients: pd.DataFrame, day_end: bool = True
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
        table, arrow_trim(table.arrow.column("time")), patient_row, anchor_seconds(patients), checks, day_end
    )
    return frame, duplicate, checks, ids, hours


def _optional_text(frame: pd.DataFrame, column: str) -> pd.Series:
    return strip(frame[column]) if column in frame.columns else pd.Series([None] * len(frame), dtype="str")


def validate_events(table: RawTable, patients: pd.DataFrame) -> TableOutcome:
    """Accepted events (canonical event via ``events.csv``, else upper case; integer grade 0-5 written
    as ``3``, ``Grade 3``, ``G3`` or ``grade III``; hours) and the quarantine."""
    # A date-only onset is the start of its day: the earliest it can have begun (no at-risk time after it).
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients, day_end=False)
    event = canonical_names(strip(frame["event"]), event_synonyms(), "upper")
    grade_text = strip(frame["grade"])
    checks.flag((event.isna() | grade_text.isna()).to_numpy(), "missing_value", "event or grade is empty")
    grade = parse_grades(grade_text)
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


def _end_hours(
    table: RawTable, frame: pd.DataFrame, patients: pd.DataFrame, ids: pd.Series, checks: RowChecks
) -> np.ndarray:
    """Hours since anchor of the optional ``end_time`` (NaN when absent or empty; same forms as ``time``,
    decided for the column on its own). Unreadable ones are flagged ``bad_time``."""
    end = np.full(len(frame), np.nan)
    if "end_time" not in frame.columns:
        return end
    column = table.arrow.column("end_time")
    present = np.flatnonzero(present_times(column))
    if present.size == 0:
        return end
    known = pd.Index(patients["patient_id"].to_numpy(dtype=object))
    patient_row = known.get_indexer(ids.to_numpy(dtype=object)[present]).astype(np.int64)
    scratch = RowChecks(present.size)
    try:
        end[present] = arrow_hours(
            table, arrow_trim(column.take(pa.array(present))), patient_row, anchor_seconds(patients), scratch
        )
    except UserError:
        raise UserError(
            f"{table.path}: column 'end_time' holds timestamps but the patients table has no 'anchor_time' column"
        ) from None
    bad = np.zeros(len(frame), dtype=bool)
    bad[present[scratch.codes != 0]] = True
    end[bad] = np.nan
    checks.flag(bad, "bad_time", "end_time is not a time (hours since anchor or ISO 8601 with anchor_time)")
    return end


def validate_treatments(table: RawTable, patients: pd.DataFrame) -> TableOutcome:
    """Accepted treatments (canonical generic drug via ``drugs.csv``, else lower case; dose as a number,
    unit as given, hours; ``end_hours_since_anchor`` from the optional ``end_time``, NaN without one)
    and the quarantine."""
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    end = _end_hours(table, frame, patients, ids, checks)
    drug = canonical_names(strip(frame["drug"]), drug_synonyms(), "lower")
    checks.flag(drug.isna().to_numpy(), "missing_value", "drug is empty")
    dose_text = _optional_text(frame, "dose")
    dose = pd.to_numeric(dose_text, errors="coerce").to_numpy(dtype=float)
    checks.flag((dose_text.notna().to_numpy() & np.isnan(dose)), "unparseable_value", "dose is not a number")
    checks.flag(beyond_float32(dose), "non_finite_value", "dose is infinite or beyond the float32 range")
    with np.errstate(invalid="ignore"):
        checks.flag(dose < 0, "out_of_range", "dose is negative")
        checks.flag(end < hours, "out_of_range", "end_time before time")
    unit = _optional_text(frame, "unit")
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "h": hours, "d": drug.to_numpy(dtype=object)})
    payload = pd.DataFrame({"dose": dose, "u": unit.to_numpy(dtype=object)})
    message = "same patient, time and drug with a different dose"
    if "end_time" in frame.columns:
        payload["end"] = end
        message += " or end_time"
    kept, good, dropped = settle(checks, duplicate, keys, payload, message, checks.codes == 0)
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "hours_since_anchor": hours[good],
            "drug": pd.array(drug.to_numpy(dtype=object)[good], dtype="string"),
            "dose": dose[good],
            "unit": pd.array(unit.to_numpy(dtype=object)[good], dtype="string"),
            "end_hours_since_anchor": end[good],
        }
    ).sort_values(["patient_id", "hours_since_anchor", "drug"], kind="stable")
    return finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def empty_events() -> pd.DataFrame:
    """The accepted events table of a cohort without an events file (``cohort.grades: derive``)."""
    return pd.DataFrame({
        "patient_id": pd.array([], dtype="string"),
        "event": pd.array([], dtype="string"),
        "grade": np.zeros(0, np.int8),
        "hours_since_anchor": np.zeros(0),
    })


def empty_treatments() -> pd.DataFrame:
    """The accepted treatments table of a cohort without a treatments file (a new frame each
    call; copy-on-write keeps the template empty)."""
    return _empty_treatments().copy(deep=False)


@functools.cache
def _empty_treatments() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.array([], dtype="string"),
            "hours_since_anchor": np.zeros(0),
            "drug": pd.array([], dtype="string"),
            "dose": np.zeros(0),
            "unit": pd.array([], dtype="string"),
            "end_hours_since_anchor": np.zeros(0),
        }
    )
