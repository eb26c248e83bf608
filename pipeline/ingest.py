"""``crs ingest``: validate a canonical cohort directory, normalise it, and lose no row.

Every raw row ends in exactly one of three places: the accepted tables in ``data/interim/``, the
quarantine (``quarantine.csv``, with its original fields, source file, line and a reason code), or
the count of exact duplicates dropped. ``reports/ingest.json`` holds counts that reconcile:
``rows_read == rows_accepted + rows_quarantined + duplicates_dropped`` per file and overall.

File-level problems (missing directory, file or required column, empty table, timestamps without
``anchor_time``, unreadable file) raise :class:`UserError` before anything is written.

Row checks are vectorised: per-row work is numpy / pandas column arithmetic, and text (analyte
names, units) is normalised once per distinct value, never once per row.
"""

from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.cohort import (
    MISSING_VALUE_TOKENS,
    REASONS,
    TABLES,
    TREATMENTS,
    TableSpec,
)
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.io import atomic_dir, find_table, read_raw_table, write_json
from pipeline.registry import Registry, load_registry, normalize_name, normalize_unit

_REASON_INDEX = {reason: i + 1 for i, reason in enumerate(REASONS)}  # 0 = row is fine
_CENSORED = re.compile(r"^(<=|>=|<|>|≤|≥)\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")
_CENSORING_BY_SIGN = {"<": "left", "<=": "left", "≤": "left", ">": "right", ">=": "right", "≥": "right"}
_HOUR = np.timedelta64(1, "h")
UNKNOWN_PATIENT_DETAIL = "patient_id not among accepted patients (absent from the patients table, or its row was quarantined)"


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


@dataclass
class IngestResult:
    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    report: dict = field(default_factory=dict)


class _RowChecks:
    """Reason code per row (first failing check wins) plus a human-readable detail."""

    def __init__(self, n_rows: int) -> None:
        self.codes = np.zeros(n_rows, dtype=np.int8)
        self.detail = np.full(n_rows, "", dtype=object)

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
        self.codes[mask] = _REASON_INDEX[reason]
        self.detail[mask] = detail(np.flatnonzero(mask)) if callable(detail) else detail

    @property
    def ok(self) -> np.ndarray:
        return self.codes == 0


# --------------------------------------------------------------------------------------------
# Reading (the edge): file-level checks only
# --------------------------------------------------------------------------------------------


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
        missing = [c for c in spec.required_columns if c not in table.column_names]
        if missing:
            raise UserError(f"{path}: missing required column '{missing[0]}'")
        seen: set[str] = set()
        for column in table.column_names:
            if column in seen:
                raise UserError(f"{path}: column '{column}' appears twice")
            seen.add(column)
        if table.num_rows == 0 and spec.name not in (TREATMENTS.name, *optional_tables):
            raise UserError(f"{path}: table '{spec.name}' has no rows")
        raw[spec.name] = RawTable(spec, path, table)
    return raw


# --------------------------------------------------------------------------------------------
# Column parsers (vectorised)
# --------------------------------------------------------------------------------------------


def _strip(series: pd.Series) -> pd.Series:
    stripped = series.str.strip()
    return stripped.where(stripped != "", None)


def _parse_values(text: pd.Series, checks: _RowChecks) -> tuple[np.ndarray, np.ndarray]:
    """Numeric value and censoring (``none``/``left``/``right``) from result text like ``<1.5``."""
    lowered = text.str.lower()
    missing = (text.isna() | lowered.isin(MISSING_VALUE_TOKENS)).to_numpy()
    checks.flag(missing, "missing_value", "value is empty")
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    censoring = np.full(len(text), "none", dtype=object)
    needs_pattern = ~missing & np.isnan(values)
    if needs_pattern.any():
        # Only the rare non-numeric texts go through the regular expression.
        parts = text[needs_pattern].str.replace(" ", "", regex=False).str.extract(_CENSORED)
        bound = pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype=float)
        values[needs_pattern] = bound
        parsed = ~np.isnan(bound)
        idx = np.flatnonzero(needs_pattern)
        censoring[idx[parsed]] = parts[0][parsed].map(_CENSORING_BY_SIGN).to_numpy(dtype=object)
        checks.flag(needs_pattern & np.isnan(values), "unparseable_value", "value is not a number or censored number")
    return values, censoring


def _row_hash(*columns: np.ndarray) -> np.ndarray:
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


def _exact_duplicates(frame: pd.DataFrame) -> np.ndarray:
    """Rows identical to an earlier row in every raw field."""
    return frame.duplicated(keep="first").to_numpy()


def _conflicts(keys: pd.DataFrame, payload: pd.DataFrame, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among ``candidates``, rows sharing ``keys``: (conflicting rows, redundant copies to drop).

    A group whose payload differs is a conflict (every row of it is flagged). A group whose payload is
    the same after normalisation (e.g. one CRP given in mg/dL and again in mg/L) keeps its first row.
    """
    n = len(keys)
    conflicting = np.zeros(n, dtype=bool)
    redundant = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        return conflicting, redundant
    sub_keys = keys.iloc[idx].reset_index(drop=True)
    # Cheap pre-filter on a hash of the keys, then exact grouping on the few candidates.
    maybe = pd.Series(_row_hash(*(sub_keys[c].to_numpy() for c in sub_keys.columns))).duplicated(keep=False).to_numpy()
    shared = np.zeros(len(sub_keys), dtype=bool)
    if maybe.any():
        shared[maybe] = sub_keys[maybe].duplicated(keep=False).to_numpy()
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


# --------------------------------------------------------------------------------------------
# Per-table validation (pure)
# --------------------------------------------------------------------------------------------


@dataclass
class _TableOutcome:
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    duplicates_dropped: int
    extra: dict = field(default_factory=dict)

    def counts(self, path: Path) -> dict:
        reasons = self.quarantine["reason"].value_counts().sort_index() if len(self.quarantine) else pd.Series()
        return {
            "path": str(path),
            "rows_read": self.rows_read,
            "rows_accepted": int(len(self.accepted)),
            "rows_quarantined": int(len(self.quarantine)),
            "duplicates_dropped": self.duplicates_dropped,
            "quarantine_by_reason": {str(k): int(v) for k, v in reasons.items()},
        }


def _quarantine_frame(table: RawTable, rows: np.ndarray, checks: _RowChecks) -> pd.DataFrame:
    bad = np.flatnonzero(rows)
    frame = table.arrow.take(pa.array(bad, type=pa.int64())).to_pandas()
    meta = pd.DataFrame(
        {
            "source_file": str(table.path),
            "source_line": table.line_numbers(bad),
            "reason": np.array(REASONS, dtype=object)[checks.codes[bad] - 1],
            "detail": checks.detail[bad],
        }
    )
    return pd.concat([meta, frame.astype(object)], axis=1)


def _finish(
    table: RawTable, kept: np.ndarray, checks: _RowChecks, accepted: pd.DataFrame, n_duplicates: int, extra=None
) -> _TableOutcome:
    quarantine = _quarantine_frame(table, kept & ~checks.ok, checks)
    return _TableOutcome(accepted, quarantine, table.n_rows, n_duplicates, extra or {})


def _patient_ids(frame: pd.DataFrame, checks: _RowChecks, known: pd.Index | None) -> pd.Series:
    ids = _strip(frame["patient_id"])
    checks.flag(ids.isna().to_numpy(), "missing_patient_id", "patient_id is empty")
    if known is not None:
        checks.flag(~ids.isin(known).to_numpy(), "unknown_patient", UNKNOWN_PATIENT_DETAIL)
    return ids


def validate_patients(table: RawTable) -> _TableOutcome:
    frame = table.frame
    duplicate = _exact_duplicates(frame)
    checks = _RowChecks(len(frame))
    checks.codes[duplicate] = -1  # dropped and counted, never checked or quarantined
    ids = _patient_ids(frame, checks, None)
    if "anchor_time" in frame.columns:
        anchor_text = _strip(frame["anchor_time"])
        anchors = pd.to_datetime(anchor_text, format="ISO8601", errors="coerce", utc=True)
        checks.flag((anchor_text.notna() & anchors.isna()).to_numpy(), "bad_time", "anchor_time is not ISO 8601")
    repeated = np.zeros(len(frame), dtype=bool)
    repeated[~duplicate] = ids[~duplicate].duplicated(keep=False).to_numpy()
    checks.flag(repeated & ids.notna().to_numpy(), "conflicting_duplicate", "patient_id given twice with different fields")
    checks.codes[duplicate] = 0
    kept = ~duplicate
    good = kept & checks.ok
    accepted = frame[good].copy()
    accepted["patient_id"] = ids[good]
    if "anchor_time" in accepted.columns:
        accepted["anchor_time"] = pd.to_datetime(
            _strip(accepted["anchor_time"]), format="ISO8601", errors="coerce", utc=True
        )
    covariate_types: dict[str, str] = {}
    warnings: list[str] = []
    for column in accepted.columns:
        if column in ("patient_id", "anchor_time"):
            continue
        text = _strip(accepted[column])
        numbers = pd.to_numeric(text, errors="coerce")
        n_text, n_numbers = int(text.notna().sum()), int(numbers.notna().sum())
        # A covariate is numeric when every non-empty value parses as a number.
        if n_text and n_numbers == n_text:
            accepted[column] = numbers.astype("float64")
            covariate_types[column] = "numeric"
        else:
            accepted[column] = text.astype("string")
            covariate_types[column] = "text"
            if n_text and n_numbers >= 0.9 * n_text:
                # Almost all numbers: a stray word (e.g. "unknown") would turn an age into categories.
                odd = text[text.notna() & numbers.isna()]
                warnings.append(
                    f"{table.path}: column '{column}' read as text because {len(odd)} of {n_text} values are not "
                    f"numbers (e.g. '{odd.iloc[0]}' on line {int(table.line_numbers(np.array([odd.index[0]]))[0])}); "
                    "fix or blank them to use it as a number"
                )
    accepted["patient_id"] = accepted["patient_id"].astype("string")
    accepted = accepted.sort_values("patient_id", kind="stable").reset_index(drop=True)
    extra = {"covariate_types": covariate_types, "warnings": warnings}
    return _finish(table, kept, checks, accepted, int(duplicate.sum()), extra)


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_EPOCH = np.datetime64(0, "s")


def _arrow_trim(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Trimmed text (empty stays empty: every parser downstream rejects it)."""
    trimmed = pc.utf8_trim_whitespace(values)
    return trimmed.combine_chunks() if isinstance(trimmed, pa.ChunkedArray) else trimmed


def _encode_stripped(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes of trimmed text, -1 for empty or null, and the trimmed dictionary.

    For low-cardinality columns (ids, analyte names, units) trimming the dictionary instead of every
    row saves whole passes over millions of strings. Entries equal after trimming stay separate
    codes that carry the same text.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    texts = [text.strip() for text in encoded.dictionary.to_pylist()]
    remap = np.array([i if text else -1 for i, text in enumerate(texts)] + [-1], dtype=np.int64)
    return remap[_indices(encoded)], texts


def _arrow_numbers(values: pa.Array) -> np.ndarray:
    """Plain numbers (``12``, ``-3.5``, ``1e3``) as float; NaN for anything else or null."""
    is_number = pc.fill_null(pc.match_substring_regex(values, f"^{_NUMBER}$"), False)
    out = np.full(len(values), np.nan)
    mask = is_number.to_numpy(zero_copy_only=False)
    if mask.any():
        out[mask] = pc.cast(pc.filter(values, is_number), pa.float64()).to_numpy(zero_copy_only=False)
    return out


def _indices(encoded: pa.DictionaryArray) -> np.ndarray:
    """Dictionary indices as int64 with -1 for null."""
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _epoch_seconds(stamps: pd.Series) -> np.ndarray:
    return (stamps.dt.tz_localize(None).to_numpy() - _EPOCH) / np.timedelta64(1, "s")


def _is_patient_time_sorted(patient: np.ndarray, hours: np.ndarray) -> bool:
    dp, dh = np.diff(patient), np.diff(hours)
    return bool(np.all((dp > 0) | ((dp == 0) & (dh >= 0))))


def _patient_time_order(patient: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Row order by (patient, hours). np.lexsort takes ~2 s on 5 M rows; one int64 key (patient in the
    high bits, hours in milliseconds below) sorts in a fraction of that, and the result is checked,
    falling back to lexsort if millisecond rounding or the key range could have misordered anything."""
    probe = np.linspace(0, len(patient) - 1, min(len(patient), 1000)).astype(np.int64)
    if _is_patient_time_sorted(patient[probe], hours[probe]) and _is_patient_time_sorted(patient, hours):
        return np.arange(len(patient))  # already in order (a cheap probe first spares unsorted input a pass)
    if len(patient) and patient.max() < 2**22 and np.abs(hours).max() < 2.0e6:  # +-228 years in ms < 2**43
        key = (patient.astype(np.int64) << 43) + np.round((hours + 2.0e6) * 3.6e6 / 2.0).astype(np.int64)
        order = np.argsort(key)
        if _is_patient_time_sorted(patient[order], hours[order]):
            return order
    return np.lexsort((hours, patient))


def _anchor_seconds(patients: pd.DataFrame) -> np.ndarray | None:
    """Each accepted patient's anchor as epoch seconds (NaN if blank); None without the column."""
    if "anchor_time" not in patients.columns:
        return None
    return _epoch_seconds(patients["anchor_time"])


def _arrow_hours(
    table: RawTable, time_text: pa.Array, patient_row: np.ndarray, anchor_s: np.ndarray | None, checks: _RowChecks
) -> np.ndarray:
    """Hours since anchor for a ``time`` column holding either numbers of hours or ISO timestamps.

    The form is decided per file by the majority of non-empty values; rows in the other form, empty
    times and timestamps of patients without an anchor are flagged ``bad_time``. ``patient_row`` is
    each row's position in the accepted patients table (-1 if unknown).
    """
    present = pc.fill_null(pc.not_equal(time_text, ""), False).to_numpy(zero_copy_only=False)
    # Decide the file's form on a sample first: a clear timestamp file skips a numeric pass over
    # millions of timestamps. Only an unclear sample falls back to counting every row.
    sample = pc.filter(time_text, pc.fill_null(pc.not_equal(time_text, ""), False))
    sample = sample.take(pa.array(np.linspace(0, len(sample) - 1, min(len(sample), 20_000)).astype(np.int64)))
    sample_numeric = np.isfinite(_arrow_numbers(sample)).mean() if len(sample) else 1.0
    if sample_numeric > 0.2:
        numeric = _arrow_numbers(time_text)
        numeric_ok = np.isfinite(numeric)
        if numeric_ok.sum() * 2 >= present.sum():
            checks.flag(~numeric_ok, "bad_time", "time is not a number of hours (file uses hours since anchor)")
            return numeric
    if anchor_s is None:
        raise UserError(
            f"{table.path}: column 'time' holds timestamps but the patients table has no 'anchor_time' column"
        )
    stamps = pd.to_datetime(time_text.to_pandas(), format="ISO8601", errors="coerce", utc=True)
    stamp_s = _epoch_seconds(stamps)
    checks.flag(np.isnan(stamp_s), "bad_time", "time is not an ISO 8601 timestamp")
    anchor_row = np.where(patient_row >= 0, anchor_s[np.maximum(patient_row, 0)], np.nan)
    checks.flag(np.isnan(anchor_row), "bad_time", "patient has no anchor_time for a timestamp")
    return (stamp_s - anchor_row) / 3600.0


def validate_measurements(
    table: RawTable, patients: pd.DataFrame, registry: Registry
) -> _TableOutcome:
    """Measurements are the big table (millions of rows): validated with Arrow kernels and integer
    codes; text is only ever handled once per distinct value."""
    raw = table.arrow
    n_rows = raw.num_rows
    checks = _RowChecks(n_rows)

    patient_code, patient_texts = _encode_stripped(raw.column("patient_id"))
    checks.flag(patient_code < 0, "missing_patient_id", "patient_id is empty")
    known = patients["patient_id"].to_numpy(dtype=object)
    known_ids = pa.array(known, type=pa.string())
    position = {pid: i for i, pid in enumerate(known)}
    patient_lut = np.array([position.get(text, -1) for text in patient_texts] + [-1], dtype=np.int64)
    patient_row = patient_lut[patient_code]
    checks.flag(patient_row < 0, "unknown_patient", UNKNOWN_PATIENT_DETAIL)

    hours = _arrow_hours(table, _arrow_trim(raw.column("time")), patient_row, _anchor_seconds(patients), checks)

    name_idx, names = _encode_stripped(raw.column("analyte"))
    checks.flag(name_idx < 0, "missing_value", "analyte is empty")

    value_text = _arrow_trim(raw.column("value"))  # "" stays "": a missing-value token below
    values = _arrow_numbers(value_text)
    lowered = pc.utf8_lower(value_text)
    missing = pc.or_(pc.is_null(value_text), pc.is_in(lowered, value_set=pa.array(sorted(MISSING_VALUE_TOKENS))))
    missing = pc.fill_null(missing, True).to_numpy(zero_copy_only=False)
    checks.flag(missing, "missing_value", "value is empty")
    censoring = np.zeros(n_rows, dtype=np.int8)  # 0 none, 1 left, 2 right
    needs_pattern = ~missing & np.isnan(values)
    if needs_pattern.any():
        # Only the rare non-numeric texts go through the pandas regular expression.
        idx = np.flatnonzero(needs_pattern)
        text = value_text.take(pa.array(idx)).to_pandas()
        parts = text.str.replace(" ", "", regex=False).str.extract(_CENSORED)
        bound = pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype=float)
        values[idx] = bound
        side = parts[0].map({"<": 1, "<=": 1, "≤": 1, ">": 2, ">=": 2, "≥": 2}).fillna(0).to_numpy(dtype=np.int8)
        censoring[idx] = side
        checks.flag(needs_pattern & np.isnan(values), "unparseable_value", "value is not a number or censored number")

    # Registry lookups: one per distinct name, one per (analyte, unit) pair.
    codes = registry.analytes.index.tolist()
    code_pos = {code: i for i, code in enumerate(codes)}
    name_code = np.array([code_pos.get(registry.synonyms.get(normalize_name(n)), -1) for n in names] + [-1])
    code_idx = name_code[name_idx]  # name_idx -1 picks the trailing -1
    known_analyte = code_idx >= 0

    unit_idx, unit_names = _encode_stripped(raw.column("unit"))
    unit_norm = [normalize_unit(u) for u in unit_names] + [""]  # index -1: empty unit
    scale_lut = np.full((len(codes), len(unit_norm)), np.nan)
    offset_lut = np.zeros((len(codes), len(unit_norm)))
    for i, code in enumerate(codes):
        for j, unit in enumerate(unit_norm):
            conversion = registry.conversions.get((code, unit))
            if conversion is not None:
                scale_lut[i, j], offset_lut[i, j] = conversion
    safe_code = np.maximum(code_idx, 0)
    scale = np.where(known_analyte, scale_lut[safe_code, unit_idx], np.nan)
    offset = np.where(known_analyte, offset_lut[safe_code, unit_idx], 0.0)
    checks.flag(
        known_analyte & np.isnan(scale),
        "unknown_unit",
        lambda rows: np.array(
            [f"unit '{(unit_names + [''])[unit_idx[i]]}' has no conversion for {names[name_idx[i]]}" for i in rows],
            dtype=object,
        ),
    )
    with np.errstate(invalid="ignore"):
        converted = np.where(known_analyte, values * np.where(np.isnan(scale), 1.0, scale) + offset, values)
        low = registry.analytes["plausible_min"].to_numpy(dtype=float)[safe_code]
        high = registry.analytes["plausible_max"].to_numpy(dtype=float)[safe_code]
        outside = known_analyte & ((converted < low) | (converted > high) | ~np.isfinite(converted))
    canonical_units = registry.analytes["canonical_unit"].tolist()
    checks.flag(
        outside,
        "out_of_range",
        lambda rows: np.array(
            [f"{converted[i]:g} {canonical_units[code_idx[i]]} outside plausible range [{low[i]:g}, {high[i]:g}]"
             for i in rows],
            dtype=object,
        ),
    )

    # Rows sharing (patient, time, analyte) are the only candidates both for exact duplicates (every raw
    # field equal: dropped whatever their content) and for conflicts; one hash pass finds them, and raw
    # text is compared for those few rows only.
    analyte_key = np.where(known_analyte, code_idx, len(codes) + name_idx)
    shared = np.flatnonzero(pd.Series(_row_hash(patient_row, hours, analyte_key)).duplicated(keep=False).to_numpy())
    duplicate = np.zeros(n_rows, dtype=bool)
    if shared.size:
        subset = raw.take(pa.array(shared)).to_pandas()
        duplicate[shared[subset.duplicated(keep="first").to_numpy()]] = True
    checks.codes[duplicate] = -1  # excluded from the conflict check; restored below

    # Same patient, time and analyte: conflicting values are quarantined, equal ones deduplicated.
    ok = np.zeros(n_rows, dtype=bool)
    ok[shared] = checks.codes[shared] == 0
    keys = pd.DataFrame({"p": patient_row, "h": hours, "a": analyte_key})
    payload = pd.DataFrame({"v": converted, "c": censoring})
    conflicting, redundant = _conflicts(keys, payload, ok)
    checks.flag(conflicting, "conflicting_duplicate", "same patient, time and analyte with a different value")
    drop = duplicate | redundant
    checks.codes[drop] = 0
    kept = ~drop
    good_rows = np.flatnonzero(kept & (checks.codes == 0))
    order = good_rows[_patient_time_order(patient_row[good_rows], hours[good_rows])]

    # Output columns: text built from small dictionaries, never per row in Python.
    out_names = pa.array([codes[c] if c >= 0 else n for n, c in zip(names, name_code[:-1], strict=True)] or [""],
                         type=pa.string())
    out_units = pa.array(unit_names + canonical_units, type=pa.string())
    unit_out_idx = np.where(known_analyte, len(unit_names) + safe_code, unit_idx)[order]

    def _text(indices: np.ndarray, dictionary: pa.Array) -> pa.Array:
        arr = pa.DictionaryArray.from_arrays(pa.array(indices, mask=indices < 0, type=pa.int32()), dictionary)
        return pc.cast(arr, pa.string())

    accepted = pa.table(
        {
            "patient_id": known_ids.take(pa.array(patient_row[order])),
            "hours_since_anchor": pa.array(hours[order]),
            "analyte": _text(name_idx[order], out_names),
            "value": pa.array(converted[order]),
            "unit": _text(unit_out_idx, out_units),
            "censoring": _text(censoring[order].astype(np.int32), pa.array(["none", "left", "right"])),
            "known_analyte": pa.array(known_analyte[order]),
        }
    ).to_pandas()

    # What was normalised, for the report (accepted rows only): counts per distinct (name, unit).
    n_units = len(unit_norm)
    pair_counts = np.bincount(name_idx[good_rows] * n_units + (unit_idx[good_rows] % n_units),
                              minlength=max(len(names), 1) * n_units)
    conversions: Counter = Counter()
    synonyms: Counter = Counter()
    unknown: Counter = Counter()
    found: Counter = Counter()
    for key in np.flatnonzero(pair_counts).tolist():
        rows = int(pair_counts[key])
        n_idx, u_idx = divmod(key, n_units)
        name, c = names[n_idx], int(name_code[n_idx])
        if c < 0:
            unknown[name] += rows
            continue
        found[codes[c]] += rows
        if unit_norm[u_idx] != normalize_unit(canonical_units[c]):
            conversions[f"{codes[c]}: {unit_names[u_idx]} -> {canonical_units[c]}"] += rows
        if name != codes[c]:
            synonyms[f"{name} -> {codes[c]}"] += rows
    extra = {
        "analytes_found": dict(sorted(found.items())),
        "unknown_analytes": dict(sorted(unknown.items())),
        "unit_conversions": dict(sorted(conversions.items())),
        "synonyms_mapped": dict(sorted(synonyms.items())),
    }
    return _finish(table, kept, checks, accepted, int(drop.sum()), extra)


def _open_small_table(
    table: RawTable, patients: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, _RowChecks, pd.Series, np.ndarray]:
    """Common first checks of the small time-stamped tables (events, treatments)."""
    frame = table.frame
    duplicate = _exact_duplicates(frame)
    checks = _RowChecks(len(frame))
    checks.codes[duplicate] = -1  # excluded from every check; dropped and counted at the end
    known = pd.Index(patients["patient_id"].to_numpy(dtype=object))
    ids = _patient_ids(frame, checks, known)
    patient_row = known.get_indexer(ids.to_numpy(dtype=object)).astype(np.int64)
    hours = _arrow_hours(
        table, _arrow_trim(table.arrow.column("time")), patient_row, _anchor_seconds(patients), checks
    )
    return frame, duplicate, checks, ids, hours


def _settle(
    checks: _RowChecks, duplicate: np.ndarray, keys: pd.DataFrame, payload: pd.DataFrame, message: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Flag conflicting records; drop exact and normalised duplicates. Returns (kept, good, dropped)."""
    conflicting, redundant = _conflicts(keys, payload, checks.codes == 0)
    checks.flag(conflicting, "conflicting_duplicate", message)
    drop = duplicate | redundant
    checks.codes[drop] = 0
    kept = ~drop
    return kept, kept & (checks.codes == 0), int(drop.sum())


def validate_events(table: RawTable, patients: pd.DataFrame) -> _TableOutcome:
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    event = _strip(frame["event"]).str.upper()
    grade_text = _strip(frame["grade"])
    checks.flag((event.isna() | grade_text.isna()).to_numpy(), "missing_value", "event or grade is empty")
    grade = pd.to_numeric(grade_text, errors="coerce").to_numpy(dtype=float)
    checks.flag(
        ~np.isin(grade, [0, 1, 2, 3, 4, 5]), "invalid_grade", "grade is not an integer 0-5"
    )
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "e": event.to_numpy(dtype=object), "h": hours})
    kept, good, dropped = _settle(
        checks, duplicate, keys, pd.DataFrame({"g": grade}), "same patient, event and time with a different grade"
    )
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "event": pd.array(event.to_numpy(dtype=object)[good], dtype="string"),
            "grade": grade[good].astype(np.int8),
            "hours_since_anchor": hours[good],
        }
    ).sort_values(["patient_id", "hours_since_anchor", "event"], kind="stable")
    return _finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def validate_treatments(table: RawTable, patients: pd.DataFrame) -> _TableOutcome:
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    drug = _strip(frame["drug"]).str.lower()
    checks.flag(drug.isna().to_numpy(), "missing_value", "drug is empty")
    dose_text = _strip(frame["dose"]) if "dose" in frame.columns else pd.Series([None] * len(frame), dtype="str")
    dose = pd.to_numeric(dose_text, errors="coerce").to_numpy(dtype=float)
    checks.flag((dose_text.notna().to_numpy() & np.isnan(dose)), "unparseable_value", "dose is not a number")
    with np.errstate(invalid="ignore"):
        checks.flag(dose < 0, "out_of_range", "dose is negative")
    unit = _strip(frame["unit"]) if "unit" in frame.columns else pd.Series([None] * len(frame), dtype="str")
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "h": hours, "d": drug.to_numpy(dtype=object)})
    payload = pd.DataFrame({"dose": dose, "u": unit.to_numpy(dtype=object)})
    kept, good, dropped = _settle(checks, duplicate, keys, payload, "same patient, time and drug with a different dose")
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "hours_since_anchor": hours[good],
            "drug": pd.array(drug.to_numpy(dtype=object)[good], dtype="string"),
            "dose": dose[good],
            "unit": pd.array(unit.to_numpy(dtype=object)[good], dtype="string"),
        }
    ).sort_values(["patient_id", "hours_since_anchor", "drug"], kind="stable")
    return _finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def _empty_treatments() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.array([], dtype="string"),
            "hours_since_anchor": np.zeros(0),
            "drug": pd.array([], dtype="string"),
            "dose": np.zeros(0),
            "unit": pd.array([], dtype="string"),
        }
    )


# --------------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------------


def run(raw: dict[str, RawTable], registry: Registry | None = None) -> IngestResult:
    """Validate and normalise raw cohort tables. Pure: no file is read or written."""
    registry = registry or load_registry()
    outcomes: dict[str, _TableOutcome] = {}
    outcomes["patients"] = validate_patients(raw["patients"])
    patients = outcomes["patients"].accepted
    outcomes["measurements"] = validate_measurements(raw["measurements"], patients, registry)
    outcomes["events"] = validate_events(raw["events"], patients)
    if "treatments" in raw:
        outcomes["treatments"] = validate_treatments(raw["treatments"], patients)

    tables = {name: outcome.accepted for name, outcome in outcomes.items()}
    tables.setdefault("treatments", _empty_treatments())
    quarantine = pd.concat([o.quarantine for o in outcomes.values()], ignore_index=True)

    files = {name: outcomes[name].counts(raw[name].path) for name in outcomes}
    by_reason: Counter = Counter()
    for counts in files.values():
        by_reason.update(counts["quarantine_by_reason"])
    report = {
        "rows_read": sum(c["rows_read"] for c in files.values()),
        "rows_accepted": sum(c["rows_accepted"] for c in files.values()),
        "rows_quarantined": sum(c["rows_quarantined"] for c in files.values()),
        "duplicates_dropped": sum(c["duplicates_dropped"] for c in files.values()),
        "quarantine_by_reason": {r: by_reason[r] for r in REASONS if by_reason[r]},
        "files": files,
        "patients": int(len(patients)),
        "patients_with_measurements": int(tables["measurements"]["patient_id"].nunique()),
        "covariate_types": outcomes["patients"].extra["covariate_types"],
        **outcomes["measurements"].extra,
        "warnings": outcomes["patients"].extra["warnings"],
    }
    return IngestResult(tables=tables, quarantine=quarantine, report=report)


def ingest_cohort(cohort_dir: str | Path) -> IngestResult:
    """Read and validate a cohort directory (no output written)."""
    return run(read_cohort(cohort_dir))


def main(config: Config, cohort: Path | None = None, out: Path | None = None, report: Path | None = None) -> None:
    cohort_dir = cohort or config.cohort.path
    out_dir = out or config.ingest.output_dir
    report_path = report or config.ingest.report_path
    result = ingest_cohort(cohort_dir)
    result.report = {"cohort": str(cohort_dir), "grading_scale": config.cohort.grading_scale, **result.report}
    # The whole output directory appears at once, and the report only after it.
    with atomic_dir(out_dir) as tmp:
        for name, frame in result.tables.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        result.quarantine.to_csv(tmp / "quarantine.csv", index=False)
    write_json(result.report, report_path)
    r = result.report
    for warning in r["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ingest: {r['rows_read']} rows read, {r['rows_accepted']} accepted, "
        f"{r['rows_quarantined']} quarantined, {r['duplicates_dropped']} duplicates dropped "
        f"-> {out_dir}/, {report_path}"
    )


__all__ = ["IngestResult", "RawTable", "ingest_cohort", "main", "read_cohort", "run"]
