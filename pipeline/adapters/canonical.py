"""The canonical cohort directory: ``patients``, ``measurements``, ``events`` and optional ``treatments``,
each as ``.csv``, ``.csv.gz`` or ``.parquet``, read as text with file-level checks only."""

from __future__ import annotations

import csv
import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.cohort import TABLES, TREATMENTS, TableSpec
from pipeline.errors import UserError

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


@dataclass
class RawTable:
    """One cohort file read as text (Arrow strings, nulls for empty fields) and where it came from."""

    spec: TableSpec
    path: Path
    arrow: pa.Table

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The table as pandas strings (used for the small tables: patients, events, treatments)."""
        return self.arrow.to_pandas().astype("string")

    @property
    def n_rows(self) -> int:
        return self.arrow.num_rows

    def line_numbers(self, rows: np.ndarray) -> np.ndarray:
        # CSV: physical line in the file (header is line 1; assumes no newlines inside quoted
        # fields). Parquet: 1-based row number.
        return rows.astype(np.int64) + (1 if self.path.suffix == ".parquet" else 2)


def find_table(directory: str | Path, name: str, *, required: bool = True) -> Path | None:
    """Return the file for table ``name`` in a cohort directory (``name.parquet|csv|csv.gz``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: cohort directory not found")
    found = [directory / f"{name}{suffix}" for suffix in TABLE_SUFFIXES if (directory / f"{name}{suffix}").exists()]
    if len(found) > 1:
        raise UserError(f"{directory}: table '{name}' given twice ({', '.join(p.name for p in found)}); keep one")
    if not found:
        if required:
            raise UserError(f"{directory / (name + '.csv')}: required table '{name}' not found (.csv or .parquet)")
        return None
    return found[0]


def _read_csv_as_text(path: Path) -> pa.Table:
    with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")) as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise UserError(f"{path}: file is empty (no header line)")
    names = [name.strip() for name in header]
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def read_raw_table(path: Path) -> pa.Table:
    """Read a cohort table with every column as text (validation happens in ingestion, not here).

    Returns an Arrow table so that large files are validated with Arrow compute kernels without
    ever becoming Python objects. Empty fields are nulls.
    """
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            table = table.cast(pa.schema([pa.field(name, pa.string()) for name in table.column_names]))
        else:
            table = _read_csv_as_text(path)
    except (OSError, pa.ArrowException, ValueError, UnicodeDecodeError, csv.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable file ({first})") from None
    return table.rename_columns([str(c).strip() for c in table.column_names])


def _check_columns(spec: TableSpec, path: Path, table: pa.Table, may_be_empty: bool) -> None:
    missing = [c for c in spec.required_columns if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing required column '{missing[0]}'")
    seen: set[str] = set()
    for column in table.column_names:
        if column in seen:
            raise UserError(f"{path}: column '{column}' appears twice")
        seen.add(column)
    if table.num_rows == 0 and not may_be_empty:
        raise UserError(f"{path}: table '{spec.name}' has no rows")


def read_cohort(cohort_dir: str | Path, optional_tables: tuple[str, ...] = ()) -> dict[str, RawTable]:
    """Read every cohort table as text; raise :class:`UserError` for file-level problems.

    ``optional_tables`` may be absent or empty even if the contract requires them for training (new
    patients scored by ``crs predict`` have no events yet).
    """
    cohort_dir = Path(cohort_dir)
    raw: dict[str, RawTable] = {}
    for spec in TABLES:
        path = find_table(cohort_dir, spec.name, required=spec.required and spec.name not in optional_tables)
        if path is None:
            continue
        table = read_raw_table(path)
        _check_columns(spec, path, table, may_be_empty=spec.name in (TREATMENTS.name, *optional_tables))
        raw[spec.name] = RawTable(spec, path, table)
    return raw


__all__ = ["TABLE_SUFFIXES", "RawTable", "find_table", "read_cohort", "read_raw_table"]
