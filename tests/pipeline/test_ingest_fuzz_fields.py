"""Issue 12: hostile text in every field of every table never crashes ingest.

Every row ends accepted, quarantined with a documented reason, or dropped as a duplicate (or the whole
cohort stops with one clean :class:`UserError` line); the counts reconcile; every accepted number is
finite and within float32 (what the model reads).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import cohort
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables
from pipeline.registry import load_registry
from tests.pipeline.test_ingest import in_memory

REGISTRY = load_registry()
FLOAT32_MAX = float(np.finfo(np.float32).max)
HOSTILE = [
    "", " ", "\x00", "a\x00b", "\u202eevil", "\u200f12", "\U0001d7d8", "\U0001f600", "=cmd|' /C calc'!A0", "+1", "@x",
    "inf", "-inf", "Infinity", "1e400", "-1e400", "1e39", "<1e400", ">=-0", "-0", "NaN", "NA", ".", "null",
    "1,5", "١٢", "0x10", "1_000", "x" * 5000, "P1", "P2", "CRS", "ICANS", "7", "IL6", "IL-6", "CRP", "Troponin",
    "mg/L", "pg/mL", "mg/dL", "3", "0", "24", "-12", "2.5", "2024-01-01T00:00:00", "2024-01-02T06:00:00+02:00",
    "2024-13-45T99:00:00", "tocilizumab",
]
FIELD = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),  # any unicode, no lone surrogates
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.none(),
)
TABLES = {
    "patients": (cohort.PATIENTS, ["patient_id", "anchor_time", "age", "name"]),
    "measurements": (cohort.MEASUREMENTS, ["patient_id", "time", "analyte", "value", "unit"]),
    "events": (cohort.EVENTS, ["patient_id", "event", "grade", "time"]),
    "treatments": (cohort.TREATMENTS, ["patient_id", "time", "drug", "dose", "unit"]),
}


def _rows(n_columns: int, min_size: int) -> st.SearchStrategy:
    return st.lists(st.tuples(*[FIELD] * n_columns), min_size=min_size, max_size=8)


COHORT = st.fixed_dictionaries(
    {name: _rows(len(columns), 0 if name == "treatments" else 1) for name, (_, columns) in TABLES.items()}
)


def _check_accepted_numbers(tables: dict[str, pd.DataFrame]) -> None:
    numbers = [tables["measurements"]["value"], tables["treatments"]["dose"].dropna()]
    numbers += [tables[t]["hours_since_anchor"] for t in ("measurements", "events", "treatments")]
    patients = tables["patients"]
    numbers += [patients[c].dropna() for c in patients.columns if patients[c].dtype == "float64"]
    for column in numbers:
        values = column.to_numpy(dtype=float)
        assert np.isfinite(values).all() and (np.abs(values) <= FLOAT32_MAX).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(COHORT)
def test_hostile_fields_end_accepted_quarantined_or_one_clean_error(rows_by_table):
    raw = {name: in_memory(spec, columns, rows_by_table[name]) for name, (spec, columns) in TABLES.items()}
    try:
        result = ingest_tables(raw, REGISTRY)
    except UserError as error:
        assert "\n" not in str(error) and str(error)
        return
    report = result.report
    for name, counts in report["files"].items():
        assert counts["rows_read"] == len(rows_by_table[name])
        assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
        assert counts["rows_accepted"] == len(result.tables[name])
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"] + report["duplicates_dropped"]
    q = result.quarantine
    assert set(q["reason"]) <= set(cohort.REASONS)
    is_cell = q["source_column"].notna()
    assert (~is_cell).sum() == report["rows_quarantined"] and is_cell.sum() == report["cells_quarantined"]
    assert sum(report["quarantine_by_reason"].values()) == report["rows_quarantined"]
    _check_accepted_numbers(result.tables)
