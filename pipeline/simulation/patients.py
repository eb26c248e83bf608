"""Patients: arm, latent risk factors, site and course draws, demographics, infusion time, and the
covariates as a clinic records them (tumour burden measured with error, administered dose)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.arms import arm_attribute, draw_arms
from pipeline.simulation.curves import expit
from pipeline.simulation.severity import CourseDraws, Latents, draw_course, draw_latents


@dataclass(frozen=True)
class BurdenMeasure:
    """How a disease's tumour burden is recorded: ``scale`` (log or logit of a percentage) =
    ``location + slope * z_b + error_sd * e``. The error SDs give ~20 % relative error (CV) at the
    disease's median: SPD from CT read with ~20 % error; marrow percentages on the log-odds scale
    (relative error 20 % at the median: 0.70 for blasts around 73 %, 0.30 for plasma cells around 35 %)."""

    disease: str
    unit: str
    scale: str  # "log" or "logit"
    location: float
    slope: float
    error_sd: float


BURDEN_MEASURES: tuple[BurdenMeasure, ...] = (
    BurdenMeasure("LBCL", "SPD cm2", "log", float(np.log(35.0)), 1.0, 0.20),
    BurdenMeasure("MCL", "SPD cm2", "log", float(np.log(25.0)), 1.0, 0.20),
    BurdenMeasure("B-ALL", "% marrow blasts", "logit", 1.0, 1.8, 0.70),
    BurdenMeasure("MM", "% marrow plasma cells", "logit", -0.6, 1.3, 0.30),
)


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
    """Disease-appropriate burden measure as recorded (latent burden plus measurement error), and its unit."""
    diseases, inverse = np.unique(disease, return_inverse=True)
    row = np.array([[m.disease for m in BURDEN_MEASURES].index(d) for d in diseases])[inverse]  # 4 diseases
    column = {field: np.array([getattr(m, field) for m in BURDEN_MEASURES])[row]
              for field in ("unit", "scale", "location", "slope", "error_sd")}
    scaled = column["location"] + column["slope"] * burden_z + column["error_sd"] * rng.standard_normal(disease.size)
    burden = np.where(column["scale"] == "log", np.exp(scaled), 100 * expit(scaled))
    return np.round(np.maximum(burden, 0.1), 1), column["unit"]


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
