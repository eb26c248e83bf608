"""Latent severity: risk factors, the CRS / ICANS liabilities, their calibration and the grade courses.

One latent liability per patient, ``S = X·beta + drive + e_S``; CRS and ICANS grades are ordinal cuts
of ``S`` (ICANS: a correlated liability) with per-arm thresholds calibrated once, on a fixed
reference sample, to the published incidences.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pipeline.simulation.arms import ARMS, N_ARMS, Arm

# Severity liability weights (per SD of each risk factor; noise terms have the SDs below).
B_BURDEN = 0.35
B_INFL = 0.25
B_LOG_DOSE = 1.2
B_LD = np.array([0.30, 0.10, -0.20])  # flu_cy, bendamustine, none
RHO_BURDEN_INFL = 0.35  # bulky disease comes with more baseline inflammation
SD_DRIVE = 1.1  # CAR-T expansion: unobserved at baseline, revealed by the early cytokine rise
SD_SEVERITY_NOISE = 0.75  # host susceptibility the markers never see (keeps AUROC < 0.9)
AMP_AT_GE3_CUT = 1.0  # marker amplitude of a patient right at the grade-3 threshold
SD_MARKER_NOISE = 0.45  # marker amplitude noise relative to the liability (wide grade overlap)
RHO_ICANS = 0.60  # ICANS liability correlates with CRS severity
# Onset timing: log t_mid = mu_arm + SD_T_MID * z - SEVERE_EARLIER * amp (severe rise earlier).
SD_T_MID = 0.45
SEVERE_EARLIER = 0.45
MIN_T_MID_HOURS = 8.0
FEVER_LAG_MEDIAN_HOURS = 8.0  # first fever this long after the IL-6 half-rise (median)
GRADE_GAP_MEDIAN_HOURS = 8.0  # median time between successive grade changes
ICANS_AFTER_CRS_MEDIAN_HOURS = 60.0
ONSET_TARGET_OFFSET_DAYS = 0.25  # aim the continuous median a quarter day past the published day
DOSE_LOG_SD = 0.18

# Grade distribution given the published any / >=3 figures (not published per grade: assumptions).
CRS_GE2_SHARE = 0.40  # P(>=2) = P(>=3) + share * (P(any) - P(>=3))
CRS_GE4_OF_GE3 = 0.25
CRS_G5_OF_GE3 = 0.04
ICANS_GE2_SHARE = 0.45
ICANS_GE4_OF_GE3 = 0.20
ICANS_G5_OF_GE3 = 0.02


@dataclass(frozen=True)
class Latents:
    """Per-patient risk factors and noise terms (one array entry per patient)."""

    burden_z: np.ndarray  # tumour burden, SD units (written as tumor_burden_std)
    inflammation_z: np.ndarray  # baseline inflammation, SD units (never written)
    dose_rel: np.ndarray  # CAR-T dose relative to the label dose
    lymphodepletion: np.ndarray  # index into LD_NAMES
    expansion_drive: np.ndarray  # unobserved CAR-T expansion
    severity_noise: np.ndarray  # e_S: host susceptibility the markers never see
    marker_noise_z: np.ndarray  # e_u: marker amplitude noise
    icans_z: np.ndarray  # ICANS-specific liability noise
    onset_timing_z: np.ndarray  # spread of the IL-6 half-rise time
    fever_lag_hours: np.ndarray  # first fever after the IL-6 half-rise


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


def risk_score(latents: Latents) -> np.ndarray:
    """X·beta: the part of the severity liability carried by observable risk factors."""
    return (
        B_BURDEN * latents.burden_z
        + B_INFL * latents.inflammation_z
        + B_LOG_DOSE * np.log(latents.dose_rel)
        + B_LD[latents.lymphodepletion]
    )


def marker_amplitude(visible: np.ndarray, marker_noise_z: np.ndarray, cut_ge3: np.ndarray | float,
                     liability_sd: np.ndarray | float) -> np.ndarray:
    """Marker amplitude: distance of the marker-visible liability from the arm's grade-3 cut.

    Anchoring on the grade >= 3 threshold (not grade 1) makes peaks comparable across products:
    a severe case looks alike whatever the product, while the many mild cases of high-incidence
    products (cilta-cel, axi-cel) show only modest rises.
    """
    return (visible - cut_ge3) / liability_sd + AMP_AT_GE3_CUT + SD_MARKER_NOISE * marker_noise_z


def ordinal_probs(any_: float, ge3: float, ge2_share: float, ge4_of_ge3: float, g5_of_ge3: float) -> np.ndarray:
    """P(grade >= k) for k = 1..5."""
    ge2 = ge3 + ge2_share * (any_ - ge3)
    return np.array([any_, ge2, ge3, ge4_of_ge3 * ge3, g5_of_ge3 * ge3])


def _onset_timing_shape(latents: Latents, amplitude: np.ndarray) -> np.ndarray:
    """log IL-6 half-rise time minus its arm location: random spread, severe cases earlier."""
    return SD_T_MID * latents.onset_timing_z - SEVERE_EARLIER * np.clip(amplitude, -2, 3)


# ------------------------------------------------------------------------------------------------
# Calibration (a fixed reference sample, independent of the seed)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    crs_cut: np.ndarray  # (arms, 5) liability thresholds for grade >= k
    icans_cut: np.ndarray  # (arms, 5)
    liability_mean: np.ndarray  # (arms,)
    liability_sd: np.ndarray  # (arms,)
    log_t_mid: np.ndarray  # (arms,) mu of log IL-6 half-rise time (hours)


def _median_onset_location(arm: Arm, latents: Latents, shape: np.ndarray, has_crs: np.ndarray) -> float:
    """mu of log t_mid that puts the median CRS onset (among patients with CRS) on the target day."""
    target_hours = (arm.onset_day + ONSET_TARGET_OFFSET_DAYS) * 24
    mu = np.log(target_hours)
    for _ in range(12):  # fixed point on the median onset among patients with CRS
        onset_hours = np.maximum(np.exp(mu + shape), MIN_T_MID_HOURS) + latents.fever_lag_hours
        median_onset_hours = np.median(onset_hours[has_crs])
        median_lag_hours = np.median(latents.fever_lag_hours[has_crs])
        mu += np.log(max(target_hours - median_lag_hours, 1.0) / max(median_onset_hours - median_lag_hours, 1.0))
    return mu


@functools.cache
def calibration(n_ref: int = 200_000) -> Calibration:
    """Per-arm thresholds and onset location from a fixed reference sample (independent of the seed)."""
    rng = np.random.default_rng(12345)
    crs_cut = np.zeros((N_ARMS, 5))
    icans_cut = np.zeros((N_ARMS, 5))
    liability_mean = np.zeros(N_ARMS)
    liability_sd = np.zeros(N_ARMS)
    log_t_mid = np.zeros(N_ARMS)
    for k, arm in enumerate(ARMS):  # 7 arms, not patients
        latents = draw_latents(np.full(n_ref, k), rng)
        risk = risk_score(latents)
        liability = risk + latents.expansion_drive + latents.severity_noise
        p_crs = ordinal_probs(arm.crs_any, arm.crs_ge3, CRS_GE2_SHARE, CRS_GE4_OF_GE3, CRS_G5_OF_GE3)
        crs_cut[k] = np.quantile(liability, 1 - p_crs)
        liability_mean[k], liability_sd[k] = liability.mean(), liability.std()
        icans_liability = (RHO_ICANS * (liability - liability_mean[k]) / liability_sd[k]
                           + np.sqrt(1 - RHO_ICANS**2) * latents.icans_z)
        p_icans = ordinal_probs(arm.icans_any, arm.icans_ge3, ICANS_GE2_SHARE, ICANS_GE4_OF_GE3, ICANS_G5_OF_GE3)
        icans_cut[k] = np.quantile(icans_liability, 1 - p_icans)
        amplitude = marker_amplitude(risk + latents.expansion_drive, latents.marker_noise_z, crs_cut[k, 2],
                                     liability_sd[k])
        has_crs = liability > crs_cut[k, 0]
        log_t_mid[k] = _median_onset_location(arm, latents, _onset_timing_shape(latents, amplitude), has_crs)
    return Calibration(crs_cut, icans_cut, liability_mean, liability_sd, log_t_mid)


# ------------------------------------------------------------------------------------------------
# The cohort's outcomes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcomes:
    """Per-patient CRS / ICANS course; hours are since infusion, inf where never reached."""

    crs_grade: np.ndarray  # worst grade (0 = none), after death truncation
    icans_grade: np.ndarray
    marker_amplitude: np.ndarray  # how strongly the cytokines rise
    il6_half_rise_hours: np.ndarray  # t_mid: midpoint of the IL-6 rise
    crs_onset_hours: np.ndarray  # first fever (grade 1 CRS) for patients with CRS
    crs_grade_hours: np.ndarray  # (n, 5) onset of CRS grade 1..5
    icans_grade_hours: np.ndarray  # (n, 5) onset of ICANS grade 1..5
    death_hours: np.ndarray


def grade_steps(first_hours: np.ndarray, grade: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) onset hours of grade 1..5 (inf where the grade is never reached): 1 -> 2 -> 3 ..."""
    n_patients = first_hours.size
    gaps_hours = np.maximum(GRADE_GAP_MEDIAN_HOURS * np.exp(0.7 * rng.standard_normal((n_patients, 4))), 1.0)
    # Death (grade 5) comes days after grade 4, not hours.
    gaps_hours[:, 3] = 96.0 * np.exp(0.4 * rng.standard_normal(n_patients))
    steps_hours = first_hours[:, None] + np.concatenate(
        [np.zeros((n_patients, 1)), np.cumsum(gaps_hours, axis=1)], axis=1)
    return np.where(np.arange(1, 6)[None, :] <= grade[:, None], steps_hours, np.inf)


def _worst_grades(arm: np.ndarray, latents: Latents, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Worst CRS and ICANS grade from the liabilities (before death truncation)."""
    liability = risk_score(latents) + latents.expansion_drive + latents.severity_noise
    crs_grade = (liability[:, None] > cal.crs_cut[arm]).sum(axis=1)
    liability_std = (liability - cal.liability_mean[arm]) / cal.liability_sd[arm]
    icans_liability = RHO_ICANS * liability_std + np.sqrt(1 - RHO_ICANS**2) * latents.icans_z
    icans_grade = (icans_liability[:, None] > cal.icans_cut[arm]).sum(axis=1)
    icans_grade = np.where((crs_grade == 5) & (icans_grade == 5), 4, icans_grade)  # one death cause
    return crs_grade, icans_grade


def draw_outcomes(arm: np.ndarray, latents: Latents, cal: Calibration, rng: np.random.Generator) -> Outcomes:
    """Grades, IL-6 timing and the hour of every grade change; nothing happens after death."""
    crs_grade, icans_grade = _worst_grades(arm, latents, cal)
    # Marker amplitude: what the cytokines see (risk factors + expansion, not e_S) plus marker noise.
    amplitude = marker_amplitude(risk_score(latents) + latents.expansion_drive, latents.marker_noise_z,
                                 cal.crs_cut[arm, 2], cal.liability_sd[arm])
    # Same association order as the original expression (byte-identical output): (mu + spread) - earlier.
    log_t_mid = (cal.log_t_mid[arm] + SD_T_MID * latents.onset_timing_z
                 - SEVERE_EARLIER * np.clip(amplitude, -2, 3))
    il6_half_rise_hours = np.maximum(np.exp(log_t_mid), MIN_T_MID_HOURS)
    crs_onset_hours = il6_half_rise_hours + latents.fever_lag_hours
    crs_steps_hours = grade_steps(crs_onset_hours, crs_grade, rng)
    icans_first_hours = crs_onset_hours + ICANS_AFTER_CRS_MEDIAN_HOURS * np.exp(
        0.5 * rng.standard_normal(arm.size))
    icans_steps_hours = grade_steps(icans_first_hours, icans_grade, rng)
    death_hours = np.minimum(crs_steps_hours[:, 4], icans_steps_hours[:, 4])
    crs_steps_hours = np.where(crs_steps_hours > death_hours[:, None], np.inf, crs_steps_hours)
    icans_steps_hours = np.where(icans_steps_hours > death_hours[:, None], np.inf, icans_steps_hours)
    return Outcomes(
        crs_grade=np.isfinite(crs_steps_hours).sum(axis=1),
        icans_grade=np.isfinite(icans_steps_hours).sum(axis=1),
        marker_amplitude=amplitude,
        il6_half_rise_hours=il6_half_rise_hours,
        crs_onset_hours=crs_onset_hours,
        crs_grade_hours=crs_steps_hours,
        icans_grade_hours=icans_steps_hours,
        death_hours=death_hours,
    )
