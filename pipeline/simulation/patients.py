"""Patients: arm, latent risk factors, site and course draws, demographics, infusion time, and the
covariates as a clinic records them (tumour burden measured with error, administered dose)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.arms import arm_attribute, draw_arms
from pipeline.simulation.curves import expit
from pipeline.simulation.severity import CourseDraws, Latents, draw_course, draw_latents

# Measurement error of the recorded tumour burden against the latent burden: SPD from CT is read with
# ~20 % CV (log SD 0.20); marrow percentages (blasts, plasma cells) with log-odds SD 0.25 (~20 % CV
# at low percentages, less near 100 %).
SPD_LOG_SD = 0.20
MARROW_LOGIT_SD = 0.25


@dataclass(frozen=True)
class Patients:
    """One entry per patient; minutes are since EPOCH_START."""

    arm: np.ndarray  # index into ARMS
    latents: Latents
    course: CourseDraws
    disease: np.ndarray
    age_years: np.ndarray
    sex: np.ndarray
    anchor_minutes: np.ndarray  # infusion time
    anchor_clock_minutes: np.ndarray  # infusion time of day
    tumor_burden: np.ndarray  # disease-appropriate measure as recorded (with error), in tumor_burden_unit
    tumor_burden_unit: np.ndarray
    dose: np.ndarray  # administered CAR-T dose, in dose_unit
    dose_unit: np.ndarray

    @property
    def n(self) -> int:
        return int(self.arm.size)

    @property
    def site(self) -> np.ndarray:
        return self.course.site


def _age_years(disease: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_patients = disease.size
    is_lbcl, is_all, is_mcl = disease == "LBCL", disease == "B-ALL", disease == "MCL"
    age_z = rng.standard_normal(n_patients)
    return np.select(
        [is_lbcl, is_mcl, is_all],
        [np.clip(60 + 11 * age_z, 19, 86), np.clip(65 + 8 * age_z, 38, 84),
         3 + 20 * rng.beta(1.6, 2.2, n_patients)],
        np.clip(61 + 9 * age_z, 35, 82),
    ).astype(int)


def _tumor_burden(disease: np.ndarray, burden_z: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Disease-appropriate burden measure as recorded: the latent burden plus measurement error."""
    is_lbcl, is_all, is_mcl = disease == "LBCL", disease == "B-ALL", disease == "MCL"
    error_z = rng.standard_normal(disease.size)
    spd_log = burden_z + SPD_LOG_SD * error_z
    burden = np.select(
        [is_lbcl, is_mcl, is_all],
        [np.exp(np.log(35.0) + spd_log), np.exp(np.log(25.0) + spd_log),
         100 * expit(1.0 + 1.8 * burden_z + MARROW_LOGIT_SD * error_z)],
        100 * expit(-0.6 + 1.3 * burden_z + MARROW_LOGIT_SD * error_z),
    )
    unit = np.where(is_all, "% marrow blasts", np.where(disease == "MM", "% marrow plasma cells", "SPD cm2"))
    return np.round(np.maximum(burden, 0.1), 1), unit


def draw_patients(n_patients: int, rng: np.random.Generator) -> Patients:
    """Arm, latent risk factors and course draws first, then demographics and infusion time (this order)."""
    arm = draw_arms(n_patients, rng)
    latents = draw_latents(arm, rng)
    course = draw_course(arm, rng)
    disease = arm_attribute("disease")[arm]
    age_years = _age_years(disease, rng)
    sex = np.where(rng.random(n_patients) < np.where(disease == "B-ALL", 0.57, 0.63), "M", "F")
    anchor_day = rng.integers(0, 3 * 365, n_patients)
    anchor_clock_minutes = rng.integers(9 * 60, 16 * 60, n_patients)  # infusions late morning / afternoon
    burden, burden_unit = _tumor_burden(disease, latents.burden_z, rng)
    # Administered dose: the latent dose relative to the product's reference dose, in whole cells.
    dose = np.rint(latents.dose_rel * arm_attribute("reference_dose").astype(float)[arm])
    return Patients(
        arm=arm, latents=latents, course=course, disease=disease, age_years=age_years, sex=sex,
        anchor_minutes=anchor_day * 1440 + anchor_clock_minutes, anchor_clock_minutes=anchor_clock_minutes,
        tumor_burden=burden, tumor_burden_unit=burden_unit,
        dose=dose, dose_unit=arm_attribute("dose_unit")[arm],
    )
