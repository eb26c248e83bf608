"""Row bookkeeping shared by every table: one reason code per row, duplicates and conflicts, the
quarantine frame and the per-file counts that reconcile."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.adapters.canonical import RawTable, arrow_to_pandas
from pipeline.cohort import REASONS

REASON_INDEX = {reason: i + 1 for i, reason in enumerate(REASONS)}  # 0 = row is fine
UNKNOWN_PATIENT_DETAIL = "patient_id not among accepted patients (absent from the patients table, or its row was quarantined)"


class RowChecks:
    """Reason code per row (first failing check wins) plus a human-readable detail.

    Checks run in the order of :data:`pipeline.cohort.REASONS`, so "first failing check" is "first
    reason in that list". Codes below 0 mark rows excluded from checking (exact duplicates).
    """

    def __init__(self, n_rows: int) -> None:
        self.codes = np.zeros(n_rows, dtype=np.int8)
        self.detail = np.empty(n_rows, dtype=object)  # read only where a reason was given
        #: Rows whose time was a date without a time of day, placed at the end (or start) of that day.
        self.date_only = 0

    def flag(
        self,
        mask: np.ndarray | pd.Series,
        reason: str,
        detail: str | Callable[[np.ndarray], np.ndarray] = "",
    ) -> None:
        """Give ``reason`` to rows in ``mask`` that have none yet (codes < 0 are excluded rows).

        ``detail`` is a text, or a function of the flagged row positions returning one text per row
        (so per-row messages are only built for the few rows that fail).
        """
        mask = np.asarray(mask, dtype=bool) & (self.codes == 0)
        if not mask.any():
            return
        self.codes[mask] = REASON_INDEX[reason]
        self.detail[mask] = detail(np.flatnonzero(mask)) if callable(detail) else detail

    @property
    def ok(self) -> np.ndarray:
        return self.codes == 0

    def then(self, later: RowChecks) -> None:
        """Take ``later``'s reasons for rows that have none here: ``later`` checked reasons that all come
        after this one's (checked side by side, the same as checking them after these)."""
        take = (self.codes == 0) & (later.codes != 0)
        self.codes[take] = later.codes[take]
        self.detail[take] = later.detail[take]


#: Below this many rows, :func:`in_parallel` runs its calls in turn: starting threads costs more than
#: they save on a small table (one new patient's measurements).
PARALLEL_MIN_ROWS = 20_000


def in_parallel(*calls: Callable[[], Any], rows: int | None = None) -> list[Any]:
    """Results of ``calls`` run on up to two threads (Arrow and numpy kernels release the GIL), or in
    turn when the table has fewer than :data:`PARALLEL_MIN_ROWS` ``rows``; the first exception raised is
    raised here (the same results either way: the calls are independent)."""
    if rows is not None and rows < PARALLEL_MIN_ROWS:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


@dataclass
class TableOutcome:
    """One table validated: accepted rows, quarantined rows, and what the report says about it."""

    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    duplicates_dropped: int
    extra: dict = field(default_factory=dict)
    #: Single cells blanked in accepted rows (a patient covariate such as ``age=inf``): quarantine rows
    #: with a ``source_column`` field, counted apart because their row is accepted (counts keep reconciling).
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Accepted or not, rows whose time was a date alone (placed at the end or start of the day).
    date_only_times: int = 0
    #: Rows accepted when ``accepted`` is not held (written block by block): ``len(accepted)`` otherwise.
    n_accepted: int | None = None
    #: Patients with accepted rows, likewise (measurements written block by block).
    n_patients: int | None = None

    def counts(self, path: Path) -> dict:
        return {
            "path": str(path),
            "rows_read": self.rows_read,
            "rows_accepted": int(len(self.accepted) if self.n_accepted is None else self.n_accepted),
            "rows_quarantined": int(len(self.quarantine)),
            "duplicates_dropped": self.duplicates_dropped,
            "quarantine_by_reason": reason_counts(self.quarantine),
            "cells_quarantined": int(len(self.cells)),
            "cells_quarantined_by_reason": reason_counts(self.cells),
            **({"date_only_times": self.date_only_times} if self.date_only_times else {}),
        }


def all_quarantine(outcomes: Iterable[TableOutcome]) -> pd.DataFrame:
    """Quarantined rows of every table, then the blanked cells (``source_column`` set; empty for rows)."""
    outcomes = list(outcomes)
    frames = [o.quarantine for o in outcomes] + [o.cells for o in outcomes if len(o.cells)]
    if any(len(f) for f in frames):
        return _combined(frames)
    # Nothing quarantined (most single-patient requests): the result depends on the columns only.
    # (tolist: iterating an Arrow-backed Index or a Series cell by cell cost ~0.2 ms here)
    key = tuple((tuple(f.columns.tolist()), f.columns.dtype, tuple(f.dtypes.tolist())) for f in frames)
    template = _EMPTY_COMBINED.get(key)  # a local: another thread may clear the dict meanwhile
    if template is None:
        if len(_EMPTY_COMBINED) > 256:
            _EMPTY_COMBINED.clear()
        template = _EMPTY_COMBINED[key] = _combined(frames)
    return template.copy(deep=False)


_EMPTY_COMBINED: dict[tuple, pd.DataFrame] = {}


def _combined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    quarantine = pd.concat(frames, ignore_index=True)
    column = quarantine.pop("source_column") if "source_column" in quarantine.columns else None
    quarantine.insert(min(4, quarantine.shape[1]), "source_column", pd.Series(column, dtype=object))
    return quarantine


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Rows per reason code, in the documented order of the reasons."""
    if not len(quarantine):
        return {}
    counts = quarantine["reason"].value_counts()
    return {r: int(counts[r]) for r in REASONS if r in counts.index}


def quarantine_rows(table: RawTable, positions: np.ndarray, reasons: np.ndarray, details: np.ndarray) -> pd.DataFrame:
    """Rows at ``positions`` (repeats allowed) with their original fields, source file and line, reason and detail."""
    frame = arrow_to_pandas(table.arrow.take(pa.array(positions, type=pa.int64())))
    meta = pd.DataFrame(
        {
            "source_file": str(table.path),
            "source_line": table.line_numbers(positions),
            "reason": reasons,
            "detail": details,
        }
    )
    return pd.concat([meta, frame.astype(object)], axis=1)


def quarantine_frame(table: RawTable, rows: np.ndarray, checks: RowChecks) -> pd.DataFrame:
    """The rows in ``rows`` (a mask) with their original fields, source file and line, reason and detail."""
    bad = np.flatnonzero(rows)
    if not len(bad):
        return _no_quarantine(table)
    return quarantine_rows(table, bad, np.array(REASONS, dtype=object)[checks.codes[bad] - 1], checks.detail[bad])


#: Empty quarantine frames by (path, schema): what :func:`quarantine_rows` gives for no row depends on
#: nothing else, and building one costs ~1 ms of pandas calls on the one-patient path.
_EMPTY_QUARANTINE: dict[tuple[str, pa.Schema, tuple], pd.DataFrame] = {}


def _no_quarantine(table: RawTable) -> pd.DataFrame:
    schema = table.arrow.schema
    key = (str(table.path), schema, tuple(sorted((schema.metadata or {}).items())))
    template = _EMPTY_QUARANTINE.get(key)  # a local: another thread may clear the dict meanwhile
    if template is None:
        if len(_EMPTY_QUARANTINE) > 256:
            _EMPTY_QUARANTINE.clear()
        none = np.zeros(0, dtype=np.int64)
        template = _EMPTY_QUARANTINE[key] = quarantine_rows(table, none, np.zeros(0, dtype=object),
                                                            np.zeros(0, dtype=object))
    return template.copy(deep=False)  # copy-on-write: the template stays as built


def finish(
    table: RawTable, kept: np.ndarray, checks: RowChecks, accepted: pd.DataFrame, n_duplicates: int, extra=None
) -> TableOutcome:
    """The outcome of a table: every kept row that failed a check goes to quarantine."""
    quarantine = quarantine_frame(table, kept & ~checks.ok, checks)
    return TableOutcome(accepted, quarantine, table.n_rows, n_duplicates, extra or {},
                        date_only_times=checks.date_only)


def strip(series: pd.Series) -> pd.Series:
    """Trimmed text, with empty text as missing."""
    stripped = series.str.strip()
    empty = (stripped == "").to_numpy(dtype=bool, na_value=False)
    return stripped.where(~empty, None) if empty.any() else stripped  # `where` alone cost ~0.15 ms a call


def patient_ids(frame: pd.DataFrame, checks: RowChecks, known: pd.Index | None) -> pd.Series:
    """Trimmed ``patient_id`` of a small table; flags empty ids, and ids outside ``known`` if given."""
    ids = strip(frame["patient_id"])
    checks.flag(ids.isna().to_numpy(), "missing_patient_id", "patient_id is empty")
    if known is not None:
        checks.flag(~ids.isin(known).to_numpy(), "unknown_patient", UNKNOWN_PATIENT_DETAIL)
    return ids


def exact_duplicates(frame: pd.DataFrame) -> np.ndarray:
    """Rows identical to an earlier row in every raw field."""
    if len(frame) <= 1:
        return np.zeros(len(frame), dtype=bool)
    return frame.duplicated(keep="first").to_numpy()


def row_hash(*columns: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row of numeric columns. Equal rows hash equal; a collision only makes an
    extra candidate, which the exact comparison afterwards rejects."""
    result = np.zeros(len(columns[0]), dtype=np.uint64)
    for column in columns:
        if column.dtype.kind not in "biuf":  # text keys (small tables): compare their codes
            column = pd.factorize(column)[0]
        if column.dtype.kind == "f":
            column = np.where(np.isnan(column), np.nan, column + 0.0)  # one NaN, and -0.0 == 0.0
            bits = column.view(np.uint64)
        else:
            bits = column.astype(np.int64).view(np.uint64)
        result = (result ^ bits) * np.uint64(0x9E3779B97F4A7C15)
        result ^= result >> np.uint64(29)
    return result


def _shared_key_groups(sub_keys: pd.DataFrame) -> np.ndarray:
    """Rows of ``sub_keys`` whose keys equal another row's: a cheap hash pre-filter, then exact grouping."""
    maybe = pd.Series(row_hash(*(sub_keys[c].to_numpy() for c in sub_keys.columns))).duplicated(keep=False).to_numpy()
    shared = np.zeros(len(sub_keys), dtype=bool)
    if maybe.any():
        shared[maybe] = sub_keys[maybe].duplicated(keep=False).to_numpy()
    return shared


def conflicts(keys: pd.DataFrame, payload: pd.DataFrame, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among ``candidates``, rows sharing ``keys``: (conflicting rows, redundant copies to drop).

    A group whose payload differs is a conflict (every row of it is flagged). A group whose payload is
    the same after normalisation (e.g. one CRP given in mg/dL and again in mg/L) keeps its first row.
    """
    n = len(candidates)  # one flag per row of keys
    conflicting = np.zeros(n, dtype=bool)
    redundant = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        return conflicting, redundant
    sub_keys = keys.iloc[idx].reset_index(drop=True)
    shared = _shared_key_groups(sub_keys)
    if not shared.any():
        return conflicting, redundant
    groups = sub_keys[shared].reset_index(drop=True)
    group_id = groups.groupby(list(groups.columns), sort=False, dropna=False).ngroup().to_numpy()
    sub_payload = payload.iloc[idx[shared]].reset_index(drop=True).astype(str)
    distinct = sub_payload.assign(_g=group_id).drop_duplicates()
    n_variants = np.bincount(distinct["_g"].to_numpy(), minlength=group_id.max() + 1)
    in_conflict = n_variants[group_id] > 1
    shared_idx = idx[shared]
    conflicting[shared_idx[in_conflict]] = True
    copies = pd.Series(group_id).duplicated(keep="first").to_numpy() & ~in_conflict
    redundant[shared_idx[copies]] = True
    return conflicting, redundant


def settle(
    checks: RowChecks,
    duplicate: np.ndarray,
    keys: pd.DataFrame,
    payload: pd.DataFrame,
    message: str,
    candidates: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Flag conflicting records among ``candidates``; drop exact and normalised duplicates.

    Returns (kept rows, accepted rows, rows dropped as duplicates).
    """
    conflicting, redundant = conflicts(keys, payload, candidates)
    checks.flag(conflicting, "conflicting_duplicate", message)
    drop = duplicate | redundant
    checks.codes[drop] = 0
    kept = ~drop
    return kept, kept & (checks.codes == 0), int(drop.sum())
