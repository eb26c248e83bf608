"""The whole cohort: raw text tables in, accepted tables, quarantine and reconciling counts out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import EVENTS, MEASUREMENTS, OBSERVATIONS, PATIENTS, REASONS, TREATMENTS
from pipeline.config import IngestConfig
from pipeline.ingestion.blocks import validate_in_blocks
from pipeline.ingestion.checks import TableOutcome, all_quarantine
from pipeline.ingestion.measurements import validate_measurements
from pipeline.ingestion.observations import empty_observations, validate_observations
from pipeline.ingestion.patients import validate_patients
from pipeline.ingestion.records import (
    canonical_names,
    empty_events,
    empty_treatments,
    validate_events,
    validate_treatments,
)
from pipeline.registry import Registry, event_synonyms, load_registry

_COUNTS = ("rows_read", "rows_accepted", "rows_quarantined", "duplicates_dropped")
#: Default of ``ingest.quarantine_warning_share`` (``crs predict`` and library callers).
WARNING_SHARE = IngestConfig().quarantine_warning_share
#: What to check when one reason quarantines a large share of a file (the warning's advice).
SHARE_HINTS = {
    "missing_patient_id": "check the patient_id column",
    "unknown_patient": "check that patient_id values match the patients table",
    "bad_time": "check the time format (hours or ISO 8601, one form per file) and anchor_time",
    "missing_value": "check the column mapping and the missing-value tokens",
    "unparseable_value": "check the delimiter/decimal settings (cohort.csv)",
    "non_finite_value": "check how the export writes numbers (inf, overflow)",
    "unknown_unit": "add the unit's conversion to pipeline/registry/units.csv",
    "unknown_term": "add the item or term as a synonym in pipeline/registry/observation_items.csv or observations.csv",
    "out_of_range": "check the units (a mislabelled unit is off by a constant factor)",
    "invalid_grade": "check the grading scale (integer grades 0-5)",
    "conflicting_duplicate": "check for overlapping exports merged into one file",
}


@dataclass
class IngestResult:
    """Accepted tables (the ingest contract, docs/CONTRACTS.md), the quarantine and the report. Without
    ``measurements`` when those were handed to a sink, block by block or whole (:func:`ingest_tables`)."""

    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    report: dict = field(default_factory=dict)


#: Where accepted measurements go: called once per block, in table order, or once with the whole table.
Sink = Callable[[pd.DataFrame], None]


def _validate_all(
    raw: dict[str, RawTable], registry: Registry, chunk_rows: int | None = None, sink: Sink | None = None
) -> dict[str, TableOutcome]:
    """Patients first: the other tables accept only rows of accepted patients. ``chunk_rows``:
    measurements in blocks of about this many rows, accepted ones handed to ``sink`` (:mod:`.blocks`);
    without it, a ``sink`` gets the whole accepted table at once, as soon as it is complete (before its
    quarantine and the other tables: a writer can start on it meanwhile)."""
    outcomes: dict[str, TableOutcome] = {}
    outcomes[PATIENTS.name] = validate_patients(raw[PATIENTS.name])
    patients = outcomes[PATIENTS.name].accepted
    if chunk_rows is None:
        outcomes[MEASUREMENTS.name] = validate_measurements(raw[MEASUREMENTS.name], patients, registry,
                                                            on_accepted=sink)
    else:
        outcomes[MEASUREMENTS.name] = validate_in_blocks(raw[MEASUREMENTS.name], patients, registry, chunk_rows, sink)
    if EVENTS.name in raw:  # absent only when grades are derived from observations
        outcomes[EVENTS.name] = validate_events(raw[EVENTS.name], patients)
    if TREATMENTS.name in raw:
        outcomes[TREATMENTS.name] = validate_treatments(raw[TREATMENTS.name], patients)
    if OBSERVATIONS.name in raw:
        outcomes[OBSERVATIONS.name] = validate_observations(raw[OBSERVATIONS.name], patients)
    return outcomes


def _share_warnings(files: dict[str, dict], share: float) -> list[str]:
    """One warning per (file, reason) quarantining more than ``share`` of the file's rows: usually a
    systematic problem (wrong delimiter, decimal comma, unit, time format), not bad rows."""
    warnings = []
    for counts in files.values():
        for reason, n in counts["quarantine_by_reason"].items():
            if counts["rows_read"] and n > share * counts["rows_read"]:
                warnings.append(
                    f"{counts['path']}: {100 * n / counts['rows_read']:.0f}% of rows quarantined as {reason}; "
                    f"{SHARE_HINTS[reason]}"
                )
    return warnings


def _outcome_warnings(events: TableOutcome | None) -> list[str]:
    """One warning per event whose quarantined rows may change who counts as having it (an outcome
    lost to quarantine changes the labels silently otherwise). Counts and reasons only, no values."""
    if events is None or not len(events.quarantine) or "event" not in events.quarantine.columns:
        return []
    q = events.quarantine
    text = q["event"].astype("object").where(q["event"].notna(), None)
    rejected = pd.DataFrame({
        "pid": q["patient_id"].astype(str).str.strip(), "reason": q["reason"].astype(str),
        "event": canonical_names(text.map(lambda v: None if v is None or not str(v).strip() else str(v).strip()),
                                 event_synonyms(), "upper"),
    }).dropna(subset=["event"])
    if rejected.empty:
        return []
    rejected["event"] = rejected["event"].astype(str)
    accepted = events.accepted[["patient_id", "event"]].astype(str).drop_duplicates()
    per_patient = rejected.drop_duplicates(["pid", "event"]).merge(
        accepted, left_on=["pid", "event"], right_on=["patient_id", "event"], how="left", indicator=True)
    warnings = []
    for event, rows in per_patient.groupby("event", sort=True):
        only = int((rows["_merge"] == "left_only").sum())
        reasons = ", ".join(sorted(set(rejected.loc[rejected["event"] == event, "reason"])))
        warnings.append(f"events: {len(rows)} patient(s) have {event} rows quarantined ({reasons}); for {only} "
                        f"of them no {event} row was accepted, so their {event} outcome is not counted")
    return warnings


#: Column a standard-format adapter (SDTM, OMOP) adds to every row: the source table it came from.
SOURCE_TABLE = "source_table"


def _by_source(table: RawTable, outcome: TableOutcome) -> dict:
    """Per source table of an SDTM / OMOP adapter (``LB``, ``measurement``): rows read, rows quarantined,
    and source rows left out as not asked for (``out_of_scope``). Empty for canonical files."""
    if SOURCE_TABLE not in table.arrow.column_names and not table.out_of_scope:
        return {}
    read = Counter()
    if SOURCE_TABLE in table.arrow.column_names:
        read.update(pd.Series(table.arrow.column(SOURCE_TABLE).to_pandas()).fillna("").value_counts().to_dict())
    quarantined = Counter()
    if len(outcome.quarantine) and SOURCE_TABLE in outcome.quarantine.columns:
        quarantined.update(outcome.quarantine[SOURCE_TABLE].fillna("").value_counts().to_dict())
    sources = sorted(set(read) | set(quarantined) | set(table.out_of_scope))
    return {
        "out_of_scope": int(sum(table.out_of_scope.values())),
        "by_source_table": {src: {"rows_read": int(read[src]), "rows_quarantined": int(quarantined[src]),
                                  "out_of_scope": int(table.out_of_scope.get(src, 0))} for src in sources},
    }


def _patients_with_measurements(outcome: TableOutcome) -> int:
    if outcome.n_patients is not None:  # written block by block
        return outcome.n_patients
    return int(outcome.accepted["patient_id"].nunique())


def _report(outcomes: dict[str, TableOutcome], raw: dict[str, RawTable], share: float) -> dict:
    """``reports/ingest.json`` without the run's settings: counts overall and per file, then what was
    normalised. It quotes no cell value (it is kept in git): names of files and columns, reasons, counts."""
    files = {name: {**outcome.counts(raw[name].path), **_by_source(raw[name], outcome)}
             for name, outcome in outcomes.items()}
    by_reason: Counter = Counter()
    cells_by_reason: Counter = Counter()
    for counts in files.values():
        by_reason.update(counts["quarantine_by_reason"])
        cells_by_reason.update(counts["cells_quarantined_by_reason"])
    patients = outcomes[PATIENTS.name]
    return {
        **{key: sum(c[key] for c in files.values()) for key in _COUNTS},
        "quarantine_by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "cells_quarantined": sum(c["cells_quarantined"] for c in files.values()),
        "cells_quarantined_by_reason": {r: cells_by_reason[r] for r in REASONS if cells_by_reason[r]},
        "files": files,
        "patients": int(len(patients.accepted)),
        "patients_with_measurements": _patients_with_measurements(outcomes[MEASUREMENTS.name]),
        "covariate_types": patients.extra["covariate_types"],
        **outcomes[MEASUREMENTS.name].extra,
        "warnings": patients.extra["warnings"] + _share_warnings(files, share)
        + _outcome_warnings(outcomes.get(EVENTS.name)),
    }


def ingest_tables(
    raw: dict[str, RawTable], registry: Registry | None = None, *, quarantine_warning_share: float = WARNING_SHARE,
    chunk_rows: int | None = None, sink: Sink | None = None,
) -> IngestResult:
    """Validate and normalise raw cohort tables (any adapter's output). Pure: no file is read or written
    here (a ``sink`` may write what it is handed).

    ``quarantine`` holds the quarantined rows and then the blanked cells (``source_column`` set).
    ``chunk_rows`` (with ``sink``): measurements validated in blocks of whole patients of about that
    many rows, each block's accepted rows handed to ``sink`` in table order (e.g. a
    :class:`~pipeline.ingestion.blocks.ParquetBlocks` writer). ``sink`` alone: the whole accepted
    measurements table handed to it once, as soon as it is ready. With a sink, the accepted
    measurements are left out of ``tables``; every other output is the same as without."""
    if chunk_rows is not None and sink is None:
        raise ValueError("chunk_rows needs a sink")
    outcomes = _validate_all(raw, registry or load_registry(), chunk_rows, sink)
    tables = {name: outcome.accepted for name, outcome in outcomes.items()
              if sink is None or name != MEASUREMENTS.name}
    tables.setdefault(EVENTS.name, empty_events())
    tables.setdefault(TREATMENTS.name, empty_treatments())
    tables.setdefault(OBSERVATIONS.name, empty_observations())
    quarantine = all_quarantine(outcomes.values())
    report = _report(outcomes, raw, quarantine_warning_share)
    return IngestResult(tables=tables, quarantine=quarantine, report=report)
