"""``crs ingest``: a canonical cohort directory -> ``data/interim/`` + ``reports/ingest.json``.

A thin stage shaped like :mod:`pipeline.featurize`: :func:`run` is pure (raw tables in, accepted
tables, quarantine and report out) and goes through :func:`pipeline.ingestion.ingest_tables`, the same
rules ``crs predict`` applies; :func:`main` reads the cohort with the canonical adapter
(:func:`pipeline.adapters.canonical.read_cohort`) and writes atomically to ``config.paths``.

File-level problems (missing directory, file or required column, empty table, timestamps without
``anchor_time``, unreadable file) raise :class:`UserError` before anything appears in the output
directory (files are written into a temporary one that replaces it only when all are complete).
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd

from pipeline.adapters.canonical import RawTable, csv_dialects, read_cohort
from pipeline.adapters.dialect import read_options
from pipeline.cohort import MEASUREMENTS
from pipeline.config import Config
from pipeline.ingestion import IngestResult, ingest_tables
from pipeline.ingestion.blocks import ParquetBlocks, measurement_parquet_options
from pipeline.ingestion.checks import in_parallel
from pipeline.ingestion.tables import Sink
from pipeline.io import atomic_dir, to_csv, write_json
from pipeline.memory import small_pages

QUARANTINE_FILE = "quarantine.csv"


def run(config: Config, raw_tables: dict[str, RawTable], chunk_rows: int | None = None,
        sink: Sink | None = None) -> IngestResult:
    """Validate and normalise ``raw_tables`` (any adapter's output). Pure: no file is read or written
    (but by ``sink``, which takes the accepted measurements: block by block when ``chunk_rows`` is given,
    else whole, once)."""
    result = ingest_tables(raw_tables, quarantine_warning_share=config.ingest.quarantine_warning_share,
                           chunk_rows=chunk_rows, sink=sink)
    result.report = {"grading_scale": config.cohort.grading_scale, **result.report,
                     "csv_dialects": csv_dialects(raw_tables)}
    return result


def _write_tables(result: IngestResult, tmp: Path) -> None:
    in_parallel(
        *(partial(frame.to_parquet, tmp / f"{name}.parquet", index=False) for name, frame in result.tables.items()),
        partial(to_csv, result.quarantine, tmp / QUARANTINE_FILE),
    )


def _write_measurements(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path, index=False, **measurement_parquet_options(list(frame.columns)))


def run_to(config: Config, raw_tables: dict[str, RawTable], out_dir: Path, chunk_rows: int | None = None
           ) -> IngestResult:
    """:func:`run`, with the output directory appearing at once; with ``chunk_rows``, a measurements table of more rows is
    validated in blocks of whole patients of about that many rows and written as they come (same files,
    bounded working memory: docs/scale.md); a smaller one whole, which is faster, and written by a
    second thread while the other tables are validated. The caller writes the report after this
    returns, so the report never describes a directory that is not there.

    ``result.tables`` holds every accepted table but the measurements (they are in the file)."""
    with atomic_dir(out_dir) as tmp:
        path = tmp / f"{MEASUREMENTS.name}.parquet"
        if chunk_rows is not None and raw_tables[MEASUREMENTS.name].n_rows > chunk_rows:
            with ParquetBlocks(path) as sink:
                result = run(config, raw_tables, chunk_rows, sink)
            _write_tables(result, tmp)
        else:
            with ThreadPoolExecutor(max_workers=1) as writer:
                written: list[Future] = []
                result = run(config, raw_tables, None, lambda frame: written.append(
                    writer.submit(_write_measurements, frame, path)))
                _write_tables(result, tmp)
                written[0].result()  # re-raises the writer's error
    return result


def read_source(config: Config, cohort_dir: Path) -> dict[str, RawTable]:
    """The cohort's raw tables through the adapter ``cohort.format`` names (README "Your data in SDTM
    or OMOP"): canonical directory, SDTM folder or OMOP database."""
    options = read_options(config)  # cohort.csv dialect, ingest limits
    # The SDTM and OMOP adapters (and SQLAlchemy) are imported only when used: a tenth of a second of
    # every canonical ingest otherwise.
    if config.cohort.format == "sdtm":
        from pipeline.adapters.sdtm import read_sdtm

        return read_sdtm(cohort_dir, limits=options["limits"])
    if config.cohort.format == "omop":
        from pipeline.adapters.omop import read_omop

        return read_omop(config.cohort.url, config.cohort.db_schema, limits=options["limits"],
                         patient_id=config.cohort.omop_patient_id)
    # Grades derived from raw observations need no events table (its DEATH rows are used when present).
    optional = ("events",) if config.cohort.grades == "derive" else ()
    return read_cohort(cohort_dir, optional, **options)


def cohort_name(config: Config, cohort_dir: Path) -> str:
    """What ``reports/ingest.json`` names as the cohort: its folder, or the database URL without password."""
    if config.cohort.format != "omop":
        return str(cohort_dir)
    from sqlalchemy.engine import make_url

    return make_url(config.cohort.url).render_as_string(hide_password=True)


def main(config: Config, cohort: Path | None = None, out: Path | None = None, report: Path | None = None,
         chunk_rows: int | None = None) -> None:
    """``chunk_rows`` (else ``ingest.chunk_rows``; None: the whole table at once): measurement rows per
    block of patients when the table has more, which bounds the working memory (same outputs)."""
    cohort_dir = cohort or config.cohort.path
    out_dir = Path(out or config.paths.interim_dir)
    report_path = Path(report or config.paths.ingest_report)
    if chunk_rows is None:
        chunk_rows = config.ingest.chunk_rows
    with small_pages():
        raw = read_source(config, cohort_dir)
        result = run_to(config, raw, out_dir, chunk_rows)
    result.report = {"cohort": cohort_name(config, cohort_dir), **result.report}
    write_json(result.report, report_path)
    r = result.report
    for warning in r["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ingest: {r['rows_read']} rows read, {r['rows_accepted']} accepted, "
        f"{r['rows_quarantined']} quarantined, {r['duplicates_dropped']} duplicates dropped "
        f"-> {out_dir}/, {report_path}"
    )


__all__ = ["IngestResult", "main", "run", "run_to"]
