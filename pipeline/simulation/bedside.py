"""Bedside observations: the grade course as a ward charts it, so that ASTCT grading of the charts
(docs/grading.md) gives back the simulated grades.

* A course resolves: after its highest grade, CRS and ICANS each fall back to grade 0 after a duration
  drawn without any later outcome (longer for higher grades); a grade 5 (death) course stays at grade 4
  until death. Between onsets the current grade is the highest begun.
* Each CRS grade >= 2 is driven by hypotension, hypoxia or both (a draw per patient and grade, made
  without outcome): hypotension below 90 / 65 mmHg at grade 2, one vasopressor at grade 3, two at grade
  4; oxygen by nasal cannula (<= 6 L/min) at grade 2, high-flow or masks at 3, positive pressure at 4.
* Fever (TEMP >= 38 C) from CRS onset while the course is active, until tocilizumab (+3 h) at grades
  1-2; it comes back at grade >= 3 (refractory CRS).
* ICANS: ICE twice daily, the domain that drives grade 3 / 4 (ICE, consciousness, seizure, oedema,
  motor weakness) charted at the assessment after each grade change (0-2 h) and held through the stretch.

Nothing here looks ahead: every value at time t is a function of the course up to t (grades begun,
resolution if it has happened, treatment given) and of draws made without outcome: per-patient arrays of
fixed shape from their own stream (``np.random.default_rng([seed, 10])``) and per-reading noise hashed
from (patient, minute, channel). So truncating a course after time T changes nothing charted before T
(tests/pipeline/test_simulate_observations.py checks exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import TEMP_INDEX
from pipeline.simulation.curves import fever_excess_celsius, pulse
from pipeline.simulation.sampling import Rows, VitalRounds
from pipeline.simulation.severity import Outcomes
from pipeline.simulation.treatments import Treatments

BEDSIDE_STREAM = 10  # np.random.default_rng([seed, BEDSIDE_STREAM])
# Time at the highest grade before the course resolves (median hours, by highest grade 1..4), log SD.
CRS_RESOLUTION_MEDIAN_HOURS = np.array([np.inf, 36.0, 48.0, 72.0, 96.0])
ICANS_RESOLUTION_MEDIAN_HOURS = np.array([np.inf, 24.0, 48.0, 72.0, 120.0])
RESOLUTION_LOG_SD = 0.5
MIN_RESOLUTION_HOURS = 4.0
# What drives CRS grade 2 / 3 / 4: P(hypotension only), P(hypoxia only); the rest both.
DRIVER_HYPOTENSION = np.array([0.0, 0.0, 0.55, 0.50, 0.45])
DRIVER_HYPOXIA = np.array([0.0, 0.0, 0.30, 0.35, 0.40])
DEVICES = np.array(["room_air", "nasal_cannula", "high_flow_nasal_cannula", "face_mask", "non_rebreather",
                    "venturi", "cpap", "bipap", "mechanical_ventilation"])
ROOM_AIR, NASAL_CANNULA = 0, 1
GRADE3_DEVICES, GRADE3_DEVICE_P = np.array([2, 3, 4, 5]), np.array([0.45, 0.20, 0.20, 0.15])
GRADE4_DEVICES, GRADE4_DEVICE_P = np.array([6, 7, 8]), np.array([0.20, 0.35, 0.45])
NASAL_FLOW_L_MIN, NASAL_FLOW_P = np.arange(1, 7), np.array([0.15, 0.30, 0.25, 0.15, 0.10, 0.05])
# Vasopressors: grade 3 regimen (one vasopressor, with or without vasopressin, or vasopressin alone).
PRESSORS = np.array(["norepinephrine", "phenylephrine", "epinephrine", "dopamine", "vasopressin"])
NOREPINEPHRINE, PHENYLEPHRINE, EPINEPHRINE, DOPAMINE, VASOPRESSIN = range(5)
PRESSOR_DOSES = np.array([0.1, 1.0, 0.05, 10.0, 0.03])
PRESSOR_UNITS = np.array(["ug/kg/min", "ug/kg/min", "ug/kg/min", "ug/kg/min", "units/min"])
GRADE3_REGIMEN_P = np.array([0.60, 0.20, 0.12, 0.08])  # NE, phenylephrine, NE + vasopressin, vasopressin alone
# ICANS: the domain that drives grade 3 (ICE 0-2, wakes to touch, seizure, focal oedema) and grade 4
# (unarousable, prolonged seizure, deep focal motor weakness, diffuse oedema).
ICANS3_ICE, ICANS3_TOUCH, ICANS3_SEIZURE, ICANS3_EDEMA = range(4)
ICANS3_P = np.array([0.45, 0.20, 0.20, 0.15])
ICANS4_UNAROUSABLE, ICANS4_SEIZURE, ICANS4_MOTOR, ICANS4_EDEMA = range(4)
ICANS4_P = np.array([0.40, 0.25, 0.15, 0.20])
OBSERVATION_ITEMS = np.array(["O2_DEVICE", "ICE_SCORE", "CONSCIOUSNESS", "SEIZURE", "MOTOR_WEAKNESS",
                              "CEREBRAL_EDEMA", "CAPD_SCORE"])
O2_DEVICE, ICE_SCORE, CONSCIOUSNESS, SEIZURE, MOTOR_WEAKNESS, CEREBRAL_EDEMA, CAPD_SCORE = range(7)
PAEDIATRIC_MAX_AGE_YEARS = 12  # children are assessed with CAPD instead of ICE
NOT_ASSESSABLE = "not assessable"
# Vitals written by this module (TEMP: only at its extra rounds; the ward's TEMP rows are in ``Rows``).
VITAL_CODES = ("TEMP", "SBP", "MAP", "SPO2", "O2_FLOW", "FIO2")
VITAL_UNITS = ("C", "mmHg", "mmHg", "%", "L/min", "%")
TEMP, SBP, MAP, SPO2, O2_FLOW, FIO2 = range(6)
# FiO2 (%) charted on high-flow, masks and positive pressure: (low, high) of the patient's setting by device.
DEVICE_FIO2 = np.array([[np.nan, np.nan], [np.nan, np.nan], [40, 70], [35, 50], [60, 90], [28, 60], [30, 60],
                        [30, 70], [35, 100]])
WARD_ROUND_TAKEN = 0.75  # a ward slot whose temperature was not charted is still a round this often
CHAIN_SLOTS = 130  # rounds every 2-4 h while CRS grade >= 2 (up to ~16 days)
NEURO_DAYS = np.arange(0, 31)  # ICE twice daily from day 0 (to day 14, later while ICANS lasts)
NEURO_CLOCK_HOURS = np.array([8.0, 20.0])
NEURO_ROUTINE_LAST_DAY = 14
NEURO_MISSED = 0.03
ANTIPYRETIC_SHARE = 0.12  # febrile readings taken under an antipyretic (37.3-37.8 C)
ONSET_FEVER_CHARTED_HOURS = 2.5  # ... but not within this long after a CRS grade onset


# ------------------------------------------------------------------------------------------------
# Per-reading noise: a pure function of (patient, minute, channel), so a reading never depends on how
# many other rows were drawn (a later grade adds rows; it must not move earlier values).
# ------------------------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arrays wrap on overflow)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_uniform(key: int, patient: np.ndarray, minutes: np.ndarray, channel: int) -> np.ndarray:
    """Uniform in (0, 1) from (stream key, patient, minute, channel)."""
    salt = np.uint64(((key & 0xFFFFFFFFFFFF) + channel * 0xD1B54A32D192ED03) % (1 << 64))
    x = _mix(np.asarray(patient, dtype=np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt)
    x = _mix(x ^ (np.asarray(minutes, dtype=np.int64) + (1 << 40)).astype(np.uint64))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def hashed_normal(key: int, patient: np.ndarray, minutes: np.ndarray, channel: int) -> np.ndarray:
    u1 = hashed_uniform(key, patient, minutes, 2 * channel)
    u2 = hashed_uniform(key, patient, minutes, 2 * channel + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# ------------------------------------------------------------------------------------------------
# The course: resolution, domains, devices, regimens (per patient; draws made without outcome)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BedsideDraws:
    """Every draw of the bedside stream, fixed shapes (n patients), made before looking at any outcome."""

    key: int
    crs_resolution_z: np.ndarray
    icans_resolution_z: np.ndarray
    crs_driver_u: np.ndarray  # (n, 5)
    device_u: np.ndarray  # (n, 5)
    flow_u: np.ndarray  # (n, 5)
    regimen_u: np.ndarray  # (n, 3)
    icans_driver_u: np.ndarray  # (n, 2)
    temp_baseline_c: np.ndarray
    sbp_baseline: np.ndarray
    map_offset: np.ndarray
    spo2_baseline: np.ndarray
    ward_round_u: np.ndarray  # (n, ward slots)
    crs_round_delay_hours: np.ndarray  # (n, 5): after onsets 1..4 and resolution
    icans_round_delay_hours: np.ndarray  # (n, 5)
    pressor_delay_hours: np.ndarray  # (n, 2): after grade 3 / 4 onset
    pressor_stop_after_death_hours: np.ndarray
    chain_gap_hours: np.ndarray  # (n, CHAIN_SLOTS)
    neuro_jitter_hours: np.ndarray  # (n, days x 2)
    neuro_missed_u: np.ndarray  # (n, days x 2)


def draw_bedside(n_patients: int, n_ward_slots: int, seed: int) -> BedsideDraws:
    rng = np.random.default_rng([seed, BEDSIDE_STREAM])
    n = n_patients
    n_neuro = NEURO_DAYS.size * NEURO_CLOCK_HOURS.size
    return BedsideDraws(
        key=int(rng.integers(0, 2**48)),
        crs_resolution_z=rng.standard_normal(n),
        icans_resolution_z=rng.standard_normal(n),
        crs_driver_u=rng.random((n, 5)),
        device_u=rng.random((n, 5)),
        flow_u=rng.random((n, 5)),
        regimen_u=rng.random((n, 3)),
        icans_driver_u=rng.random((n, 2)),
        temp_baseline_c=36.7 + 0.15 * rng.standard_normal(n),
        sbp_baseline=np.clip(122.0 + 11.0 * rng.standard_normal(n), 102.0, 155.0),
        map_offset=4.0 * rng.standard_normal(n),
        spo2_baseline=np.clip(97.3 + 0.8 * rng.standard_normal(n), 95.5, 99.5),
        ward_round_u=rng.random((n, n_ward_slots)),
        crs_round_delay_hours=2.0 * rng.random((n, 5)),
        icans_round_delay_hours=2.0 * rng.random((n, 5)),
        pressor_delay_hours=rng.random((n, 2)),
        pressor_stop_after_death_hours=(5.0 + 25.0 * rng.random(n)) / 60.0,
        chain_gap_hours=2.0 + 2.0 * rng.random((n, CHAIN_SLOTS)),
        neuro_jitter_hours=np.clip(0.75 * rng.standard_normal((n, n_neuro)), -2.0, 2.0),
        neuro_missed_u=rng.random((n, n_neuro)),
    )


def _choice(u: np.ndarray, options: np.ndarray, p: np.ndarray) -> np.ndarray:
    return options[np.minimum(np.searchsorted(np.cumsum(p), u, side="right"), options.size - 1)]


def _resolution_hours(grade_hours: np.ndarray, z: np.ndarray, median_hours: np.ndarray) -> np.ndarray:
    """Hour the course falls back to grade 0: after its highest grade (1-4); inf with no course or death."""
    top = np.isfinite(grade_hours[:, :4]).sum(axis=1)
    top_onset = np.take_along_axis(grade_hours[:, :4], np.maximum(top - 1, 0)[:, None], axis=1)[:, 0]
    duration = np.maximum(median_hours[top] * np.exp(RESOLUTION_LOG_SD * z), MIN_RESOLUTION_HOURS)
    died_of_it = np.isfinite(grade_hours[:, 4])
    return np.where((top > 0) & ~died_of_it, top_onset + duration, np.inf)


@dataclass(frozen=True)
class Course:
    """Per patient: what the ward sees, as functions of time (every array (n,) or (n, 5) by grade 0..4)."""

    crs_onset: np.ndarray  # (n, 4) onset of CRS grade 1..4, inf where not reached
    crs_resolution: np.ndarray
    icans_onset: np.ndarray  # (n, 4)
    icans_resolution: np.ndarray
    death: np.ndarray
    tocilizumab: np.ndarray  # first dose (inf if none)
    hypotension: np.ndarray  # (n, 5) hypotension level while at CRS grade 0..4 (0, 2, 3 or 4)
    hypoxia: np.ndarray  # (n, 5) hypoxia level
    device: np.ndarray  # (n, 5) index into DEVICES
    flow: np.ndarray  # (n, 5) L/min (nan: positive pressure or room air)
    icans3: np.ndarray  # domain driving ICANS grade 3
    icans4: np.ndarray  # domain driving ICANS grade 4
    child: np.ndarray  # age <= PAEDIATRIC_MAX_AGE_YEARS: CAPD instead of ICE
    amplitude: np.ndarray
    il6_half_rise: np.ndarray
    draws: BedsideDraws


def _domains(draws: BedsideDraws, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hypotension / hypoxia level, device and flow at each CRS grade 0..4; a level stays once reached."""
    hyp, hypox = np.zeros((n, 5), dtype=np.int64), np.zeros((n, 5), dtype=np.int64)
    device, flow = np.full((n, 5), ROOM_AIR), np.full((n, 5), np.nan)
    for k in range(2, 5):  # grades, not patients
        u = draws.crs_driver_u[:, k]
        by_hyp = (u < DRIVER_HYPOTENSION[k]) | (u >= DRIVER_HYPOTENSION[k] + DRIVER_HYPOXIA[k])
        by_hypox = u >= DRIVER_HYPOTENSION[k]
        hyp[:, k] = np.where(by_hyp, k, hyp[:, k - 1])
        hypox[:, k] = np.where(by_hypox, k, hypox[:, k - 1])
        new_device = {2: np.full(n, NASAL_CANNULA), 3: _choice(draws.device_u[:, k], GRADE3_DEVICES, GRADE3_DEVICE_P),
                      4: _choice(draws.device_u[:, k], GRADE4_DEVICES, GRADE4_DEVICE_P)}[k]
        fu = draws.flow_u[:, k]
        new_flow = np.select(
            [new_device == NASAL_CANNULA, new_device == 2, new_device == 3, new_device == 4, new_device == 5],
            [_choice(fu, NASAL_FLOW_L_MIN, NASAL_FLOW_P), 30.0 + 5.0 * np.floor(7 * fu), 6.0 + np.floor(5 * fu),
             10.0 + np.floor(6 * fu), 8.0 + np.floor(8 * fu)], np.nan)
        device[:, k] = np.where(by_hypox, new_device, device[:, k - 1])
        flow[:, k] = np.where(by_hypox, new_flow, flow[:, k - 1])
    return hyp, hypox, device, flow


def build_course(outcomes: Outcomes, treatments: Treatments, draws: BedsideDraws, age_years: np.ndarray) -> Course:
    n = outcomes.crs_grade.size
    crs_resolution = _resolution_hours(outcomes.crs_grade_hours, draws.crs_resolution_z, CRS_RESOLUTION_MEDIAN_HOURS)
    icans_resolution = _resolution_hours(outcomes.icans_grade_hours, draws.icans_resolution_z,
                                         ICANS_RESOLUTION_MEDIAN_HOURS)
    # A patient dying of ICANS is off CRS grade 4 by then (a death during CRS grade 4 is a CRS death).
    death = outcomes.death_hours
    crs4 = outcomes.crs_grade_hours[:, 3]
    icans_death = np.isfinite(outcomes.icans_grade_hours[:, 4])
    crs_resolution = np.where(icans_death & np.isfinite(crs4) & (crs_resolution > death - 3.0),
                              np.maximum(death - 3.0, crs4 + 0.25), crs_resolution)
    hyp, hypox, device, flow = _domains(draws, n)
    return Course(
        crs_onset=outcomes.crs_grade_hours[:, :4], crs_resolution=crs_resolution,
        icans_onset=outcomes.icans_grade_hours[:, :4], icans_resolution=icans_resolution,
        death=death, tocilizumab=treatments.tocilizumab_hours,
        hypotension=hyp, hypoxia=hypox, device=device, flow=flow,
        icans3=_choice(draws.icans_driver_u[:, 0], np.arange(4), ICANS3_P),
        icans4=_choice(draws.icans_driver_u[:, 1], np.arange(4), ICANS4_P),
        child=np.asarray(age_years) <= PAEDIATRIC_MAX_AGE_YEARS,
        amplitude=outcomes.marker_amplitude, il6_half_rise=outcomes.il6_half_rise_hours, draws=draws,
    )


def _reached(onset: np.ndarray, patient: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Highest grade (0..4) begun by each time: the number of onsets at or before it."""
    return (onset[patient] <= hours[:, None]).sum(axis=1)


def _current(onset: np.ndarray, resolution: np.ndarray, patient: np.ndarray, hours: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(grade begun, current grade: 0 once resolved) at each time."""
    reached = _reached(onset, patient, hours)
    return reached, np.where(hours >= resolution[patient], 0, reached)


# ------------------------------------------------------------------------------------------------
# Values at a time: temperature, blood pressure, SpO2, oxygen
# ------------------------------------------------------------------------------------------------


def in_fever(course: Course, patient: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """Febrile state: CRS begun and not resolved, before tocilizumab (+3 h) or at grade >= 3."""
    reached, current = _current(course.crs_onset, course.crs_resolution, patient, hours)
    return (current >= 1) & ((hours < course.tocilizumab[patient] + 3.0) | (reached >= 3))


def temperature(course: Course, patient: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Body temperature (C, unrounded) at each (patient, minute). Some febrile readings are taken under an
    antipyretic, never in the first hours after a CRS grade onset (the fever that marks it is charted)."""
    key, hours = course.draws.key, minutes / 60.0
    z = hashed_normal(key, patient, minutes, 0)
    amplitude = course.amplitude[patient]
    il6_pulse = pulse(hours, course.il6_half_rise[patient], np.full(hours.size, 12.0), np.full(hours.size, 10.0),
                      np.full(hours.size, 36.0))
    afebrile = np.minimum(course.draws.temp_baseline_c[patient] + 0.25 * z
                          + 0.5 * il6_pulse * np.clip(amplitude, 0, 2), 37.9)
    febrile = 38.05 + fever_excess_celsius(amplitude) + 0.45 * np.abs(z)
    reached = _reached(course.crs_onset, patient, hours)
    latest_onset = np.take_along_axis(course.crs_onset[patient], np.maximum(reached - 1, 0)[:, None], 1)[:, 0]
    antipyretic = (hashed_uniform(key, patient, minutes, 10) < ANTIPYRETIC_SHARE) & (
        hours - latest_onset > ONSET_FEVER_CHARTED_HOURS)
    febrile = np.where(antipyretic, 37.3 + 0.5 * hashed_uniform(key, patient, minutes, 11), febrile)
    return np.clip(np.where(in_fever(course, patient, hours), febrile, afebrile), 35.0, 41.5)


def _above(value: np.ndarray, floor: float) -> np.ndarray:
    """Reflect at a floor: normal readings never cross into the hypotensive / hypoxic range."""
    return np.where(value < floor, 2 * floor - value, value)


@dataclass(frozen=True)
class Vitals:
    sbp: np.ndarray
    map: np.ndarray
    spo2: np.ndarray
    flow: np.ndarray  # nan when not on low / high flow oxygen
    fio2: np.ndarray  # nan when not charted (room air, nasal cannula)
    device: np.ndarray  # index into DEVICES
    on_oxygen: np.ndarray


def vitals(course: Course, patient: np.ndarray, minutes: np.ndarray) -> Vitals:
    """SBP, MAP (mmHg), SpO2 (%), oxygen device and flow at each (patient, minute), rounded as charted."""
    key, d, hours = course.draws.key, course.draws, minutes / 60.0
    reached, crs = _current(course.crs_onset, course.crs_resolution, patient, hours)
    hyp, hypox = course.hypotension[patient, crs], course.hypoxia[patient, crs]
    fever = in_fever(course, patient, hours)
    z1, z2, z3 = (hashed_normal(key, patient, minutes, c) for c in (1, 2, 3))
    since_onset = hours - np.take_along_axis(course.crs_onset[patient], np.maximum(crs - 1, 0)[:, None], 1)[:, 0]
    # Hypotensive without vasopressors; some later readings after a fluid bolus are back above the limits.
    fluids = (hashed_uniform(key, patient, minutes, 12) < 0.10) & (since_onset > 3.0)
    normal_sbp = _above(d.sbp_baseline[patient] - 6.0 * fever + 8.0 * z1, 92.0)
    normal_map = _above(0.55 * normal_sbp + 20.0 + d.map_offset[patient] + 4.0 * z2, 67.0)
    low_sbp, low_map = np.clip(84.0 + 3.5 * z1, 68.0, 89.0), np.clip(59.0 + 3.0 * z2, 48.0, 64.0)
    bolus_sbp, bolus_map = _above(94.0 + 3.0 * z1, 91.0), _above(68.0 + 2.0 * z2, 66.0)
    pressor_sbp, pressor_map = np.clip(97.0 + 8.0 * z1, 78.0, 130.0), np.clip(68.0 + 5.0 * z2, 56.0, 90.0)
    # Hypotension starts the vasopressor (or adds the second): readings before it starts are low.
    awaiting = (hyp >= 3) & (hyp == crs) & (since_onset < d.pressor_delay_hours[patient, np.clip(crs - 3, 0, 1)])
    sbp = np.select([awaiting, hyp >= 3, (hyp == 2) & fluids, hyp == 2],
                    [low_sbp, pressor_sbp, bolus_sbp, low_sbp], normal_sbp)
    map_ = np.select([awaiting, hyp >= 3, (hyp == 2) & fluids, hyp == 2],
                     [low_map, pressor_map, bolus_map, low_map], normal_map)
    spo2 = np.select([hypox == 4, hypox == 3, hypox == 2],
                     [91.0 + 3.0 * z3, 92.0 + 2.0 * z3, 94.0 + 1.5 * z3],
                     _above(d.spo2_baseline[patient] + 1.0 * z3, 94.0))
    device = course.device[patient, crs]
    base_flow = course.flow[patient, crs]
    nasal = device == NASAL_CANNULA
    flow = np.where(nasal, np.clip(base_flow + np.round(0.5 * hashed_normal(key, patient, minutes, 4)), 1, 6),
                    base_flow)
    low, high = DEVICE_FIO2[device, 0], DEVICE_FIO2[device, 1]
    setting = d.flow_u[patient, crs]  # the patient's setting on this device; readings vary around it
    fio2 = np.clip(np.round(low + (high - low) * setting + 3.0 * hashed_normal(key, patient, minutes, 5)), low, high)
    return Vitals(sbp=np.round(sbp), map=np.round(map_), spo2=np.round(np.clip(spo2, 70.0, 100.0)), flow=flow,
                  fio2=fio2, device=device, on_oxygen=hypox >= 2)


# ------------------------------------------------------------------------------------------------
# Rounds, assessments and vasopressor courses
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Charted:
    """What the bedside adds: measurement rows, observation rows and vasopressor courses (minutes since
    infusion), each sorted by patient and time."""

    vital_patient: np.ndarray
    vital_minutes: np.ndarray
    vital_code: np.ndarray  # index into VITAL_CODES
    vital_value: np.ndarray  # rounded as written
    obs_patient: np.ndarray
    obs_minutes: np.ndarray
    obs_item: np.ndarray  # index into OBSERVATION_ITEMS
    obs_value: np.ndarray  # text (object array)
    pressor_patient: np.ndarray
    pressor_drug: np.ndarray  # index into PRESSORS
    pressor_start: np.ndarray  # minutes since infusion
    pressor_end: np.ndarray


def _alive(patient: np.ndarray, minutes: np.ndarray, death: np.ndarray) -> np.ndarray:
    return minutes < np.where(np.isfinite(death), death * 60, np.inf)[patient]


def _event_rounds(onset_hours: np.ndarray, resolution: np.ndarray, delay: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A round 0-2 h after each grade onset (1..4) and after resolution (0-1 h)."""
    times = np.concatenate([onset_hours + delay[:, :4], (resolution + 0.5 * delay[:, 4])[:, None]], axis=1)
    patient, k = np.nonzero(np.isfinite(times))
    return patient, times[patient, k]


def _crs_rounds(course: Course, rounds: VitalRounds
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(patient, minutes, full vitals charted, extra round (TEMP charted here), device charted even on room
    air: extra rounds and the 10:00 ward round)."""
    d = course.draws
    n_ward = d.ward_round_u.size
    ward_u = np.concatenate([d.ward_round_u.ravel(), np.zeros(rounds.patient.size - n_ward)])
    happened = rounds.temp_charted | (ward_u < WARD_ROUND_TAKEN)
    ward_patient, ward_minutes = rounds.patient[happened], np.round(rounds.hours[happened] * 60).astype(np.int64)
    # Blood pressure and SpO2 every 8 h on the ward, every 4 h (and at worry rounds) while CRS is active.
    _, crs = _current(course.crs_onset, course.crs_resolution, ward_patient, ward_minutes / 60.0)
    ward_full = (rounds.slot[happened] < 0) | (rounds.slot[happened] % 2 == 0) | (crs >= 1)
    ward_daily = rounds.slot[happened] == 2
    change_patient, change_hours = _event_rounds(course.crs_onset, course.crs_resolution, d.crs_round_delay_hours)
    # Every 2-4 h from the first grade >= 2 onset while the course lasts.
    chain = course.crs_onset[:, 1][:, None] + np.cumsum(d.chain_gap_hours, axis=1)
    chain_patient, slot = np.nonzero(chain < np.minimum(course.crs_resolution, course.death)[:, None])
    patient = np.concatenate([ward_patient, change_patient, chain_patient])
    minutes = np.concatenate([ward_minutes, np.round(change_hours * 60).astype(np.int64),
                              np.round(chain[chain_patient, slot] * 60).astype(np.int64)])
    full = np.concatenate([ward_full, np.ones(change_patient.size + chain_patient.size, dtype=bool)])
    extra = np.concatenate([np.zeros(ward_patient.size, dtype=bool), np.ones(change_patient.size + chain_patient.size,
                                                                             dtype=bool)])
    device = extra | np.concatenate([ward_daily, np.zeros(change_patient.size + chain_patient.size, dtype=bool)])
    kept = _alive(patient, minutes, course.death)
    return patient[kept], minutes[kept], full[kept], extra[kept], device[kept]


def _device_rows(patient: np.ndarray, minutes: np.ndarray, v: Vitals, always: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """O2_DEVICE at every round on oxygen and at the rounds that chart it whatever it is."""
    charted = v.on_oxygen | always
    return patient[charted], minutes[charted], DEVICES[v.device[charted]]


def _neuro_assessments(course: Course, anchor_clock_hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patient, minutes, grade change the assessment follows: 1..4, 5 = resolution, 0 = routine)."""
    d = course.draws
    clock = (NEURO_DAYS[:, None] * 24.0 + NEURO_CLOCK_HOURS[None, :]).ravel()
    routine = clock[None, :] + d.neuro_jitter_hours - anchor_clock_hours[:, None]
    patient, slot = np.nonzero(np.ones(routine.shape, dtype=bool))
    hours = routine.ravel()
    minutes = np.round(hours * 60).astype(np.int64)
    hours = minutes / 60.0
    _, icans = _current(course.icans_onset, course.icans_resolution, patient, hours)
    day = NEURO_DAYS[slot // NEURO_CLOCK_HOURS.size]
    kept = (hours >= 0) & ((day <= NEURO_ROUTINE_LAST_DAY) | (icans >= 1)) & (
        (d.neuro_missed_u.ravel() >= NEURO_MISSED) | (icans >= 3))
    times = np.concatenate([course.icans_onset + d.icans_round_delay_hours[:, :4],
                            (course.icans_resolution + d.icans_round_delay_hours[:, 4])[:, None]], axis=1)
    change_patient, k = np.nonzero(np.isfinite(times))
    patient = np.concatenate([patient[kept], change_patient])
    minutes = np.concatenate([minutes[kept], np.round(times[change_patient, k] * 60).astype(np.int64)])
    after = np.concatenate([np.zeros(kept.sum(), dtype=np.int64), k + 1])
    alive = _alive(patient, minutes, course.death)
    return patient[alive], minutes[alive], after[alive]


def _neuro_rows(course: Course, patient: np.ndarray, minutes: np.ndarray, after: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ICE (CAPD for children) at every assessment; the domain driving grade 3 / 4 at the assessment after that onset (and
    held through the stretch); normal findings charted at the assessment after resolution."""
    key, hours = course.draws.key, minutes / 60.0
    reached, g = _current(course.icans_onset, course.icans_resolution, patient, hours)
    u = hashed_uniform(key, patient, minutes, 20)
    d3, d4 = course.icans3[patient], course.icans4[patient]
    ice = np.select([g == 1, g == 2, g >= 3], [7 + np.floor(3 * u), 3 + np.floor(4 * u), np.floor(3 * u)], 10.0)
    # Children: CAPD (0 without ICANS, 1-8 at grades 1-2, >= 9 at grade 3 and beyond); CAPD cannot show
    # grade 2, so a child's grade 2 is charted as waking to voice.
    child = course.child[patient]
    capd = np.select([g == 1, g == 2, g >= 3], [1 + np.floor(8 * u), 1 + np.floor(8 * u), 9 + np.floor(12 * u)], 0.0)
    score_text = np.where(child, capd, ice).astype(np.int64).astype(str).astype(object)
    unassessable = ((g == 3) & (d3 == ICANS3_TOUCH) & (hashed_uniform(key, patient, minutes, 21) < 0.5)) | (
        (g == 4) & (d4 != ICANS4_MOTOR))
    score_text[unassessable] = NOT_ASSESSABLE
    resolved = (after == 5) & (g == 0)
    voice = (g == 2) & (child | (hashed_uniform(key, patient, minutes, 22) < 0.3))
    items: list[tuple[np.ndarray, int, np.ndarray]] = [
        (~child, ICE_SCORE, score_text),
        (child, CAPD_SCORE, score_text),
        (voice, CONSCIOUSNESS, "wakes_to_voice"),
        ((g == 3) & (d3 == ICANS3_TOUCH), CONSCIOUSNESS, "wakes_to_touch"),
        ((g == 4) & (d4 != ICANS4_MOTOR), CONSCIOUSNESS, "unarousable"),
        (resolved & (reached >= 2), CONSCIOUSNESS, "awake"),
        ((after == 3) & (g == 3) & (d3 == ICANS3_SEIZURE), SEIZURE, "rapidly_resolving"),
        ((after == 4) & (g == 4) & (d4 == ICANS4_SEIZURE), SEIZURE, "prolonged"),
        (resolved & (((reached >= 3) & (d3 == ICANS3_SEIZURE)) | ((reached >= 4) & (d4 == ICANS4_SEIZURE))),
         SEIZURE, "none"),
        ((after == 3) & (g == 3) & (d3 == ICANS3_EDEMA), CEREBRAL_EDEMA, "focal"),
        ((after == 4) & (g == 4) & (d4 == ICANS4_EDEMA), CEREBRAL_EDEMA, "diffuse"),
        (resolved & (((reached >= 3) & (d3 == ICANS3_EDEMA)) | ((reached >= 4) & (d4 == ICANS4_EDEMA))),
         CEREBRAL_EDEMA, "none"),
        ((g == 4) & (d4 == ICANS4_MOTOR), MOTOR_WEAKNESS, "deep_focal"),
        (resolved & (reached >= 4) & (d4 == ICANS4_MOTOR), MOTOR_WEAKNESS, "none"),
    ]
    out_patient, out_minutes, out_item, out_value = [], [], [], []
    for mask, item, value in items:  # a dozen (item, term) kinds, not patients
        out_patient.append(patient[mask])
        out_minutes.append(minutes[mask])
        out_item.append(np.full(mask.sum(), item))
        out_value.append(value[mask] if isinstance(value, np.ndarray) else np.full(mask.sum(), value, dtype=object))
    return (np.concatenate(out_patient), np.concatenate(out_minutes), np.concatenate(out_item),
            np.concatenate(out_value).astype(object))


def _pressors(course: Course) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vasopressor courses for the CRS grade 3 / 4 stretches driven by hypotension: one regimen from the
    grade 3 onset, a second vasopressor (or two) from the grade 4 onset, all stopped at resolution (or
    minutes after death)."""
    d = course.draws
    n = course.death.size
    stop = np.minimum(course.crs_resolution, course.death + d.pressor_stop_after_death_hours)
    start3 = course.crs_onset[:, 2] + d.pressor_delay_hours[:, 0]
    start4 = course.crs_onset[:, 3] + d.pressor_delay_hours[:, 1]
    grade3 = (course.hypotension[:, 3] == 3) & np.isfinite(start3)
    grade4 = (course.hypotension[:, 4] == 4) & np.isfinite(start4)
    regimen = _choice(d.regimen_u[:, 0], np.arange(4), GRADE3_REGIMEN_P)
    first = np.where(regimen == 1, PHENYLEPHRINE, NOREPINEPHRINE)
    courses = [  # (patient mask, drug per patient, start per patient)
        (grade3 & (regimen != 3), first, start3),
        (grade3 & (regimen >= 2), np.full(n, VASOPRESSIN), start3),
    ]
    # Grade 4: two vasopressors other than vasopressin at once.
    has_first = grade3 & (regimen != 3)
    second = np.where(first == NOREPINEPHRINE, _choice(d.regimen_u[:, 1], np.array([EPINEPHRINE, PHENYLEPHRINE,
                                                                                     DOPAMINE]),
                                                       np.array([0.6, 0.25, 0.15])), NOREPINEPHRINE)
    courses += [
        (grade4 & has_first, second, start4),
        (grade4 & ~has_first, np.full(n, NOREPINEPHRINE), start4),
        (grade4 & ~has_first, np.full(n, EPINEPHRINE), start4),
        (grade4 & ~(grade3 & (regimen >= 2)) & (d.regimen_u[:, 2] < 0.3), np.full(n, VASOPRESSIN), start4),
    ]
    patient = np.concatenate([np.flatnonzero(mask) for mask, _, _ in courses])
    drug = np.concatenate([drug[mask] for mask, drug, _ in courses])
    start = np.concatenate([s[mask] for mask, _, s in courses])
    start_minutes = np.round(start * 60).astype(np.int64)
    end_minutes = np.round(stop[patient] * 60).astype(np.int64)
    kept = _alive(patient, start_minutes, course.death) & (end_minutes > start_minutes)
    order = np.lexsort((drug[kept], start_minutes[kept], patient[kept]))
    return patient[kept][order], drug[kept][order], start_minutes[kept][order], end_minutes[kept][order]


def _unique_sorted(patient: np.ndarray, minutes: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Indexes of the first row per (patient, minute, code), sorted by them (stable)."""
    order = np.lexsort((code, minutes, patient))
    key = np.stack([patient[order], minutes[order], code[order]])
    first = np.ones(order.size, dtype=bool)
    first[1:] = (key[:, 1:] != key[:, :-1]).any(axis=0)
    return order[first]


def chart(course: Course, rounds: VitalRounds, rows: Rows, anchor_clock_minutes: np.ndarray) -> Charted:
    """Everything the bedside adds for the cohort (``rows``: the measurement rows already scheduled,
    whose TEMP rows a bedside TEMP at the same minute would duplicate)."""
    patient, minutes, full, extra, always = _crs_rounds(course, rounds)
    v = vitals(course, patient, minutes)
    temp_c = np.round(temperature(course, patient, minutes), 1)
    full |= v.on_oxygen
    flow = v.on_oxygen & np.isfinite(v.flow)
    fio2 = v.on_oxygen & np.isfinite(v.fio2)
    vital = [(extra, TEMP, temp_c), (full, SBP, v.sbp), (full, MAP, v.map), (full, SPO2, v.spo2),
             (flow, O2_FLOW, v.flow), (fio2, FIO2, v.fio2)]
    vp = np.concatenate([patient[m] for m, _, _ in vital])
    vm = np.concatenate([minutes[m] for m, _, _ in vital])
    vc = np.concatenate([np.full(m.sum(), c) for m, c, _ in vital])
    vv = np.concatenate([x[m] for m, _, x in vital])
    # No second TEMP where the ward already charted one at that minute.
    temp_rows = rows.analyte == TEMP_INDEX
    keep = ~((vc == TEMP) & np.isin((vp << 32) + vm, (rows.patient[temp_rows] << 32) + rows.minutes[temp_rows]))
    vp, vm, vc, vv = vp[keep], vm[keep], vc[keep], vv[keep]
    first = _unique_sorted(vp, vm, vc)
    # Oxygen device: every round on oxygen, at every CRS change round, and once a day on room air.
    dp, dm, dv = _device_rows(patient, minutes, v, always)
    ap, am, after = _neuro_assessments(course, anchor_clock_minutes / 60.0)
    np_, nm, ni, nv = _neuro_rows(course, ap, am, after)
    op = np.concatenate([dp, np_])
    om = np.concatenate([dm, nm])
    oi = np.concatenate([np.full(dp.size, O2_DEVICE), ni])
    ov = np.concatenate([dv.astype(object), nv])
    obs_first = _unique_sorted(op, om, oi)
    pp, pd_, ps, pe = _pressors(course)
    return Charted(vital_patient=vp[first], vital_minutes=vm[first], vital_code=vc[first], vital_value=vv[first],
                   obs_patient=op[obs_first], obs_minutes=om[obs_first], obs_item=oi[obs_first],
                   obs_value=ov[obs_first], pressor_patient=pp, pressor_drug=pd_, pressor_start=ps, pressor_end=pe)


