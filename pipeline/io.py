"""Atomic writing at the edge of every stage, and reading of the intermediate files stages pass on.

Input formats (cohort directories, in-memory frames) are read by :mod:`pipeline.adapters`.

Stages never write in place: every output goes to a temporary sibling first and is renamed into
place only when complete, so a failed stage leaves no half-written file behind.

Crash safety (``kill -9``, power cut of the process): temporaries are named
``.<output>.crs-tmp-<pid>-<start>-...`` (git- and dvc-ignored: ``.*.crs-tmp-*``), so an owner that no
longer runs is detectable; the next write to the same output removes them, and a previous output moved
aside by a swap that was cut short is put back. :func:`stage_lock` keeps two ``crs`` stages from
writing in one directory at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError

#: In the name of every temporary this module creates; ``.gitignore`` and ``.dvcignore`` ignore it.
TMP_TAG = "crs-tmp"
#: The advisory lock file of :func:`stage_lock` (git- and dvc-ignored).
LOCK_FILE = ".crs.lock"
_TEMP_NAME = re.compile(rf"\.{TMP_TAG}-(?P<owner>\d+-\d+)-(?P<kind>new|old)")
#: Names earlier versions used (no owner recorded): ``.<name>.<8 random>.tmp`` and ``.<name>.old``.
_LEGACY_NAME = re.compile(r"(?P<kind>[a-z0-9_]{8}\.tmp|old)")


def _start_ticks(pid: int) -> str:
    """The process's start time (clock ticks since boot; "0" where /proc is absent): with the pid it
    names one process, so a recycled pid is not mistaken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rpartition(")")[2].split()[19]


def owner_token(pid: int | None = None) -> str:
    """``<pid>-<start>`` of this process (or ``pid``): recorded in temporaries and MLflow runs."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid)}"


def owner_alive(token: str) -> bool:
    """Whether the process that recorded ``token`` (:func:`owner_token`) still runs."""
    pid_text, _, start = token.partition("-")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    except (ValueError, OverflowError):
        return False
    return start in ("", "0") or _start_ticks(pid) in ("0", start)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


def clean_stale(path: str | Path) -> None:
    """Remove the temporaries of ``path`` whose writer no longer runs; put back a previous output that
    a cut-short :func:`atomic_dir` swap had moved aside (never lose the last complete output)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    prefix = f".{path.name}."
    for entry in sorted(path.parent.iterdir()):
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix) - 1:]
        match = _TEMP_NAME.match(rest)
        if match is None:
            legacy = _LEGACY_NAME.fullmatch(rest[1:])
            if legacy is None:
                continue
            kind = "old" if legacy["kind"] == "old" else "new"
        elif owner_alive(match["owner"]):
            continue
        else:
            kind = match["kind"]
        if kind == "old" and not os.path.lexists(path):
            with contextlib.suppress(FileNotFoundError):
                os.replace(entry, path)  # the swap died after moving the old output aside
        else:
            _remove(entry)


def _temp_prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{TMP_TAG}-{owner_token()}-{kind}"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, "new") + "-", dir=path.parent)
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
    """Yield a temporary directory; on success it replaces ``path`` (a directory) as a whole.

    The swap is two renames (old aside, new in place); a process killed between them leaves the old
    output under a ``-old`` name that :func:`clean_stale` puts back at the next write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path, "new") + "-", dir=path.parent))
    try:
        yield tmp
        if os.path.lexists(path):
            old = path.with_name(_temp_prefix(path, "old"))
            if os.path.lexists(old):
                _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def stage_lock(directory: str | Path = ".") -> Iterator[Path]:
    """Hold the advisory lock ``directory/.crs.lock`` (non-blocking) while a stage runs, so two stages
    never write the same outputs at once. The kernel drops it if the process dies: no stale lock."""
    lock = Path(directory) / LOCK_FILE
    fd = _acquire(lock)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still holding it: a waiter that opened this file sees it is gone
        os.close(fd)


def _acquire(lock: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"{lock}: cannot create the stage lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"another crs stage is running in this directory (pid {holder}); wait for it "
                            f"to finish or stop it, then run this command again") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file its holder had just removed: take the lock again on the new one


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """``df.to_parquet(path, index=False)``, atomically, with ``df.attrs`` stored as pandas stores them.

    The frame is converted without its attrs: pandas deep-copies ``attrs`` on every column it hands out,
    and the landmark table's (its training summary, about 80 kB) made writing 400 columns take 2.6 s
    instead of 0.1 s. The file is the one ``to_parquet`` writes, byte for byte.
    """
    import pyarrow.parquet as pq

    bare = df.copy(deep=False)
    bare.attrs = {}
    table = pa.Table.from_pandas(bare, preserve_index=False)
    if df.attrs:  # where pyarrow (its "pandas" metadata) and pandas (PANDAS_ATTRS) each keep them
        pandas_meta = json.loads(table.schema.metadata[b"pandas"])
        pandas_meta["attributes"] = df.attrs
        table = table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(pandas_meta),
                                               "PANDAS_ATTRS": json.dumps(df.attrs)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


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
        is_text = column.notna() if isinstance(column.dtype, pd.StringDtype) else (  # every value is text
            column.map(lambda cell: isinstance(cell, str)).astype(bool))
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
    """Read an intermediate Parquet file written by an earlier stage; one-line errors, no traceback.

    The frame comes back with empty ``attrs``: pandas deep-copies ``attrs`` on every column access and
    slice, and the landmark table's (feature summary, covariate reference) made the report stage spend
    most of its time copying them. Use :func:`read_stage_parquet_with_attrs` to read them."""
    frame, _ = read_stage_parquet_with_attrs(path, what, produced_by)
    return frame


def read_stage_parquet_with_attrs(path: str | Path, what: str, produced_by: str) -> tuple[pd.DataFrame, dict]:
    """:func:`read_stage_parquet`, plus the frame's recorded ``attrs`` as a separate dict."""
    path = Path(path)
    if not path.exists():
        clean_stale(path.parent)  # an interrupted swap of its directory may have left it aside
        clean_stale(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found (run `{produced_by}` first, or `dvc repro`)")
    try:
        frame = pd.read_parquet(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable {what} ({first}); rerun `{produced_by}`") from None
    attrs, frame.attrs = dict(frame.attrs), {}
    return frame, attrs


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
