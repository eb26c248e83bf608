"""Treatments: the doses written (``policy`` decides when), and their effect on the markers.

Doses follow the grade course but only its past: a steroid course is extended beyond four doses only
once a grade >= 3 onset has happened (a course length set from the eventual grade would leak the
outcome into treatment features before onset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import ANALYTE_INDEX, analyte_column
from pipeline.simulation.curves import pulse
from pipeline.simulation.policy import (
    DEX_SLOTS,
    DOSE_UNITS,
    DOSES,
    DRUGS,
    PROPHYLAXIS_SLOTS,
    SLOT_DRUG,
    TOCILIZUMAB,
    dose_slot_hours,
)
from pipeline.simulation.sampling import Rows
from pipeline.simulation.severity import CourseDraws, Outcomes

__all__ = ["DOSES", "DOSE_UNITS", "DRUGS", "MarkerResponse", "Treatments", "marker_response", "schedule_treatments"]
DEX_BASE_COURSE_DOSES = 4
STEROID_DAMPING_HOURS = 96.0  # inflammatory excess decays with this time constant after a treatment steroid
PROPHYLAXIS_DAMPING = 0.25  # share of the inflammatory excess prophylactic dexamethasone removes (days 0-2)


@dataclass(frozen=True)
class Treatments:
    """Doses given (one entry per dose, sorted by patient and time) and per-patient timing."""

    patient: np.ndarray  # index of the patient given each dose
    drug: np.ndarray  # index into DRUGS
    minutes: np.ndarray  # since EPOCH_START
    tocilizumab_hours: np.ndarray  # per patient: first tocilizumab (inf if none)
    steroid_hours: np.ndarray  # per patient: first treatment (not prophylactic) steroid (inf if none)
    prophylaxis: np.ndarray  # per patient: prophylactic dexamethasone given


def _given_slots(outcomes: Outcomes, course: CourseDraws) -> tuple[np.ndarray, np.ndarray]:
    """(n, slots) scheduled hours and whether each slot's dose is given (before death, course rules)."""
    slot_hours = dose_slot_hours(outcomes.crs_grade_hours, outcomes.icans_grade_hours, course.delay_uniform,
                                 course.prophylaxis, course.early_tocilizumab)
    severe_onset_hours = np.minimum(outcomes.crs_grade_hours[:, 2], outcomes.icans_grade_hours[:, 2])
    given = np.isfinite(slot_hours) & (slot_hours < outcomes.death_hours[:, None])
    given[:, DEX_SLOTS] &= ((np.arange(8)[None, :] < DEX_BASE_COURSE_DOSES)
                            | (severe_onset_hours[:, None] <= slot_hours[:, DEX_SLOTS]))
    return slot_hours, given


def schedule_treatments(outcomes: Outcomes, course: CourseDraws, anchor_minutes: np.ndarray) -> Treatments:
    """Doses triggered by grade changes and site habits; none after death."""
    slot_hours, given = _given_slots(outcomes, course)
    patient, slot = np.nonzero(given)
    minutes = anchor_minutes[patient] + np.round(slot_hours[patient, slot] * 60).astype(np.int64)
    order = np.lexsort((minutes, patient))
    given_hours = np.where(given, slot_hours, np.inf)
    treatment_steroid = (SLOT_DRUG != TOCILIZUMAB) & (np.arange(SLOT_DRUG.size) >= PROPHYLAXIS_SLOTS.stop)
    return Treatments(
        patient=patient[order],
        drug=SLOT_DRUG[slot[order]],
        minutes=minutes[order],
        tocilizumab_hours=given_hours[:, SLOT_DRUG == TOCILIZUMAB].min(axis=1),
        steroid_hours=given_hours[:, treatment_steroid].min(axis=1),
        prophylaxis=given[:, PROPHYLAXIS_SLOTS].any(axis=1),
    )


@dataclass(frozen=True)
class MarkerResponse:
    """Per measurement row: treatment damping of the pulse, tocilizumab IL-6 boost, adjusted pulse."""

    damping: np.ndarray
    il6_boost: np.ndarray
    pulse: np.ndarray


def _steroid_damping(rows: Rows, treatments: Treatments) -> np.ndarray:
    """Share of the inflammatory excess left under steroids (1 for non-inflammatory analytes)."""
    patient, hours = rows.patient, rows.hours
    since_steroid_hours = hours - treatments.steroid_hours[patient]
    treated = np.exp(-np.maximum(since_steroid_hours, 0) / STEROID_DAMPING_HOURS)
    prophylactic = 1 - PROPHYLAXIS_DAMPING * (treatments.prophylaxis[patient] & (hours > 0)) * np.exp(
        -np.maximum(hours - 48.0, 0.0) / 48.0)
    inflammatory = analyte_column("inflammatory")[rows.analyte].astype(bool)
    return np.where(inflammatory, treated * prophylactic, 1.0)


def marker_response(rows: Rows, treatments: Treatments, il6_half_rise_hours: np.ndarray,
                    marker_pulse: np.ndarray) -> MarkerResponse:
    """Steroids damp the inflammatory excess; tocilizumab lowers CRP and raises serum IL-6.

    The blocked receptor no longer clears IL-6, so it stops falling and climbs for a day or two.
    """
    patient, analyte, hours = rows.patient, rows.analyte, rows.hours
    damping = _steroid_damping(rows, treatments)
    since_toci_hours = hours - treatments.tocilizumab_hours[patient]
    after_toci_hours = np.maximum(since_toci_hours, 0)
    crp_after = (analyte == ANALYTE_INDEX["CRP"]) & (since_toci_hours > 0)
    # CRP already induced keeps coming for about 18 h, then falls with a ~1.5-day time constant.
    damping[crp_after] *= np.exp(-np.maximum(after_toci_hours[crp_after] - 18.0, 0.0) / 36.0)
    il6_after = np.flatnonzero((analyte == ANALYTE_INDEX["IL6"]) & (since_toci_hours > 0))
    il6_boost = np.zeros(rows.n_rows)
    marker_pulse = marker_pulse.copy()
    if il6_after.size:
        toci_patient = patient[il6_after]
        il6_shape = (np.full(il6_after.size, analyte_column(field)[ANALYTE_INDEX["IL6"]])
                     for field in ("width_hours", "hold_hours", "decay_hours"))
        held = pulse(treatments.tocilizumab_hours[toci_patient], il6_half_rise_hours[toci_patient], *il6_shape)
        after = after_toci_hours[il6_after]
        marker_pulse[il6_after] = np.maximum(marker_pulse[il6_after], held * np.exp(-after / 120))
        il6_boost[il6_after] = 1.0 * (1 - np.exp(-after / 6)) * np.exp(-after / 120)
    return MarkerResponse(damping=damping, il6_boost=il6_boost, pulse=marker_pulse)
