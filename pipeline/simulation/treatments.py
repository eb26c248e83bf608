"""Treatments: tocilizumab, dexamethasone and methylprednisolone, and their effect on the markers.

Doses follow the grade course but only its past: a steroid course is extended beyond four doses only
once a grade >= 3 onset has happened (a course length set from the eventual grade would leak the
outcome into treatment features before onset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import ANALYTE_INDEX, analyte_column
from pipeline.simulation.curves import pulse
from pipeline.simulation.sampling import Rows
from pipeline.simulation.severity import Outcomes

DRUGS = np.array(["tocilizumab", "dexamethasone", "methylprednisolone"])
DOSES = np.array([8.0, 10.0, 1000.0])
DOSE_UNITS = np.array(["mg/kg", "mg", "mg"])
# Dose slots per patient: tocilizumab x2, dexamethasone every 6 h x8, methylprednisolone daily x3.
SLOT_DRUG = np.array([0, 0] + [1] * 8 + [2] * 3)
DEX_SLOTS = slice(2, 10)
DEX_BASE_COURSE_DOSES = 4


@dataclass(frozen=True)
class Treatments:
    """Doses given (one entry per dose, sorted by patient and time) and per-patient timing."""

    patient: np.ndarray  # index of the patient given each dose
    drug: np.ndarray  # index into DRUGS
    minutes: np.ndarray  # since EPOCH_START
    tocilizumab_hours: np.ndarray  # per patient: first tocilizumab (inf if none)
    steroid_hours: np.ndarray  # per patient: first scheduled steroid (inf if none)


def _dose_slot_hours(outcomes: Outcomes, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 13) scheduled hours of every dose slot, first tocilizumab and first steroid (per patient)."""
    crs_hours, icans_hours = outcomes.crs_grade_hours, outcomes.icans_grade_hours
    toci_first = crs_hours[:, 1] + 0.5 + 3.5 * uniform[:, 0]  # tocilizumab at grade 2 CRS
    toci_repeat = np.maximum(crs_hours[:, 2] + 0.5 + 1.5 * uniform[:, 1], toci_first + 8.0)  # grade 3, >= 8 h
    dex_for_crs = crs_hours[:, 2] + 0.5 + 2.0 * uniform[:, 2]  # dexamethasone for grade >= 3 CRS
    dex_for_icans = icans_hours[:, 1] + 0.5 + 3.0 * uniform[:, 3]  # dexamethasone for grade >= 2 ICANS
    dex_start = np.minimum(dex_for_crs, dex_for_icans)
    # Methylprednisolone at grade 4.
    methylpred_start = np.minimum(icans_hours[:, 3], crs_hours[:, 3]) + 1.0 + 2.0 * uniform[:, 4]
    slot_hours = np.concatenate(
        [toci_first[:, None], toci_repeat[:, None], dex_start[:, None] + 6.0 * np.arange(8)[None, :],
         methylpred_start[:, None] + 24.0 * np.arange(3)[None, :]], axis=1
    )
    return slot_hours, toci_first, np.minimum(dex_start, methylpred_start)


def schedule_treatments(outcomes: Outcomes, anchor_minutes: np.ndarray, rng: np.random.Generator) -> Treatments:
    """Doses triggered by grade changes; none after death; dexamethasone extended only after severe onset."""
    uniform = rng.random((outcomes.crs_grade.size, 8))
    slot_hours, toci_first, steroid_hours = _dose_slot_hours(outcomes, uniform)
    severe_onset_hours = np.minimum(outcomes.crs_grade_hours[:, 2], outcomes.icans_grade_hours[:, 2])
    given = np.isfinite(slot_hours) & (slot_hours < outcomes.death_hours[:, None])
    dex_hours = slot_hours[:, DEX_SLOTS]
    given[:, DEX_SLOTS] &= ((np.arange(8)[None, :] < DEX_BASE_COURSE_DOSES)
                            | (severe_onset_hours[:, None] <= dex_hours))
    patient, slot = np.nonzero(given)
    minutes = anchor_minutes[patient] + np.round(slot_hours[patient, slot] * 60).astype(np.int64)
    order = np.lexsort((minutes, patient))
    return Treatments(
        patient=patient[order],
        drug=SLOT_DRUG[slot[order]],
        minutes=minutes[order],
        tocilizumab_hours=np.where(outcomes.crs_grade >= 2, toci_first, np.inf),
        steroid_hours=steroid_hours,
    )


@dataclass(frozen=True)
class MarkerResponse:
    """Per measurement row: treatment damping of the pulse, tocilizumab IL-6 boost, adjusted pulse."""

    damping: np.ndarray
    il6_boost: np.ndarray
    pulse: np.ndarray


def marker_response(rows: Rows, treatments: Treatments, il6_half_rise_hours: np.ndarray,
                    marker_pulse: np.ndarray) -> MarkerResponse:
    """Steroids damp the inflammatory excess; tocilizumab lowers CRP and raises serum IL-6.

    The blocked receptor no longer clears IL-6, so it stops falling and climbs for a day or two.
    """
    patient, analyte, hours = rows.patient, rows.analyte, rows.hours
    since_steroid_hours = hours - treatments.steroid_hours[patient]
    damping = np.where(analyte_column("inflammatory")[analyte].astype(bool) & (since_steroid_hours > 0),
                       np.exp(-np.maximum(since_steroid_hours, 0) / 96), 1.0)
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
