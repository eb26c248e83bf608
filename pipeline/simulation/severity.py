"""Latent severity: risk factors, the CRS / ICANS liabilities and the grade courses under treatment.

One latent liability per patient, ``S = X·beta + drive + e_S``; the untreated CRS and ICANS grades are
ordinal cuts of ``S`` (ICANS: a correlated liability) with per-arm thresholds calibrated once, on a
fixed reference sample, to the published incidences (``calibration``). Treatment given before a later
grade step may stop it (``policy``), so the grade a patient reaches is min(untreated, limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.arms import ARMS, SITE_WEIGHTS, arm_attribute, site_attribute
from pipeline.simulation.policy import BLOCK_TOCILIZUMAB, N_DELAYS, first_dose_hours, progression_limit

# Severity liability weights (per SD of each risk factor; noise terms have the SDs below). Baseline
# tumour burden and inflammation carry a large share, so that baseline scores (m-EASIX) discriminate
# about as published (Pennisi 2021: AUROC 0.73-0.80).
B_BURDEN = 0.50
B_INFL = 0.65
B_LOG_DOSE = 1.2
B_LD = np.array([0.30, 0.10, -0.20])  # flu_cy, bendamustine, none
RHO_BURDEN_INFL = 0.35  # bulky disease comes with more baseline inflammation
SD_DRIVE = 0.90  # CAR-T expansion: unobserved at baseline, revealed by the early cytokine rise
SD_SEVERITY_NOISE = 0.40  # host susceptibility the markers never see (keeps AUROC < 0.9)
AMP_AT_GE3_CUT = 1.0  # marker amplitude of a patient right at the grade-3 threshold
SD_MARKER_NOISE = 0.35  # marker amplitude noise relative to the liability (wide grade overlap)
RHO_ICANS = 0.60  # ICANS liability correlates with CRS severity
# Onset timing: log t_mid = mu_arm + SD_T_MID * z - SEVERE_EARLIER * amp (severe rise earlier).
SD_T_MID = 0.45
SEVERE_EARLIER = 0.45
MIN_T_MID_HOURS = 8.0
FEVER_LAG_MEDIAN_HOURS = 8.0  # first fever this long after the IL-6 half-rise (median)
GRADE_GAP_MEDIAN_HOURS = 8.0  # median time between successive grade changes
DEATH_GAP_MEDIAN_HOURS = 96.0  # death (grade 5) comes days after grade 4, not hours
ICANS_AFTER_CRS_MEDIAN_HOURS = 60.0
DOSE_LOG_SD = 0.18


@dataclass(frozen=True)
class Latents:
    """Per-patient risk factors and noise terms (one array entry per patient)."""

    burden_z: np.ndarray  # tumour burden, SD units (never written: the noisy measure is)
    inflammation_z: np.ndarray  # baseline inflammation, SD units (never written)
    dose_rel: np.ndarray  # CAR-T dose relative to the product's reference dose
    lymphodepletion: np.ndarray  # index into LD_NAMES
    expansion_drive: np.ndarray  # unobserved CAR-T expansion
    severity_noise: np.ndarray  # e_S: host susceptibility the markers never see
    marker_noise_z: np.ndarray  # e_u: marker amplitude noise
    icans_z: np.ndarray  # ICANS-specific liability noise
    onset_timing_z: np.ndarray  # spread of the IL-6 half-rise time
    fever_lag_hours: np.ndarray  # first fever after the IL-6 half-rise


@dataclass(frozen=True)
class CourseDraws:
    """Per-patient site, treatment habits and the random timing of the grade course (before any outcome)."""

    site: np.ndarray  # index into SITES
    prophylaxis: np.ndarray  # bool: prophylactic dexamethasone (site habit, CD28 products)
    early_tocilizumab: np.ndarray  # bool: tocilizumab at grade 1 (site habit)
    crs_gap_hours: np.ndarray  # (n, 4) between CRS grade onsets 1->2 .. 4->5
    icans_gap_hours: np.ndarray  # (n, 4)
    icans_lag_hours: np.ndarray  # first ICANS after the CRS onset (virtual onset without CRS)
    delay_uniform: np.ndarray  # (n, N_DELAYS) dosing delays
    block_uniform: np.ndarray  # (n, 2, 4) CRS / ICANS steps 2..5: stopped if below the stop probability


def draw_latents(arm: np.ndarray, rng: np.random.Generator) -> Latents:
    """Risk factors and noise terms; shared by the cohort and the calibration reference sample."""
    n_patients = arm.size
    burden_z = rng.standard_normal(n_patients)
    inflammation_z = (RHO_BURDEN_INFL * burden_z
                      + np.sqrt(1 - RHO_BURDEN_INFL**2) * rng.standard_normal(n_patients))
    dose_rel = np.round(np.clip(np.exp(DOSE_LOG_SD * rng.standard_normal(n_patients)), 0.5, 1.6), 2)
    cumulative_ld = np.cumsum(np.array([a.ld_probs for a in ARMS]), axis=1)[arm]
    lymphodepletion = (rng.random(n_patients)[:, None] > cumulative_ld[:, :2]).sum(axis=1)
    expansion_drive = SD_DRIVE * rng.standard_normal(n_patients)
    severity_noise = SD_SEVERITY_NOISE * rng.standard_normal(n_patients)
    marker_noise_z = rng.standard_normal(n_patients)
    icans_z = rng.standard_normal(n_patients)
    onset_timing_z = rng.standard_normal(n_patients)
    fever_lag_hours = FEVER_LAG_MEDIAN_HOURS * np.exp(0.5 * rng.standard_normal(n_patients))
    return Latents(burden_z, inflammation_z, dose_rel, lymphodepletion, expansion_drive, severity_noise,
                   marker_noise_z, icans_z, onset_timing_z, fever_lag_hours)


def _gap_hours(n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) hours between successive grade onsets; death days after grade 4."""
    grade_gaps_hours = np.maximum(GRADE_GAP_MEDIAN_HOURS * np.exp(0.7 * rng.standard_normal((n_patients, 3))), 1.0)
    death_gap_hours = DEATH_GAP_MEDIAN_HOURS * np.exp(0.4 * rng.standard_normal((n_patients, 1)))
    return np.concatenate([grade_gaps_hours, death_gap_hours], axis=1)


def draw_course(arm: np.ndarray, rng: np.random.Generator) -> CourseDraws:
    """Site and its habits, then the course timing terms; shared by the cohort and the reference sample."""
    n_patients = arm.size
    site = rng.choice(SITE_WEIGHTS.size, size=n_patients, p=SITE_WEIGHTS)
    cd28 = arm_attribute("costim")[arm] == "CD28"
    prophylaxis = cd28 & (rng.random(n_patients) < site_attribute("prophylaxis")[site])
    early_tocilizumab = rng.random(n_patients) < site_attribute("early_tocilizumab")[site]
    crs_gap_hours = _gap_hours(n_patients, rng)
    icans_gap_hours = _gap_hours(n_patients, rng)
    icans_lag_hours = ICANS_AFTER_CRS_MEDIAN_HOURS * np.exp(0.5 * rng.standard_normal(n_patients))
    delay_uniform = rng.random((n_patients, N_DELAYS))
    block_uniform = rng.random((n_patients, 2, 4))
    return CourseDraws(site, prophylaxis, early_tocilizumab, crs_gap_hours, icans_gap_hours, icans_lag_hours,
                       delay_uniform, block_uniform)


def risk_score(latents: Latents) -> np.ndarray:
    """X·beta: the part of the severity liability carried by observable risk factors."""
    return (
        B_BURDEN * latents.burden_z
        + B_INFL * latents.inflammation_z
        + B_LOG_DOSE * np.log(latents.dose_rel)
        + B_LD[latents.lymphodepletion]
    )


def crs_liability(latents: Latents) -> np.ndarray:
    return risk_score(latents) + latents.expansion_drive + latents.severity_noise


def icans_liability(liability_std: np.ndarray, latents: Latents) -> np.ndarray:
    """ICANS liability from the arm-standardised CRS liability and ICANS-specific noise."""
    return RHO_ICANS * liability_std + np.sqrt(1 - RHO_ICANS**2) * latents.icans_z


def marker_amplitude(visible: np.ndarray, marker_noise_z: np.ndarray, cut_ge3: np.ndarray | float,
                     liability_sd: np.ndarray | float) -> np.ndarray:
    """Marker amplitude: distance of the marker-visible liability from the arm's grade-3 cut.

    Anchoring on the grade >= 3 threshold (not grade 1) makes peaks comparable across products:
    a severe case looks alike whatever the product, while the many mild cases of high-incidence
    products (cilta-cel, axi-cel) show only modest rises.
    """
    return (visible - cut_ge3) / liability_sd + AMP_AT_GE3_CUT + SD_MARKER_NOISE * marker_noise_z


def onset_timing_shape(latents: Latents, amplitude: np.ndarray) -> np.ndarray:
    """log IL-6 half-rise time minus its arm location: random spread, severe cases earlier."""
    return SD_T_MID * latents.onset_timing_z - SEVERE_EARLIER * np.clip(amplitude, -2, 3)


def path_hours(first_hours: np.ndarray, gap_hours: np.ndarray) -> np.ndarray:
    """(n, 5) onset of grade 1..5 along the full course (as if every grade were reached)."""
    return first_hours[:, None] + np.concatenate(
        [np.zeros((first_hours.size, 1)), np.cumsum(gap_hours, axis=1)], axis=1)


def reached(path: np.ndarray, grade: np.ndarray) -> np.ndarray:
    """The path's onsets up to each patient's grade, inf beyond."""
    return np.where(np.arange(1, 6)[None, :] <= grade[:, None], path, np.inf)


def crs_limit(crs_path: np.ndarray, course: CourseDraws) -> np.ndarray:
    """Highest CRS grade reachable under the CRS-triggered treatments and prophylaxis.

    Only the order of doses and grade onsets matters, so a path shifted in time (the calibration uses
    paths starting at 0) gives the same limit: prophylaxis starts before any possible onset.
    """
    no_icans = np.full_like(crs_path, np.inf)
    first_toci, first_steroid = first_dose_hours(crs_path, no_icans, course.delay_uniform, course.prophylaxis,
                                                 course.early_tocilizumab)
    return progression_limit(crs_path, first_toci, first_steroid, course.block_uniform[:, 0], BLOCK_TOCILIZUMAB)


def icans_limit(crs_steps: np.ndarray, icans_path: np.ndarray, course: CourseDraws) -> np.ndarray:
    """Highest ICANS grade reachable under steroids (tocilizumab does not cross into the brain)."""
    _, first_steroid = first_dose_hours(crs_steps, icans_path, course.delay_uniform, course.prophylaxis,
                                        course.early_tocilizumab)
    no_toci = np.full_like(first_steroid, np.inf)
    return progression_limit(icans_path, no_toci, first_steroid, course.block_uniform[:, 1], 0.0)


# ------------------------------------------------------------------------------------------------
# The cohort's outcomes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    crs_cut: np.ndarray  # (arms, 5) liability thresholds for untreated grade >= k
    icans_cut: np.ndarray  # (arms, 5)
    liability_mean: np.ndarray  # (arms,)
    liability_sd: np.ndarray  # (arms,)
    log_t_mid: np.ndarray  # (arms,) mu of log IL-6 half-rise time (hours)


@dataclass(frozen=True)
class Outcomes:
    """Per-patient CRS / ICANS course; hours are since infusion, inf where never reached."""

    crs_grade: np.ndarray  # worst grade (0 = none), after treatment and death truncation
    icans_grade: np.ndarray
    untreated_crs_grade: np.ndarray  # the grade the liability alone would have reached (never written)
    untreated_icans_grade: np.ndarray
    marker_amplitude: np.ndarray  # how strongly the cytokines rise
    il6_half_rise_hours: np.ndarray  # t_mid: midpoint of the IL-6 rise
    crs_onset_hours: np.ndarray  # first fever (grade 1 CRS) for patients with CRS
    crs_grade_hours: np.ndarray  # (n, 5) onset of CRS grade 1..5
    icans_grade_hours: np.ndarray  # (n, 5) onset of ICANS grade 1..5
    death_hours: np.ndarray


def untreated_grades(arm: np.ndarray, latents: Latents, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Worst CRS and ICANS grade the liabilities alone would reach (before treatment and death)."""
    liability = crs_liability(latents)
    crs_grade = (liability[:, None] > cal.crs_cut[arm]).sum(axis=1)
    liability_std = (liability - cal.liability_mean[arm]) / cal.liability_sd[arm]
    icans_grade = (icans_liability(liability_std, latents)[:, None] > cal.icans_cut[arm]).sum(axis=1)
    icans_grade = np.where((crs_grade == 5) & (icans_grade == 5), 4, icans_grade)  # one death cause
    return crs_grade, icans_grade


def draw_outcomes(arm: np.ndarray, latents: Latents, course: CourseDraws, cal: Calibration) -> Outcomes:
    """Grades under treatment, IL-6 timing and the hour of every grade change; nothing after death."""
    untreated_crs, untreated_icans = untreated_grades(arm, latents, cal)
    # Marker amplitude: what the cytokines see (risk factors + expansion, not e_S) plus marker noise.
    amplitude = marker_amplitude(risk_score(latents) + latents.expansion_drive, latents.marker_noise_z,
                                 cal.crs_cut[arm, 2], cal.liability_sd[arm])
    il6_half_rise_hours = np.maximum(np.exp(cal.log_t_mid[arm] + onset_timing_shape(latents, amplitude)),
                                     MIN_T_MID_HOURS)
    crs_onset_hours = il6_half_rise_hours + latents.fever_lag_hours
    crs_path = path_hours(crs_onset_hours, course.crs_gap_hours)
    crs_steps_hours = reached(crs_path, np.minimum(untreated_crs, crs_limit(crs_path, course)))
    icans_path = path_hours(crs_onset_hours + course.icans_lag_hours, course.icans_gap_hours)
    icans_grade = np.minimum(untreated_icans, icans_limit(crs_steps_hours, icans_path, course))
    icans_steps_hours = reached(icans_path, icans_grade)
    death_hours = np.minimum(crs_steps_hours[:, 4], icans_steps_hours[:, 4])
    crs_steps_hours = np.where(crs_steps_hours > death_hours[:, None], np.inf, crs_steps_hours)
    icans_steps_hours = np.where(icans_steps_hours > death_hours[:, None], np.inf, icans_steps_hours)
    return Outcomes(
        crs_grade=np.isfinite(crs_steps_hours).sum(axis=1),
        icans_grade=np.isfinite(icans_steps_hours).sum(axis=1),
        untreated_crs_grade=untreated_crs,
        untreated_icans_grade=untreated_icans,
        marker_amplitude=amplitude,
        il6_half_rise_hours=il6_half_rise_hours,
        crs_onset_hours=crs_onset_hours,
        crs_grade_hours=crs_steps_hours,
        icans_grade_hours=icans_steps_hours,
        death_hours=death_hours,
    )
