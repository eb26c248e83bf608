"""Times: a ``time`` column of hours since anchor or ISO 8601 timestamps -> float hours since anchor,
and the fast (patient, hours) row order of the measurements table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters.canonical import RawTable, arrow_to_pandas
from pipeline.errors import UserError
from pipeline.ingestion.checks import RowChecks
from pipeline.ingestion.text import FLOAT32_MAX, arrow_numbers, arrow_trim

_EPOCH = np.datetime64(0, "s")
_FORM_SAMPLE = 20_000
_PLAIN_ISO_BYTES = 19  # 2024-01-03T12:00:00


def epoch_seconds(stamps: pd.Series) -> np.ndarray:
    dtype = stamps.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC":
        # UTC wall times in the column's own unit, as ``dt.tz_localize(None)`` gives them, ten times faster.
        return (stamps.to_numpy(dtype=f"datetime64[{dtype.unit}]") - _EPOCH) / np.timedelta64(1, "s")
    return (stamps.dt.tz_localize(None).to_numpy() - _EPOCH) / np.timedelta64(1, "s")


def anchor_seconds(patients: pd.DataFrame) -> np.ndarray | None:
    """Each accepted patient's anchor as epoch seconds (NaN if blank); None without the column."""
    if "anchor_time" not in patients.columns:
        return None
    return epoch_seconds(patients["anchor_time"])


def present_times(time_text: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Rows whose time text is non-empty once trimmed (computed on the untrimmed text: no copy)."""
    blank = pc.or_kleene(pc.equal(pc.binary_length(time_text), 0), pc.utf8_is_space(time_text))
    return _numpy_bool(pc.fill_null(pc.invert(blank), False))


def _numpy_bool(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _numeric_form(time_text: pa.ChunkedArray | pa.Array, present: np.ndarray) -> np.ndarray | None:
    """Hours as numbers if the file gives numbers of hours (most non-empty values), else None.

    The form is decided on a sample first: a clear timestamp file skips a numeric pass over millions
    of timestamps. Only an unclear sample falls back to counting every row.
    """
    n_present = int(present.sum())
    sample = np.linspace(0, n_present - 1, min(n_present, _FORM_SAMPLE)).astype(np.int64)
    if n_present < len(present):
        sample = np.flatnonzero(present)[sample]
    sample_numeric = np.isfinite(arrow_numbers(arrow_trim(time_text.take(pa.array(sample))))).mean() if len(
        sample) else 1.0
    if sample_numeric > 0.2:
        numeric = arrow_numbers(arrow_trim(time_text))
        if np.isfinite(numeric).sum() * 2 >= n_present:
            return numeric
    return None


def _plain_iso_seconds(time_text: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of the rows written ``YYYY-MM-DDThh:mm:ss`` (or with a space), and which rows those are.

    Arrow's strict cast reads exactly what pandas' ISO 8601 parser reads for these 19 characters and
    fails on anything else (February 30th, hour 24, a zone offset, padding); a chunk where it fails is
    left to the general parser whole. The loop is over Arrow's chunks (about 1 MiB each), not rows.
    """
    seconds = np.full(len(time_text), np.nan)
    done = np.zeros(len(time_text), dtype=bool)
    starts = np.cumsum([0] + [len(chunk) for chunk in time_text.chunks])
    for start, chunk in zip(starts, time_text.chunks, strict=False):
        plain = pc.fill_null(pc.equal(pc.binary_length(chunk), _PLAIN_ISO_BYTES), False)
        whole = pc.all(plain).as_py()  # the common case: no filter, no row positions
        try:
            stamps = pc.cast(chunk if whole else pc.filter(chunk, plain), pa.timestamp("s"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        rows = slice(start, start + len(chunk)) if whole else start + np.flatnonzero(_numpy_bool(plain))
        seconds[rows] = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
        done[rows] = True
    return seconds, done


#: Date-only and partial ISO 8601 dates (SDTM --DTC allows them): never read as midnight (docs/CONTRACTS.md).
_DATE_ONLY = r"^\d{4}-\d{2}-\d{2}$"
_PARTIAL_DATE = r"^\d{4}(-\d{2})?$"
_DAY_SECONDS = 86_400


@dataclass
class Stamps:
    """Epoch seconds per row (NaN where unreadable), and which rows gave a date without a time of day
    (``date_only``) or only a year or month (``partial``)."""

    seconds: np.ndarray
    date_only: np.ndarray
    partial: np.ndarray


def _timestamp_seconds(time_text: pa.ChunkedArray | pa.Array) -> Stamps:
    """Epoch seconds of ISO 8601 timestamps: the plain form through Arrow, the rest (offsets, fractions,
    padding, dates alone) through pandas' ISO 8601 parser. A date alone is its midnight here; callers
    place it (:func:`_timestamp_hours`)."""
    if isinstance(time_text, pa.Array):
        time_text = pa.chunked_array([time_text], type=time_text.type)
    seconds, done = _plain_iso_seconds(time_text)
    date_only = np.zeros(len(seconds), dtype=bool)
    partial = np.zeros(len(seconds), dtype=bool)
    rest = np.flatnonzero(~done)
    if rest.size:
        text = arrow_to_pandas(arrow_trim(time_text.take(pa.array(rest))))
        seconds[rest] = epoch_seconds(pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True))
        date_only[rest] = text.str.match(_DATE_ONLY).fillna(False).to_numpy(dtype=bool)
        partial[rest] = text.str.match(_PARTIAL_DATE).fillna(False).to_numpy(dtype=bool)
    return Stamps(seconds, date_only, partial)


def _timestamp_hours(
    table: RawTable, time_text: pa.ChunkedArray | pa.Array, patient_row: np.ndarray, anchor_s: np.ndarray | None,
    checks: RowChecks, day_end: bool = True,
) -> np.ndarray:
    """Hours from ISO 8601 timestamps minus the patient's anchor; unusable rows are flagged ``bad_time``.

    A date without a time of day is placed at the end of its day (``day_end``: a result or a dose is
    known by then at the latest, so no feature sees it early) or at its start (an event onset: the
    earliest it can have begun, so no patient counts as at risk after it); a year or month alone cannot
    be placed and is quarantined. The rows placed are counted (``checks.date_only``)."""
    if anchor_s is None:
        raise UserError(
            f"{table.path}: column 'time' holds timestamps but the patients table has no 'anchor_time' column"
        )
    stamps = _timestamp_seconds(time_text)
    checks.flag(stamps.partial, "bad_time", "partial date (a year or a month only): it cannot be placed in time")
    checks.flag(np.isnan(stamps.seconds), "bad_time", "time is not an ISO 8601 timestamp")
    placed = stamps.date_only & checks.ok
    checks.date_only += int(placed.sum())
    stamp_s = stamps.seconds
    if day_end and stamps.date_only.any():  # most files have none: no pass over every row
        stamp_s = stamp_s + np.where(stamps.date_only, _DAY_SECONDS - 1, 0)
    # Unknown patients (-1) pick the trailing NaN; safe even when no patient was accepted.
    anchor_row = np.append(anchor_s, np.nan)[np.where(patient_row >= 0, patient_row, len(anchor_s))]
    checks.flag(np.isnan(anchor_row), "bad_time", "patient has no anchor_time for a timestamp")
    stamp_s = stamp_s - anchor_row  # a new array: ``stamps.seconds`` is not changed
    stamp_s /= 3600.0
    return stamp_s


def is_numeric_form(time_text: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a time column gives numbers of hours (else ISO timestamps): the per-file decision of
    :func:`arrow_hours`, taken once on a whole file when its rows are validated in blocks."""
    return _numeric_form(time_text, present_times(time_text)) is not None


def arrow_hours(
    table: RawTable, time_text: pa.ChunkedArray | pa.Array, patient_row: np.ndarray, anchor_s: np.ndarray | None,
    checks: RowChecks, day_end: bool = True, numeric_form: bool | None = None,
) -> np.ndarray:
    """Hours since anchor for a ``time`` column holding either numbers of hours or ISO timestamps.

    The form is decided per file by the majority of non-empty values (``numeric_form``, when given,
    is that decision taken on the whole file: ``time_text`` is then one block of it); rows in the other
    form, empty times and timestamps of patients without an anchor are flagged ``bad_time``.
    ``time_text`` may be untrimmed: only the rows that need it are trimmed. ``patient_row`` is
    each row's position in the accepted patients table (-1 if unknown).
    """
    if numeric_form is None:
        numeric = _numeric_form(time_text, present_times(time_text))
    else:
        numeric = arrow_numbers(arrow_trim(time_text)) if numeric_form else None
    if numeric is not None:
        with np.errstate(invalid="ignore"):  # NaN (empty, text), inf and 1e39 alike: unusable as a float32 time
            unusable = ~(np.abs(numeric) <= FLOAT32_MAX)
        checks.flag(unusable, "bad_time", "time is not a finite number of hours (file uses hours since anchor)")
        return numeric
    return _timestamp_hours(table, time_text, patient_row, anchor_s, checks, day_end)


def _is_patient_time_sorted(patient: np.ndarray, hours: np.ndarray) -> bool:
    dp, dh = np.diff(patient), np.diff(hours)
    return bool(np.all((dp > 0) | ((dp == 0) & (dh >= 0))))


def _order_key(patient: np.ndarray, hours: np.ndarray, row_bits: int) -> np.ndarray | None:
    """One int64 per row, non-decreasing in (patient, hours): the patient in the high bits, the time
    scaled onto the middle ones (rows with different times may share them; never reverse order), the
    row number in the low ``row_bits``. None when the time cannot be given 16 bits or its span cannot
    be scaled (e.g. 1e-300 apart)."""
    time_bits = min(52, 62 - max(int(patient.max()).bit_length(), 1) - row_bits)  # exact in a float64
    low, span = hours.min(), hours.max() - hours.min()
    with np.errstate(over="ignore", divide="ignore"):
        scale = (2.0**time_bits - 1) / span if span > 0 else 0.0
    if time_bits < 16 or not np.isfinite(scale):
        return None
    scaled = np.clip(np.floor((hours - low) * scale), 0, 2.0**time_bits - 1).astype(np.int64)
    key = (patient.astype(np.int64) << (time_bits + row_bits)) | (scaled << row_bits)
    return key | np.arange(len(key)) if row_bits else key


def _key_order(patient: np.ndarray, hours: np.ndarray, packed: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(order, same) from one int64 key, or None if the key's rounding misordered rows sharing a key.

    ``packed``: the row number is in the key, so a plain ``np.sort`` (faster than an argsort) gives a
    stable order, at the cost of fewer time bits; else a stable argsort of the key alone.
    """
    row_bits = max(int(len(patient) - 1).bit_length(), 1) if packed else 0
    key = _order_key(patient, hours, row_bits)
    if key is None:
        return None
    if packed:
        sorted_key = np.sort(key)
        order = sorted_key & ((1 << row_bits) - 1)
        sorted_key >>= row_bits
    else:
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
    tied = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])  # one patient (high bits), times close
    before, after = hours[order[tied]], hours[order[tied + 1]]
    if not np.all(before <= after):
        return None
    same = np.zeros(len(patient), dtype=bool)
    same[tied + 1] = before == after
    return order, same


def patient_time_order(patient: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Stable row order by (patient, hours) for known patients (>= 0) and finite times: rows tied on
    both keep their order, as ``np.lexsort((hours, patient))`` gives."""
    return patient_time_runs(patient, hours)[0]


def patient_time_runs(patient: np.ndarray, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`patient_time_order` and, per position in it, whether that row has the previous row's
    patient and time (so rows sharing both are runs of neighbours).

    np.lexsort takes ~2 s on 5 M rows; one int64 key sorts in a fraction of that. Only rows sharing a
    key are checked afterwards, falling back to a finer key, then lexsort, if its rounding misordered any.
    """
    same = np.zeros(len(patient), dtype=bool)
    probe = np.linspace(0, len(patient) - 1, min(len(patient), 1000)).astype(np.int64)
    if _is_patient_time_sorted(patient[probe], hours[probe]) and _is_patient_time_sorted(patient, hours):
        same[1:] = (patient[1:] == patient[:-1]) & (hours[1:] == hours[:-1])
        return np.arange(len(patient)), same  # already in order: no sort, no gather
    for packed in (True, False):
        found = _key_order(patient, hours, packed)
        if found is not None:
            return found
    order = np.lexsort((hours, patient))
    p, h = patient[order], hours[order]
    same[1:] = (p[1:] == p[:-1]) & (h[1:] == h[:-1])
    return order, same
