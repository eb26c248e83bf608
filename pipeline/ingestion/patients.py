"""The patients table: one row per patient, an optional ``anchor_time``, covariates typed by content.

A bad covariate cell (``age=unknown`` in a number column, ``age=inf`` or ``1e400``) never costs the
patient, and never turns the column into text: the cell is blanked and reported as a *cell* quarantine
row (the patient's fields, file, line, ``source_column`` and reason), counted in ``cells_quarantined``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import MISSING_VALUE_TOKENS
from pipeline.ingestion.checks import (
    RowChecks,
    TableOutcome,
    exact_duplicates,
    finish,
    patient_ids,
    quarantine_rows,
    strip,
)
from pipeline.ingestion.text import INFINITY, NUMBER, beyond_float32

#: Optional patients column: the end of each patient's follow-up (hours since anchor, or ISO 8601 with
#: ``anchor_time``); accepted as ``follow_up_end_hours``. Labels are censored after it (docs/features.md).
FOLLOW_UP_END = "follow_up_end"
#: Optional patients column: when lymphodepletion started (same forms); published scores take their
#: baseline before it when it is known (CAR-HEMATOTOX, EASIX: docs/features.md).
LYMPHODEPLETION_START = "lymphodepletion_start"
#: Patient time columns -> their accepted hours-since-anchor column.
PATIENT_TIMES = {FOLLOW_UP_END: "follow_up_end_hours", LYMPHODEPLETION_START: "lymphodepletion_start_hours"}
#: Set by SDTM / OMOP adapters on every row (the source table): bookkeeping, never a covariate.
SOURCE_TABLE = "source_table"
_ID_COLUMNS = ("patient_id", "anchor_time", SOURCE_TABLE, *PATIENT_TIMES, *PATIENT_TIMES.values())
#: A covariate is numeric when at least this share of its non-empty values are numbers (or a single
#: value is not, whatever the share): a stray word must not turn an age into categories.
_MOSTLY_NUMERIC = 0.9
# ASCII digits only: Python's \d also matches Arabic-Indic and other digits that no number parser reads.
_NUMBER_LIKE = re.compile(f"(?:{NUMBER}|{INFINITY})", re.ASCII)
#: Detail text per cell reason (the value itself is never quoted: it may be anything).
_CELL_DETAIL = {
    "unparseable_value": "not a number in a numeric column: blanked, the patient is kept",
    "non_finite_value": "infinite or beyond the float32 range: blanked, the patient is kept",
}


def _parse_anchor(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)


#: A date alone in a patient time column: the end of follow-up is the end of its day (followed through
#: it); lymphodepletion starts at the start of its day (values from that day are not "before" it).
_DATE_ONLY_AT_DAY_END = {FOLLOW_UP_END: True, LYMPHODEPLETION_START: False}


def _time_hours(frame: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """(text, hours since anchor) of a patient time column: a number of hours, or an ISO 8601 time minus
    the patient's ``anchor_time`` (NaN where unreadable or without an anchor)."""
    text = strip(frame[column])
    hours = pd.to_numeric(text, errors="coerce").astype("float64")
    if "anchor_time" in frame.columns:
        stamps = _parse_anchor(text)
        if _DATE_ONLY_AT_DAY_END[column]:
            date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False).astype(bool)
            stamps = stamps + pd.to_timedelta(date_only.astype(int) * 86_399, unit="s")
        anchors = _parse_anchor(strip(frame["anchor_time"]))
        hours = hours.fillna((stamps - anchors).dt.total_seconds() / 3600.0)
    return text, hours


def _check_patients(frame: pd.DataFrame, duplicate: np.ndarray) -> tuple[RowChecks, pd.Series, pd.Series | None]:
    """Reason per row (missing id, unparseable anchor, one id given twice with different fields), the
    trimmed ids and the parsed anchors (None without the column)."""
    checks = RowChecks(len(frame))
    checks.codes[duplicate] = -1  # dropped and counted, never checked or quarantined
    ids = patient_ids(frame, checks, None)
    anchors = None
    if "anchor_time" in frame.columns:
        anchor_text = strip(frame["anchor_time"])
        anchors = _parse_anchor(anchor_text)
        checks.flag(anchor_text.notna().to_numpy() & anchors.isna().to_numpy(), "bad_time", "anchor_time is not ISO 8601")
    for column in PATIENT_TIMES:
        if column in frame.columns:
            text, hours = _time_hours(frame, column)
            checks.flag((text.notna() & hours.isna()).to_numpy(), "bad_time",
                        f"{column} is neither hours since anchor nor an ISO 8601 time with anchor_time")
    repeated = np.zeros(len(frame), dtype=bool)
    if len(frame) > 1:  # one row (a new patient) repeats nothing
        repeated[~duplicate] = ids[~duplicate].duplicated(keep=False).to_numpy()
    checks.flag(repeated & ids.notna().to_numpy(), "conflicting_duplicate", "patient_id given twice with different fields")
    checks.codes[duplicate] = 0
    return checks, ids, anchors


def _covariate_text(series: pd.Series) -> pd.Series:
    """Trimmed text with empty values and "no result" tokens (``NA``, ``null``, ``.``) as missing."""
    text = strip(series)
    return text.where(~text.str.lower().isin(MISSING_VALUE_TOKENS), None)


#: Up to this many cells, :func:`_covariate_cells` cleans them one by one (same rules, no pandas calls).
_FEW_CELLS = 256


def _covariate_cells(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_covariate_text` of an object array of cells (still an object array; missing stays missing)
    and whether each cleaned cell looks like a number."""
    if len(cells) > _FEW_CELLS or not all(isinstance(v, str) or pd.isna(v) for v in cells):
        text = _covariate_text(pd.Series(cells, dtype=object))
        return text.to_numpy(dtype=object), text.str.fullmatch(_NUMBER_LIKE).fillna(False).astype(bool).to_numpy()
    text, like = cells.copy(), np.zeros(len(cells), dtype=bool)
    for i, value in enumerate(cells):
        if isinstance(value, str):
            value = value.strip()
            text[i] = None if value.lower() in MISSING_VALUE_TOKENS else value  # "" is a token too
            like[i] = text[i] is not None and _NUMBER_LIKE.fullmatch(value) is not None
    return text, like


def _is_numeric_column(n_present: int, n_number_like: int) -> bool:
    n_other = n_present - n_number_like
    return n_number_like > n_other and n_other <= max(1, int((1 - _MOSTLY_NUMERIC) * n_present))


def _cell_warning(table: RawTable, column: str, reasons: pd.Series, n_present: int) -> str:
    """Names the file, column, reasons, counts and first line; never the values (ingest.json is in git)."""
    bad = reasons.dropna()
    line = int(table.line_numbers(np.array([bad.index[0]]))[0])
    by_reason = ", ".join(f"{n} {r}" for r, n in bad.value_counts().sort_index().items())
    return (
        f"{table.path}: column '{column}': {len(bad)} of {n_present} values blanked ({by_reason}; first on line "
        f"{line}); the patients are kept, see quarantine.csv"
    )


def _text_column_warning(table: RawTable, column: str, text: pd.Series, number_like: pd.Series) -> str:
    odd = text[text.notna() & ~number_like]
    line = int(table.line_numbers(np.array([odd.index[0]]))[0])
    return (
        f"{table.path}: column '{column}' read as text because {len(odd)} of {int(text.notna().sum())} values are not "
        f"numbers (first on line {line}); fix or blank them to use it as a number"
    )


def _type_column(table: RawTable, accepted: pd.DataFrame, column: str, text: np.ndarray, number_like: np.ndarray
                 ) -> tuple[str, pd.Series | None, str | None]:
    """Convert one covariate in place from its cleaned ``text`` (object array, missing: None or NaN) and
    ``number_like`` flags. Returns its type, the reason per bad cell (numeric columns with bad cells,
    indexed like ``accepted``) and a warning, if any. Arrays, not Series: one new patient's row has ~10
    covariates, and pandas' per-call overhead per column dominated scoring it."""
    present = pd.notna(text)
    n_present, n_number_like = int(present.sum()), int(number_like.sum())
    if not (n_present and _is_numeric_column(n_present, n_number_like)):
        accepted[column] = pd.array(text, dtype="string")
        warning = None
        if n_present and n_number_like and n_number_like >= n_present - n_number_like:
            series = pd.Series(text, index=accepted.index, dtype=object)
            warning = _text_column_warning(table, column, series, pd.Series(number_like, index=accepted.index))
        return "text", None, warning
    values = pd.to_numeric(np.where(number_like, text, np.nan), errors="coerce").astype("float64")
    reason = np.full(len(values), None, dtype=object)
    reason[present & np.isnan(values)] = "unparseable_value"
    reason[beyond_float32(values)] = "non_finite_value"
    bad = reason != None  # noqa: E711 (element-wise)
    accepted[column] = np.where(bad, np.nan, values)  # blanked: NaN, as an empty cell would be
    if not bad.any():
        return "numeric", None, None
    reasons = pd.Series(reason, index=accepted.index)
    return "numeric", reasons[bad], _cell_warning(table, column, reasons, n_present)


def _cell_quarantine(table: RawTable, bad_cells: dict[str, pd.Series]) -> pd.DataFrame:
    """One quarantine row per blanked cell: the row's original fields, file, line, reason and ``source_column``."""
    if not bad_cells:
        return pd.DataFrame()
    cells = pd.concat(
        [pd.DataFrame({"row": s.index.to_numpy(), "reason": s.to_numpy(), "column": c}) for c, s in bad_cells.items()],
        ignore_index=True,
    ).sort_values(["row", "column"], kind="stable", ignore_index=True)
    details = (cells["column"] + ": " + cells["reason"].map(_CELL_DETAIL)).to_numpy(dtype=object)
    frame = quarantine_rows(table, cells["row"].to_numpy(), cells["reason"].to_numpy(dtype=object), details)
    return frame.assign(source_column=cells["column"].to_numpy(dtype=object))


def _type_covariates(table: RawTable, accepted: pd.DataFrame) -> tuple[dict[str, str], list[str], pd.DataFrame]:
    """Convert each covariate of ``accepted`` in place (numeric or text, decided per column). Returns the
    types, the warnings and the cell quarantine."""
    covariate_types: dict[str, str] = {}
    warnings: list[str] = []
    bad_cells: dict[str, pd.Series] = {}
    columns = [c for c in accepted.columns if c not in _ID_COLUMNS]
    # Every covariate cleaned in one pass over all cells (same element-wise rules): one new patient's
    # row has ~10 covariates, and pandas' per-call overhead per column dominated scoring it.
    n = len(accepted)
    if columns:
        text_all, like_all = _covariate_cells(np.concatenate([accepted[c].to_numpy(dtype=object) for c in columns]))
    for k, column in enumerate(columns):
        text, number_like = text_all[k * n:(k + 1) * n], like_all[k * n:(k + 1) * n]
        covariate_types[column], reasons, warning = _type_column(table, accepted, column, text, number_like)
        if reasons is not None:
            bad_cells[column] = reasons
        if warning:
            warnings.append(warning)
    return covariate_types, warnings, _cell_quarantine(table, bad_cells)


_STRING = pd.StringDtype()


def validate_patients(table: RawTable) -> TableOutcome:
    """Accepted patients (sorted by id, anchor as UTC timestamp, covariates typed) and the quarantine."""
    frame = table.frame
    duplicate = exact_duplicates(frame)
    checks, ids, anchors = _check_patients(frame, duplicate)
    kept = ~duplicate
    good = kept & checks.ok
    accepted = frame[good].copy()
    accepted["patient_id"] = ids[good]
    if SOURCE_TABLE in accepted.columns:
        accepted = accepted.drop(columns=[SOURCE_TABLE])
    for column, hours_column in PATIENT_TIMES.items():
        if column in accepted.columns:
            accepted[hours_column] = _time_hours(accepted, column)[1]
            accepted = accepted.drop(columns=column)
    if "anchor_time" in accepted.columns:
        # Parsed once when every row is kept (a subset may parse to another time resolution).
        every = anchors is not None and bool(good.all())
        accepted["anchor_time"] = anchors if every else _parse_anchor(strip(accepted["anchor_time"]))
    covariate_types, warnings, cells = _type_covariates(table, accepted)
    if accepted["patient_id"].dtype != _STRING:  # (a copy even when it is one already)
        accepted["patient_id"] = accepted["patient_id"].astype(_STRING)
    if len(accepted) > 1:
        accepted = accepted.sort_values("patient_id", kind="stable")
    accepted = accepted.reset_index(drop=True)
    extra = {"covariate_types": covariate_types, "warnings": warnings}
    outcome = finish(table, kept, checks, accepted, int(duplicate.sum()), extra)
    outcome.cells = cells
    return outcome
