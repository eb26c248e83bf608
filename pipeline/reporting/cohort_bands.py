"""Cohort marker bands: quartiles of each marker over time in patients with and without the event.

``reports/cohort_bands.parquet`` holds, per target, marker, 12 h time bin and group (event / no event),
the quartiles of the marker; the marker charts draw a patient against them (also in ``crs predict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contracts import HOURS_SINCE_ANCHOR, PATIENT_ID, label_column, onset_column
from pipeline.errors import UserError

BAND_BIN_HOURS = 12.0
BAND_START_HOURS, BAND_END_HOURS = -168.0, 336.0
MIN_BAND_PATIENTS = 10  # fewer patients in a bin: no band drawn (quartiles of 3 values mislead)
BAND_POOL_BINS = 1  # each bin pools values from this many neighbouring bins on each side (36 h window)
BAND_COLUMNS = ["target", "marker", "unit", "group", "bin_start_hours", "bin_end_hours", "n_patients",
                "p25", "p50", "p75"]
EVENT, NO_EVENT = "event", "no_event"


@dataclass
class MarkerBands:
    """Cohort quartile bands of one marker per group: array (bins, 5) of start, end, p25, p50, p75 hours/values."""

    event: np.ndarray | None = None
    no_event: np.ndarray | None = None


def event_patients(landmarks: pd.DataFrame, target: str) -> tuple[set[str], set[str]]:
    """(patients with the event, all patients): onset recorded, else a positive label at some landmark."""
    onset_col, label_col = onset_column(target), label_column(target)
    if onset_col in landmarks:
        by_patient = landmarks.groupby(PATIENT_ID, observed=True)[onset_col].max().notna()
    elif label_col in landmarks:
        by_patient = landmarks.groupby(PATIENT_ID, observed=True)[label_col].max() == 1
    else:
        raise UserError(f"landmarks: no '{onset_col}' or '{label_col}' column for cohort bands")
    event_ids = set(by_patient.index[by_patient.to_numpy(dtype=bool)].astype(str))
    return event_ids, set(by_patient.index.astype(str))


def _binned_values(measurements: pd.DataFrame, markers: list[str], event_ids: set[str],
                   all_ids: set[str]) -> pd.DataFrame:
    """One row per marker value in the band window: marker, unit, patient, 12 h bin, value, group."""
    m = measurements[measurements["analyte"].isin(markers)]
    hours = m[HOURS_SINCE_ANCHOR]
    m = m[(hours >= BAND_START_HOURS) & (hours < BAND_END_HOURS)]
    m = m[m[PATIENT_ID].astype(str).isin(all_ids).to_numpy()]
    pid = m[PATIENT_ID].astype(str)
    return pd.DataFrame(
        {
            "marker": m["analyte"].astype(str).to_numpy(),
            "unit": m["unit"].astype(str).to_numpy(),
            PATIENT_ID: pid.to_numpy(),
            "bin": np.floor((m[HOURS_SINCE_ANCHOR].to_numpy() - BAND_START_HOURS) / BAND_BIN_HOURS).astype(int),
            "value": m["value"].to_numpy(dtype=float),
            "group": np.where(pid.isin(event_ids).to_numpy(), EVENT, NO_EVENT),
        }
    )


def compute_cohort_bands(
    measurements: pd.DataFrame, landmarks: pd.DataFrame, markers: list[str], target: str
) -> pd.DataFrame:
    """Quartiles of each marker per 12 h bin in [-168, 336) h, for patients with / without the event.

    A patient is in the event group when the target's onset column is set (else its label is 1 at
    some landmark). Values are canonical units (censored results at their bound). Each bin pools the
    36 h window centred on it (the bin and one neighbour each side; ward sampling is uneven across the
    day, so single 12 h bins are jagged). Each patient contributes one value per bin (the median of
    their values in the window), so densely sampled patients do not dominate; bins with fewer than 10
    patients are dropped.
    """
    event_ids, all_ids = event_patients(landmarks, target)
    base = _binned_values(measurements, markers, event_ids, all_ids)
    if base.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in BAND_COLUMNS})
    n_bins = int((BAND_END_HOURS - BAND_START_HOURS) / BAND_BIN_HOURS)
    shifted = [base.assign(bin=base["bin"] + k) for k in range(-BAND_POOL_BINS, BAND_POOL_BINS + 1)]
    frame = pd.concat(shifted, ignore_index=True)
    frame = frame[(frame["bin"] >= 0) & (frame["bin"] < n_bins)]
    per_patient = frame.groupby(["marker", "unit", "group", "bin", PATIENT_ID], observed=True)["value"].median()
    grouped = per_patient.groupby(level=["marker", "unit", "group", "bin"], observed=True)
    out = grouped.quantile([0.25, 0.5, 0.75]).unstack()
    out.columns = ["p25", "p50", "p75"]
    out["n_patients"] = grouped.size()
    out = out.reset_index()
    out = out[out["n_patients"] >= MIN_BAND_PATIENTS]
    out["bin_start_hours"] = BAND_START_HOURS + out["bin"] * BAND_BIN_HOURS
    out["bin_end_hours"] = out["bin_start_hours"] + BAND_BIN_HOURS
    out["target"] = target
    out["n_patients"] = out["n_patients"].astype("int64")
    return out[BAND_COLUMNS].sort_values(["marker", "group", "bin_start_hours"]).reset_index(drop=True)


def cohort_bands_for(measurements: pd.DataFrame, landmarks: pd.DataFrame, markers: list[str],
                     targets: list[str]) -> pd.DataFrame:
    """:func:`compute_cohort_bands` for every target, stacked (schema of ``reports/cohort_bands.parquet``)."""
    return pd.concat([compute_cohort_bands(measurements, landmarks, markers, t) for t in targets],
                     ignore_index=True)


def marker_bands(cohort_bands: pd.DataFrame | None, target: str) -> dict[str, MarkerBands]:
    """Per marker, the event / no-event band arrays of ``target`` (empty without cohort bands)."""
    bands: dict[str, MarkerBands] = {}
    if cohort_bands is None or not len(cohort_bands):
        return bands
    sub = cohort_bands[cohort_bands["target"] == target]
    for (marker, group), g in sub.groupby(["marker", "group"], observed=True):
        mb = bands.setdefault(str(marker), MarkerBands())
        g = g.sort_values("bin_start_hours")
        setattr(mb, str(group), g[["bin_start_hours", "bin_end_hours", "p25", "p50", "p75"]].to_numpy(dtype=float))
    return bands
