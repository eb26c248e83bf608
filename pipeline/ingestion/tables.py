"""The whole cohort: raw text tables in, accepted tables, quarantine and reconciling counts out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import EVENTS, MEASUREMENTS, PATIENTS, REASONS, TREATMENTS
from pipeline.ingestion.checks import TableOutcome
from pipeline.ingestion.measurements import validate_measurements
from pipeline.ingestion.patients import validate_patients
from pipeline.ingestion.records import empty_treatments, validate_events, validate_treatments
from pipeline.registry import Registry, load_registry

_COUNTS = ("rows_read", "rows_accepted", "rows_quarantined", "duplicates_dropped")


@dataclass
class IngestResult:
    """Accepted tables (the ingest contract, docs/CONTRACTS.md), the quarantine and the report."""

    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    report: dict = field(default_factory=dict)


def _validate_all(raw: dict[str, RawTable], registry: Registry) -> dict[str, TableOutcome]:
    """Patients first: the other tables accept only rows of accepted patients."""
    outcomes: dict[str, TableOutcome] = {}
    outcomes[PATIENTS.name] = validate_patients(raw[PATIENTS.name])
    patients = outcomes[PATIENTS.name].accepted
    outcomes[MEASUREMENTS.name] = validate_measurements(raw[MEASUREMENTS.name], patients, registry)
    outcomes[EVENTS.name] = validate_events(raw[EVENTS.name], patients)
    if TREATMENTS.name in raw:
        outcomes[TREATMENTS.name] = validate_treatments(raw[TREATMENTS.name], patients)
    return outcomes


def _report(outcomes: dict[str, TableOutcome], raw: dict[str, RawTable], tables: dict[str, pd.DataFrame]) -> dict:
    """``reports/ingest.json`` without the run's settings: counts overall and per file, then what was normalised."""
    files = {name: outcome.counts(raw[name].path) for name, outcome in outcomes.items()}
    by_reason: Counter = Counter()
    for counts in files.values():
        by_reason.update(counts["quarantine_by_reason"])
    patients = outcomes[PATIENTS.name]
    return {
        **{key: sum(c[key] for c in files.values()) for key in _COUNTS},
        "quarantine_by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "files": files,
        "patients": int(len(patients.accepted)),
        "patients_with_measurements": int(tables[MEASUREMENTS.name]["patient_id"].nunique()),
        "covariate_types": patients.extra["covariate_types"],
        **outcomes[MEASUREMENTS.name].extra,
        "warnings": patients.extra["warnings"],
    }


def ingest_tables(raw: dict[str, RawTable], registry: Registry | None = None) -> IngestResult:
    """Validate and normalise raw cohort tables (any adapter's output). Pure: no file is read or written."""
    outcomes = _validate_all(raw, registry or load_registry())
    tables = {name: outcome.accepted for name, outcome in outcomes.items()}
    tables.setdefault(TREATMENTS.name, empty_treatments())
    quarantine = pd.concat([o.quarantine for o in outcomes.values()], ignore_index=True)
    return IngestResult(tables=tables, quarantine=quarantine, report=_report(outcomes, raw, tables))
