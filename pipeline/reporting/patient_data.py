"""The inputs of the patient pages, indexed once for all patients, and one patient's view of them.

:class:`ReportData` turns the SHAP frames, the landmark table, the measurements and the treatments
into arrays keyed by patient (a page is then a few lookups and slices, no filtering of whole
tables). :class:`PatientView` is one patient at their latest landmark; the section builders of
:mod:`pipeline.reporting.sections` read only these two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import TREATMENT_CLASSES
from features.landmarks import GRADED_EVENTS
from pipeline.config import Config
from pipeline.contracts import HOURS_SINCE_ANCHOR, LANDMARK_HOURS, PATIENT_ID, shap_column, shap_features
from pipeline.errors import UserError
from pipeline.model import ModelBundle
from pipeline.model.setup import band_cutoffs
from pipeline.registry import load_registry
from pipeline.reporting import clinical_text as ct
from pipeline.reporting.charts import TARGET_COLOURS
from pipeline.reporting.cohort_bands import MarkerBands, marker_bands
from pipeline.reporting.ids import id_mapper
from pipeline.reporting.model_info import model_identity, target_label, trained_on_simulated


@dataclass
class PatientSlices:
    """Row ranges per patient in a table sorted by patient and time, with its columns as arrays."""

    columns: dict[str, np.ndarray]
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, frame: pd.DataFrame | None, columns: dict[str, str]) -> PatientSlices:
        """``columns``: array name -> ``"float"`` or ``"str"`` (missing table: empty arrays)."""
        if frame is None or frame.empty:
            return cls({c: np.array([], dtype=float if kind == "float" else object) for c, kind in columns.items()})
        frame = frame.sort_values([PATIENT_ID, HOURS_SINCE_ANCHOR], kind="stable").reset_index(drop=True)
        ids = frame[PATIENT_ID].astype(str).to_numpy()
        change = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        arrays = {c: frame[c].to_numpy(dtype=float) if kind == "float" else frame[c].astype(str).to_numpy()
                  for c, kind in columns.items()}
        return cls(arrays, {ids[a]: (a, b) for a, b in zip(change[:-1], change[1:], strict=True)})

    def upto(self, pid: str, hours: float) -> tuple[int, int]:
        """Row range of ``pid`` at or before ``hours`` since the anchor."""
        a, b = self.ranges.get(pid, (0, 0))
        return a, a + int(np.searchsorted(self.columns[HOURS_SINCE_ANCHOR][a:b], hours, side="right"))


def anchor_times(patients: pd.DataFrame | None) -> dict[str, pd.Timestamp]:
    """patient id -> ``anchor_time`` (UTC) from the ingested patients table; empty without one."""
    if patients is None or "anchor_time" not in patients.columns:
        return {}
    times = pd.to_datetime(patients["anchor_time"], utc=True, errors="coerce")
    keep = times.notna().to_numpy()
    return dict(zip(patients[PATIENT_ID].astype(str).to_numpy()[keep], times[keep], strict=True))


def group_shap(names: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sum SHAP columns per clinical group (exact: SHAP values add). ``values``: (rows, features)."""
    groups = [ct.feature_group(n) for n in names]
    keys = list(dict.fromkeys(groups))
    codes = np.array([keys.index(g) for g in groups])
    summed = np.zeros((values.shape[0], len(keys)))
    np.add.at(summed.T, codes, values.T)
    return keys, summed


@dataclass
class TargetRows:
    """One target's SHAP frame as arrays: per-row risk and SHAP summed per clinical group."""

    hours: np.ndarray
    probability: np.ndarray
    band: np.ndarray
    base_value: np.ndarray
    margin: np.ndarray
    groups: list[str]
    group_shap: np.ndarray
    rows_by_patient: dict[str, list[int]]

    @classmethod
    def build(cls, frame: pd.DataFrame) -> TargetRows:
        frame = frame.reset_index(drop=True)
        names = shap_features(frame.columns)
        groups, summed = group_shap(names, frame[[shap_column(n) for n in names]].to_numpy(dtype=float))
        band = (frame["band"].astype(str).to_numpy() if "band" in frame
                else np.full(len(frame), "", dtype=object))
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(frame[PATIENT_ID].astype(str).to_numpy()):
            rows.setdefault(p, []).append(i)
        return cls(frame[LANDMARK_HOURS].to_numpy(), frame["probability"].to_numpy(), band,
                   frame["base_value"].to_numpy(), frame["margin"].to_numpy(), groups, summed, rows)


def treatment_classes(drugs: np.ndarray) -> np.ndarray:
    """Treatment class (``tocilizumab``, ``steroids``) of each drug name; ``""`` for others."""
    lookup = {name: klass for klass, names in TREATMENT_CLASSES.items() for name in names}
    return np.array([lookup.get(str(d).strip().lower(), "") for d in drugs], dtype=object)


@dataclass
class ReportData:
    """Everything the pages of one report read, indexed by patient."""

    config: Config
    targets: list[str]
    labels: dict[str, str]
    colours: dict[str, str]
    identities: dict[str, dict[str, Any]]
    rows: dict[str, TargetRows]
    landmark_index: dict[tuple[str, float], int]
    landmark_records: list[dict[str, Any]]
    measurements: PatientSlices
    treatments: PatientSlices
    treatment_class: np.ndarray
    units: dict[str, str]
    bands: dict[str, MarkerBands]
    band_label: str
    metrics: dict | None
    messages: dict[str, list[str]]
    to_id: Callable[[str], str]
    pseudonymise: bool
    risk_note: str | None
    #: The model was trained on simulated patients: every page says so in a banner.
    simulated: bool = False
    #: Per target, per row of ``rows[target]``: the model's validated alert threshold at that landmark.
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per target, per row: the risk-band cut-offs (low below, high from) the row's band was given by.
    cutoffs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: patient id -> infusion time (UTC), for the "data as of" clock time (absent: hours only).
    anchors: dict[str, pd.Timestamp] = field(default_factory=dict)
    #: The CRS / ICANS grade timeline (``crs grade``: grade in force from each row on, and its reason).
    grades: PatientSlices | None = None

    @classmethod
    def build(cls, *, config: Config, bundle: ModelBundle, explanations: dict[str, pd.DataFrame],
              landmarks: pd.DataFrame, measurements: pd.DataFrame, treatments: pd.DataFrame,
              cohort_bands: pd.DataFrame | None, metrics: dict | None, messages: dict[str, list[str]] | None = None,
              pseudonymise: bool = False, risk_note: str | None = None,
              patients: pd.DataFrame | None = None, grades: pd.DataFrame | None = None) -> ReportData:
        """Index the inputs of ``write_patient_reports`` (same arguments); a missing or weak key fails first."""
        to_id = id_mapper(pseudonymise)
        targets = [t for t in explanations if t in bundle.targets]
        if not targets:
            raise UserError("no explanations for any trained target: nothing to report")
        lm = landmarks.reset_index(drop=True)
        keys = zip(lm[PATIENT_ID].astype(str).to_numpy(), lm[LANDMARK_HOURS].to_numpy(dtype=float), strict=True)
        trt = PatientSlices.build(treatments, {HOURS_SINCE_ANCHOR: "float", "drug": "str"})
        band_target = config.report.cohort_band_target or targets[0]
        return cls(
            config=config, targets=targets, labels={t: target_label(config, t) for t in targets},
            colours={t: TARGET_COLOURS[i % len(TARGET_COLOURS)] for i, t in enumerate(targets)},
            identities={t: model_identity(bundle, t) for t in targets},
            rows={t: TargetRows.build(explanations[t]) for t in targets},
            landmark_index={k: i for i, k in enumerate(keys)}, landmark_records=lm.to_dict("records"),
            measurements=PatientSlices.build(measurements, {HOURS_SINCE_ANCHOR: "float", "analyte": "str",
                                                            "value": "float", "censoring": "str"}),
            treatments=trt, treatment_class=treatment_classes(trt.columns["drug"]), units=load_registry().canonical_units,
            bands=marker_bands(cohort_bands, band_target),
            band_label=target_label(config, band_target) if band_target in config.targets else band_target,
            metrics=metrics, messages=messages or {}, to_id=to_id, pseudonymise=pseudonymise, risk_note=risk_note,
            simulated=trained_on_simulated(bundle),
            thresholds={t: _thresholds(bundle, t, explanations[t]) for t in targets},
            cutoffs={t: row_band_cutoffs(bundle, config, t, explanations[t]) for t in targets},
            anchors=anchor_times(patients),
            grades=None if grades is None else PatientSlices.build(
                grades[grades["event"].isin(GRADED_EVENTS).to_numpy()],
                {HOURS_SINCE_ANCHOR: "float", "event": "str", "grade": "float", "reason": "str"}),
        )

    def patients(self) -> list[str]:
        """Every patient with a scored row or a message (nobody silently disappears from the index)."""
        scored = {p for rows in self.rows.values() for p in rows.rows_by_patient}
        return sorted(scored | set(self.messages))


def row_band_cutoffs(bundle: ModelBundle, config: Config, target: str, frame: pd.DataFrame
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``frame`` (an explanations frame of ``target``), the band cut-offs (low below, high from):
    the model's validated ones at the row's landmark, with the low cut at the alert threshold of the model
    that scored the row (a fold model's, for out-of-fold rows); fixed ones under ``report.bands: fixed``."""
    hours = frame[LANDMARK_HOURS].to_numpy(dtype=float)
    low, high = band_cutoffs(bundle.targets, config, np.full(len(frame), target, dtype=object), hours)
    if config.report.bands == "validated" and "threshold" in frame.columns:
        own = frame["threshold"].to_numpy(dtype=float)
        low = np.where(np.isfinite(own), own, low)
        high = np.maximum(high, low)
    return low, high


def _thresholds(bundle: ModelBundle, target: str, explanations: pd.DataFrame) -> np.ndarray:
    """Alert threshold per row: the scoring model's own (a fold model's, for out-of-fold rows), else the
    deployed model's at that landmark."""
    if "threshold" in explanations.columns:
        return explanations["threshold"].to_numpy(dtype=float)
    return bundle.targets[target].threshold_array(explanations[LANDMARK_HOURS].to_numpy(dtype=float))


@dataclass
class PatientView:
    """One patient at their latest landmark: row indices per target and the data up to that landmark."""

    pid: str
    display: str
    hours: list[float]
    latest: float
    by_hour: dict[str, dict[float, int]]
    landmark_row: dict[str, Any]
    measurements: tuple[int, int]
    treatments: tuple[int, int]
    grades: tuple[int, int] = (0, 0)

    @property
    def scored(self) -> bool:
        return bool(self.hours)

    @property
    def at_latest(self) -> dict[str, int]:
        """Target -> row of its SHAP frame at the latest landmark (targets scored there only)."""
        return {t: rows[self.latest] for t, rows in self.by_hour.items() if self.latest in rows}

    @classmethod
    def build(cls, data: ReportData, pid: str) -> PatientView:
        by_hour = {t: {float(data.rows[t].hours[i]): i for i in data.rows[t].rows_by_patient.get(pid, [])}
                   for t in data.targets}
        hours = sorted({h for rows in by_hour.values() for h in rows})
        latest = hours[-1] if hours else math.inf
        index = data.landmark_index.get((pid, latest))
        row = data.landmark_records[index] if index is not None else {LANDMARK_HOURS: latest}
        return cls(pid, data.to_id(pid), hours, latest, by_hour, row,
                   data.measurements.upto(pid, latest), data.treatments.upto(pid, latest),
                   data.grades.upto(pid, latest) if data.grades is not None else (0, 0))
