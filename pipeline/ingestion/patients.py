"""The patients table: one row per patient, an optional ``anchor_time``, covariates typed by content."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.ingestion.checks import RowChecks, TableOutcome, exact_duplicates, finish, patient_ids, strip

_ID_COLUMNS = ("patient_id", "anchor_time")
#: A text covariate with at least this share of numbers is probably a number column with stray words.
_MOSTLY_NUMERIC = 0.9


def _parse_anchor(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)


def _check_patients(frame: pd.DataFrame, duplicate: np.ndarray) -> tuple[RowChecks, pd.Series]:
    """Reason per row (missing id, unparseable anchor, one id given twice with different fields)."""
    checks = RowChecks(len(frame))
    checks.codes[duplicate] = -1  # dropped and counted, never checked or quarantined
    ids = patient_ids(frame, checks, None)
    if "anchor_time" in frame.columns:
        anchor_text = strip(frame["anchor_time"])
        anchors = _parse_anchor(anchor_text)
        checks.flag((anchor_text.notna() & anchors.isna()).to_numpy(), "bad_time", "anchor_time is not ISO 8601")
    repeated = np.zeros(len(frame), dtype=bool)
    repeated[~duplicate] = ids[~duplicate].duplicated(keep=False).to_numpy()
    checks.flag(repeated & ids.notna().to_numpy(), "conflicting_duplicate", "patient_id given twice with different fields")
    checks.codes[duplicate] = 0
    return checks, ids


def _stray_word_warning(table: RawTable, column: str, text: pd.Series, numbers: pd.Series) -> str:
    odd = text[text.notna() & numbers.isna()]
    line = int(table.line_numbers(np.array([odd.index[0]]))[0])
    return (
        f"{table.path}: column '{column}' read as text because {len(odd)} of {int(text.notna().sum())} values are not "
        f"numbers (e.g. '{odd.iloc[0]}' on line {line}); fix or blank them to use it as a number"
    )


def _type_covariates(table: RawTable, accepted: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """Convert each covariate of ``accepted`` in place: numeric when every non-empty value parses as a
    number, text otherwise. Returns the types and a warning per almost-numeric text column."""
    covariate_types: dict[str, str] = {}
    warnings: list[str] = []
    for column in accepted.columns:
        if column in _ID_COLUMNS:
            continue
        text = strip(accepted[column])
        numbers = pd.to_numeric(text, errors="coerce")
        n_text, n_numbers = int(text.notna().sum()), int(numbers.notna().sum())
        if n_text and n_numbers == n_text:
            accepted[column] = numbers.astype("float64")
            covariate_types[column] = "numeric"
            continue
        accepted[column] = text.astype("string")
        covariate_types[column] = "text"
        if n_text and n_numbers >= _MOSTLY_NUMERIC * n_text:
            # Almost all numbers: a stray word (e.g. "unknown") would turn an age into categories.
            warnings.append(_stray_word_warning(table, column, text, numbers))
    return covariate_types, warnings


def validate_patients(table: RawTable) -> TableOutcome:
    """Accepted patients (sorted by id, anchor as UTC timestamp, covariates typed) and the quarantine."""
    frame = table.frame
    duplicate = exact_duplicates(frame)
    checks, ids = _check_patients(frame, duplicate)
    kept = ~duplicate
    good = kept & checks.ok
    accepted = frame[good].copy()
    accepted["patient_id"] = ids[good]
    if "anchor_time" in accepted.columns:
        accepted["anchor_time"] = _parse_anchor(strip(accepted["anchor_time"]))
    covariate_types, warnings = _type_covariates(table, accepted)
    accepted["patient_id"] = accepted["patient_id"].astype("string")
    accepted = accepted.sort_values("patient_id", kind="stable").reset_index(drop=True)
    extra = {"covariate_types": covariate_types, "warnings": warnings}
    return finish(table, kept, checks, accepted, int(duplicate.sum()), extra)
