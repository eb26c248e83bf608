"""Cohort tables given as pandas frames in memory (``crs predict``'s Python API, the MLflow model's input).

Every value becomes the text a CSV cell would hold, so ingestion applies exactly the rules it applies to
files. Two shapes: one frame per cohort table (:func:`frames_to_raw`), or the combined long table of the
MLflow model (:func:`combined_to_raw`, one row per record with the patient's covariates repeated).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters.canonical import AUTO_FORMAT, DEFAULT_LIMITS, RawTable, read_cohort
from pipeline.adapters.dialect import CsvFormat, ReadLimits
from pipeline.cohort import EVENTS, MEASUREMENTS, PATIENTS, TABLES, TableSpec, is_missing_value
from pipeline.errors import UserError

_REQUEST_DIR = Path("request")  # pseudo-path of tables built in memory (messages, line numbers)


def _empty_raw(spec: TableSpec) -> RawTable:
    return RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", _empty_arrow(spec.required_columns))


@functools.cache
def _empty_arrow(columns: tuple[str, ...]) -> pa.Table:
    """An empty text table with ``columns`` (Arrow tables are immutable: one per process)."""
    return pa.table({c: pa.array([], pa.string()) for c in columns})


def read_new_cohort(
    cohort_dir: str | Path, *, csv_format: CsvFormat = AUTO_FORMAT, limits: ReadLimits = DEFAULT_LIMITS
) -> dict[str, RawTable]:
    """Like :func:`pipeline.adapters.canonical.read_cohort` (same file-level checks, dialect detection and
    limits), but ``events`` is optional."""
    raw = read_cohort(cohort_dir, optional_tables=(EVENTS.name,), csv_format=csv_format, limits=limits)
    raw.setdefault(EVENTS.name, _empty_raw(EVENTS))
    return raw


def _as_text(series: pd.Series) -> pa.Array:
    """Any column -> Arrow strings as a CSV cell would hold them (numbers round-trip exactly)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series, dtype = series.astype(object), np.dtype(object)
    if isinstance(dtype, pd.StringDtype):  # its Arrow (or Python) strings as they are: no pandas round trip
        return pc.cast(pa.array(series.array), pa.string())
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return pc.cast(pa.array(series, from_pandas=True), pa.string())
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        # Arrow writes the shortest text that parses back to the same double.
        return pc.cast(pa.array(series, from_pandas=True), pa.string())
    out = [
        None
        if is_missing_value(v)
        else (v.isoformat() if isinstance(v, pd.Timestamp) else repr(v) if isinstance(v, float) else str(v))
        for v in series.to_numpy(dtype=object)
    ]
    return pa.array(out, pa.string())


def frames_to_raw(tables: Mapping[str, pd.DataFrame | RawTable | None], *,
                  patient_id: str | None = None) -> dict[str, RawTable]:
    """In-memory cohort tables (cohort contract columns, any dtypes) -> raw text tables for ingest.

    ``measurements`` / ``treatments`` / ``events`` may give ``hours_since_anchor`` instead of ``time``.
    A table may also be given as a :class:`RawTable` already (:func:`record_to_raw`). ``patient_id``:
    the id of every row of the tables that lack that column (one patient's records), added last, as
    ``frame.assign(patient_id=...)`` would.
    """
    raw: dict[str, RawTable] = {}
    for spec in TABLES:
        frame = tables.get(spec.name)
        if frame is None:
            continue
        if isinstance(frame, RawTable):
            raw[spec.name] = frame
            continue
        if "time" not in frame.columns and "hours_since_anchor" in frame.columns:
            frame = frame.rename(columns={"hours_since_anchor": "time"})
        columns = {str(c): _as_text(frame[c]) for c in frame.columns}
        if patient_id is not None and "patient_id" not in columns:
            columns["patient_id"] = pa.array([str(patient_id)] * len(frame), pa.string())
        missing = [c for c in spec.required_columns if c not in columns]
        if missing:
            raise UserError(f"{spec.name}: missing required column '{missing[0]}'")
        raw[spec.name] = RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", pa.table(columns))
    for spec in (PATIENTS, MEASUREMENTS):
        if spec.name not in raw:
            raise UserError(f"table '{spec.name}' is required")
    raw.setdefault(EVENTS.name, _empty_raw(EVENTS))
    return raw


def record_to_raw(spec: TableSpec, record: Mapping[str, Any]) -> RawTable | None:
    """One row (e.g. one new patient's fields) as a raw text table, when every value is text or None:
    what ``frames_to_raw({name: pd.DataFrame([record])})`` gives, without building the frame (~0.5 ms
    of one patient's scoring). None for any other value: the caller goes through the frame.
    NaN counts as None (a lone NaN is a float column there: a missing cell)."""
    if not all(v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)) for v in record.values()):
        return None
    # NaN alone is a float column there, and a missing cell (null) once it is text.
    arrow = pa.table({str(k): pa.array([v if isinstance(v, str) else None], pa.string()) for k, v in record.items()})
    return RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", arrow)


#: Combined-format column -> (table, column in that table). ``time`` belongs to every record table.
MEASUREMENT_FIELDS = ("time", "analyte", "value", "unit")
TREATMENT_FIELDS = {"time": "time", "drug": "drug", "dose": "dose", "dose_unit": "unit"}
EVENT_FIELDS = ("time", "event", "grade")
RESERVED_COLUMNS = frozenset({"patient_id", *MEASUREMENT_FIELDS, *TREATMENT_FIELDS, *EVENT_FIELDS})
#: Patients-table columns whose names are treatment fields in the combined table travel renamed there.
COMBINED_PATIENT_COLUMNS = {"dose": "cart_dose", "dose_unit": "cart_dose_unit"}


def _combined_patients(text: pd.DataFrame) -> pd.DataFrame:
    """One patients row per patient from the covariate columns of the combined table (text).

    Rows of one patient that leave a covariate empty do not disagree with rows that fill it; a patient
    whose rows do disagree keeps every distinct row, so ingestion quarantines it as a conflict.
    """
    covariates = [c for c in text.columns if c not in RESERVED_COLUMNS]
    patients = text[["patient_id", *covariates]].drop_duplicates()
    if covariates:
        grouped = patients.groupby("patient_id", sort=False, dropna=False)
        conflicting = grouped[covariates].nunique(dropna=True).gt(1).any(axis=1)
        first = grouped[covariates].first().reset_index()
        agreed = first[~first["patient_id"].isin(conflicting.index[conflicting])]
        patients = pd.concat([agreed, patients[patients["patient_id"].isin(conflicting.index[conflicting])]])
    else:
        patients = patients.drop_duplicates("patient_id")
    patients = patients.rename(columns={v: k for k, v in COMBINED_PATIENT_COLUMNS.items()})
    return patients.astype(object).where(patients.notna(), None)


def combined_to_raw(frame: pd.DataFrame) -> dict[str, RawTable]:
    """The combined long table -> raw cohort tables (then ingestion applies its usual rules).

    A row is a measurement when any of ``analyte``/``value``/``unit`` is filled, a treatment when ``drug``
    is filled, an event when ``event`` is filled (it may be several, or none: a covariates-only row).
    Every other column (``anchor_time``, ``age``, ``product``...) is a patient covariate repeated on the
    patient's rows (the CAR-T dose as ``cart_dose`` / ``cart_dose_unit``: ``dose`` is a treatment's); a patient whose rows disagree on a covariate is quarantined by ingestion as a
    ``conflicting_duplicate`` patient, and gets a message instead of a risk.
    """
    if "patient_id" not in frame.columns:
        raise UserError("input: missing required column 'patient_id'")
    text = pd.DataFrame({str(c): pd.Series(_as_text(frame[c]).to_pandas(types_mapper=None)) for c in frame.columns})
    text = text.astype(object).where(text.notna(), None)

    def col(name: str) -> pd.Series:
        return text[name] if name in text.columns else pd.Series([None] * len(text), dtype=object)

    def filled(name: str) -> np.ndarray:
        return col(name).notna().to_numpy()

    tables: dict[str, pd.DataFrame] = {}
    is_meas = filled("analyte") | filled("value") | filled("unit")
    tables["measurements"] = pd.DataFrame({"patient_id": col("patient_id"), **{f: col(f) for f in MEASUREMENT_FIELDS}})[
        is_meas
    ]
    is_treat = filled("drug")
    if is_treat.any():
        tables["treatments"] = pd.DataFrame(
            {"patient_id": col("patient_id"), **{dst: col(src) for src, dst in TREATMENT_FIELDS.items()}}
        )[is_treat]
    is_event = filled("event")
    tables["events"] = pd.DataFrame({"patient_id": col("patient_id"), "event": col("event"),
                                     "grade": col("grade"), "time": col("time")})[is_event]
    tables["patients"] = _combined_patients(text)
    raw = {}
    for spec in TABLES:
        if spec.name in tables:
            df = tables[spec.name].reset_index(drop=True)
            arrow = pa.table({c: pa.array(df[c].to_numpy(dtype=object), pa.string()) for c in df.columns})
            raw[spec.name] = RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", arrow)
    return raw


def raw_to_combined(raw: Mapping[str, RawTable], patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Cohort tables -> the combined long table (inverse of :func:`combined_to_raw`; for clients/tests).

    Every value stays text, exactly as in the cohort files, so a server applies the same ingest rules.
    """
    frames = {name: t.arrow.to_pandas().astype(object) for name, t in raw.items()}
    for frame in frames.values():
        frame["patient_id"] = frame["patient_id"].where(frame["patient_id"].isna(), frame["patient_id"].astype(str))
    if patient_ids is not None:
        keep = set(patient_ids)
        frames = {name: f[f["patient_id"].isin(keep)] for name, f in frames.items()}
    patients = frames["patients"].drop_duplicates("patient_id").rename(columns=COMBINED_PATIENT_COLUMNS)
    parts = [frames["measurements"][["patient_id", *MEASUREMENT_FIELDS]]]
    if "treatments" in frames:
        t = frames["treatments"]
        parts.append(pd.DataFrame({"patient_id": t["patient_id"], "time": t["time"], "drug": t["drug"],
                                   "dose": t.get("dose"), "dose_unit": t.get("unit")}))
    if "events" in frames and len(frames["events"]):
        e = frames["events"]
        parts.append(e[["patient_id", "time", "event", "grade"]])
    records = pd.concat(parts, ignore_index=True)
    # Patients without any record still get one row carrying their covariates.
    bare = patients.loc[~patients["patient_id"].isin(records["patient_id"]), ["patient_id"]]
    records = pd.concat([records, bare], ignore_index=True)
    covariates = patients.drop(columns=[c for c in patients.columns if c in RESERVED_COLUMNS and c != "patient_id"])
    combined = records.merge(covariates, on="patient_id", how="left", sort=False)
    columns = ["patient_id", "time", "analyte", "value", "unit", "drug", "dose", "dose_unit", "event", "grade"]
    ordered = [c for c in columns if c in combined.columns] + [c for c in combined.columns if c not in columns]
    combined = combined[ordered]
    return combined.astype(object).where(combined.notna(), None)


__all__ = [
    "COMBINED_PATIENT_COLUMNS",
    "EVENT_FIELDS",
    "MEASUREMENT_FIELDS",
    "RESERVED_COLUMNS",
    "TREATMENT_FIELDS",
    "combined_to_raw",
    "frames_to_raw",
    "record_to_raw",
    "raw_to_combined",
    "read_new_cohort",
]
