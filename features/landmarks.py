"""Landmark features and labels from long tables, vectorised, with one cut at L.

Data flow (no per-patient Python loops anywhere):

1. :func:`encode_cohort` maps patients to integer codes ``0..P-1`` (sorted ``patient_id``), keeps the
   analytes needed, and stores each analyte as flat numpy arrays sorted by (patient, hours).
2. :func:`cut_at_landmark` is **the only door to the data**: it returns a :class:`CutTimeline` holding
   rows with ``hours_since_anchor <= L`` and nothing else.
3. :class:`LandmarkContext` / :class:`AnalyteAtLandmark` compute per-patient summaries from a
   ``CutTimeline`` with ``np.bincount`` / ``ufunc.reduceat`` over patient segments; the declarative
   table in :mod:`features.definitions` turns them into named features.
4. Labels come from events through :func:`target_onsets` / :func:`label_at_landmark`, which never
   feed a feature.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import definitions
from features.errors import FeatureError
from features.scores import safe_log2

MEASUREMENT_COLUMNS = ("patient_id", "hours_since_anchor", "analyte", "value")
#: ``SortedRows.censoring`` codes: left-censored ("<1.5", below the limit) and right-censored (">5000").
CENSORED_BELOW, CENSORED_ABOVE = -1, 1
EVENT_COLUMNS = ("patient_id", "event", "grade", "hours_since_anchor")
TREATMENT_COLUMNS = ("patient_id", "hours_since_anchor", "drug")
GRADE_COLUMNS = ("patient_id", "hours_since_anchor", "event", "grade")
#: Syndromes whose grade reached by L is a feature (``grades`` rows, or the events' onsets): a patient
#: without a row has grade 0.
GRADED_EVENTS = ("CRS", "ICANS")
#: CRS components graded from observations (``grades`` rows, from the patient's first assessment on):
#: a patient without a row at or before L was not assessed (NaN).
SUPPORT_COMPONENTS = ("HYPOTENSION", "HYPOXIA")


#: Event name whose onset ends a patient's time at risk for every target.
DEATH_EVENT = "DEATH"


@dataclass(frozen=True)
class Target:
    """A label: first onset of ``event`` with grade >= ``min_grade``."""

    name: str
    event: str
    min_grade: int


@dataclass(frozen=True)
class LandmarkSpec:
    """Everything that decides the landmark matrix (mirrors ``params.yaml``)."""

    landmarks_hours: tuple[float, ...] = (0.0, 24.0, 48.0, 72.0)
    analytes: tuple[str, ...] = definitions.DEFAULT_ANALYTES
    baseline_window_hours: float = 168.0
    horizon_hours: float = 720.0
    targets: tuple[Target, ...] = ()
    #: Without a pre-anchor baseline, the first value in (0, min(L, this)] h stands in for it.
    baseline_fallback_hours: float = 24.0
    static_features: tuple[str, ...] = ()
    #: (analyte, hours) pairs: a result of that analyte without a ``result_hours_since_anchor`` is known
    #: this long after its sample (batch-run research cytokine panels); default 0 (known when sampled).
    result_lag_hours: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        landmarks = tuple(sorted(float(x) for x in self.landmarks_hours))
        if not landmarks or len(set(landmarks)) != len(landmarks):
            raise ValueError("landmarks_hours must be non-empty and distinct")
        object.__setattr__(self, "landmarks_hours", landmarks)
        object.__setattr__(self, "analytes", tuple(dict.fromkeys(a.strip().upper() for a in self.analytes)))
        object.__setattr__(self, "static_features", tuple(self.static_features))
        object.__setattr__(self, "targets", tuple(self.targets))


# --------------------------------------------------------------------------------------------------
# Encoded cohort


@dataclass(frozen=True)
class SortedRows:
    """One analyte (or treatment class): flat arrays sorted by (patient, hours)."""

    patient: np.ndarray  # int64 patient code
    hours: np.ndarray  # float64 hours since anchor
    value: np.ndarray  # float64 canonical unit (the bound when censored); NaN for treatments
    censoring: np.ndarray  # int8: CENSORED_BELOW (-1, "<x"), 0 (exact), CENSORED_ABOVE (+1, ">x")
    #: Hours since anchor when each value was known (>= ``hours``); None: known when sampled.
    known: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> SortedRows:
        """The rows where ``keep`` (a boolean mask) is True, in order."""
        rows = np.flatnonzero(keep)
        known = None if self.known is None else np.take(self.known, rows)
        return SortedRows(np.take(self.patient, rows), np.take(self.hours, rows), np.take(self.value, rows),
                          np.take(self.censoring, rows), known)

    @staticmethod
    def empty() -> SortedRows:
        return SortedRows(np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int8))


@dataclass(frozen=True)
class Timeline:
    """The whole cohort, encoded. Never handed to a feature: see :func:`cut_at_landmark`."""

    patient_ids: np.ndarray  # object array of str, sorted; code i <-> patient_ids[i]
    analytes: dict[str, SortedRows]
    treatments: dict[str, SortedRows]
    #: Grade in force over time: ``CRS``, ``ICANS`` and, from observation-graded timelines, the CRS
    #: components ``HYPOTENSION`` / ``HYPOXIA`` (value = grade from that row on).
    grades: dict[str, SortedRows] = field(default_factory=dict)
    #: Per patient, hours since anchor where published scores' baseline window ends (lymphodepletion
    #: start, when known; NaN: the anchor, as for every other baseline). None: unknown for everyone.
    score_baseline_end: np.ndarray | None = None

    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)


@dataclass(frozen=True)
class CutTimeline:
    """The cohort as known at ``landmark_hours``: every row has ``hours <= landmark_hours``."""

    landmark_hours: float
    n_patients: int
    analytes: dict[str, SortedRows]
    treatments: dict[str, SortedRows]
    grades: dict[str, SortedRows] = field(default_factory=dict)
    score_baseline_end: np.ndarray | None = None  # capped at L: never a row after the landmark


def _require(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FeatureError(f"{table}: missing column(s) {', '.join(repr(c) for c in missing)}")


def _arrow_strings(values: pd.Series) -> pa.Array:
    """Text for Arrow hashing; any non-string column (numbers, categories, an object column holding
    numbers such as ids 1, 2) is matched as its text."""
    if not isinstance(values.dtype, pd.StringDtype):
        values = values.astype("str")
    return pa.array(values)


def _codes(values: pd.Series, universe: Sequence[str]) -> np.ndarray:
    """Integer position of each value in ``universe`` (-1 when absent or null), hashed in Arrow.

    Only the first value of each run of equal values is hashed (ingest writes patient ids in runs, so
    this hashes about one id per patient instead of one per row); every run gets its head's code.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):  # each category hashed once, not each row
        per_category = _codes_hashed(_arrow_strings(pd.Series(values.cat.categories)), universe)
        return np.append(per_category, -1)[values.cat.codes.to_numpy()]  # code -1 (missing) -> -1
    arr = _arrow_strings(values)
    if len(arr) > 1:
        change = pc.fill_null(pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1)), True)
        starts = np.flatnonzero(np.concatenate([[True], np.asarray(change)]))
        if len(starts) < len(arr):
            heads = _codes_hashed(arr.take(pa.array(starts)), universe)
            return np.repeat(heads, np.diff(np.append(starts, len(arr))))
    return _codes_hashed(arr, universe)


def _codes_hashed(arr: pa.Array | pa.ChunkedArray, universe: Sequence[str]) -> np.ndarray:
    found = pc.index_in(arr, value_set=pa.array(list(universe), type=arr.type))
    return _to_numpy(pc.fill_null(found, -1)).astype(np.int64)


def _to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A null-free Arrow array as numpy (chunks concatenated once, without a pandas round trip)."""
    if not isinstance(values, pa.ChunkedArray):
        return values.to_numpy(zero_copy_only=False)
    if values.num_chunks == 0:
        return np.empty(0, dtype=values.type.to_pandas_dtype())
    return np.concatenate([c.to_numpy(zero_copy_only=False) for c in values.chunks])


def _first_appearance(slot: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The ``present`` slots in the order they first appear in ``slot``, found from a growing prefix (a
    table usually shows all its few categories within its first rows)."""
    first = np.full(len(present), len(slot), dtype=np.int64)
    lo, size = 0, 4096
    while lo < len(slot) and (first[present] == len(slot)).any():
        uniques, at = np.unique(slot[lo:lo + size], return_index=True)
        new = first[uniques] == len(slot)
        first[uniques[new]] = at[new] + lo
        lo, size = lo + size, size * 4
    order = np.flatnonzero(present)
    return order[np.argsort(first[order], kind="stable")]


def _category_name_index(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """:func:`_name_index` of a categorical column from its codes: its categories' text, without the
    categories no row uses, in order of first appearance (None for missing), as hashing the rows gives."""
    categories = pd.Series(values.cat.categories).astype("str").to_numpy(dtype=object)
    slot = values.cat.codes.to_numpy().astype(np.int32)  # -1 (missing) -> len(categories)
    slot[slot < 0] = len(categories)
    order = _first_appearance(slot, np.bincount(slot, minlength=len(categories) + 1) > 0)
    position = np.zeros(len(categories) + 1, dtype=np.int32)
    position[order] = np.arange(len(order), dtype=np.int32)
    names = [None if i == len(categories) else str(categories[i]) for i in order]
    return np.take(position, slot), names


def _name_index(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Per row, the position of its text in the list of distinct texts (first-appearance order; a missing
    text is an entry of its own, None in the list)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _category_name_index(values)
    # One hashing pass (a missing text is encoded as an entry of its own, None in the list); every
    # chunk of a chunked result carries the same, final dictionary.
    encoded = pc.dictionary_encode(_arrow_strings(values), null_encoding="encode")
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.empty(0, dtype=np.int32), []
    names = [None if u is None else str(u) for u in chunks[-1].dictionary.to_pylist()]
    # int32 (Arrow's index type): half the memory of intp for 10^7 rows
    return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False), names


@dataclass(frozen=True)
class MeasurementKeys:
    """The measurements' text keys hashed once, so choosing the analytes (``fit``) and encoding the
    cohort (``transform``) do not hash every row's strings twice. Built by :func:`measurement_keys`."""

    patient_ids: np.ndarray  # the patient universe the codes index (sorted, as :func:`patient_index`)
    patient: np.ndarray  # int64 per row: position in ``patient_ids``, -1 when not a known patient
    name_index: np.ndarray  # int32 per row: position in ``names`` (None there for a missing name)
    names: list[str | None]  # the distinct analyte names as written (before trim + upper-case)


def measurement_keys(measurements: pd.DataFrame, patient_ids: np.ndarray) -> MeasurementKeys:
    """Patient codes and analyte-name indices of ``measurements`` (patients outside ``patient_ids``: -1)."""
    _require(measurements, MEASUREMENT_COLUMNS, "measurements")
    name_index, names = _name_index(measurements["analyte"])
    return MeasurementKeys(patient_ids, _codes(measurements["patient_id"], patient_ids), name_index, names)


def _lut_codes(name_index: np.ndarray, names: Sequence[str | None], codes: Sequence[str]) -> np.ndarray:
    """Position in ``codes`` of each row's name after trim + upper-case (-1 when absent or missing)."""
    position = {code: i for i, code in enumerate(codes)}
    lut = np.array([-1 if n is None else position.get(n.strip().upper(), -1) for n in names] + [-1], dtype=np.int32)
    return np.take(lut, name_index)


def analyte_codes(values: pd.Series, codes: Sequence[str]) -> np.ndarray:
    """Position of each analyte name in ``codes`` (-1 when absent), matched after trim + upper-case.

    Names are hashed once in Arrow; only the distinct names are upper-cased in Python, so a cohort's
    own spelling of an analyte the registry does not know ("Procalcitonin") matches its code.
    """
    return _lut_codes(*_name_index(values), codes)


def censoring_codes(measurements: pd.DataFrame) -> np.ndarray:
    """int8 per row: CENSORED_BELOW for ``left``, CENSORED_ABOVE for ``right``, else 0 (incl. no column)."""
    if "censoring" not in measurements.columns:
        return np.zeros(len(measurements), dtype=np.int8)
    column = measurements["censoring"]
    if isinstance(column.dtype, pd.CategoricalDtype):  # each category judged once
        per_category = censoring_codes(pd.DataFrame({"censoring": pd.Series(column.cat.categories)}))
        return np.append(per_category, np.int8(0))[column.cat.codes.to_numpy()]  # missing: not censored
    # Two byte comparisons per row and a bit mask each: no hashing, no int32 index array per row.
    cens = _arrow_strings(column)
    codes = np.zeros(len(cens), dtype=np.int8)
    for word, code in (("left", CENSORED_BELOW), ("right", CENSORED_ABOVE)):
        codes[_to_numpy(pc.fill_null(pc.equal(cens, word), False))] = code
    return codes


def _float(values: pd.Series) -> np.ndarray:
    if values.dtype == np.float64:
        return values.to_numpy()  # read-only view under copy-on-write; never written to
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def patient_index(patients: pd.DataFrame) -> np.ndarray:
    """Sorted unique patient ids (the row universe); duplicate or missing ids are a FeatureError."""
    _require(patients, ["patient_id"], "patients")
    ids = patients["patient_id"]
    if ids.isna().any():
        raise FeatureError("patients: 'patient_id' has missing values")
    # A text column is read as is (``astype("str")`` copies it: ~0.2 ms of one new patient's scoring).
    values = (ids if isinstance(ids.dtype, pd.StringDtype) else ids.astype("str")).to_numpy(dtype=object)
    if len(set(values)) < len(values):
        ids = pd.Series(values, dtype=object)
        raise FeatureError(f"patients: duplicate patient_id {ids[ids.duplicated()].iloc[0]!r}")
    return np.sort(values)


def _sorted_by_patient_hours(patient: np.ndarray, hours: np.ndarray) -> bool:
    """True when codes never decrease and, within one code, hours never decrease (and are not NaN)."""
    if len(patient) < 2 or not np.all(patient[1:] >= patient[:-1]):
        return len(patient) < 2
    back = np.flatnonzero(~(hours[1:] >= hours[:-1]))  # only where the patient changes
    return bool(np.all(patient[back + 1] != patient[back]))


def encode_cohort(
    measurements: pd.DataFrame,
    patient_ids: np.ndarray,
    treatments: pd.DataFrame | None,
    analytes: Sequence[str],
    grades: pd.DataFrame | None = None,
    result_lag_hours: Mapping[str, float] | None = None,
    keys: MeasurementKeys | None = None,
    until_hours: float | None = None,
    threads: int = 1,
) -> Timeline:
    """Encode the long tables into per-analyte sorted arrays (rows of unknown patients are ignored).

    ``measurements`` follows the ingest contract; ``censoring`` is optional (absent = none censored;
    ``left`` = below the limit, ``right`` = above it, the value being the bound; anything else, incl.
    null, counts as not censored). Analyte names match ``analytes`` after trim + upper-case.
    Rows with a missing time or value are ignored (ingest has already quarantined them).
    ``keys``: :func:`measurement_keys` of these measurements and ``patient_ids``, when already hashed.
    ``until_hours``: measurements known after this hour are left out too (no landmark at or before it
    can see them, so the matrix does not copy them only to cut them away). ``threads``: threads sharing
    the grouping of the rows by analyte and the analytes' gathers (the same arrays for any number).
    """
    _require(measurements, MEASUREMENT_COLUMNS, "measurements")
    codes = list(dict.fromkeys(a.strip().upper() for a in analytes))
    if keys is None or keys.patient_ids is not patient_ids and not np.array_equal(keys.patient_ids, patient_ids):
        keys = measurement_keys(measurements, patient_ids)
    patient = keys.patient
    analyte = _lut_codes(keys.name_index, keys.names, codes)
    hours = _float(measurements["hours_since_anchor"])
    value = _float(measurements["value"])
    valid = (patient >= 0) & (analyte >= 0) & np.isfinite(hours) & np.isfinite(value)
    known = known_hours(measurements, analyte, hours, codes, result_lag_hours)
    if until_hours is not None:
        valid &= (hours if known is None else known) <= until_hours
    rows = _analyte_rows(analyte, valid, patient, hours, len(codes), threads)
    censored = censoring_codes(measurements)

    def gather(r: np.ndarray) -> SortedRows:
        return SortedRows(np.take(patient, r), np.take(hours, r), np.take(value, r), np.take(censored, r),
                          None if known is None else np.take(known, r))

    # Each analyte's gather is independent; threads share them when there are many rows.
    parts = min(threads, len(patient) // THREAD_MIN_ROWS)
    if parts <= 1:
        by_analyte = dict(zip(codes, map(gather, rows), strict=True))
    else:
        with ThreadPoolExecutor(max_workers=parts) as pool:
            by_analyte = dict(zip(codes, pool.map(gather, rows), strict=True))
    return Timeline(patient_ids=patient_ids, analytes=by_analyte, treatments=_encode_treatments(treatments, patient_ids),
                    grades=_encode_grades(grades, patient_ids))


#: Rows per block when grouping the measurements by analyte: block-sized temporaries are reused from
#: one block to the next (fresh memory for whole-table sort buffers costs more than the sorting).
BLOCK_ROWS = 1 << 20


def _analyte_rows(analyte: np.ndarray, valid: np.ndarray, patient: np.ndarray, hours: np.ndarray,
                  n_codes: int, threads: int = 1) -> list[np.ndarray]:
    """Per analyte code, its valid rows' positions ordered by (patient, hours), ties in input order.

    If the input is sorted by (patient, hours), as ingest writes it, each analyte's rows stay in input
    order: they are grouped block by block (:data:`BLOCK_ROWS`) with a stable (radix) sort of small
    ints, dropped rows getting a sentinel group, and each code's pieces joined in block order (with
    ``threads`` > 1, consecutive runs of blocks are grouped by threads at once: the same pieces).
    Otherwise one lexsort of the whole table. Each slice is ascending within its group, so gathering a
    column through it reads memory forwards.
    """
    if not _sorted_by_patient_hours(patient, hours):
        group = np.where(valid, analyte, n_codes).astype(np.int16)
        order = np.lexsort((hours, patient, group))
        bounds = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_codes + 1))])
        return [order[lo:hi] for lo, hi in zip(bounds[:-2], bounds[1:-1], strict=True)]
    starts = np.arange(0, len(analyte), BLOCK_ROWS)
    parts = max(1, min(threads, len(starts), len(analyte) // THREAD_MIN_ROWS))
    runs = np.array_split(starts, parts)
    if parts == 1:
        per_run = [_grouped_blocks(analyte, valid, n_codes, runs[0])]
    else:
        with ThreadPoolExecutor(max_workers=parts) as pool:
            per_run = list(pool.map(lambda run: _grouped_blocks(analyte, valid, n_codes, run), runs))
    pieces = [[piece for run in per_run for piece in run[code]] for code in range(n_codes)]
    return [np.concatenate(p) if p else np.empty(0, dtype=np.intp) for p in pieces]


def _grouped_blocks(analyte: np.ndarray, valid: np.ndarray, n_codes: int, starts: Sequence[int]) -> list[list[np.ndarray]]:
    """Per analyte code, the positions of its valid rows in each block starting at ``starts`` (in order)."""
    pieces: list[list[np.ndarray]] = [[] for _ in range(n_codes)]
    for start in starts:
        block = slice(int(start), int(start) + BLOCK_ROWS)
        group = np.where(valid[block], analyte[block], n_codes).astype(np.int16)
        order = np.argsort(group, kind="stable")
        order += start
        bounds = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_codes + 1))])
        for code in range(n_codes):
            pieces[code].append(order[bounds[code]:bounds[code + 1]])
    return pieces


#: Optional measurement column (ingest contract): hours since anchor when the result was known.
RESULT_HOURS = "result_hours_since_anchor"


def known_hours(measurements: pd.DataFrame, analyte: np.ndarray, hours: np.ndarray, codes: Sequence[str],
                result_lag_hours: Mapping[str, float] | None) -> np.ndarray | None:
    """When each row's value was known: its ``result_hours_since_anchor`` when given, else its sample
    time plus the analyte's ``result_lag_hours`` (never before the sample). None when every value was
    known when sampled (the common case: no extra array)."""
    lags = {c.strip().upper(): float(h) for c, h in (result_lag_hours or {}).items() if float(h) > 0}
    result = _float(measurements[RESULT_HOURS]) if RESULT_HOURS in measurements.columns else None
    if not lags and (result is None or np.isnan(result).all()):
        return None
    lag = np.zeros(len(codes) + 1)
    for i, code in enumerate(codes):
        lag[i] = lags.get(code, 0.0)
    known = hours + lag[np.where(analyte >= 0, analyte, len(codes))]
    if result is not None:
        known = np.where(np.isnan(result), known, np.fmax(result, hours))
    return known


def _encode_treatments(treatments: pd.DataFrame | None, patient_ids: np.ndarray) -> dict[str, SortedRows]:
    if treatments is None or len(treatments) == 0:
        return {name: SortedRows.empty() for name in definitions.TREATMENT_CLASSES}
    _require(treatments, TREATMENT_COLUMNS, "treatments")
    patient = _codes(treatments["patient_id"], patient_ids)
    hours = _float(treatments["hours_since_anchor"])
    drug = pc.utf8_lower(pc.utf8_trim_whitespace(_arrow_strings(treatments["drug"])))
    out: dict[str, SortedRows] = {}
    for name, drugs in definitions.TREATMENT_CLASSES.items():
        is_class = pc.fill_null(pc.is_in(drug, value_set=pa.array(drugs, type=drug.type)), False)
        keep = np.flatnonzero(is_class.to_numpy(zero_copy_only=False) & (patient >= 0) & np.isfinite(hours))
        order = keep[np.lexsort((hours[keep], patient[keep]))]
        out[name] = SortedRows(patient[order], hours[order], np.full(len(order), np.nan), np.zeros(len(order), np.int8))
    return out


def grades_from_events(events: pd.DataFrame | None) -> pd.DataFrame:
    """A grade timeline from an events table of grade onsets (the cohort contract): per patient and
    syndrome, the highest grade recorded so far is in force (onsets carry no resolution)."""
    if events is None or len(events) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("hours_since_anchor", "grade") else "str")
                             for c in GRADE_COLUMNS})
    _require(events, EVENT_COLUMNS, "events")
    event = events["event"].astype("str").str.strip().str.upper()
    keep = event.isin(GRADED_EVENTS).to_numpy()
    rows = events.loc[keep, list(GRADE_COLUMNS)].assign(event=event[keep])  # (an empty frame takes a Series' index)
    rows = rows.assign(grade=_float(rows["grade"]), hours_since_anchor=_float(rows["hours_since_anchor"]))
    rows = rows.sort_values(["patient_id", "event", "hours_since_anchor"], kind="stable")
    rows["grade"] = rows.groupby(["patient_id", "event"], sort=False)["grade"].cummax()
    return rows.reset_index(drop=True)


def _encode_grades(grades: pd.DataFrame | None, patient_ids: np.ndarray) -> dict[str, SortedRows]:
    """``grades`` (``GRADE_COLUMNS``; ``event`` one of GRADED_EVENTS or SUPPORT_COMPONENTS) as one
    (patient, hours)-sorted series per key, value = the grade in force from that row on."""
    if grades is None:
        return {}
    _require(grades, GRADE_COLUMNS, "grades")
    patient = _codes(grades["patient_id"], patient_ids)
    hours, value = _float(grades["hours_since_anchor"]), _float(grades["grade"])
    # The kernels ``astype("str").str.strip().str.upper()`` runs, without its three pandas round trips.
    event = _to_numpy(pc.utf8_upper(pc.utf8_trim_whitespace(_arrow_strings(grades["event"]))))
    out: dict[str, SortedRows] = {}
    for key in (*GRADED_EVENTS, *SUPPORT_COMPONENTS):
        keep = np.flatnonzero((event == key) & (patient >= 0) & np.isfinite(hours) & np.isfinite(value))
        order = keep[np.lexsort((hours[keep], patient[keep]))]
        out[key] = SortedRows(patient[order], hours[order], value[order], np.zeros(len(order), np.int8))
    return out


# --------------------------------------------------------------------------------------------------
# The cut: the only door from the cohort to a feature


def cut_at_landmark(timeline: Timeline | CutTimeline, landmark_hours: float) -> CutTimeline:
    """Keep only rows with ``hours_since_anchor <= landmark_hours`` (measurements and treatments).

    Every feature is computed from the returned object and from nothing else, so changing, deleting
    or adding rows after L cannot change a feature at L (tests/features prove it with hypothesis).
    ``timeline`` may be a cut at a later landmark (its rows are a superset of the rows at L): cutting
    the landmarks from the last to the first scans fewer rows.
    """
    L = float(landmark_hours)
    if isinstance(timeline, CutTimeline) and L > timeline.landmark_hours:
        raise ValueError(f"cannot cut at {L:g} h a timeline already cut at {timeline.landmark_hours:g} h")

    def cut(series: SortedRows) -> SortedRows:
        # A value counts from when it was known (a result reported later), not from its sample time.
        keep = (series.hours if series.known is None else series.known) <= L
        return series if keep.all() else series.take(keep)

    return CutTimeline(
        landmark_hours=L,
        n_patients=timeline.n_patients,
        analytes={code: cut(s) for code, s in timeline.analytes.items()},
        treatments={name: cut(s) for name, s in timeline.treatments.items()},
        grades={name: cut(s) for name, s in timeline.grades.items()},
        score_baseline_end=None if timeline.score_baseline_end is None else np.minimum(timeline.score_baseline_end, L),  # NaN (start unknown) stays NaN: np.fmin would make it L
    )


# --------------------------------------------------------------------------------------------------
# Per-patient segment reductions on (patient, hours)-sorted arrays


def _last_flags(patient: np.ndarray) -> np.ndarray:
    """True at the last row of each patient's run in a patient-sorted array."""
    flags = np.ones(len(patient), dtype=bool)
    flags[:-1] = patient[1:] != patient[:-1]
    return flags


def _first_flags(patient: np.ndarray) -> np.ndarray:
    flags = np.ones(len(patient), dtype=bool)
    flags[1:] = patient[1:] != patient[:-1]
    return flags


def _sum(patient: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Per-patient sum as float64 (``np.bincount`` returns int64 for an empty input)."""
    return np.bincount(patient, weights=weights, minlength=n).astype(np.float64, copy=False)


def _scatter(n: int, patient: np.ndarray, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    out = np.full(n, fill, dtype=np.float64)
    out[patient] = values  # patient codes here are unique (one row per patient)
    return out


def _segment_max(n: int, patient: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(patient) == 0:
        return np.full(n, np.nan)
    starts = np.flatnonzero(_first_flags(patient))
    return _scatter(n, patient[starts], np.maximum.reduceat(values, starts))


def _spread(n: int, patient: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per patient, last minus first ``x`` of its rows (NaN without rows): its max - min when ``x`` is
    sorted within each patient, as hours are."""
    first, last = np.flatnonzero(_first_flags(patient)), np.flatnonzero(_last_flags(patient))
    return _scatter(n, patient[first], x[last] - x[first])


class AnalyteAtLandmark:
    """Per-patient summaries of one analyte at L; arrays of length ``n_patients`` (NaN = missing).

    ``latest`` and everything built on it use post-anchor rows only (0 < hours <= L): before the first
    sample after the anchor the marker is "not measured yet", not "unchanged since baseline".
    """

    def __init__(
        self,
        series: SortedRows,
        landmark_hours: float,
        n_patients: int,
        baseline_window_hours: float,
        baseline_fallback_hours: float = 24.0,
    ):
        self._s = series
        self.L = landmark_hours
        self.n = n_patients
        self.window = baseline_window_hours
        self.fallback_hours = baseline_fallback_hours
        self._slopes: dict[float, np.ndarray] = {}

    @functools.cached_property
    def _bounds(self) -> np.ndarray:
        """Rows ``[bounds[p], bounds[p + 1])`` are patient ``p``'s (the series is sorted by patient, hours)."""
        bounds = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(self._s.patient, minlength=self.n), out=bounds[1:])
        return bounds

    @functools.cached_property
    def _first_post(self) -> np.ndarray:
        """Per patient, its first row with hours > 0 (its segment's end when none): within a patient the
        rows are sorted by hours, so those at or before the anchor come first. Counted per patient's row
        range with ``np.add.reduceat`` (no copy of the selected rows' patient codes)."""
        starts = self._bounds[:-1]
        present = starts < self._bounds[1:]
        pre = np.zeros(self.n, dtype=np.int64)
        if present.any():  # each present patient's range runs to the next present patient's start
            pre[present] = np.add.reduceat(self._s.hours <= 0.0, starts[present], dtype=np.int64)
        return starts + pre

    def _at(self, rows: np.ndarray, ok: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per patient, ``values[rows[p]]`` where ``ok[p]``, else NaN (``rows[p]`` need not be valid there)."""
        out = np.full(self.n, np.nan)
        out[ok] = values[rows[ok]]
        return out

    @functools.cached_property
    def _last_post(self) -> np.ndarray:
        """Index of each patient's last row with hours > 0 (the series is already cut at L): its last
        row, when that is after the anchor."""
        ends = self._bounds[1:]
        return (ends - 1)[self._first_post < ends]

    @functools.cached_property
    def count(self) -> np.ndarray:
        return np.diff(self._bounds).astype(np.float64)

    def _count_censored(self, direction: int) -> np.ndarray:
        return np.bincount(self._s.patient[self._s.censoring == direction], minlength=self.n).astype(np.float64)

    @property
    def n_below_limit(self) -> np.ndarray:
        return self._count_censored(CENSORED_BELOW)

    @property
    def n_above_limit(self) -> np.ndarray:
        return self._count_censored(CENSORED_ABOVE)

    @functools.cached_property
    def latest(self) -> np.ndarray:
        return _scatter(self.n, self._s.patient[self._last_post], self._s.value[self._last_post])

    @functools.cached_property
    def latest_hours(self) -> np.ndarray:
        return _scatter(self.n, self._s.patient[self._last_post], self._s.hours[self._last_post])

    @property
    def hours_since_latest(self) -> np.ndarray:
        return self.L - self.latest_hours

    @functools.cached_property
    def first(self) -> np.ndarray:
        """First value at or before L, at any time (pre-anchor included)."""
        starts = self._bounds[:-1]
        return self._at(starts, starts < self._bounds[1:], self._s.value)

    @functools.cached_property
    def maximum(self) -> np.ndarray:
        starts, ends = self._bounds[:-1], self._bounds[1:]
        present = starts < ends
        if not present.any():
            return np.full(self.n, np.nan)
        out = np.full(self.n, np.nan)
        out[present] = np.maximum.reduceat(self._s.value, starts[present])
        return out

    @functools.cached_property
    def minimum(self) -> np.ndarray:
        """Lowest value at or before L (the nadir of a falling marker: platelets, lymphocytes, fibrinogen)."""
        starts, ends = self._bounds[:-1], self._bounds[1:]
        present = starts < ends
        out = np.full(self.n, np.nan)
        if present.any():
            out[present] = np.minimum.reduceat(self._s.value, starts[present])
        return out

    def _first_value_in(self, rows: np.ndarray, last: bool) -> np.ndarray:
        p = self._s.patient[rows]
        pick = rows[_last_flags(p) if last else _first_flags(p)]
        return _scatter(self.n, self._s.patient[pick], self._s.value[pick])

    @functools.cached_property
    def true_baseline(self) -> np.ndarray:
        """Last value with ``-window <= hours <= 0`` (and <= L: the series is already cut): the patient's
        last row at or before the anchor, when it is inside the window."""
        if len(self._s.hours) == 0:
            return np.full(self.n, np.nan)
        last_pre = np.maximum(self._first_post - 1, 0)
        ok = (self._first_post > self._bounds[:-1]) & (self._s.hours[last_pre] >= -self.window)
        return self._at(last_pre, ok, self._s.value)

    @functools.cached_property
    def fallback_baseline(self) -> np.ndarray:
        """First value with ``0 < hours <= min(L, fallback_hours)``: the patient's first row after the
        anchor, when it is at or before ``fallback_hours``."""
        if len(self._s.hours) == 0:
            return np.full(self.n, np.nan)
        first_post = np.minimum(self._first_post, len(self._s.hours) - 1)
        ok = (self._first_post < self._bounds[1:]) & (self._s.hours[first_post] <= self.fallback_hours)
        return self._at(first_post, ok, self._s.value)

    @functools.cached_property
    def baseline(self) -> np.ndarray:
        """The true (pre-anchor) baseline; without one, the fallback after the anchor."""
        return np.where(np.isnan(self.true_baseline), self.fallback_baseline, self.true_baseline)

    def baseline_before(self, end_hours: np.ndarray) -> np.ndarray:
        """Per patient, the last value in ``[end - window, end]`` (``end_hours`` per patient, e.g. the
        lymphodepletion start); where ``end`` is NaN, the usual :attr:`baseline`."""
        s = self._s
        end = end_hours[s.patient]
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero((s.hours >= end - self.window) & (s.hours <= end))
        before = self._first_value_in(rows, last=True)
        return np.where(np.isnan(end_hours), self.baseline, before)

    @property
    def has_baseline(self) -> np.ndarray:
        return (~np.isnan(self.baseline)).astype(np.float64)

    @property
    def baseline_after_anchor(self) -> np.ndarray:
        """1 when the baseline is the fallback, 0 when a true baseline exists, NaN when neither."""
        fallback = np.where(np.isnan(self.fallback_baseline), np.nan, 1.0)
        return np.where(np.isnan(self.true_baseline), fallback, 0.0)

    def log2_slope(self, window_hours: float) -> np.ndarray:
        """Least-squares slope of log2(value) on real hours over ``[L - window, L]`` (log2 units / h).

        Non-positive values have no log and are left out; NaN with fewer than two points or when all
        points share one time. Centred two-pass sums keep it exact enough at any hour scale.
        """
        if window_hours not in self._slopes:
            s = self._s
            rows = np.flatnonzero((s.hours >= self.L - window_hours) & (s.value > 0))
            p = s.patient[rows]
            x = s.hours[rows] - self.L
            y = np.log2(s.value[rows])
            n_pts = np.bincount(p, minlength=self.n).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean_x = _sum(p, x, self.n) / n_pts
                mean_y = _sum(p, y, self.n) / n_pts
                dx = x - mean_x[p]
                sxx = _sum(p, dx * dx, self.n)
                sxy = _sum(p, dx * (y - mean_y[p]), self.n)
                # Two or more distinct times (points sharing one time have no slope, even when rounding
                # leaves sxx a hair above 0); NaN spread (no points) fails too.
                ok = _spread(self.n, p, x) > 0
                self._slopes[window_hours] = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
        return self._slopes[window_hours]

    @functools.cached_property
    def auc_log2_fold_change(self) -> np.ndarray:
        """Trapezoid area under log2(value / baseline) over real hours from 0 to L.

        The curve starts at (0 h, 0) — the baseline is the value at the anchor by definition — runs
        through every positive value with 0 < hours <= L and holds its last value flat to L, so
        every patient's area spans exactly [0, L]. NaN without a positive baseline.
        """
        s = self._s
        base_log = safe_log2(self.baseline)
        rows = np.flatnonzero((s.hours > 0.0) & (s.value > 0))
        rows = rows[~np.isnan(base_log[s.patient[rows]])]
        p = s.patient[rows]
        t = s.hours[rows]
        y = np.log2(s.value[rows]) - base_log[p]
        same = ~_first_flags(p)  # previous row belongs to the same patient
        prev_t = np.where(same, np.roll(t, 1), 0.0)
        prev_y = np.where(same, np.roll(y, 1), 0.0)
        area = _sum(p, (t - prev_t) * (y + prev_y) / 2.0, self.n)
        last = _last_flags(p)
        last_t = _scatter(self.n, p[last], t[last], fill=0.0)
        last_y = _scatter(self.n, p[last], y[last], fill=0.0)
        area += (max(self.L, 0.0) - last_t) * last_y
        return np.where(np.isnan(base_log), np.nan, area)

    # Used by clinical features (temperature): only the time since infusion counts.
    @functools.cached_property
    def max_since_anchor(self) -> np.ndarray:
        rows = np.flatnonzero(self._s.hours >= 0.0)
        return _segment_max(self.n, self._s.patient[rows], self._s.value[rows])

    def hours_since_first_at_least(self, threshold: float) -> np.ndarray:
        """Hours from the first value >= threshold with hours >= 0 to L (NaN if none)."""
        rows = np.flatnonzero((self._s.hours >= 0.0) & (self._s.value >= threshold))
        p = self._s.patient[rows]
        first = rows[_first_flags(p)]
        return self.L - _scatter(self.n, self._s.patient[first], self._s.hours[first])


class TreatmentAtLandmark:
    def __init__(self, series: SortedRows, landmark_hours: float, n_patients: int):
        self._s = series
        self.L = landmark_hours
        self.n = n_patients

    @property
    def given(self) -> np.ndarray:
        return (np.bincount(self._s.patient, minlength=self.n) > 0).astype(np.float64)

    @property
    def hours_since_last(self) -> np.ndarray:
        last = _last_flags(self._s.patient)
        return self.L - _scatter(self.n, self._s.patient[last], self._s.hours[last])


class GradeAtLandmark:
    """A syndrome's (or CRS component's) grade as known at L, from rows at or before L only.

    ``no_row``: what a patient without a row at or before L has (0 for a syndrome: no recorded grade is
    grade 0; NaN for a component: not assessed yet)."""

    def __init__(self, series: SortedRows, landmark_hours: float, n_patients: int, no_row: float = 0.0):
        self._s = series
        self.L = landmark_hours
        self.n = n_patients
        self.no_row = no_row

    @property
    def current(self) -> np.ndarray:
        """The grade in force at L (the latest row's)."""
        last = _last_flags(self._s.patient)
        return _scatter(self.n, self._s.patient[last], self._s.value[last], fill=self.no_row)

    @property
    def maximum(self) -> np.ndarray:
        """The highest grade at or before L."""
        has_row = np.bincount(self._s.patient, minlength=self.n) > 0
        return np.where(has_row, _segment_max(self.n, self._s.patient, self._s.value), self.no_row)

    @property
    def hours_since_onset(self) -> np.ndarray:
        """Hours from the first grade >= 1 to L; NaN if none."""
        rows = np.flatnonzero(self._s.value >= 1)
        first = rows[_first_flags(self._s.patient[rows])]
        return self.L - _scatter(self.n, self._s.patient[first], self._s.hours[first])


class LandmarkContext:
    """What features may see at L: built from a :class:`CutTimeline` only."""

    def __init__(self, cut: CutTimeline, baseline_window_hours: float, baseline_fallback_hours: float = 24.0):
        self.cut = cut
        self.landmark_hours = cut.landmark_hours
        self.n_patients = cut.n_patients
        self.baseline_window_hours = baseline_window_hours
        self.baseline_fallback_hours = baseline_fallback_hours
        self._analytes: dict[str, AnalyteAtLandmark] = {}

    def __getitem__(self, code: str) -> AnalyteAtLandmark:
        if code not in self._analytes:
            # KeyError for an analyte that was never encoded: a definition bug, not missing data.
            series = self.cut.analytes[code]
            self._analytes[code] = AnalyteAtLandmark(
                series, self.landmark_hours, self.n_patients, self.baseline_window_hours, self.baseline_fallback_hours
            )
        return self._analytes[code]

    def treatment(self, name: str) -> TreatmentAtLandmark:
        return TreatmentAtLandmark(self.cut.treatments[name], self.landmark_hours, self.n_patients)

    def score_baseline(self, code: str) -> np.ndarray:
        """The baseline a published score uses: before lymphodepletion when its start is known (as
        CAR-HEMATOTOX and EASIX were published), else the usual pre-infusion baseline."""
        end = self.cut.score_baseline_end
        return self[code].baseline if end is None else self[code].baseline_before(end)

    def grade(self, key: str) -> GradeAtLandmark:
        """``CRS``, ``ICANS``, ``HYPOTENSION`` or ``HYPOXIA`` at L (NaN summaries when not graded)."""
        series = self.cut.grades.get(key, SortedRows.empty())
        return GradeAtLandmark(series, self.landmark_hours, self.n_patients, 0.0 if key in GRADED_EVENTS else np.nan)


def features_at_landmark(cut: CutTimeline, spec: LandmarkSpec) -> dict[str, np.ndarray]:
    """Every dynamic feature at one landmark, in output order (``landmark_hours`` first)."""
    return dict(iter_features_at_landmark(cut, spec))


def dynamic_feature_names(spec: LandmarkSpec) -> list[str]:
    """The names :func:`features_at_landmark` returns, in its order, without computing anything (a name
    computed twice keeps its first place, as in a dict)."""
    return list(_dynamic_names(spec.analytes))


@functools.cache
def _dynamic_names(analytes: tuple[str, ...]) -> tuple[str, ...]:
    names = ["landmark_hours"]
    for _, summaries in _summaries_of(analytes):
        names.extend(name for name, _ in summaries)
    return tuple(dict.fromkeys(names + [derived.name for derived in definitions.DERIVED]))


@functools.cache
def _summaries_of(analytes: tuple[str, ...]) -> tuple[tuple[str, tuple[tuple[str, definitions.Summary], ...]], ...]:
    """Per analyte, its ``(feature name, summary)`` pairs (the names are built once per analyte list)."""
    return tuple((code, tuple(definitions.analyte_summaries(code))) for code in analytes)


def iter_features_at_landmark(cut: CutTimeline, spec: LandmarkSpec) -> Iterator[tuple[str, np.ndarray]]:
    """``features_at_landmark`` one ``(name, values)`` at a time, so a caller can store each array and
    drop it before the next is computed (no landmark's whole feature set held at once)."""
    ctx = LandmarkContext(cut, spec.baseline_window_hours, spec.baseline_fallback_hours)
    yield "landmark_hours", np.full(cut.n_patients, cut.landmark_hours)
    for code, summaries in _summaries_of(spec.analytes):
        analyte = ctx[code]
        for name, summary in summaries:
            yield name, summary.compute(analyte)
    for derived in definitions.DERIVED:
        yield derived.name, derived.compute(ctx)


@functools.cache
def _summary_groups(analytes: tuple[str, ...]) -> tuple[tuple[definitions.Summary, np.ndarray, tuple[str, ...]], ...]:
    """Per distinct summary (by name, in order of first use): the summary, the analytes (positions in
    ``analytes``) that have it, and their feature names."""
    groups: dict[str, tuple[definitions.Summary, list[int], list[str]]] = {}
    for a, (_, summaries) in enumerate(_summaries_of(analytes)):
        for name, summary in summaries:
            group = groups.setdefault(summary.name, (summary, [], []))
            group[1].append(a)
            group[2].append(name)
    out = tuple((summary, np.array(rows, dtype=np.intp), tuple(names)) for summary, rows, names in groups.values())
    for _, rows, _ in out:
        rows.setflags(write=False)  # shared by every request (and thread)
    return out


def _stacked_blocks(cut: CutTimeline, spec: LandmarkSpec) -> Iterator[tuple[Sequence[str], np.ndarray]]:
    """:func:`iter_features_at_landmark` for a few patients, as ``(names, values)`` blocks (one row of
    ``values`` per name): each analyte summary is computed once for every analyte, on the analytes' rows
    stacked as if each (analyte, patient) pair were one patient. Every summary is per patient segment
    (row order kept within a segment), so the values are the per-analyte ones to the bit
    (tests/features/test_small_patients.py); one new patient costs one numpy call and one block write per
    summary instead of one per (analyte, summary)."""
    ctx = LandmarkContext(cut, spec.baseline_window_hours, spec.baseline_fallback_hours)
    n = cut.n_patients
    plan = _summaries_of(spec.analytes)
    series = [cut.analytes[code] for code, _ in plan]  # KeyError for an analyte never encoded, as ctx[code]
    stacked = AnalyteAtLandmark(_stack_rows(series, n), cut.landmark_hours, n * len(plan),
                                spec.baseline_window_hours, spec.baseline_fallback_hours)
    yield ["landmark_hours"], np.full((1, n), cut.landmark_hours)
    for summary, rows, names in _summary_groups(spec.analytes):
        yield names, np.asarray(summary.compute(stacked), dtype=np.float64).reshape(len(plan), n)[rows]
    for derived in definitions.DERIVED:
        yield [derived.name], np.asarray(derived.compute(ctx), dtype=np.float64).reshape(1, -1)


def _stack_rows(series: Sequence[SortedRows], n_patients: int) -> SortedRows:
    """The rows of every series in one, patient codes shifted by ``k * n_patients`` for the k-th series
    (still sorted by (code, hours))."""
    if not series:
        return SortedRows.empty()
    patient = np.concatenate([s.patient.astype(np.int64, copy=False) + k * n_patients for k, s in enumerate(series)])
    return SortedRows(patient, np.concatenate([s.hours for s in series]), np.concatenate([s.value for s in series]),
                      np.concatenate([s.censoring for s in series]))


# --------------------------------------------------------------------------------------------------
# Labels (read the future by definition; never passed to a feature)


def target_onsets(events: pd.DataFrame | None, patient_ids: np.ndarray, targets: Sequence[Target]) -> dict[str, np.ndarray]:
    """Per target, each patient's first onset hour of ``event`` with grade >= ``min_grade`` (NaN if none)."""
    n = len(patient_ids)
    if events is None or len(events) == 0:
        return {t.name: np.full(n, np.nan) for t in targets}
    _require(events, EVENT_COLUMNS, "events")
    patient = _codes(events["patient_id"], patient_ids)
    event = pc.utf8_upper(pc.utf8_trim_whitespace(_arrow_strings(events["event"])))
    grade = _float(events["grade"])
    hours = _float(events["hours_since_anchor"])
    out = {}
    for target in targets:
        is_event = pc.fill_null(pc.equal(event, target.event.strip().upper()), False).to_numpy(zero_copy_only=False)
        keep = np.flatnonzero(is_event & (grade >= target.min_grade) & (patient >= 0) & np.isfinite(hours))
        onset = np.full(n, np.inf)
        np.minimum.at(onset, patient[keep], hours[keep])
        out[target.name] = np.where(np.isinf(onset), np.nan, onset)
    return out


def label_at_landmark(onset_hours: np.ndarray, landmark_hours: float, horizon_hours: float) -> np.ndarray:
    """1 if onset in (L, L + horizon], 0 if no onset by then, NaN if not at risk (onset <= L).

    No onset is 0 whatever the horizon (an infinite horizon means "ever", not "everyone")."""
    has_onset = ~np.isnan(onset_hours)
    within = has_onset & (onset_hours <= landmark_hours + horizon_hours)
    return np.where(has_onset & (onset_hours <= landmark_hours), np.nan, within)  # float64: NaN, 1.0, 0.0


#: Accepted patients column (ingest): hours since anchor when the patient's follow-up ended.
FOLLOW_UP_HOURS = "follow_up_end_hours"


def death_hours(events: pd.DataFrame | None, patient_ids: np.ndarray) -> np.ndarray:
    """Each patient's death: the first DEATH row, or the first grade-5 event of any kind (grade 5 is
    death on every CTCAE-style scale), NaN if neither."""
    death = target_onsets(events, patient_ids, [Target("_death", DEATH_EVENT, 0)])["_death"]
    if events is None or len(events) == 0:
        return death
    graded = events.assign(event="_ANY")
    fatal = target_onsets(graded, patient_ids, [Target("_fatal", "_ANY", 5)])["_fatal"]
    return np.fmin(death, fatal)


#: Accepted patients column (ingest): hours since anchor when lymphodepletion started.
LYMPHODEPLETION_HOURS = "lymphodepletion_start_hours"


def patient_hours(patients: pd.DataFrame, patient_ids: np.ndarray, column: str) -> np.ndarray | None:
    """A patients time column (hours since anchor) aligned to ``patient_ids`` (None without the column)."""
    if column not in patients.columns:
        return None
    by_id = patients.assign(patient_id=patients["patient_id"].astype("str")).set_index("patient_id")
    return _float(by_id[column].reindex(pd.Index(patient_ids, dtype="str")))


def follow_up_end_hours(patients: pd.DataFrame, patient_ids: np.ndarray) -> np.ndarray | None:
    """``follow_up_end_hours`` aligned to ``patient_ids`` (None without the column)."""
    return patient_hours(patients, patient_ids, FOLLOW_UP_HOURS)


def censor_at_follow_up_end(labels: np.ndarray, follow_up: np.ndarray | None, landmark_hours: float,
                            horizon_hours: float) -> np.ndarray:
    """A 0 label is only known if follow-up lasted the whole horizon: a patient followed for 10 days is
    not a "no CRS" for a 30-day horizon (NaN: not labelled). 1s stand; a patient whose follow-up ended
    at or before L is not at risk at all. Without a follow-up end (NaN or no column): followed to the end."""
    if follow_up is None:
        return labels
    with np.errstate(invalid="ignore"):
        short = follow_up < landmark_hours + horizon_hours
        ended = follow_up <= landmark_hours
    return np.where(ended | (short & (labels == 0)), np.nan, labels)


# --------------------------------------------------------------------------------------------------
# Static covariates


@dataclass(frozen=True)
class StaticEncoding:
    """Per static column: ``None`` for numeric (float64), else the fixed, sorted category list."""

    categories: dict[str, list[str] | None] = field(default_factory=dict)


def learn_static_encoding(patients: pd.DataFrame, static_features: Sequence[str]) -> StaticEncoding:
    _require_static(patients, static_features)
    cats: dict[str, list[str] | None] = {}
    few = len(patients) <= FEW_PATIENTS
    for column in static_features:
        values = patients[column]
        if pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype):
            cats[column] = None
        elif few and isinstance(values.dtype, pd.StringDtype):  # the same set, without pandas' unique
            cats[column] = sorted({t for t in _string_cells(values) if t is not None})
        else:
            cats[column] = sorted(str(v) for v in values.dropna().astype("str").unique())
    return StaticEncoding(cats)


#: Up to this many patients, static covariates are read cell by cell (one new patient: no pandas index,
#: no hashing); the result is the same as the cohort path's (tests/features/test_small_patients.py).
FEW_PATIENTS = 64


def _string_cells(values: pd.Series) -> list[str | None]:
    """A string column's cells, ``None`` where missing (what ``dropna().astype("str")`` keeps, in order)."""
    return values.to_numpy(dtype=object, na_value=None).tolist()


@functools.cache
def _category_dtype(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(list(categories))


def _require_static(patients: pd.DataFrame, static_features: Sequence[str]) -> None:
    for column in static_features:
        if column not in patients.columns:
            raise FeatureError(
                f"static_features: column '{column}' is not in the patients table "
                f"(columns: {', '.join(map(str, patients.columns))})"
            )


def _static_columns(
    patients: pd.DataFrame, patient_ids: np.ndarray, encoding: StaticEncoding, repeats: int
) -> dict[str, object]:
    """Static covariates aligned to ``patient_ids``, each row repeated ``repeats`` times (landmarks)."""
    _require_static(patients, list(encoding.categories))
    if len(patients) <= FEW_PATIENTS and all(
        c is None or isinstance(patients[name].dtype, pd.StringDtype) for name, c in encoding.categories.items()
    ):
        return _few_static_columns(patients, patient_ids, encoding, repeats)
    by_id = patients.assign(patient_id=patients["patient_id"].astype("str")).set_index("patient_id")
    aligned = by_id.reindex(pd.Index(patient_ids, dtype="str"))
    out: dict[str, object] = {}
    for column, categories in encoding.categories.items():
        values = aligned[column]
        if categories is None:
            out[column] = np.repeat(_float(values), repeats)
        else:
            # Unseen categories (not in the list learnt at fit) become missing, never a new level.
            codes = pd.Categorical(values.astype("str"), categories=categories).codes
            out[column] = pd.Categorical.from_codes(np.repeat(codes, repeats), dtype=_category_dtype(tuple(categories)))
    return out


def _few_static_columns(
    patients: pd.DataFrame, patient_ids: np.ndarray, encoding: StaticEncoding, repeats: int
) -> dict[str, object]:
    """:func:`_static_columns` for a few patients (ids unique, as :func:`patient_index` checked) whose
    categorical covariates are string columns: rows picked by position, categories looked up per cell."""
    position = {p: i for i, p in enumerate(patients["patient_id"].astype("str").to_numpy(dtype=object))}
    rows = np.array([position.get(p, -1) for p in patient_ids], dtype=np.int64)
    found = rows >= 0
    out: dict[str, object] = {}
    for column, categories in encoding.categories.items():
        values = patients[column]
        if categories is None:
            numbers = np.full(len(rows), np.nan)
            numbers[found] = _float(values)[rows[found]]
            out[column] = np.repeat(numbers, repeats)
        else:
            lookup = {c: k for k, c in enumerate(categories)}
            cells = _string_cells(values)
            codes = np.array([lookup.get(cells[r], -1) if r >= 0 else -1 for r in rows], dtype=np.int64)
            out[column] = pd.Categorical.from_codes(np.repeat(codes, repeats), dtype=_category_dtype(tuple(categories)))
    return out


# --------------------------------------------------------------------------------------------------
# The landmark matrix


def landmark_matrix(
    tables: Mapping[str, pd.DataFrame | None],
    spec: LandmarkSpec,
    encoding: StaticEncoding | None = None,
    keys: MeasurementKeys | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """The landmark matrix: one row per (patient, landmark), sorted by ``patient_id`` then landmark.

    ``tables``: ``measurements`` and ``patients`` (required), ``events``, ``treatments`` and ``grades``
    (optional), in the ingest contract (docs/CONTRACTS.md). ``grades`` is a grade timeline
    (``GRADE_COLUMNS``, from ``crs grade``); without it the grades reached come from ``events``' onsets. Columns: ``patient_id``, ``landmark_hours``, the
    features of :func:`features.definitions.feature_table`, then per target ``label__T`` and
    ``onset_hours__T``. ``keys``: the measurements' :func:`measurement_keys`, when already hashed. ``threads``: threads
    computing the dynamic features of consecutive patient ranges at once (same values for any number).
    """
    for name in ("measurements", "patients"):
        if tables.get(name) is None:
            raise FeatureError(f"featurize: table '{name}' is required")
    patients = tables["patients"]
    if encoding is None:
        encoding = learn_static_encoding(patients, spec.static_features)
    patient_ids = patient_index(patients)
    k = len(spec.landmarks_hours)
    analytes = tuple(dict.fromkeys((*spec.analytes, *definitions.DERIVED_ANALYTES)))
    grades = tables.get("grades")
    if grades is None:
        grades = grades_from_events(tables.get("events"))
    timeline = encode_cohort(tables["measurements"], patient_ids, tables.get("treatments"), analytes, grades,
                             dict(spec.result_lag_hours), keys, until_hours=max(spec.landmarks_hours), threads=threads)
    ld_start = patient_hours(patients, patient_ids, LYMPHODEPLETION_HOURS)
    if ld_start is not None:
        timeline = dataclasses.replace(timeline, score_baseline_end=ld_start)
    onsets = target_onsets(tables.get("events"), patient_ids, spec.targets)
    # A patient who died at or before L is no longer at risk of anything (competing event).
    death = death_hours(tables.get("events"), patient_ids)
    follow_up = follow_up_end_hours(patients, patient_ids)

    dynamic = _dynamic_block(timeline, spec, threads)
    columns: dict[str, object] = _static_columns(patients, patient_ids, encoding, k)
    landmarks = np.asarray(spec.landmarks_hours)
    for target in spec.targets:
        onset = onsets[target.name]
        labels = np.stack(
            [censor_at_follow_up_end(np.where(death <= L, np.nan, label_at_landmark(onset, L, spec.horizon_hours)),
                                     follow_up, L, spec.horizon_hours) for L in landmarks], axis=1
        )
        columns[f"label__{target.name}"] = labels.ravel()
        columns[f"onset_hours__{target.name}"] = np.repeat(onset, k)
    ids = pd.DataFrame({"patient_id": pd.array(np.repeat(patient_ids, k), dtype="str")})
    return pd.concat([ids, dynamic, pd.DataFrame(columns)], axis=1)


def _dynamic_block(timeline: Timeline, spec: LandmarkSpec, threads: int = 1) -> pd.DataFrame:
    """``landmark_hours`` and every dynamic feature, one row per (patient, landmark), patient-major.

    Filled as one (feature, patient, landmark) float block, which is the layout pandas keeps a float
    frame in, so the frame wraps it without another copy. Each feature array is written into its
    column of the block as soon as it is computed and then dropped: holding every landmark's features
    until the end meant hundreds of separately allocated arrays of fresh memory (page faults cost more
    than the strided writes). With ``threads`` > 1 and enough patients, consecutive patient ranges are
    filled by threads at once (patients are independent, and numpy releases the GIL in the heavy
    calls), each into its own rows of the block: the same numbers as one thread.
    """
    n, k = timeline.n_patients, len(spec.landmarks_hours)
    names = dynamic_feature_names(spec)
    position = {name: i for i, name in enumerate(names)}
    block = np.empty((len(names), n, k), dtype=np.float64)
    parts = min(max(1, threads), n // THREAD_MIN_PATIENTS) if n > FEW_PATIENTS else 1
    if parts <= 1:
        _fill_block(timeline, spec, block, position)
    else:
        edges = np.linspace(0, n, parts + 1).astype(np.int64)
        ranges = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
        with ThreadPoolExecutor(max_workers=parts) as pool:
            for done in [pool.submit(_fill_block, patient_range(timeline, lo, hi), spec, block[:, lo:hi, :], position)
                         for lo, hi in ranges]:
                done.result()  # re-raises a worker's error
    return pd.DataFrame(block.reshape(len(names), n * k).T, columns=names, copy=False)


def usable_threads(requested: int | str | None = "auto", most: int = 4) -> int:
    """``requested`` threads as a number: ``auto`` (or None) is the cores this process may use, at most
    ``most`` (more threads than cores only add switching)."""
    if isinstance(requested, int):
        return max(1, requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(most, cores))


#: Fewest measurement rows per thread when encoding the analytes with several threads.
THREAD_MIN_ROWS = 1_000_000
#: Fewest patients per thread when the landmark matrix is filled by several threads (below it, thread
#: start-up and the per-call numpy overhead cost more than they save).
THREAD_MIN_PATIENTS = 5_000


def _fill_block(timeline: Timeline, spec: LandmarkSpec, block: np.ndarray, position: Mapping[str, int]) -> None:
    """Write every dynamic feature of ``timeline``'s patients into ``block`` (feature, patient, landmark)."""
    n, k = timeline.n_patients, len(spec.landmarks_hours)
    cut: Timeline | CutTimeline = timeline
    for j in reversed(range(k)):  # last landmark first: each cut is taken from the previous, smaller one
        cut = cut_at_landmark(cut, spec.landmarks_hours[j])
        if n <= FEW_PATIENTS:
            for names, values in _stacked_blocks(cut, spec):
                block[[position[name] for name in names], :, j] = values
        else:
            for name, values in iter_features_at_landmark(cut, spec):
                block[position[name], :, j] = values


def patient_range(timeline: Timeline, lo: int, hi: int) -> Timeline:
    """The patients with codes ``lo..hi-1`` as a timeline of their own (codes from 0): every series is
    sorted by patient, so each is one slice, shared with ``timeline`` except the shifted codes."""

    def part(series: SortedRows) -> SortedRows:
        a, b = np.searchsorted(series.patient, [lo, hi])
        return SortedRows(series.patient[a:b] - lo, series.hours[a:b], series.value[a:b], series.censoring[a:b],
                          None if series.known is None else series.known[a:b])

    end = timeline.score_baseline_end
    return Timeline(
        patient_ids=timeline.patient_ids[lo:hi],
        analytes={code: part(s) for code, s in timeline.analytes.items()},
        treatments={name: part(s) for name, s in timeline.treatments.items()},
        grades={name: part(s) for name, s in timeline.grades.items()},
        score_baseline_end=None if end is None else end[lo:hi],
    )


def patient_chunks(
    tables: Mapping[str, pd.DataFrame | None], size: int
) -> Iterator[dict[str, pd.DataFrame | None]]:
    """``tables`` cut into consecutive blocks of at most ``size`` patients (in sorted ``patient_id`` order).

    Each block holds its patients' rows of every table with a ``patient_id`` column (in their original
    order) and every other table whole; rows of patients not in ``patients`` are in no block (the
    landmark matrix ignores them anyway). Patients are independent, so the landmark matrices of the
    blocks, concatenated, are the landmark matrix of the whole cohort, with peak memory set by ``size``.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1 patient")
    patient_ids = patient_index(tables["patients"])
    n_chunks = max(1, -(-len(patient_ids) // size))
    slices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, table in tables.items():
        if table is not None and "patient_id" in table.columns:
            codes = _codes(table["patient_id"], patient_ids)
            chunk = np.where(codes >= 0, codes // size, n_chunks)
            order = np.argsort(chunk, kind="stable")
            slices[name] = (order, np.searchsorted(chunk[order], np.arange(n_chunks + 1)))
    for c in range(n_chunks):
        yield {
            name: table.iloc[slices[name][0][slices[name][1][c]: slices[name][1][c + 1]]].reset_index(drop=True)
            if name in slices else table
            for name, table in tables.items()
        }
