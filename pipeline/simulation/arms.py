"""Arms (product x disease) with the published figures they are calibrated to (CLINICAL.md s. 6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arm:
    key: str  # key in truth.json "incidence"
    product: str
    costim: str
    disease: str
    trial: str
    weight: float  # share of the cohort
    crs_any: float
    crs_ge3: float
    icans_any: float
    icans_ge3: float
    onset_day: float  # published median CRS onset day
    ld_probs: tuple[float, float, float]  # flu_cy, bendamustine, none


ARMS: tuple[Arm, ...] = (
    Arm("axi-cel", "axi-cel", "CD28", "LBCL", "ZUMA-1", 0.22, 0.93, 0.13, 0.64, 0.28, 2, (0.97, 0.03, 0.0)),
    Arm("tisa-cel/LBCL", "tisa-cel", "4-1BB", "LBCL", "JULIET", 0.11, 0.58, 0.22, 0.21, 0.12, 3, (0.73, 0.20, 0.07)),
    Arm("tisa-cel/B-ALL", "tisa-cel", "4-1BB", "B-ALL", "ELIANA", 0.11, 0.77, 0.46, 0.40, 0.13, 3, (0.96, 0.0, 0.04)),
    Arm("liso-cel", "liso-cel", "4-1BB", "LBCL", "TRANSCEND", 0.14, 0.42, 0.02, 0.30, 0.10, 5, (0.97, 0.03, 0.0)),
    Arm("brexu-cel", "brexu-cel", "CD28", "MCL", "ZUMA-2", 0.12, 0.91, 0.15, 0.63, 0.31, 2, (0.97, 0.03, 0.0)),
    Arm("ide-cel", "ide-cel", "4-1BB", "MM", "KarMMa", 0.13, 0.84, 0.05, 0.18, 0.03, 1, (0.97, 0.03, 0.0)),
    Arm("cilta-cel", "cilta-cel", "4-1BB", "MM", "CARTITUDE-1", 0.17, 0.95, 0.04, 0.17, 0.02, 7, (0.97, 0.03, 0.0)),
)
N_ARMS = len(ARMS)
LD_NAMES = np.array(["flu_cy", "bendamustine", "none"])
SITES = np.array([f"SITE{i:02d}" for i in range(1, 7)])
SITE_WEIGHTS = np.array([0.24, 0.20, 0.18, 0.15, 0.13, 0.10])


def arm_attribute(field: str) -> np.ndarray:
    """One field of every arm, in ARMS order (index it with the per-patient arm)."""
    return np.array([getattr(arm, field) for arm in ARMS])


def draw_arms(n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """Arm index per patient, drawn with the fixed cohort mix."""
    weights = arm_attribute("weight")
    return rng.choice(N_ARMS, size=n_patients, p=weights / weights.sum())
