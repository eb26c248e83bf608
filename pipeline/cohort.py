"""The canonical cohort contract: which tables a cohort directory holds and their columns.

This is the format users bring their own data in (documented in the README). Table specs are data:
the canonical adapter reads them to find the files and check their required columns. This module is a
leaf: it imports nothing from the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class TableSpec:
    name: str
    required_columns: tuple[str, ...]
    #: A missing file is an error only for required tables.
    required: bool = True


PATIENTS = TableSpec(
    name="patients",
    required_columns=("patient_id",),
)
MEASUREMENTS = TableSpec(
    name="measurements",
    required_columns=("patient_id", "time", "analyte", "value", "unit"),
)
EVENTS = TableSpec(
    name="events",
    required_columns=("patient_id", "event", "grade", "time"),
)
TREATMENTS = TableSpec(
    name="treatments",
    required_columns=("patient_id", "time", "drug"),
    required=False,
)

#: Bedside observations that are words or scores, not measurements (oxygen device, level of consciousness,
#: ICE score...): items and terms in ``pipeline/registry/observation_items.csv`` and ``observations.csv``.
OBSERVATIONS = TableSpec(
    name="observations",
    required_columns=("patient_id", "time", "item", "value"),
    required=False,
)

TABLES: tuple[TableSpec, ...] = (PATIENTS, MEASUREMENTS, EVENTS, TREATMENTS, OBSERVATIONS)

#: Quarantine reason codes, in the order they are checked (a row gets the first that applies).
REASONS: tuple[str, ...] = (
    "missing_patient_id",
    "unknown_patient",
    "bad_time",
    "missing_value",
    "unparseable_value",
    "non_finite_value",
    "unknown_unit",
    "unknown_term",
    "out_of_range",
    "invalid_grade",
    "conflicting_duplicate",
)

#: Value texts read as "no result" rather than as unparseable text.
MISSING_VALUE_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "nan", "null", "none", "."})


def is_missing_value(value: Any) -> bool:
    """None, NA, NaT or float NaN (an empty cell, whatever the column's dtype)."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
