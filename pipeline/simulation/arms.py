"""Arms (product x disease) with the published figures they are calibrated to (docs/clinical.md#reference-incidences), and
the sites with their treatment and sampling habits."""

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
    reference_dose: float  # labelled / pivotal-trial target dose, in dose_unit (the pipeline's registry)
    dose_unit: str  # "cells/kg" or "cells"


ARMS: tuple[Arm, ...] = (
    Arm("axi-cel", "axi-cel", "CD28", "LBCL", "ZUMA-1", 0.22, 0.93, 0.13, 0.64, 0.28, 2, (0.97, 0.03, 0.0),
        2.0e6, "cells/kg"),
    Arm("tisa-cel/LBCL", "tisa-cel", "4-1BB", "LBCL", "JULIET", 0.11, 0.58, 0.22, 0.21, 0.12, 3, (0.73, 0.20, 0.07),
        3.0e8, "cells"),
    Arm("tisa-cel/B-ALL", "tisa-cel", "4-1BB", "B-ALL", "ELIANA", 0.11, 0.77, 0.46, 0.40, 0.13, 3, (0.96, 0.0, 0.04),
        3.0e6, "cells/kg"),
    Arm("liso-cel", "liso-cel", "4-1BB", "LBCL", "TRANSCEND", 0.14, 0.42, 0.02, 0.30, 0.10, 5, (0.97, 0.03, 0.0),
        1.0e8, "cells"),
    Arm("brexu-cel", "brexu-cel", "CD28", "MCL", "ZUMA-2", 0.12, 0.91, 0.15, 0.63, 0.31, 2, (0.97, 0.03, 0.0),
        2.0e6, "cells/kg"),
    Arm("ide-cel", "ide-cel", "4-1BB", "MM", "KarMMa", 0.13, 0.84, 0.05, 0.18, 0.03, 1, (0.97, 0.03, 0.0),
        4.5e8, "cells"),
    Arm("cilta-cel", "cilta-cel", "4-1BB", "MM", "CARTITUDE-1", 0.17, 0.95, 0.04, 0.17, 0.02, 7, (0.97, 0.03, 0.0),
        0.75e6, "cells/kg"),
)
N_ARMS = len(ARMS)
LD_NAMES = np.array(["flu_cy", "bendamustine", "none"])


@dataclass(frozen=True)
class Site:
    """A centre's habits: who gets prophylaxis or early tocilizumab, how closely a febrile patient is watched."""

    name: str
    weight: float  # share of the cohort
    prophylaxis: float  # CD28-product patients given prophylactic dexamethasone on days 0-2 (ZUMA-1 cohort 6)
    early_tocilizumab: float  # patients given tocilizumab at grade 1 CRS (persistent fever) instead of grade 2
    worry_draws: float  # chance of each extra 6-hourly draw slot while a febrile patient worries the ward
    worry_cytokines: float  # chance an extra draw includes an IL-6 / cytokine panel (rapid IL-6 on site)


SITE_LIST: tuple[Site, ...] = (
    Site("SITE01", 0.24, 0.00, 0.10, 0.35, 0.50),
    Site("SITE02", 0.20, 0.40, 0.20, 0.25, 0.00),
    Site("SITE03", 0.18, 0.00, 0.60, 0.45, 0.60),
    Site("SITE04", 0.15, 0.15, 0.05, 0.15, 0.00),
    Site("SITE05", 0.13, 0.00, 0.30, 0.30, 0.30),
    Site("SITE06", 0.10, 0.00, 0.00, 0.20, 0.10),
)
SITES = np.array([s.name for s in SITE_LIST])
SITE_WEIGHTS = np.array([s.weight for s in SITE_LIST])


def arm_attribute(field: str) -> np.ndarray:
    """One field of every arm, in ARMS order (index it with the per-patient arm)."""
    return np.array([getattr(arm, field) for arm in ARMS])


def site_attribute(field: str) -> np.ndarray:
    """One field of every site, in SITES order (index it with the per-patient site)."""
    return np.array([getattr(site, field) for site in SITE_LIST])


def draw_arms(n_patients: int, rng: np.random.Generator) -> np.ndarray:
    """Arm index per patient, drawn with the fixed cohort mix."""
    weights = arm_attribute("weight")
    return rng.choice(N_ARMS, size=n_patients, p=weights / weights.sum())
