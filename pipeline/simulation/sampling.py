"""Sampling schedule: routine labs, research cytokine panels, ward vitals, and the extra draws a ward
orders once a patient worries it (after the first fever, more after grade 2): only the observed past
of the course decides an extra draw, and how often varies by site."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import ANALYTE_INDEX, TEMP_INDEX
from pipeline.simulation.arms import site_attribute
from pipeline.simulation.curves import fever_excess_celsius

ROUTINE_PANEL = ["CRP", "FERRITIN", "LDH", "PLT", "CREAT", "ANC", "HGB", "DDIMER", "FIBRINOGEN"]
ROUTINE_KEEP = np.array([0.95, 0.85, 0.90, 0.98, 0.97, 0.97, 0.98, 0.60, 0.65])  # ordered per draw
ROUTINE_DAYS = np.array([-7, -5, -4, -3, -1, *range(0, 15), 17, 21, 24, 28])
CYTOKINE_PANEL = ["IL6", "IFNG", "IL10", "IL8", "MCP1", "IL1RA", "SGP130"]
CYTOKINE_DAYS = np.array([-5, 0, 1, 2, 3, 5, 7, 14, 21, 28])
INPATIENT_DAYS = np.arange(-1, 15)  # temperature on the ward several times a day
VITALS_CLOCK_HOURS = np.array([2.0, 6.0, 10.0, 14.0, 18.0, 22.0])
# Extra draws while worried: 6-hourly slots over days 0-14, each kept with the site's worry_draws
# chance times the factor for the highest grade whose onset lies within WORRY_HOURS before the slot,
# times (1 + WORRY_PER_FEVER_C x the patient's typical fever above 38 C): a hotter patient worries more.
WORRY_HOURS = 72.0
WORRY_PER_FEVER_C = 3.0
WORRY_CLOCK_HOURS = np.array([0.0, 6.0, 12.0, 18.0])
WORRY_DAYS = np.arange(0, 15)
WORRY_GRADE_FACTOR = np.array([0.0, 1.0, 2.0, 2.5, 2.5, 2.5])  # by grade 0..5
WORRY_PANEL = ["CRP", "FERRITIN", "LDH", "PLT", "CREAT", "ANC", "HGB", "DDIMER", "FIBRINOGEN"]
WORRY_KEEP = np.array([0.95, 0.70, 0.60, 0.90, 0.85, 0.85, 0.85, 0.50, 0.50])
WORRY_CYTOKINE_SHARE = np.array([1.0, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3])  # of site worry_cytokines, CYTOKINE_PANEL
WORRY_VITALS_CLOCK_HOURS = np.array([0.0, 4.0, 8.0, 12.0, 16.0, 20.0])  # between the routine rounds


@dataclass(frozen=True)
class Rows:
    """Clean measurement rows (one entry per row), sorted by patient, time and analyte."""

    patient: np.ndarray  # patient index (int64)
    analyte: np.ndarray  # index into CODES (int64)
    minutes: np.ndarray  # since infusion, whole minutes (int64)
    hours: np.ndarray  # since infusion, minutes / 60

    @property
    def n_rows(self) -> int:
        return int(self.patient.size)


@dataclass(frozen=True)
class VitalRounds:
    """The ward's vitals rounds while inpatient (one entry per round, not per row): every slot of the
    routine ward grid (whether or not its temperature was charted) and every extra round taken while
    worried. ``bedside`` charts blood pressure, SpO2 and oxygen at them."""

    patient: np.ndarray
    hours: np.ndarray  # since infusion (unrounded; rows use whole minutes)
    day: np.ndarray  # inpatient day of the ward slot (-1..14); the day of a worry round
    slot: np.ndarray  # index into VITALS_CLOCK_HOURS for ward slots, -1 for worry rounds
    temp_charted: np.ndarray  # bool: a TEMP row was scheduled at this round
    ward_slots: int  # the first patients x ward_slots rounds are the ward grid (patient, day, slot order)


@dataclass(frozen=True)
class _Draws:
    """One block of scheduled rows before concatenation."""

    patient: np.ndarray
    hours: np.ndarray
    analyte: np.ndarray


def _routine_visits(anchor_clock_hours: np.ndarray, rng: np.random.Generator) -> tuple[_Draws, _Draws]:
    """Routine labs (one morning draw per scheduled day, some days and tests skipped) and the
    outpatient temperature taken at routine visits outside the ward stay."""
    n_patients, n_days = anchor_clock_hours.size, ROUTINE_DAYS.size
    day_kept = rng.random((n_patients, n_days)) < np.where(ROUTINE_DAYS == 0, 0.97, 0.87)[None, :]
    clock_hours = 5.0 + 3.5 * rng.random((n_patients, n_days))
    late = rng.random((n_patients, n_days)) < 0.08  # an occasional afternoon draw
    clock_hours = np.where(late, 12.0 + 8.0 * rng.random((n_patients, n_days)), clock_hours)
    # Day 0 draw is before infusion so it can serve as baseline.
    clock_hours[:, ROUTINE_DAYS == 0] = anchor_clock_hours[:, None] - 1.0 - 2.5 * rng.random((n_patients, 1))
    visit_hours = ROUTINE_DAYS[None, :] * 24.0 + clock_hours - anchor_clock_hours[:, None]
    test_kept = rng.random((n_patients, n_days, len(ROUTINE_PANEL))) < ROUTINE_KEEP[None, None, :]
    lab_patient, lab_day, lab_test = np.nonzero(day_kept[:, :, None] & test_kept)
    labs = _Draws(lab_patient, visit_hours[lab_patient, lab_day],
                  np.array([ANALYTE_INDEX[c] for c in ROUTINE_PANEL])[lab_test])
    outpatient = ~np.isin(ROUTINE_DAYS, INPATIENT_DAYS)
    temp_patient, temp_day = np.nonzero(
        day_kept & outpatient[None, :] & (rng.random((n_patients, n_days)) < 0.8))
    temps = _Draws(temp_patient, visit_hours[temp_patient, temp_day], np.full(temp_patient.size, TEMP_INDEX))
    return labs, temps


def _cytokine_panels(anchor_clock_hours: np.ndarray, rng: np.random.Generator) -> _Draws:
    """Research cytokine panel on fixed days at irregular clock times."""
    n_patients, n_days = anchor_clock_hours.size, CYTOKINE_DAYS.size
    day_kept = rng.random((n_patients, n_days)) < np.where(CYTOKINE_DAYS == 0, 0.95, 0.90)[None, :]
    clock_hours = 8.0 + 9.0 * rng.random((n_patients, n_days))
    clock_hours[:, CYTOKINE_DAYS == 0] = anchor_clock_hours[:, None] - 0.25 - 2.25 * rng.random((n_patients, 1))
    draw_hours = CYTOKINE_DAYS[None, :] * 24.0 + clock_hours - anchor_clock_hours[:, None]
    assayed = rng.random((n_patients, n_days, len(CYTOKINE_PANEL))) < 0.97
    patient, day, assay = np.nonzero(day_kept[:, :, None] & assayed)
    return _Draws(patient, draw_hours[patient, day], np.array([ANALYTE_INDEX[c] for c in CYTOKINE_PANEL])[assay])


def _ward_vitals(anchor_clock_hours: np.ndarray, rng: np.random.Generator) -> tuple[_Draws, VitalRounds]:
    """Ward vitals: up to six temperatures a day while inpatient; and every slot of the ward grid."""
    shape = (anchor_clock_hours.size, INPATIENT_DAYS.size, VITALS_CLOCK_HOURS.size)
    kept = rng.random(shape) < 0.8
    jitter_hours = np.clip(0.5 * rng.standard_normal(shape), -1.5, 1.5)
    grid_hours = (INPATIENT_DAYS[None, :, None] * 24.0 + VITALS_CLOCK_HOURS[None, None, :] + jitter_hours
                  - anchor_clock_hours[:, None, None])
    patient, day, slot = np.nonzero(kept)
    temps = _Draws(patient, grid_hours[patient, day, slot], np.full(patient.size, TEMP_INDEX))
    all_patient, all_day, all_slot = np.nonzero(np.ones(shape, dtype=bool))
    rounds = VitalRounds(all_patient, grid_hours.ravel(), INPATIENT_DAYS[all_day], all_slot, kept.ravel(),
                         INPATIENT_DAYS.size * VITALS_CLOCK_HOURS.size)
    return temps, rounds


def worry_grade(hours: np.ndarray, crs_grade_hours: np.ndarray) -> np.ndarray:
    """(n, slots) highest CRS grade whose onset lies in (hours - WORRY_HOURS, hours]: the observed past only.

    Onsets increase with the grade, so the highest grade begun by a slot is the number of onsets before
    it; it counts only if that onset is recent (an older one means every lower onset is older still).
    """
    begun = np.zeros(hours.shape, dtype=np.int64)
    latest_onset = np.full(hours.shape, -np.inf)
    for k in range(5):  # five grades, not patients
        onset = crs_grade_hours[:, k][:, None]
        started = onset <= hours
        begun += started
        latest_onset = np.where(started, onset, latest_onset)
    return np.where(latest_onset > hours - WORRY_HOURS, begun, 0)


def _worry_labs(slot_hours: np.ndarray, chance: np.ndarray, site: np.ndarray, rng: np.random.Generator) -> _Draws:
    """Extra draws (one per kept slot) and the tests each orders: routine tests, cytokines by site."""
    patient, slot = np.nonzero(rng.random(slot_hours.shape) < chance)
    keep = np.concatenate([np.broadcast_to(WORRY_KEEP, (patient.size, WORRY_KEEP.size)),
                           site_attribute("worry_cytokines")[site[patient]][:, None] * WORRY_CYTOKINE_SHARE[None, :]],
                          axis=1)
    draw, test = np.nonzero(rng.random(keep.shape) < keep)
    codes = np.array([ANALYTE_INDEX[c] for c in WORRY_PANEL + CYTOKINE_PANEL])
    return _Draws(patient[draw], slot_hours[patient[draw], slot[draw]], codes[test])


def _worry_draws(anchor_clock_hours: np.ndarray, crs_grade_hours: np.ndarray, amplitude: np.ndarray,
                 site: np.ndarray, rng: np.random.Generator) -> tuple[_Draws, _Draws]:
    """Extra labs (and cytokines where the site has them) and extra temperatures while worried."""
    n_patients = anchor_clock_hours.size
    slot_clock = (WORRY_DAYS[:, None] * 24.0 + WORRY_CLOCK_HOURS[None, :]).ravel()
    slot_hours = slot_clock[None, :] + rng.uniform(-1.0, 1.0, (n_patients, slot_clock.size)) - anchor_clock_hours[:, None]
    level = worry_grade(slot_hours, crs_grade_hours)
    patient_worry = site_attribute("worry_draws")[site] * (1 + WORRY_PER_FEVER_C * fever_excess_celsius(amplitude))
    labs = _worry_labs(slot_hours, np.minimum(patient_worry[:, None] * WORRY_GRADE_FACTOR[level], 1.0), site, rng)
    vitals_clock = (INPATIENT_DAYS[INPATIENT_DAYS >= 0][:, None] * 24.0 + WORRY_VITALS_CLOCK_HOURS[None, :]).ravel()
    vitals_hours = (vitals_clock[None, :] + np.clip(0.5 * rng.standard_normal((n_patients, vitals_clock.size)), -1, 1)
                    - anchor_clock_hours[:, None])
    taken = (worry_grade(vitals_hours, crs_grade_hours) > 0) & (rng.random(vitals_hours.shape) < 0.8)
    temp_patient, temp_slot = np.nonzero(taken)
    temps = _Draws(temp_patient, vitals_hours[temp_patient, temp_slot], np.full(temp_patient.size, TEMP_INDEX))
    return labs, temps


def _worry_rounds(temps: _Draws) -> VitalRounds:
    return VitalRounds(temps.patient, temps.hours, np.floor(temps.hours / 24.0).astype(np.int64),
                       np.full(temps.patient.size, -1), np.ones(temps.patient.size, dtype=bool), 0)


def _sorted_unique_rows(patient: np.ndarray, minutes: np.ndarray, analyte: np.ndarray) -> np.ndarray:
    """Indexes of one row per (patient, minute, analyte), sorted by patient, time and analyte (a worry
    draw can fall on the minute of a scheduled one; the written tables are sorted this way too)."""
    key = (patient << 40) + ((minutes - minutes.min()) << 6) + analyte
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return order[first]


def draw_schedule(anchor_clock_minutes: np.ndarray, crs_grade_hours: np.ndarray, amplitude: np.ndarray,
                  death_hours: np.ndarray, site: np.ndarray, rng: np.random.Generator) -> tuple[Rows, VitalRounds]:
    """Every measurement row: the routine schedule plus the worry draws (which see only the observed
    past of the CRS course and how hot the fever runs), none after death; one row per patient, minute
    and analyte. Also the ward's vitals rounds (ward grid slots and worry rounds, before any death cut)."""
    anchor_clock_hours = anchor_clock_minutes / 60.0
    labs, outpatient_temps = _routine_visits(anchor_clock_hours, rng)
    cytokines = _cytokine_panels(anchor_clock_hours, rng)
    ward_temps, ward_rounds = _ward_vitals(anchor_clock_hours, rng)
    worry_labs, worry_temps = _worry_draws(anchor_clock_hours, crs_grade_hours, amplitude, site, rng)
    blocks = (labs, outpatient_temps, cytokines, ward_temps, worry_labs, worry_temps)
    worry_rounds = _worry_rounds(worry_temps)
    rounds = VitalRounds(*(np.concatenate([getattr(ward_rounds, f), getattr(worry_rounds, f)])
                           for f in ("patient", "hours", "day", "slot", "temp_charted")), ward_rounds.ward_slots)
    patient = np.concatenate([b.patient for b in blocks]).astype(np.int64)
    hours = np.concatenate([b.hours for b in blocks])
    analyte = np.concatenate([b.analyte for b in blocks]).astype(np.int64)
    minutes = np.round(hours * 60).astype(np.int64)
    alive = minutes < np.where(np.isfinite(death_hours), death_hours * 60, np.inf)[patient]
    kept = np.flatnonzero(alive)[_sorted_unique_rows(patient[alive], minutes[alive], analyte[alive])]
    return (Rows(patient=patient[kept], analyte=analyte[kept], minutes=minutes[kept], hours=minutes[kept] / 60.0),
            rounds)
