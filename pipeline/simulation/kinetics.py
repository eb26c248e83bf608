"""Cytokine and biomarker kinetics: baseline, CAR-T driven pulse, treatment and lymphodepletion effects,
assay noise, and body temperature (fever from CRS onset; ``bedside``).

Every biomarker follows ``log value = baseline + peak_log_fold · pulse(t - t_mid - delay) + noise``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import N_ANALYTES, TEMP_INDEX, analyte_column, disease_baseline_log_ratio
from pipeline.simulation.bedside import Course, temperature
from pipeline.simulation.curves import expit, pulse, soft_cap
from pipeline.simulation.patients import Patients
from pipeline.simulation.sampling import Rows
from pipeline.simulation.severity import Outcomes
from pipeline.simulation.treatments import MarkerResponse, Treatments, marker_response

LD_SCALE = np.array([1.0, 0.7, 0.15])  # lymphodepletion effect: flu_cy, bendamustine, none


@dataclass(frozen=True)
class MarkerLevels:
    """Per patient and analyte (n, analytes): log baseline and peak log fold change."""

    log_baseline: np.ndarray
    peak_log_fold: np.ndarray


def draw_marker_levels(patients: Patients, amplitude: np.ndarray, rng: np.random.Generator) -> MarkerLevels:
    """Peak height scales with the marker amplitude; baselines with inflammation and tumour burden."""
    n_patients = patients.n
    peak_log_fold = np.clip(
        analyte_column("lf_base")[None, :] + analyte_column("lf_slope")[None, :]
        * (amplitude[:, None] + 0.3 * rng.standard_normal((n_patients, N_ANALYTES))),
        analyte_column("lf_lo")[None, :], analyte_column("lf_hi")[None, :],
    )
    log_baseline = (
        np.log(analyte_column("median"))[None, :]
        + disease_baseline_log_ratio(patients.disease)
        + analyte_column("infl")[None, :] * patients.latents.inflammation_z[:, None]
        + analyte_column("burden")[None, :] * patients.latents.burden_z[:, None]
        + analyte_column("sd")[None, :] * rng.standard_normal((n_patients, N_ANALYTES))
    )
    return MarkerLevels(log_baseline=log_baseline, peak_log_fold=peak_log_fold)


def marker_pulse(rows: Rows, il6_half_rise_hours: np.ndarray) -> np.ndarray:
    """Share of each row's peak log fold change reached at its time (analyte-specific delay and shape)."""
    analyte = rows.analyte
    return pulse(rows.hours, il6_half_rise_hours[rows.patient] + analyte_column("delay_hours")[analyte],
                 analyte_column("width_hours")[analyte], analyte_column("hold_hours")[analyte],
                 analyte_column("decay_hours")[analyte])


def lymphodepletion_curve(rows: Rows, n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """Share of the lymphodepletion nadir effect reached at each row's time.

    Lymphodepletion is given on days -5..-3: counts fall over the first days after infusion
    (nadir ~day 3-10) and recover from about day 16.
    """
    days = rows.hours / 24.0
    recovery_day = 16.0 + 4.0 * rng.standard_normal(n_patients)
    return expit((days - 1.0) / 1.2) * (1 - 0.9 / (1 + np.exp(-(days - recovery_day[rows.patient]) / 3)))


def _lab_values(rows: Rows, patients: Patients, levels: MarkerLevels, response: MarkerResponse,
                ld_curve: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Canonical-unit values: baseline + damped pulse + IL-6 boost + lymphodepletion + assay noise."""
    patient, analyte = rows.patient, rows.analyte
    log_value = (
        levels.log_baseline[patient, analyte]
        + levels.peak_log_fold[patient, analyte] * response.pulse * response.damping
        + response.il6_boost
        + analyte_column("ld")[analyte] * LD_SCALE[patients.latents.lymphodepletion][patient] * ld_curve
        + analyte_column("noise")[analyte] * rng.standard_normal(rows.n_rows)
    )
    return soft_cap(np.exp(log_value), analyte_column("cap")[analyte])


def body_temperature(rows: Rows, course: Course) -> np.ndarray:
    """Temperature (deg C) for every row: fever from CRS onset while the course is active, until
    tocilizumab (+3 h) at grades 1-2 (``bedside.temperature``: a function of the course so far only,
    with per-reading noise of its own, so no later grade moves it)."""
    return temperature(course, rows.patient, rows.minutes)


def simulate_values(rows: Rows, patients: Patients, outcomes: Outcomes, treatments: Treatments,
                    rng: np.random.Generator, course: Course) -> np.ndarray:
    """True (pre-assay-reporting) value of every measurement row, canonical units."""
    levels = draw_marker_levels(patients, outcomes.marker_amplitude, rng)
    response = marker_response(rows, treatments, outcomes.il6_half_rise_hours,
                               marker_pulse(rows, outcomes.il6_half_rise_hours))
    ld_curve = lymphodepletion_curve(rows, patients.n, rng)
    value = _lab_values(rows, patients, levels, response, ld_curve, rng)
    temperature_c = body_temperature(rows, course)
    return np.where(rows.analyte == TEMP_INDEX, temperature_c, value)
