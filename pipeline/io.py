"""Reading and atomic writing at the edge of every stage.

Stages never write in place: every output goes to a temporary sibling first and is renamed into
place only when complete, so a failed stage leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import UserError

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (a directory) as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays appear in metrics; JSON has no NaN, so NaN becomes null.
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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


def read_raw_table(path: Path) -> pa.Table:
    """Read a cohort table with every column as text (validation happens in ingest, not here).

    Returns an Arrow table so that large files are validated with Arrow compute kernels without
    ever becoming Python objects. Empty fields are nulls.
    """
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            table = table.cast(pa.schema([pa.field(name, pa.string()) for name in table.column_names]))
        else:
            with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")) as handle:
                header = next(csv.reader(handle), None)
            if not header:
                raise UserError(f"{path}: file is empty (no header line)")
            names = [name.strip() for name in header]
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
    except (OSError, pa.ArrowException, ValueError, UnicodeDecodeError, csv.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable file ({first})") from None
    return table.rename_columns([str(c).strip() for c in table.column_names])


def read_stage_parquet(path: str | Path, what: str, produced_by: str) -> pd.DataFrame:
    """Read an intermediate Parquet file written by an earlier stage; one-line errors, no traceback."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found (run `{produced_by}` first, or `dvc repro`)")
    try:
        return pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable {what} ({first}); rerun `{produced_by}`") from None
