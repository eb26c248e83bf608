"""Analytes: baseline, kinetics and reporting parameters (canonical units from the registry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Analyte:
    code: str
    median: float  # baseline median, canonical unit
    sd: float  # between-patient log SD of the baseline
    infl: float  # log-baseline per SD of baseline inflammation
    burden: float  # log-baseline per SD of tumour burden
    lf_base: float  # peak log fold change at marker amplitude 0
    lf_slope: float  # ... per unit of marker amplitude
    lf_lo: float
    lf_hi: float
    delay_hours: float  # pulse midpoint after the IL-6 half-rise time (CRP ~1 day, ferritin later)
    width_hours: float  # logistic rise width
    hold_hours: float  # time at plateau after the midpoint
    decay_hours: float  # exponential decay time after the plateau
    noise: float  # per-measurement log SD (assay + day-to-day)
    decimals: int
    lloq: float  # values below are written "<lloq" (0: never)
    uloq: float  # values above are written ">uloq" (0: never)
    cap: float  # soft physiological ceiling
    ld: float  # log effect of lymphodepletion at its nadir
    inflammatory: bool  # damped by steroids


ANALYTE_LIST: tuple[Analyte, ...] = (
    # code, median, sd, infl, burden, lf_base, lf_slope, lf_lo, lf_hi, delay, width, hold, decay,
    # noise, decimals, lloq, uloq, cap, ld, inflammatory
    Analyte("CRP", 5.0, 0.40, 0.8, 0.0, 3.3, 0.9, 0.3, 5.5, 22, 14, 12, 60, 0.12, 1, 0.5, 0, 450, 0, True),
    Analyte("FERRITIN", 500.0, 0.7, 0.6, 0.1, 1.2, 0.6, 0.1, 4.5, 40, 16, 36, 160, 0.10, 0, 5, 0, 150000, 0, False),
    Analyte("IL6", 5.0, 0.6, 0.5, 0.1, 3.1, 2.9, 0.4, 10.0, 0, 12, 10, 36, 0.30, 1, 1.5, 5000, 200000, 0, True),
    Analyte("IFNG", 3.0, 0.6, 0.3, 0.1, 2.55, 2.35, 0.5, 9.0, -3, 12, 8, 30, 0.30, 1, 1.0, 0, 200000, 0, True),
    Analyte("IL10", 4.0, 0.6, 0.3, 0.1, 1.8, 1.7, 0.3, 7.0, 0, 12, 10, 36, 0.30, 1, 1.5, 0, 50000, 0, True),
    Analyte("IL8", 12.0, 0.6, 0.3, 0.1, 1.2, 1.05, 0.2, 5.5, 0, 12, 10, 36, 0.30, 1, 2.0, 0, 50000, 0, True),
    Analyte("MCP1", 400.0, 0.4, 0.2, 0.0, 1.1, 1.05, 0.2, 5.5, 0, 12, 10, 36, 0.25, 0, 5.0, 0, 200000, 0, True),
    Analyte("IL1RA", 350.0, 0.5, 0.3, 0.0, 1.6, 1.3, 0.2, 6.5, 0, 12, 10, 36, 0.25, 0, 20.0, 0, 300000, 0, True),
    Analyte("SGP130", 300.0, 0.2, 0.05, 0.0, 0.12, 0.10, 0.0, 0.6, 0, 12, 24, 72, 0.08, 0, 0, 0, 5000, 0, False),
    Analyte("LDH", 230.0, 0.25, 0.2, 0.50, 0.25, 0.20, 0.0, 1.5, 24, 12, 24, 96, 0.08, 0, 0, 0, 8000, 0, False),
    Analyte("PLT", 170.0, 0.40, -0.25, -0.2, -0.15, -0.25, -2.0, 0.0, 24, 24, 48, 160, 0.08, 0, 0, 0, 900, -0.7, False),
    Analyte("CREAT", 0.85, 0.25, 0.0, 0.0, 0.05, 0.12, 0.0, 1.2, 24, 12, 24, 72, 0.06, 2, 0, 0, 8, 0, False),
    Analyte("ANC", 3.2, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 8, 24, 48, 0.25, 2, 0, 0, 40, -3.2, False),
    Analyte("HGB", 11.2, 0.12, -0.03, -0.03, -0.02, -0.03, -0.2, 0.0, 24, 24, 72, 240, 0.03, 1, 0, 0, 18, -0.10, False),
    Analyte("DDIMER", 0.9, 0.7, 0.4, 0.1, 0.8, 0.6, 0.0, 4.0, 24, 12, 36, 120, 0.15, 2, 0.19, 0, 80, 0, False),
    Analyte("FIBRINOGEN", 3.6, 0.2, 0.15, 0.0, 0.15, 0.10, -0.5, 0.6, 24, 12, 24, 96, 0.06, 2, 0, 0, 12, 0, False),
    Analyte("TEMP", 36.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 12, 10, 36, 0.0, 1, 0, 0, 41.5, 0, False),
)
# Baseline differences between diseases (log of the ratio to the median above): LDH is raised in
# aggressive lymphoma and in leukaemia with marrow blasts, mostly normal in myeloma; marrow
# infiltration lowers platelets in B-ALL.
DISEASE_BASELINE_LOG_RATIO: dict[str, dict[str, float]] = {
    "LBCL": {"LDH": 0.10},
    "MCL": {"LDH": 0.0},
    "B-ALL": {"LDH": 0.25, "PLT": -0.30},
    "MM": {"LDH": -0.20},
}
CODES = [a.code for a in ANALYTE_LIST]
ANALYTE_INDEX = {code: i for i, code in enumerate(CODES)}
N_ANALYTES = len(CODES)
TEMP_INDEX = ANALYTE_INDEX["TEMP"]


def disease_baseline_log_ratio(disease: np.ndarray) -> np.ndarray:
    """(n, analytes) log baseline ratio of each patient's disease (0 for diseases not in the table)."""
    names, inverse = np.unique(disease, return_inverse=True)
    table = np.array([[DISEASE_BASELINE_LOG_RATIO.get(str(name), {}).get(code, 0.0) for code in CODES]
                      for name in names])
    return table[inverse]


def analyte_column(field: str) -> np.ndarray:
    """One parameter of every analyte, in CODES order, as floats (a fresh array each call)."""
    return np.array([getattr(a, field) for a in ANALYTE_LIST], dtype=float)
