"""Input formats: each adapter turns one way of bringing a cohort into the canonical raw tables.

The contract every adapter keeps: it returns ``dict[str, RawTable]``, keyed by the canonical table names
of :mod:`pipeline.cohort` (``patients``, ``measurements``, ``events`` and optionally ``treatments``),
each table holding the cohort contract's columns **as text** (Arrow strings, null for an empty field)
plus the path and line numbering its rows came from. Adapters check files, not rows: a missing file
or required column, an empty table or an unreadable file raises :class:`~pipeline.errors.UserError`;
every row-level rule (synonyms, units, times, ranges, duplicates, quarantine) belongs to
:func:`pipeline.ingestion.ingest_tables`, which validates whatever an adapter produced the same way.

- :mod:`~pipeline.adapters.canonical`: a cohort directory of ``.csv`` / ``.csv.gz`` / ``.parquet`` files
  (the format documented in the README), each CSV read in the dialect :mod:`~pipeline.adapters.dialect`
  detects or is told (encoding, delimiter, decimal mark), within the ``ingest`` size limits.
- :mod:`~pipeline.adapters.frames`: pandas frames in memory (``crs predict``'s Python API, the MLflow
  model's combined long table).

A new format (e.g. SDTM or OMOP CDM) is one more module here with a function returning the same
mapping. Adapters may import only :mod:`pipeline.cohort`, :mod:`pipeline.contracts`,
:mod:`pipeline.errors`, :mod:`pipeline.io` and :mod:`pipeline.registry`.
"""

from __future__ import annotations

from pipeline.adapters.canonical import RawTable, csv_dialects, find_table, read_cohort, read_raw_table
from pipeline.adapters.dialect import CsvFormat, Dialect, ReadLimits, read_options
from pipeline.adapters.frames import combined_to_raw, frames_to_raw, raw_to_combined, read_new_cohort

__all__ = [
    "CsvFormat",
    "Dialect",
    "RawTable",
    "ReadLimits",
    "combined_to_raw",
    "csv_dialects",
    "find_table",
    "frames_to_raw",
    "raw_to_combined",
    "read_cohort",
    "read_new_cohort",
    "read_options",
    "read_raw_table",
]
