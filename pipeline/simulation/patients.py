"""Patients: arm, latent risk factors, demographics, site, infusion time and tumour burden."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.arms import SITE_WEIGHTS, SITES, arm_attribute, draw_arms
from pipeline.simulation.curves import expit
from pipeline.simulation.severity import Latents, draw_latents


@dataclass(frozen=True)
class Patients:
    """One entry per patient; minutes are since EPOCH_START."""

    arm: np.ndarray  # index into ARMS
    latents: Latents
    disease: np.ndarray
    age_years: np.ndarray
    sex: np.ndarray
    site: np.ndarray  # index into SITES
    anchor_minutes: np.ndarray  # infusion time
    anchor_clock_minutes: np.ndarray  # infusion time of day
    tumor_burden: np.ndarray  # disease-appropriate measure, in tumor_burden_unit
    tumor_burden_unit: np.ndarray

    @property
    def n(self) -> int:
        return int(self.arm.size)


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


def _tumor_burden(disease: np.ndarray, burden_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disease-appropriate burden measure; tumor_burden_std is its z-score against the disease reference."""
    is_lbcl, is_all, is_mcl = disease == "LBCL", disease == "B-ALL", disease == "MCL"
    burden = np.select(
        [is_lbcl, is_mcl, is_all],
        [np.exp(np.log(35.0) + 1.0 * burden_z), np.exp(np.log(25.0) + 1.0 * burden_z),
         100 * expit(1.0 + 1.8 * burden_z)],
        100 * expit(-0.6 + 1.3 * burden_z),
    )
    unit = np.where(is_all, "% marrow blasts", np.where(disease == "MM", "% marrow plasma cells", "SPD cm2"))
    return burden, unit


def draw_patients(n_patients: int, rng: np.random.Generator) -> Patients:
    """Arm and latent risk factors first, then demographics, site and infusion time (this draw order)."""
    arm = draw_arms(n_patients, rng)
    latents = draw_latents(arm, rng)
    disease = arm_attribute("disease")[arm]
    age_years = _age_years(disease, rng)
    sex = np.where(rng.random(n_patients) < np.where(disease == "B-ALL", 0.57, 0.63), "M", "F")
    site = rng.choice(SITES.size, size=n_patients, p=SITE_WEIGHTS)
    anchor_day = rng.integers(0, 3 * 365, n_patients)
    anchor_clock_minutes = rng.integers(9 * 60, 16 * 60, n_patients)  # infusions late morning / afternoon
    burden, burden_unit = _tumor_burden(disease, latents.burden_z)
    return Patients(
        arm=arm, latents=latents, disease=disease, age_years=age_years, sex=sex, site=site,
        anchor_minutes=anchor_day * 1440 + anchor_clock_minutes, anchor_clock_minutes=anchor_clock_minutes,
        tumor_burden=burden, tumor_burden_unit=burden_unit,
    )
