"""The measurements table (millions of rows): validated with Arrow kernels and integer codes.

Steps, each flagging rows in the order of the reason codes: patient ids, times, analyte names
(synonyms -> registry codes), values and censoring, units (conversion to the canonical unit),
plausible ranges, then exact duplicates and conflicting repeats. Text is only ever handled once per
distinct value; the report counts per distinct (name, unit) pair.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters.canonical import RawTable, arrow_to_pandas
from pipeline.ingestion.checks import (
    UNKNOWN_PATIENT_DETAIL,
    RowChecks,
    TableOutcome,
    finish,
    in_parallel,
    row_hash,
    settle,
)
from pipeline.ingestion.text import (
    CENSORING_NAMES,
    arrow_numbers,
    arrow_trim,
    beyond_float32,
    encode_stripped,
    missing_values,
    parse_censored,
)
from pipeline.ingestion.times import (
    anchor_seconds,
    arrow_hours,
    is_numeric_form,
    patient_time_runs,
    present_times,
)
from pipeline.registry import Registry, normalize_name, normalize_unit


@dataclass
class _Analytes:
    """Each row's analyte: the name as given and, when the registry knows it, its canonical code."""

    names: list[str]  # distinct trimmed names as given
    name_idx: np.ndarray  # per row: index into names, -1 if empty
    codes: list[str]  # registry codes, in registry order
    canonical_units: list[str]  # per registry code
    name_code: np.ndarray  # per distinct name (plus a trailing -1): index into codes, -1 if unknown
    code_idx: np.ndarray  # per row: index into codes, -1 if unknown
    known: np.ndarray  # per row: code_idx >= 0
    safe_code: np.ndarray  # per row: code_idx, 0 where unknown (safe for table lookups)


@dataclass
class _Units:
    """Each row's unit as given (dictionary codes) and the normalised spelling per distinct unit."""

    idx: np.ndarray  # per row: index into names, -1 if empty
    names: list[str]
    normalised: list[str]  # per distinct unit, plus "" at the end (index -1: empty unit)


@dataclass
class PatientIds:
    """Each row's position in the accepted patients table (-1: unknown or empty) and whether its id is empty."""

    row: np.ndarray
    missing: np.ndarray

    def take(self, rows: np.ndarray) -> PatientIds:
        return PatientIds(self.row[rows], self.missing[rows])


def patient_ids(column: pa.ChunkedArray, patients: pd.DataFrame) -> PatientIds:
    """Ids given exactly as accepted (trimmed) are looked up in one Arrow hash pass; only the others
    (padded, empty, unknown) are trimmed and looked up per distinct text."""
    known_ids = patients["patient_id"].to_numpy(dtype=object)
    found = pc.index_in(column, value_set=pa.array(known_ids, type=column.type))
    patient_row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = np.zeros(len(patient_row), dtype=bool)
    others = np.flatnonzero(patient_row < 0)
    if others.size:
        patient_code, patient_texts = encode_stripped(column.take(pa.array(others)))
        position = {pid: i for i, pid in enumerate(known_ids)}
        patient_lut = np.array([position.get(text, -1) for text in patient_texts] + [-1], dtype=np.int64)
        patient_row[others] = patient_lut[patient_code]
        missing[others] = patient_code < 0
    return PatientIds(patient_row, missing)


def _patient_rows(
    column: pa.ChunkedArray, patients: pd.DataFrame, checks: RowChecks, ids: PatientIds | None = None
) -> np.ndarray:
    """Each row's position in the accepted patients table (:func:`patient_ids`, or ``ids`` when the
    caller has them already); empty and unknown ids are flagged."""
    ids = patient_ids(column, patients) if ids is None else ids
    checks.flag(ids.missing, "missing_patient_id", "patient_id is empty")
    checks.flag(ids.row < 0, "unknown_patient", UNKNOWN_PATIENT_DETAIL)
    return ids.row


def _resolve_analytes(column: pa.ChunkedArray, registry: Registry, checks: RowChecks) -> _Analytes:
    """Registry code per row: one synonym lookup per distinct name; empty names are flagged."""
    name_idx, names = encode_stripped(column)
    checks.flag(name_idx < 0, "missing_value", "analyte is empty")
    codes = registry.analytes.index.tolist()
    code_pos = {code: i for i, code in enumerate(codes)}
    name_code = np.array([code_pos.get(registry.synonyms.get(normalize_name(n)), -1) for n in names] + [-1])
    code_idx = name_code[name_idx]  # name_idx -1 picks the trailing -1
    canonical_units = registry.analytes["canonical_unit"].tolist()
    return _Analytes(names, name_idx, codes, canonical_units, name_code, code_idx, code_idx >= 0, np.maximum(code_idx, 0))


def _read_values(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per entry of trimmed ``text``: (value, censoring code, missing, unparseable)."""
    values = arrow_numbers(text)
    missing = missing_values(text)
    censoring = np.zeros(len(values), dtype=np.int8)
    needs_pattern = ~missing & np.isnan(values)
    if needs_pattern.any():
        parse_censored(text, needs_pattern, values, censoring)
    return values, censoring, missing, needs_pattern & np.isnan(values)


def _values_and_censoring(column: pa.ChunkedArray, checks: RowChecks) -> tuple[np.ndarray, np.ndarray]:
    """Numeric value (the bound when censored) and censoring code (0 none, 1 left, 2 right) per row.

    Values repeat (``%.4g`` results, censored bounds): each distinct text is read once, through its
    dictionary, and the readings are gathered per row; a null picks the trailing entry (missing)."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    value_text = arrow_trim(encoded.dictionary)  # "" stays "": a missing-value token
    read = _read_values(value_text)
    values, censoring, missing, unparseable = (np.append(a, np.array([fill], a.dtype))[codes]
                                               for a, fill in zip(read, (np.nan, 0, True, False), strict=True))
    checks.flag(missing, "missing_value", "value is empty")
    checks.flag(unparseable, "unparseable_value", "value is not a number or censored number")
    # inf, 1e400 (read as inf) or 1e39 would be infinite in the model's float32 matrix and stop scoring.
    checks.flag(beyond_float32(values), "non_finite_value", "value is infinite or beyond the float32 range")
    return values, censoring


def _conversion_tables(analytes: _Analytes, units: _Units, registry: Registry) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) per (registry code, distinct unit), flattened row-major; scale NaN where the registry
    has no conversion (or no row has that code)."""
    scale = np.full((len(analytes.codes), len(units.normalised)), np.nan)
    offset = np.zeros((len(analytes.codes), len(units.normalised)))
    # Only the codes some row has: no other entry is ever read (all ~60 registry codes cost ~0.15 ms).
    for i in np.unique(analytes.name_code[analytes.name_code >= 0]).tolist():
        code = analytes.codes[i]
        for j, unit in enumerate(units.normalised):
            conversion = registry.conversions.get((code, unit))
            if conversion is not None:
                scale[i, j], offset[i, j] = conversion
    return scale.ravel(), offset.ravel()


def _convert_units(
    column: pa.ChunkedArray, values: np.ndarray, analytes: _Analytes, registry: Registry, checks: RowChecks
) -> tuple[np.ndarray, _Units]:
    """Values of known analytes in their canonical unit; a unit with no conversion is flagged."""
    unit_idx, unit_names = encode_stripped(column)
    units = _Units(unit_idx, unit_names, [normalize_unit(u) for u in unit_names] + [""])
    scale_lut, offset_lut = _conversion_tables(analytes, units, registry)
    # One (code, unit) pair index per row; unit -1 (empty) is the last column, as in 2-D indexing.
    pair = analytes.safe_code * len(units.normalised) + unit_idx % len(units.normalised)
    known = analytes.known
    scale = scale_lut[pair]
    no_conversion = np.isnan(scale)
    given_units = unit_names + [""]
    checks.flag(
        known & no_conversion,
        "unknown_unit",
        lambda rows: np.array(
            [f"unit '{given_units[unit_idx[i]]}' has no conversion for {analytes.names[analytes.name_idx[i]]}"
             for i in rows],
            dtype=object,
        ),
    )
    scale[no_conversion] = 1.0
    converted = values * scale
    converted += offset_lut[pair]
    return np.where(known, converted, values), units


def _flag_out_of_range(converted: np.ndarray, analytes: _Analytes, registry: Registry, checks: RowChecks) -> None:
    """Known analytes outside the registry's plausible range (after conversion), or not finite."""
    with np.errstate(invalid="ignore"):
        low = registry.analytes["plausible_min"].to_numpy(dtype=float)[analytes.safe_code]
        high = registry.analytes["plausible_max"].to_numpy(dtype=float)[analytes.safe_code]
        outside = analytes.known & ((converted < low) | (converted > high) | ~np.isfinite(converted))
    units = analytes.canonical_units
    checks.flag(
        outside,
        "out_of_range",
        lambda rows: np.array(
            [f"{converted[i]:g} {units[analytes.code_idx[i]]} outside plausible range [{low[i]:g}, {high[i]:g}]"
             for i in rows],
            dtype=object,
        ),
    )


def _shared_keys(
    patient_row: np.ndarray, hours: np.ndarray, analyte_key: np.ndarray, runs: tuple[np.ndarray, np.ndarray],
    sortable: np.ndarray,
) -> np.ndarray:
    """Rows whose (patient, time, analyte) another row shares, in row order.

    ``runs`` (:func:`patient_time_runs` of the ``sortable`` rows: known patient, finite time) puts rows
    with one patient and time next to each other: only those runs are grouped by analyte. The few other
    rows (unknown patient, unusable time) are grouped by a hash of the same keys.
    """
    order, same = runs
    in_run = same.copy()
    in_run[:-1] |= same[1:]
    positions = np.flatnonzero(in_run)
    run_rows = order[positions]
    run_key = np.cumsum(~same[positions]) * (int(analyte_key.max(initial=0)) + 1) + analyte_key[run_rows]
    shared = np.zeros(len(patient_row), dtype=bool)
    shared[run_rows] = pd.Series(run_key).duplicated(keep=False).to_numpy()
    loose = np.flatnonzero(~sortable)
    if loose.size:
        loose_hash = row_hash(patient_row[loose], hours[loose], analyte_key[loose])
        shared[loose] = pd.Series(loose_hash).duplicated(keep=False).to_numpy()
    return np.flatnonzero(shared)


def _settle_repeats(
    raw: pa.Table, checks: RowChecks, patient_row: np.ndarray, hours: np.ndarray, analytes: _Analytes,
    converted: np.ndarray, censoring: np.ndarray, runs: tuple[np.ndarray, np.ndarray], sortable: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact duplicates dropped; same patient, time and analyte with another value quarantined as a
    conflict, with the same value (after conversion) kept once. Returns (kept, accepted, dropped).

    Rows sharing (patient, time, analyte) are the only candidates both for exact duplicates (every raw
    field equal: dropped whatever their content) and for conflicts; raw text is compared for those
    few rows only.
    """
    analyte_key = np.where(analytes.known, analytes.code_idx, len(analytes.codes) + analytes.name_idx)
    shared = _shared_keys(patient_row, hours, analyte_key + 1, runs, sortable)
    duplicate = np.zeros(raw.num_rows, dtype=bool)
    if shared.size:
        subset = arrow_to_pandas(raw.take(pa.array(shared)))
        duplicate[shared[subset.duplicated(keep="first").to_numpy()]] = True
    checks.codes[duplicate] = -1  # excluded from the conflict check; restored by settle
    candidates = np.zeros(raw.num_rows, dtype=bool)
    candidates[shared] = checks.codes[shared] == 0
    if candidates.any():
        keys = pd.DataFrame({"p": patient_row, "h": hours, "a": analyte_key}, copy=False)
        payload = pd.DataFrame({"v": converted, "c": censoring}, copy=False)
    else:  # no row shares its keys: settle reads neither frame
        keys = payload = pd.DataFrame()
    message = "same patient, time and analyte with a different value"
    return settle(checks, duplicate, keys, payload, message, candidates)


def _dictionary_text(indices: np.ndarray, dictionary: pa.Array) -> pa.Array:
    """Text column from dictionary indices (-1: null), built without a Python string per row."""
    arr = pa.DictionaryArray.from_arrays(pa.array(indices, mask=indices < 0, type=pa.int32()), dictionary)
    return pc.cast(arr, pa.large_string())  # what pandas' text columns hold: no second copy


def _accepted_frame(
    order: np.ndarray, patients: pd.DataFrame, patient_row: np.ndarray, hours: np.ndarray, analytes: _Analytes,
    units: _Units, converted: np.ndarray, censoring: np.ndarray,
) -> pd.DataFrame:
    """The accepted rows in ``order``: canonical codes and units for known analytes, names as given otherwise.
    The text columns are gathered two at a time (Arrow and numpy release the GIL)."""
    known_ids = pa.array(patients["patient_id"].to_numpy(dtype=object), type=pa.large_string())
    out_names = pa.array(
        [analytes.codes[c] if c >= 0 else n for n, c in zip(analytes.names, analytes.name_code[:-1], strict=True)]
        or [""],
        type=pa.string(),
    )
    out_units = pa.array(units.names + analytes.canonical_units, type=pa.string())
    columns = in_parallel(
        lambda: known_ids.take(pa.array(patient_row[order])),
        lambda: pa.array(hours[order]),
        lambda: _dictionary_text(analytes.name_idx[order], out_names),
        lambda: pa.array(converted[order]),
        lambda: _dictionary_text(
            np.where(analytes.known, len(units.names) + analytes.safe_code, units.idx)[order], out_units),
        lambda: _dictionary_text(censoring[order].astype(np.int32), pa.array(CENSORING_NAMES)),
        lambda: pa.array(analytes.known[order]),
        rows=len(order),
    )
    names = ("patient_id", "hours_since_anchor", "analyte", "value", "unit", "censoring", "known_analyte")
    return arrow_to_pandas(pa.table(dict(zip(names, columns, strict=True))))


@dataclass
class Normalised:
    """What was normalised (accepted rows only), as counts that add up over blocks of patients."""

    found: Counter
    unknown: Counter
    conversions: Counter
    synonyms: Counter

    def add(self, other: Normalised) -> None:
        for mine, theirs in ((self.found, other.found), (self.unknown, other.unknown),
                             (self.conversions, other.conversions), (self.synonyms, other.synonyms)):
            mine.update(theirs)

    def report(self) -> dict:
        return {
            "analytes_found": dict(sorted(self.found.items())),
            # Counts only: the names come from the file and could be anything (ingest.json is kept in git);
            # they stay in measurements.parquet (known_analyte false).
            "unknown_analytes": {"n_names": len(self.unknown), "n_rows": int(sum(self.unknown.values()))},
            "unit_conversions": dict(sorted(self.conversions.items())),
            "synonyms_mapped": dict(sorted(self.synonyms.items())),
        }


def _normalised(good_rows: np.ndarray, analytes: _Analytes, units: _Units) -> Normalised:
    """Counted per distinct (name, unit) pair. Names and units quoted in the report are spellings of
    registry terms (matched after case and space folding), never free text."""
    n_units = len(units.normalised)
    pair_counts = np.bincount(analytes.name_idx[good_rows] * n_units + (units.idx[good_rows] % n_units),
                              minlength=max(len(analytes.names), 1) * n_units)
    out = Normalised(Counter(), Counter(), Counter(), Counter())
    for key in np.flatnonzero(pair_counts).tolist():
        rows = int(pair_counts[key])
        n_idx, u_idx = divmod(key, n_units)
        name, c = analytes.names[n_idx], int(analytes.name_code[n_idx])
        if c < 0:
            out.unknown[name] += rows
            continue
        code, canonical_unit = analytes.codes[c], analytes.canonical_units[c]
        out.found[code] += rows
        if units.normalised[u_idx] != normalize_unit(canonical_unit):
            out.conversions[f"{code}: {units.names[u_idx]} -> {canonical_unit}"] += rows
        if name != code:
            out.synonyms[f"{name} -> {code}"] += rows
    return out


#: Optional measurement column: when the result was known (docs/CONTRACTS.md), and its accepted form.
RESULT_TIME = "result_time"
RESULT_HOURS = "result_hours_since_anchor"


def _sorted_runs(patient_row: np.ndarray, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a known patient with a finite time (the only ones that can be accepted), in stable
    (patient, time) order, with :func:`patient_time_runs`' run marks, and the mask of those rows."""
    sortable = (patient_row >= 0) & np.isfinite(hours)
    if sortable.all():  # the common case: no gathers
        order, same = patient_time_runs(patient_row, hours)
        return order, same, sortable
    rows = np.flatnonzero(sortable)
    order, same = patient_time_runs(patient_row[rows], hours[rows])
    return rows[order], same, sortable


@dataclass(frozen=True)
class TimeForms:
    """The per-file decisions of :func:`arrow_hours` (numbers of hours, or else ISO timestamps) for
    ``time`` and the optional ``result_time``, taken on the whole file when it is validated in blocks."""

    time: bool
    result_time: bool | None

    @classmethod
    def of(cls, table: pa.Table) -> TimeForms:
        result = table.column(RESULT_TIME) if RESULT_TIME in table.column_names else None
        return cls(is_numeric_form(table.column("time")), None if result is None else is_numeric_form(result))


def _patients_and_times(
    table: RawTable, patients: pd.DataFrame, checks: RowChecks, forms: TimeForms | None, ids: PatientIds | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patient position and hours per row (flagging their reasons), and the rows' (patient, time) order."""
    raw = table.arrow
    patient_row = _patient_rows(raw.column("patient_id"), patients, checks, ids)
    hours = arrow_hours(table, raw.column("time"), patient_row, anchor_seconds(patients), checks,
                        numeric_form=None if forms is None else forms.time)
    return (patient_row, hours, *_sorted_runs(patient_row, hours))


def result_hours(
    table: RawTable, patients: pd.DataFrame, hours: np.ndarray, checks: RowChecks, forms: TimeForms | None = None,
    ids: PatientIds | None = None,
) -> np.ndarray | None:
    """Hours since anchor when each result was known (optional ``result_time``: a research cytokine
    panel reported days after the sample); NaN where empty. None without the column. A result before
    its sample is ``out_of_range``; an unreadable one ``bad_time``."""
    if RESULT_TIME not in table.arrow.column_names:
        return None
    text = table.arrow.column(RESULT_TIME)
    present = present_times(text)
    result_checks = RowChecks(table.n_rows)
    patient_row = _patient_rows(table.arrow.column("patient_id"), patients, RowChecks(table.n_rows), ids)
    known = arrow_hours(table, text, patient_row, anchor_seconds(patients), result_checks,
                        numeric_form=None if forms is None else forms.result_time)
    checks.flag(present & ~result_checks.ok, "bad_time", "result_time is not a time in the file's time form")
    with np.errstate(invalid="ignore"):
        checks.flag(present & (known < hours), "out_of_range", "result_time before time (the sample)")
    return np.where(present & result_checks.ok, known, np.nan)


def _analytes_and_values(
    raw: pa.Table, registry: Registry, checks: RowChecks
) -> tuple[_Analytes, _Units, np.ndarray, np.ndarray]:
    """Analyte codes, units, converted values and censoring per row, flagging their reasons."""
    analytes = _resolve_analytes(raw.column("analyte"), registry, checks)
    values, censoring = _values_and_censoring(raw.column("value"), checks)
    converted, units = _convert_units(raw.column("unit"), values, analytes, registry, checks)
    _flag_out_of_range(converted, analytes, registry, checks)
    return analytes, units, converted, censoring


def validate_measurements(
    table: RawTable, patients: pd.DataFrame, registry: Registry, forms: TimeForms | None = None,
    ids: PatientIds | None = None, on_accepted: Callable[[pd.DataFrame], None] | None = None,
) -> TableOutcome:
    """Accepted measurements (sorted by patient and time, canonical codes and units) and the quarantine.

    Patients and times, and analytes, values and units, are read side by side: each half flags its own
    :class:`RowChecks`, and since every reason of the first half comes before every reason of the second
    in the reason order, the first half's reason wins where both flag a row, as one pass in order gives.
    ``forms``: the file's time forms when ``table`` is one block of it (:mod:`.blocks`); the report's
    normalisation counts are then also left as :class:`Normalised` (``extra["normalised"]``) to add up.
    ``ids``: the rows' :func:`patient_ids`, when the caller has them already. ``on_accepted``: called
    with the accepted table as soon as it is complete, before the counts and the quarantine are built
    (``crs ingest`` starts writing it meanwhile); it must not change the table.
    """
    raw = table.arrow
    checks, later = RowChecks(raw.num_rows), RowChecks(raw.num_rows)
    (patient_row, hours, order, same, is_sortable), (analytes, units, converted, censoring) = in_parallel(
        lambda: _patients_and_times(table, patients, checks, forms, ids),
        lambda: _analytes_and_values(raw, registry, later),
        rows=raw.num_rows,
    )
    checks.then(later)
    known = result_hours(table, patients, hours, checks, forms, ids)
    kept, good, dropped = _settle_repeats(
        raw, checks, patient_row, hours, analytes, converted, censoring, (order, same), is_sortable)
    good_rows = np.flatnonzero(good)
    order = order[good[order]]  # accepted rows have a known patient and a finite time
    accepted = _accepted_frame(order, patients, patient_row, hours, analytes, units, converted, censoring)
    if known is not None:
        accepted[RESULT_HOURS] = known[order]
    if on_accepted is not None:
        on_accepted(accepted)
    normalised = _normalised(good_rows, analytes, units)
    extra = {"normalised": normalised} if forms is not None else normalised.report()
    return finish(table, kept, checks, accepted, dropped, extra)
