"""Atomic writing at the edge of every stage, and reading of the intermediate files stages pass on.

Input formats (cohort directories, in-memory frames) are read by :mod:`pipeline.adapters`.

Stages never write in place: every output goes to a temporary sibling first and is renamed into
place only when complete, so a failed stage leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError


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


#: OWASP CSV injection: a text cell starting with one of these is run as a formula by spreadsheets...
_FORMULA_START = r"^[=+\-@\t\r]"
#: ...unless it is a plain number (``-5.5`` stays a number; ``-1+2`` and ``=HYPERLINK(..)`` do not).
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def _formula_mask(text: pd.Series) -> pd.Series:
    return text.str.contains(_FORMULA_START, na=False) & ~text.str.fullmatch(_PLAIN_NUMBER, na=False)


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy in which every text cell (and header) a spreadsheet would execute starts with ``'``."""
    out = frame.copy()
    out.columns = [f"'{c}" if _formula_mask(pd.Series([str(c)])).iloc[0] else c for c in out.columns]
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            continue
        is_text = column.map(lambda cell: isinstance(cell, str)).astype(bool)
        mask = is_text & _formula_mask(column.where(is_text, "").astype(str))
        if mask.any():
            out.iloc[:, position] = column.astype(object).where(~mask, "'" + column[mask].astype(str))
    return out


def neutralise_formulas_arrow(table: pa.Table) -> pa.Table:
    """:func:`neutralise_formulas` for the string columns of an Arrow table (large CSVs stay in Arrow)."""
    for index, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        column = table.column(index)
        mask = pc.and_(pc.match_substring_regex(column, _FORMULA_START),
                       pc.invert(pc.match_substring_regex(column, _PLAIN_NUMBER)))
        if pc.any(mask).as_py():
            fixed = pc.if_else(mask, pc.binary_join_element_wise(pa.scalar("'", field.type), column, pa.scalar("", field.type)), column)
            table = table.set_column(index, field, fixed)
    safe_names = neutralise_formulas(pd.DataFrame(columns=table.column_names)).columns
    return table.rename_columns([str(name) for name in safe_names])


def to_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` as CSV with formula cells neutralised (every CSV the project writes goes here)."""
    neutralise_formulas(frame).to_csv(path, index=False)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        to_csv(df, tmp)


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


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
