"""Ingestion: validate and normalise the canonical raw tables an adapter produced, and lose no row.

Every raw row ends in exactly one of three places: the accepted tables, the quarantine (its original
fields, source file, line and a reason code) or the count of exact duplicates dropped, so the report's
counts reconcile: ``rows_read == rows_accepted + rows_quarantined + duplicates_dropped`` per file and
overall. A row gets the first reason that applies, in the order of :data:`pipeline.cohort.REASONS`.

Row checks are vectorised: per-row work is numpy / pandas / Arrow column arithmetic, and text
(analyte names, units) is normalised once per distinct value, never once per row.

Modules: :mod:`.tables` (:func:`ingest_tables`, the whole cohort), :mod:`.patients`,
:mod:`.measurements`, :mod:`.records` and :mod:`.observations` (one validator per table), :mod:`.times`
and :mod:`.text` (vectorised parsers), :mod:`.checks` (reason codes, duplicates, conflicts, quarantine rows).
This package may import :mod:`pipeline.adapters`, :mod:`pipeline.cohort`, :mod:`pipeline.contracts`,
:mod:`pipeline.errors`, :mod:`pipeline.io`, :mod:`pipeline.registry` and :mod:`pipeline.config`.
"""

from __future__ import annotations

from pipeline.ingestion.checks import UNKNOWN_PATIENT_DETAIL, TableOutcome, all_quarantine
from pipeline.ingestion.measurements import validate_measurements
from pipeline.ingestion.observations import empty_observations, validate_observations
from pipeline.ingestion.patients import validate_patients
from pipeline.ingestion.records import empty_treatments, validate_events, validate_treatments
from pipeline.ingestion.tables import IngestResult, ingest_tables

__all__ = [
    "UNKNOWN_PATIENT_DETAIL",
    "IngestResult",
    "TableOutcome",
    "all_quarantine",
    "empty_observations",
    "empty_treatments",
    "ingest_tables",
    "validate_events",
    "validate_measurements",
    "validate_observations",
    "validate_patients",
    "validate_treatments",
]
