"""The canonical cohort contract: which tables a cohort directory holds and their columns.

This is the format users bring their own data in (documented in the README). Table specs are data:
ingest reads them to check required columns and to know which fields identify a record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    name: str
    required_columns: tuple[str, ...]
    optional_columns: tuple[str, ...] = ()
    #: A missing file is an error only for required tables.
    required: bool = True
    #: Fields that identify one record: rows equal on these but different elsewhere conflict.
    record_key: tuple[str, ...] = ()


PATIENTS = TableSpec(
    name="patients",
    required_columns=("patient_id",),
    optional_columns=("anchor_time",),
    record_key=("patient_id",),
)
MEASUREMENTS = TableSpec(
    name="measurements",
    required_columns=("patient_id", "time", "analyte", "value", "unit"),
    record_key=("patient_id", "hours_since_anchor", "analyte"),
)
EVENTS = TableSpec(
    name="events",
    required_columns=("patient_id", "event", "grade", "time"),
    record_key=("patient_id", "event", "hours_since_anchor"),
)
TREATMENTS = TableSpec(
    name="treatments",
    required_columns=("patient_id", "time", "drug"),
    optional_columns=("dose", "unit"),
    required=False,
    record_key=("patient_id", "hours_since_anchor", "drug"),
)

TABLES: tuple[TableSpec, ...] = (PATIENTS, MEASUREMENTS, EVENTS, TREATMENTS)

#: Quarantine reason codes, in the order they are checked (a row gets the first that applies).
REASONS: tuple[str, ...] = (
    "missing_patient_id",
    "unknown_patient",
    "bad_time",
    "missing_value",
    "unparseable_value",
    "unknown_unit",
    "out_of_range",
    "invalid_grade",
    "conflicting_duplicate",
)

#: Value texts read as "no result" rather than as unparseable text.
MISSING_VALUE_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "nan", "null", "none", "."})
