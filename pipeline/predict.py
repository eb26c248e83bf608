"""``crs predict``: score patients the model has never seen, at their latest landmark or a given hour.

Flow (one patient or a thousand, the same code): raw cohort tables -> :func:`pipeline.ingest.run` (same
rules: synonyms, unit conversion, range checks, quarantine) -> :class:`features.LandmarkFeaturizer`
(same code path as ``crs featurize``; features at L see rows ``<= L`` only) -> the trained boosters and
calibrators of ``models/`` (:mod:`pipeline.scoring`) -> ``predictions.csv``, explanations and pages.

Which landmark: without ``--at``, each patient's *latest landmark* is the largest configured landmark
``<=`` the patient's latest accepted measurement hour (the first landmark when every measurement is
before it). With ``--at H`` every patient is scored at ``H`` (within the model's trained landmarks).

What is never scored (probability left empty, a message says why): a patient with no accepted
measurement at or before the landmark (no data, all rows quarantined, no anchor time for timestamps,
or a patients row that was itself quarantined), a patient without any of the markers the model relies
on at or before the landmark, and a target whose event (or death) already happened at or before the
landmark. Missing single markers or quarantined rows give a score *and* a message naming them.

:func:`score_cohort` is pure (raw tables in, frames out); :func:`main` reads and writes; :class:`Scorer`
is the Python API for one patient (``score_patient``), warm latency well under 50 ms.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import ingest
from pipeline.cohort import EVENTS, MEASUREMENTS, PATIENTS, TABLES, TableSpec
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.ingest import RawTable, read_cohort
from pipeline.io import atomic_dir, write_csv, write_json
from pipeline.registry import load_registry
from pipeline.scoring import ModelBundle, Scores, is_missing_value, load_bundle, risk_band
from pipeline.train import FeatureSpec

PREDICTION_COLUMNS = ["patient_id", "target", "landmark_hours", "probability", "band", "message"]
#: Written by ``crs predict``; an existing ``--out`` directory is replaced only if it holds this file.
PREDICTIONS_FILE = "predictions.csv"
#: Registered scoring settings (featurize + bands) that travel with an MLflow model.
SCORING_CONFIG_FILE = "scoring_config.json"
_REQUEST_DIR = Path("request")  # pseudo-path of tables built in memory (messages, line numbers)

#: Readable words for ingest reason codes in per-patient messages.
_REASON_TEXT = {
    "missing_patient_id": "no patient id",
    "unknown_patient": "patient not in the patients table",
    "bad_time": "time unusable",
    "missing_value": "empty value",
    "unparseable_value": "value not a number",
    "unknown_unit": "unit not convertible",
    "out_of_range": "out of plausible range",
    "invalid_grade": "invalid grade",
    "conflicting_duplicate": "conflicting duplicate",
}


# --------------------------------------------------------------------------------------------
# Reading new cohorts (events optional: new patients rarely have outcomes yet)
# --------------------------------------------------------------------------------------------


def _empty_raw(spec: TableSpec) -> RawTable:
    arrow = pa.table({c: pa.array([], pa.string()) for c in spec.required_columns})
    return RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", arrow)


def read_new_cohort(cohort_dir: str | Path) -> dict[str, RawTable]:
    """Like :func:`pipeline.ingest.read_cohort` (same file-level checks), but ``events`` is optional."""
    raw = read_cohort(cohort_dir, optional_tables=(EVENTS.name,))
    raw.setdefault(EVENTS.name, _empty_raw(EVENTS))
    return raw


def _as_text(series: pd.Series) -> pa.Array:
    """Any column -> Arrow strings as a CSV cell would hold them (numbers round-trip exactly)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series, dtype = series.astype(object), np.dtype(object)
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


def frames_to_raw(tables: Mapping[str, pd.DataFrame | None]) -> dict[str, RawTable]:
    """In-memory cohort tables (cohort contract columns, any dtypes) -> raw text tables for ingest.

    ``measurements`` / ``treatments`` / ``events`` may give ``hours_since_anchor`` instead of ``time``.
    """
    raw: dict[str, RawTable] = {}
    for spec in TABLES:
        frame = tables.get(spec.name)
        if frame is None:
            continue
        if "time" not in frame.columns and "hours_since_anchor" in frame.columns:
            frame = frame.rename(columns={"hours_since_anchor": "time"})
        missing = [c for c in spec.required_columns if c not in frame.columns]
        if missing:
            raise UserError(f"{spec.name}: missing required column '{missing[0]}'")
        arrow = pa.table({str(c): _as_text(frame[c]) for c in frame.columns})
        raw[spec.name] = RawTable(spec, _REQUEST_DIR / f"{spec.name}.csv", arrow)
    for spec in (PATIENTS, MEASUREMENTS):
        if spec.name not in raw:
            raise UserError(f"table '{spec.name}' is required")
    raw.setdefault(EVENTS.name, _empty_raw(EVENTS))
    return raw


# --------------------------------------------------------------------------------------------
# The combined long format (MLflow pyfunc input): one row per record, covariates repeated per row
# --------------------------------------------------------------------------------------------

#: Combined-format column -> (table, column in that table). ``time`` belongs to every record table.
MEASUREMENT_FIELDS = ("time", "analyte", "value", "unit")
TREATMENT_FIELDS = {"time": "time", "drug": "drug", "dose": "dose", "dose_unit": "unit"}
EVENT_FIELDS = ("time", "event", "grade")
RESERVED_COLUMNS = frozenset({"patient_id", *MEASUREMENT_FIELDS, *TREATMENT_FIELDS, *EVENT_FIELDS})


def combined_to_raw(frame: pd.DataFrame) -> dict[str, RawTable]:
    """The combined long table -> raw cohort tables (then ingest applies its usual rules).

    A row is a measurement when any of ``analyte``/``value``/``unit`` is filled, a treatment when ``drug``
    is filled, an event when ``event`` is filled (it may be several, or none: a covariates-only row).
    Every other column (``anchor_time``, ``age``, ``product``...) is a patient covariate repeated on the
    patient's rows; a patient whose rows disagree on a covariate is quarantined by ingest as a
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
    covariates = [c for c in text.columns if c not in RESERVED_COLUMNS]
    patients = text[["patient_id", *covariates]].drop_duplicates()
    if covariates:
        # Rows of one patient that leave a covariate empty do not disagree with rows that fill it.
        grouped = patients.groupby("patient_id", sort=False, dropna=False)
        conflicting = grouped[covariates].nunique(dropna=True).gt(1).any(axis=1)
        first = grouped[covariates].first().reset_index()
        agreed = first[~first["patient_id"].isin(conflicting.index[conflicting])]
        patients = pd.concat([agreed, patients[patients["patient_id"].isin(conflicting.index[conflicting])]])
    else:
        patients = patients.drop_duplicates("patient_id")
    tables["patients"] = patients.astype(object).where(patients.notna(), None)
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
    patients = frames["patients"].drop_duplicates("patient_id")
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


# --------------------------------------------------------------------------------------------
# Fast model matrix (the per-patient hot path): numpy, no per-column pandas conversions
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The scoring setup: bundle + the settings that turn raw tables into the model's features
# --------------------------------------------------------------------------------------------


@dataclass
class ScoringSetup:
    """A loaded model plus the featurize settings and risk bands it is scored with."""

    bundle: ModelBundle
    config: Config
    source: str

    def __post_init__(self) -> None:
        self.targets: list[str] = list(self.bundle.targets)
        first = self.bundle.targets[self.targets[0]]
        self.specs: list[FeatureSpec] = first.specs
        # One matrix serves every target when they share the feature list (they do unless retrained apart).
        self.shared_specs = all(t.specs == self.specs for t in self.bundle.targets.values())
        features = {s.name for t in self.bundle.targets.values() for s in t.specs}
        #: Markers the model relies on: featurize analytes with at least one feature in the model.
        self.key_analytes: list[str] = [
            code for code in self.config.featurize.analytes if any(f.startswith(f"{code.lower()}__") for f in features)
        ]
        trained = sorted({float(h) for t in self.bundle.targets.values() for h in t.metadata.get("landmarks_hours", [])})
        self.trained_landmarks: list[float] = trained or list(self.config.landmarks_hours)
        self.per_landmark = any("all" not in t.models for t in self.bundle.targets.values())
        self._featurizers: dict[tuple[float, ...], Any] = {}
        self._checked = False

    def featurizer(self, landmarks_hours: Sequence[float]):
        from features import LandmarkFeaturizer

        key = tuple(sorted({float(h) for h in landmarks_hours}))
        if key not in self._featurizers:
            fz = LandmarkFeaturizer.from_config(self.config)
            fz.set_params(landmarks_hours=list(key))
            self._featurizers[key] = fz
        return self._featurizers[key]

    def check_features(self, landmarks: pd.DataFrame) -> None:
        """Every model feature must come out of featurize; otherwise params differ from training."""
        if self._checked:
            return
        absent = [s.name for t in self.bundle.targets.values() for s in t.specs if s.name not in landmarks.columns]
        if absent:
            shown = ", ".join(sorted(set(absent))[:5])
            raise UserError(
                f"{self.source}: the model uses features that featurize does not produce with these params "
                f"({shown}); score with the params the model was trained with"
            )
        self._checked = True

    def validate_at(self, at_hours: float | None) -> None:
        if at_hours is None:
            return
        if not math.isfinite(at_hours):
            raise UserError(f"--at {at_hours}: not a number of hours")
        low, high = self.trained_landmarks[0], self.trained_landmarks[-1]
        if self.per_landmark and not any(math.isclose(at_hours, h) for h in self.trained_landmarks):
            shown = ", ".join(landmark_key(h) for h in self.trained_landmarks)
            raise UserError(f"--at {at_hours:g}: the model has one model per landmark; use one of {shown} h")
        if not low <= at_hours <= high:
            raise UserError(
                f"--at {at_hours:g}: outside the landmarks the model was trained on "
                f"({landmark_key(low)}-{landmark_key(high)} h)"
            )

    def bands(self, probability: np.ndarray) -> np.ndarray:
        return risk_band(probability, self.config.report.band_low_below, self.config.report.band_high_from)


def load_setup(model: str | Path, config: Config) -> ScoringSetup:
    """A ``models/`` directory (settings from ``config``) or an MLflow model URI (``models:/...``,
    ``runs:/...``): settings registered with the model win, so features match its training."""
    text = str(model)
    if "://" in text or text.startswith(("models:/", "runs:/")):
        from pipeline.registry_model import load_registered_setup

        return load_registered_setup(text, config)
    return ScoringSetup(load_bundle(model), config, text)


# --------------------------------------------------------------------------------------------
# Scoring a cohort (pure)
# --------------------------------------------------------------------------------------------


@dataclass
class PredictResult:
    #: One row per (patient, target) at the patient's landmark (PREDICTION_COLUMNS).
    predictions: pd.DataFrame
    #: Scored landmark rows (features): each patient's landmarks up to its own (the trajectory).
    landmarks: pd.DataFrame
    #: Per target, per row of ``landmarks``: calibrated probability, band, SHAP (fast path).
    scores: dict[str, Scores]
    #: Ingest output (accepted tables, quarantine, counts).
    ingest: ingest.IngestResult
    #: patient_id -> messages (data problems; shown in predictions.csv and on the page).
    messages: dict[str, list[str]] = field(default_factory=dict)
    #: Per target, the model matrix of ``landmarks`` (feature order of that target's model).
    matrices: dict[str, np.ndarray] = field(default_factory=dict)


def _patient_universe(result: ingest.IngestResult, raw: Mapping[str, RawTable]) -> list[str]:
    """Accepted patients plus ids that only appear in quarantine (a rejected patients row, or records
    of a patient missing from the patients table): they get a message, not silence."""
    ids = list(result.tables["patients"]["patient_id"].astype(str))
    q = result.quarantine
    if len(q) and "patient_id" in q.columns:
        extra = q["patient_id"].dropna().astype(str).str.strip()
        extra = extra[extra != ""]
        ids.extend(extra)
    return sorted(dict.fromkeys(ids))


def _quarantine_messages(result: ingest.IngestResult, patients_path: str) -> dict[str, list[str]]:
    q = result.quarantine
    if not len(q) or "patient_id" not in q.columns:
        return {}
    q = q[q["patient_id"].notna()].copy()
    q["pid"] = q["patient_id"].astype(str).str.strip()
    q["what"] = q["analyte"].astype(object) if "analyte" in q.columns else None
    if "drug" in q.columns:
        q["what"] = q["what"].where(q["what"].notna(), q["drug"].astype(object))
    out: dict[str, list[str]] = {}
    for pid, rows in q.groupby("pid", sort=True):
        msgs: list[str] = []
        own = rows[rows["source_file"] == patients_path]
        if len(own):
            r = own.iloc[0]
            msgs.append(f"patient row rejected ({_REASON_TEXT.get(r['reason'], r['reason'])}: {r['detail']})")
        other = rows[rows["source_file"] != patients_path]
        if (other["detail"].astype(str).str.contains("no anchor_time")).any():
            msgs.append("no anchor_time (infusion time): its timestamped rows cannot be placed on the timeline")
            other = other[~other["detail"].astype(str).str.contains("no anchor_time")]
        if len(own) and (other["reason"] == "unknown_patient").all():
            other = other.iloc[0:0]  # already explained by the rejected patients row
        if len(other):
            parts = []
            for (reason, what), n in other.groupby(["reason", other["what"].fillna("")], sort=True).size().items():
                label = f"{what} " if what else ""
                parts.append(f"{label}{_REASON_TEXT.get(reason, reason)} x{n}")
            msgs.append(f"{len(other)} row(s) quarantined: {', '.join(parts)}")
        out[str(pid)] = msgs
    return out


def _hour_range(measurements: pd.DataFrame, patient_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(first, latest) accepted measurement hour per patient (NaN without any)."""
    codes, uniques = pd.factorize(measurements["patient_id"].astype(str))
    hours = measurements["hours_since_anchor"].to_numpy(dtype=float)
    first = np.full(len(uniques), np.inf)
    latest = np.full(len(uniques), -np.inf)
    np.minimum.at(first, codes, hours)
    np.maximum.at(latest, codes, hours)
    pos = pd.Index(uniques).get_indexer(pd.Index(patient_ids, dtype=object))
    # Position -1 (no accepted measurement) picks the trailing NaN.
    first, latest = np.append(first, np.nan), np.append(latest, np.nan)
    return first[pos], latest[pos]


def choose_landmarks(latest_hours: np.ndarray, landmarks_hours: Sequence[float], at_hours: float | None) -> np.ndarray:
    """Landmark per patient: ``at_hours``, else the largest configured landmark <= the latest measurement
    hour (the first landmark when all measurements precede it); NaN without any accepted measurement."""
    latest = np.asarray(latest_hours, dtype=float)
    if at_hours is not None:
        return np.where(np.isnan(latest), np.nan, float(at_hours))
    grid = np.asarray(sorted(landmarks_hours), dtype=float)
    pos = np.searchsorted(grid, np.nan_to_num(latest, nan=grid[0]), side="right") - 1
    return np.where(np.isnan(latest), np.nan, grid[np.clip(pos, 0, len(grid) - 1)])


def _ingest(raw: Mapping[str, RawTable], with_report: bool) -> ingest.IngestResult:
    """:func:`pipeline.ingest.run`; without a report and with no events or treatments to check (one new
    patient, the API hot path), only the two validators that have rows run: same rules, ~5 ms less."""
    empty = all(name not in raw or raw[name].n_rows == 0 for name in (EVENTS.name, "treatments"))
    if with_report or not empty:
        return ingest.run(dict(raw))
    patients = ingest.validate_patients(raw[PATIENTS.name])
    measurements = ingest.validate_measurements(raw[MEASUREMENTS.name], patients.accepted, load_registry())
    tables = {"patients": patients.accepted, "measurements": measurements.accepted,
              "events": pd.DataFrame(columns=["patient_id", "event", "grade", "hours_since_anchor"]),
              "treatments": pd.DataFrame(columns=["patient_id", "hours_since_anchor", "drug", "dose", "unit"])}
    quarantine = pd.concat([patients.quarantine, measurements.quarantine], ignore_index=True)
    return ingest.IngestResult(tables=tables, quarantine=quarantine, report={})


def score_cohort(
    raw: Mapping[str, RawTable],
    setup: ScoringSetup,
    at_hours: float | None = None,
    *,
    trajectory: bool = True,
    with_shap: bool = True,
    with_report: bool = True,
) -> PredictResult:
    """Ingest, featurize at each patient's landmark (and, with ``trajectory``, at the configured landmarks
    before it) and score every target. Pure: nothing is read or written."""
    setup.validate_at(at_hours)
    result = _ingest(raw, with_report)
    tables = result.tables
    patient_ids = _patient_universe(result, raw)
    accepted = set(tables["patients"]["patient_id"].astype(str))
    messages = _quarantine_messages(result, str(raw[PATIENTS.name].path))
    first_hour, latest_hour = _hour_range(tables["measurements"], patient_ids)
    chosen = pd.Series(choose_landmarks(latest_hour, setup.config.landmarks_hours, at_hours), index=patient_ids)

    grid = sorted(setup.config.landmarks_hours)
    wanted = set(chosen.dropna().unique().tolist())
    if trajectory and wanted:
        wanted |= {h for h in grid if h <= max(wanted)}
    scored_ids = [p for p in patient_ids if p in accepted and not math.isnan(chosen[p])]
    if wanted and scored_ids:
        featurizer = setup.featurizer(sorted(wanted))
        frame = featurizer.fit(tables).transform(tables)
        setup.check_features(frame)
        frame = frame.reset_index(drop=True)
        own = chosen.reindex(frame["patient_id"].astype(str)).to_numpy()
        hours = frame["landmark_hours"].to_numpy()
        keep = (hours == own) | (trajectory & (hours <= own) & np.isin(hours, grid))
        frame = frame[keep].reset_index(drop=True)
    else:
        frame = pd.DataFrame({"patient_id": pd.array([], dtype="str"), "landmark_hours": np.zeros(0)})

    # Which landmark rows may be scored: some accepted measurement, and some key marker, at or before L.
    first_hour = pd.Series(first_hour, index=patient_ids)
    pid = frame["patient_id"].astype(str).to_numpy()
    hours = frame["landmark_hours"].to_numpy(dtype=float)
    has_data = first_hour.reindex(pid).to_numpy(dtype=float) <= hours
    counts = {code: frame[f"{code.lower()}__count"].to_numpy(dtype=float)
              for code in setup.key_analytes if f"{code.lower()}__count" in frame.columns}
    present = np.stack([c > 0 for c in counts.values()], axis=1) if counts else np.ones((len(frame), 1), bool)
    scoreable = has_data & present.any(axis=1)

    scores: dict[str, Scores] = {}
    matrices: dict[str, np.ndarray] = {}
    matrix: np.ndarray | None = None
    for target in setup.targets:
        model = setup.bundle.targets[target]
        X = matrix if (matrix is not None and setup.shared_specs) else model.matrix_array(frame)
        matrix = matrices[target] = X
        s = model.score_array(X, hours, with_shap=with_shap)
        s.probability[~scoreable] = np.nan
        scores[target] = s

    # The prediction row: each patient's own landmark.
    is_own = hours == chosen.reindex(pid).to_numpy()
    row_of = {p: i for i, p in enumerate(pid) if is_own[i]}
    records = []
    codes = list(counts)
    for p in patient_ids:
        msgs = list(messages.get(p, []))
        i = row_of.get(p)
        L = float(chosen[p]) if not math.isnan(chosen[p]) else math.nan
        if p not in accepted:
            if not msgs:
                msgs.append("not in the patients table")
        elif math.isnan(L):
            msgs.append("no usable measurements: not scored")
        elif i is None or not has_data[i]:
            msgs.append(f"no measurement at or before {landmark_key(L)} h: not scored")
        elif not present[i].any():
            msgs.append(
                f"none of the markers the model relies on ({', '.join(codes)}) measured at or before "
                f"{landmark_key(L)} h: not scored"
            )
        else:
            missing = [c for c, ok in zip(codes, present[i], strict=True) if not ok]
            if missing:
                msgs.append(f"no {', '.join(missing)} at or before {landmark_key(L)} h: scored without them")
        messages[p] = msgs
        for target in setup.targets:
            target_msgs = list(msgs)
            prob = float(scores[target].probability[i]) if i is not None else math.nan
            label = f"label__{target}"
            if i is not None and label in frame.columns and math.isnan(frame[label].iat[i]) and scoreable[i]:
                onset = frame[f"onset_hours__{target}"].iat[i]
                definition = setup.config.targets.get(target)
                what = f"{definition.event} grade >= {definition.min_grade}" if definition else target
                when = f" at {onset:.1f} h" if not math.isnan(onset) else " (or death)"
                note = f"{what} already recorded{when}, at or before {landmark_key(L)} h: not at risk"
                target_msgs.append(note)
                messages[p].append(note)  # the page shows it too
                prob = math.nan
                scores[target].probability[i] = math.nan
            records.append((p, target, L, prob, "; ".join(target_msgs)))
    predictions = pd.DataFrame.from_records(
        records, columns=["patient_id", "target", "landmark_hours", "probability", "message"]
    )
    predictions.insert(4, "band", setup.bands(predictions["probability"].to_numpy(dtype=float)))
    predictions["patient_id"] = predictions["patient_id"].astype("str")
    return PredictResult(predictions[PREDICTION_COLUMNS], frame, scores, result, messages, matrices)


# --------------------------------------------------------------------------------------------
# Python API: one patient
# --------------------------------------------------------------------------------------------


@dataclass
class PatientRisk:
    patient_id: str
    landmark_hours: float
    probability: dict[str, float]
    band: dict[str, str]
    #: Per target: top drivers (feature, value, shap (log-odds), direction, analyte, unit, description).
    drivers: dict[str, pd.DataFrame]
    message: str
    predictions: pd.DataFrame


@functools.cache
def _feature_descriptions(analytes: tuple[str, ...], static: tuple[str, ...]) -> dict[str, dict[str, str]]:
    from features import feature_table

    table = feature_table(analytes, static)
    return {row["name"]: row for row in table.to_dict("records")}


def top_drivers(
    shap_row: np.ndarray,
    values: np.ndarray,
    specs: Sequence[FeatureSpec],
    n: int,
    descriptions: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """The ``n`` features with the largest |SHAP| (log-odds) for one row, with their values."""
    order = np.argsort(-np.abs(shap_row), kind="stable")[:n]
    rows = []
    for j in order:
        spec = specs[j]
        value: Any = values[j]
        if spec.dtype == "category":
            value = None if math.isnan(value) else spec.categories[int(value)]
        info = descriptions.get(spec.name, {})
        rows.append({
            "feature": spec.name,
            "value": value,
            "shap": float(shap_row[j]),
            "direction": "raises risk" if shap_row[j] > 0 else "lowers risk",
            "analyte": info.get("analyte", ""),
            "unit": info.get("unit", ""),
            "description": info.get("description", ""),
        })
    return pd.DataFrame(rows, columns=["feature", "value", "shap", "direction", "analyte", "unit", "description"])


class Scorer:
    """Score and explain new patients from Python.

    >>> scorer = Scorer("models")              # or Scorer("models:/crs-severe-risk/latest")
    >>> risk = scorer.score_patient(measurements, {"patient_id": "P1", "age": 61, "product": "axi-cel"})
    >>> risk.probability["crs_severe"], risk.band["crs_severe"], risk.drivers["crs_severe"]

    ``measurements``: long table with ``time`` (hours since infusion, or ISO timestamps with
    ``anchor_time`` in ``patient``), ``analyte``, ``value``, ``unit`` as in the cohort contract
    (synonyms, other units and censored ``<1.5`` are handled by the ingest rules).
    """

    def __init__(self, model: str | Path = "models", config: Config | None = None) -> None:
        if config is None:
            from pipeline.config import DEFAULT_PARAMS, load_config

            config = load_config(DEFAULT_PARAMS) if DEFAULT_PARAMS.exists() else Config()
        self.setup = load_setup(model, config)

    def score_tables(
        self, tables: Mapping[str, pd.DataFrame | None], at_hours: float | None = None, **kwargs: Any
    ) -> PredictResult:
        return score_cohort(frames_to_raw(tables), self.setup, at_hours, **kwargs)

    def score_patient(
        self,
        measurements: pd.DataFrame,
        patient: Mapping[str, Any] | pd.Series,
        at_hours: float | None = None,
        *,
        treatments: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        n_drivers: int | None = None,
    ) -> PatientRisk:
        patient = dict(patient)
        pid = str(patient.setdefault("patient_id", "patient"))
        # Only the covariates the model uses (and the anchor): every extra column costs ingest time.
        needed = {"patient_id", "anchor_time", *self.setup.config.static_features}
        patient = {k: v for k, v in patient.items() if k in needed}
        tables: dict[str, pd.DataFrame | None] = {"patients": pd.DataFrame([patient])}
        for name, frame in (("measurements", measurements), ("treatments", treatments), ("events", events)):
            if frame is not None:
                tables[name] = frame.assign(patient_id=pid) if "patient_id" not in frame.columns else frame
        result = self.score_tables(tables, at_hours, trajectory=False, with_report=False)
        preds = result.predictions[result.predictions["patient_id"] == pid]
        n = n_drivers or self.setup.config.report.top_drivers
        cfg = self.setup.config
        descriptions = _feature_descriptions(tuple(cfg.featurize.analytes), tuple(cfg.static_features))
        drivers: dict[str, pd.DataFrame] = {}
        rows = np.flatnonzero(result.landmarks["patient_id"].astype(str).to_numpy() == pid)
        for target, s in result.scores.items():
            model = self.setup.bundle.targets[target]
            if rows.size and not math.isnan(s.probability[rows[0]]) and s.shap is not None:
                X = result.matrices[target][rows[0]]
                drivers[target] = top_drivers(s.shap[rows[0]], X, model.specs, n, descriptions)
            else:
                drivers[target] = top_drivers(np.zeros(0), np.zeros(0), [], 0, descriptions)
        first = preds.iloc[0]
        return PatientRisk(
            patient_id=pid,
            landmark_hours=float(first["landmark_hours"]),
            probability=dict(zip(preds["target"], preds["probability"].astype(float), strict=True)),
            band=dict(zip(preds["target"], preds["band"], strict=True)),
            drivers=drivers,
            message=str(first["message"]),
            predictions=preds.reset_index(drop=True),
        )


# --------------------------------------------------------------------------------------------
# crs predict
# --------------------------------------------------------------------------------------------


def _prepare_out(out: Path) -> None:
    # The output directory is replaced as a whole; never wipe a directory crs predict did not write.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / PREDICTIONS_FILE).exists())):
        raise UserError(f"{out}: exists and is not a crs predict output directory; choose a new --out")


def _reports_dir(setup: ScoringSetup) -> Path | None:
    directory = Path(setup.bundle.directory)
    if "://" in setup.source or setup.source.startswith(("models:/", "runs:/")):
        return None
    return directory.resolve().parent / "reports"


def _explain_and_report(
    tmp: Path, config: Config, setup: ScoringSetup, result: PredictResult, pseudonymise: bool
) -> int:
    """Explanations (pipeline.explain) and patient pages (pipeline.report) for the scored rows."""
    from pipeline.explain import explain_landmarks
    from pipeline.report import COHORT_BANDS_PATH, write_patient_reports

    landmarks = result.landmarks
    ok = np.zeros(len(landmarks), dtype=bool)
    for s in result.scores.values():
        ok |= ~np.isnan(s.probability)
    explained = landmarks[ok].reset_index(drop=True)
    if not len(explained):
        return 0  # nobody scoreable: predictions.csv holds every patient's message
    explanations = explain_landmarks(setup.bundle, explained, config)
    # A target the patient is no longer at risk for is not shown as a risk.
    for target, frame in list(explanations.items()):
        s = result.scores.get(target)
        if s is None:
            continue
        withheld = landmarks.loc[~ok | np.isnan(s.probability), ["patient_id", "landmark_hours"]]
        if len(withheld):
            key = pd.MultiIndex.from_frame(withheld.astype({"patient_id": "str"}))
            mine = pd.MultiIndex.from_frame(frame[["patient_id", "landmark_hours"]].astype({"patient_id": "str"}))
            explanations[target] = frame[~mine.isin(key)].reset_index(drop=True)
    # Validation metrics and cohort marker bands belong to the model's own pipeline run: read them from
    # the reports/ next to a models/ directory (none for a registry URI: the page says "not available").
    reports_dir = _reports_dir(setup)
    bands_path = reports_dir / COHORT_BANDS_PATH.name if reports_dir else None
    metrics_path = reports_dir / "metrics.json" if reports_dir else None
    cohort_bands = pd.read_parquet(bands_path) if bands_path and bands_path.exists() else None
    metrics = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.exists() else None
    pages = write_patient_reports(
        tmp / "patients",
        config=config,
        bundle=setup.bundle,
        explanations=explanations,
        landmarks=explained,
        measurements=result.ingest.tables["measurements"],
        treatments=result.ingest.tables["treatments"],
        cohort_bands=cohort_bands,
        metrics=metrics,
        messages=result.messages,
        pseudonymise=pseudonymise,
    )
    return len(pages)


def main(
    config: Config,
    cohort: Path,
    model: str | Path,
    out: Path,
    at_hours: float | None = None,
    *,
    reports: bool = True,
    pseudonymise: bool | None = None,
) -> PredictResult:
    """``crs predict``: all outputs appear in ``out`` at once, or none (file-level errors)."""
    import time

    started = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    setup = load_setup(model, config)
    raw = read_new_cohort(cohort)
    result = score_cohort(raw, setup, at_hours)
    report = {"cohort": str(cohort), "model": setup.source, **result.ingest.report}
    n_pages = 0
    pseudo = config.report.pseudonymise if pseudonymise is None else pseudonymise
    predictions, quarantine = result.predictions, result.ingest.quarantine
    if pseudo:  # every output, not only the pages (salt from $CRS_PSEUDONYM_SALT)
        from pipeline.report import id_mapper

        to_id = id_mapper(True)
        predictions = predictions.assign(patient_id=predictions["patient_id"].map(to_id))
        if "patient_id" in quarantine.columns:
            ids = quarantine["patient_id"]
            quarantine = quarantine.assign(patient_id=ids.where(ids.isna(), ids.astype(str).str.strip().map(to_id)))
    with atomic_dir(out) as tmp:
        write_csv(predictions, tmp / PREDICTIONS_FILE)
        quarantine.to_csv(tmp / "quarantine.csv", index=False)
        write_json(report, tmp / "ingest.json")
        if reports:
            n_pages = _explain_and_report(tmp, config, setup, result, pseudo)
    p = result.predictions
    scored = p.loc[p["probability"].notna(), "patient_id"].nunique()
    print(
        f"predict: {p['patient_id'].nunique()} patients, {scored} scored, "
        f"{int((p['message'] != '').groupby(p['patient_id']).any().sum())} with messages, {n_pages} pages "
        f"-> {out}/ ({time.perf_counter() - started:.1f} s)"
    )
    return result


__all__ = [
    "PREDICTION_COLUMNS",
    "PatientRisk",
    "PredictResult",
    "Scorer",
    "ScoringSetup",
    "combined_to_raw",
    "frames_to_raw",
    "load_setup",
    "main",
    "raw_to_combined",
    "read_new_cohort",
    "score_cohort",
]

