"""Calibration: per-arm liability cuts and onset location from a fixed reference sample (seed-independent).

The cuts are set so that the grades patients reach *under treatment* (``policy``: a drug given before a
later grade step may stop it) match the published incidences: ``P(grade >= k) = P(S > c_k, limit >= k)``,
solved exactly on the reference sample because the treatment limit never depends on the cuts.
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline.simulation.arms import ARMS, Arm
from pipeline.simulation.severity import (
    MIN_T_MID_HOURS,
    Calibration,
    CourseDraws,
    Latents,
    crs_liability,
    crs_limit,
    draw_course,
    draw_latents,
    icans_liability,
    icans_limit,
    marker_amplitude,
    onset_timing_shape,
    path_hours,
    reached,
    risk_score,
)

REFERENCE_SEED = 12345
ONSET_TARGET_OFFSET_DAYS = 0.25  # aim the continuous median a quarter day past the published day
# Grade distribution given the published any / >=3 figures (not published per grade: assumptions).
CRS_GE2_SHARE = 0.50  # P(>=2) = P(>=3) + share * (P(any) - P(>=3))
CRS_GE4_OF_GE3 = 0.25
CRS_G5_OF_GE3 = 0.04
ICANS_GE2_SHARE = 0.45
ICANS_GE4_OF_GE3 = 0.20
ICANS_G5_OF_GE3 = 0.02


def ordinal_probs(any_: float, ge3: float, ge2_share: float, ge4_of_ge3: float, g5_of_ge3: float) -> np.ndarray:
    """P(grade >= k) for k = 1..5."""
    ge2 = ge3 + ge2_share * (any_ - ge3)
    return np.array([any_, ge2, ge3, ge4_of_ge3 * ge3, g5_of_ge3 * ge3])


def cuts_under_treatment(liability: np.ndarray, limit: np.ndarray, p_ge: np.ndarray) -> np.ndarray:
    """Cuts c_k with mean(liability > c_k and limit >= k) = P(grade >= k), k = 1..5 (non-decreasing)."""
    cuts = np.empty(5)
    for k in range(5):  # five grades, not patients
        eligible = limit >= k + 1
        share = min(p_ge[k] * liability.size / max(int(eligible.sum()), 1), 1.0)
        cuts[k] = np.quantile(liability[eligible], 1 - share)
    return np.maximum.accumulate(cuts)


def _median_onset_location(arm: Arm, latents: Latents, shape: np.ndarray, has_crs: np.ndarray) -> float:
    """mu of log t_mid that puts the median CRS onset (among patients with CRS) on the target day."""
    target_hours = (arm.onset_day + ONSET_TARGET_OFFSET_DAYS) * 24
    mu = np.log(target_hours)
    shape, fever_lag_hours = shape[has_crs], latents.fever_lag_hours[has_crs]
    median_lag_hours = np.median(fever_lag_hours)
    for _ in range(6):  # fixed point on the median onset among patients with CRS (converged to 1e-6 h)
        median_onset_hours = np.median(np.maximum(np.exp(mu + shape), MIN_T_MID_HOURS) + fever_lag_hours)
        mu += np.log(max(target_hours - median_lag_hours, 1.0) / max(median_onset_hours - median_lag_hours, 1.0))
    return mu


def _calibrate_arm(arm: Arm, latents: Latents, course: CourseDraws) -> tuple[np.ndarray, ...]:
    """(crs cuts, icans cuts, liability mean, liability sd, log t_mid) of one arm's reference sample."""
    liability = crs_liability(latents)
    liability_mean, liability_sd = liability.mean(), liability.std()
    # Paths start at 0: the treatment limits depend only on the order of doses and onsets.
    crs_path = path_hours(np.zeros(liability.size), course.crs_gap_hours)
    p_crs = ordinal_probs(arm.crs_any, arm.crs_ge3, CRS_GE2_SHARE, CRS_GE4_OF_GE3, CRS_G5_OF_GE3)
    limit = crs_limit(crs_path, course)
    crs_cut = cuts_under_treatment(liability, limit, p_crs)
    crs_grade = np.minimum((liability[:, None] > crs_cut).sum(axis=1), limit)
    icans = icans_liability((liability - liability_mean) / liability_sd, latents)
    icans_path = path_hours(course.icans_lag_hours, course.icans_gap_hours)
    p_icans = ordinal_probs(arm.icans_any, arm.icans_ge3, ICANS_GE2_SHARE, ICANS_GE4_OF_GE3, ICANS_G5_OF_GE3)
    icans_cut = cuts_under_treatment(icans, icans_limit(reached(crs_path, crs_grade), icans_path, course), p_icans)
    amplitude = marker_amplitude(risk_score(latents) + latents.expansion_drive, latents.marker_noise_z, crs_cut[2],
                                 liability_sd)
    log_t_mid = _median_onset_location(arm, latents, onset_timing_shape(latents, amplitude), liability > crs_cut[0])
    return crs_cut, icans_cut, liability_mean, liability_sd, log_t_mid


@functools.cache
def calibration(n_ref: int = 60_000) -> Calibration:
    """Per-arm thresholds and onset location from a fixed reference sample (independent of the seed)."""
    rng = np.random.default_rng(REFERENCE_SEED)
    per_arm = []
    for k, arm in enumerate(ARMS):  # 7 arms, not patients
        arm_index = np.full(n_ref, k)
        per_arm.append(_calibrate_arm(arm, draw_latents(arm_index, rng), draw_course(arm_index, rng)))
    crs_cut, icans_cut, liability_mean, liability_sd, log_t_mid = (np.array(column) for column in zip(*per_arm, strict=True))
    return Calibration(crs_cut, icans_cut, liability_mean, liability_sd, log_t_mid)
