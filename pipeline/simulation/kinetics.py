"""Cytokine and biomarker kinetics: baseline, CAR-T driven pulse, treatment and lymphodepletion effects,
assay noise, and body temperature (fever from CRS onset).

Every biomarker follows ``log value = baseline + peak_log_fold · pulse(t - t_mid - delay) + noise``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.analytes import N_ANALYTES, TEMP_INDEX, analyte_column, disease_baseline_log_ratio
from pipeline.simulation.curves import expit, fever_excess_celsius, pulse, soft_cap
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


def body_temperature(rows: Rows, outcomes: Outcomes, treatments: Treatments, il6_pulse: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Temperature (deg C) for every row: fever from CRS onset until it resolves or tocilizumab is given.

    ``il6_pulse`` is the row pulse: TEMP rows carry the IL-6 timing (same delay and width).
    """
    patient, hours = rows.patient, rows.hours
    crs_grade, amplitude = outcomes.crs_grade, outcomes.marker_amplitude
    fever_end_hours = np.minimum(
        outcomes.crs_onset_hours + 60.0 * np.exp(0.5 * rng.standard_normal(crs_grade.size)) * (1 + 0.3 * crs_grade),
        treatments.tocilizumab_hours + 3.0)
    in_fever = ((crs_grade[patient] >= 1) & (hours >= outcomes.crs_onset_hours[patient])
                & (hours < fever_end_hours[patient]))
    temp_z = rng.standard_normal(rows.n_rows)
    baseline_temp_c = 36.7 + 0.15 * rng.standard_normal(crs_grade.size)
    afebrile_c = np.minimum(baseline_temp_c[patient] + 0.25 * temp_z
                            + 0.5 * il6_pulse * np.clip(amplitude[patient], 0, 2), 37.9)
    febrile_c = 38.05 + fever_excess_celsius(amplitude[patient]) + 0.45 * np.abs(temp_z)
    antipyretic = rng.random(rows.n_rows) < 0.12
    febrile_c = np.where(antipyretic, 37.3 + 0.5 * rng.random(rows.n_rows), febrile_c)
    return np.clip(np.where(in_fever, febrile_c, afebrile_c), 35.0, 41.5)


def simulate_values(rows: Rows, patients: Patients, outcomes: Outcomes, treatments: Treatments,
                    rng: np.random.Generator) -> np.ndarray:
    """True (pre-assay-reporting) value of every measurement row, canonical units."""
    levels = draw_marker_levels(patients, outcomes.marker_amplitude, rng)
    response = marker_response(rows, treatments, outcomes.il6_half_rise_hours,
                               marker_pulse(rows, outcomes.il6_half_rise_hours))
    ld_curve = lymphodepletion_curve(rows, patients.n, rng)
    value = _lab_values(rows, patients, levels, response, ld_curve, rng)
    temperature_c = body_temperature(rows, outcomes, treatments, response.pulse, rng)
    return np.where(rows.analyte == TEMP_INDEX, temperature_c, value)
