"""Synthetic CAR-T cohort: the embedded default cohort (``crs simulate``), warts included.

The generative model (documented with its equations in ``docs/simulator.md``):

* one latent **severity liability** per patient, ``S = X·beta + drive + e_S``, where ``X`` holds the
  observable risk factors (tumour burden, baseline inflammation, dose, lymphodepletion) and ``drive``
  is the unobserved CAR-T expansion that the cytokines reveal only after infusion;
* CRS / ICANS grades are ordinal cuts of ``S`` (ICANS: a correlated liability) with per-arm thresholds
  calibrated once, on a fixed reference sample, to the published incidences (CLINICAL.md section 6);
* every biomarker follows ``log value = baseline + peak_log_fold · pulse(t - t_mid - delay) + noise``,
  a logistic rise that starts at infusion and has its midpoint ``t_mid`` hours before fever onset, its
  height scaling with ``X·beta + drive`` (not with ``e_S``) plus marker noise, so peaks overlap widely
  between grades;
* the sampling schedule is drawn independently of every outcome (no schedule leakage).

Everything is vectorised over patients and rows (numpy / pyarrow), no per-patient Python loops.
``simulate_cohort`` is pure: same arguments, same tables, byte for byte once written.
"""

from __future__ import annotations

import functools
import json
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from pipeline.io import atomic_dir
from pipeline.registry import load_registry

# ------------------------------------------------------------------------------------------------
# Arms (product x disease) with the published figures they are calibrated to (CLINICAL.md s. 6).
# ------------------------------------------------------------------------------------------------


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

# ------------------------------------------------------------------------------------------------
# Analytes: baseline, kinetics and reporting (canonical units from the registry).
# ------------------------------------------------------------------------------------------------


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
    Analyte("CRP", 5.0, 0.6, 0.8, 0.0, 3.3, 0.7, 0.3, 5.0, 22, 14, 12, 60, 0.12, 1, 0.5, 0, 450, 0, True),
    Analyte("FERRITIN", 500.0, 0.7, 0.6, 0.1, 1.2, 0.6, 0.1, 4.5, 40, 16, 36, 160, 0.10, 0, 5, 0, 150000, 0, False),
    Analyte("IL6", 5.0, 0.6, 0.5, 0.1, 3.0, 1.6, 0.4, 8.0, 0, 12, 10, 36, 0.30, 1, 1.5, 5000, 200000, 0, True),
    Analyte("IFNG", 3.0, 0.6, 0.3, 0.1, 3.0, 1.6, 0.5, 8.0, -3, 12, 8, 30, 0.30, 1, 1.0, 0, 200000, 0, True),
    Analyte("IL10", 4.0, 0.6, 0.3, 0.1, 2.0, 1.2, 0.3, 6.0, 0, 12, 10, 36, 0.30, 1, 1.5, 0, 50000, 0, True),
    Analyte("IL8", 12.0, 0.6, 0.3, 0.1, 1.2, 0.8, 0.2, 5.0, 0, 12, 10, 36, 0.30, 1, 2.0, 0, 50000, 0, True),
    Analyte("MCP1", 400.0, 0.4, 0.2, 0.0, 1.1, 0.8, 0.2, 5.0, 0, 12, 10, 36, 0.25, 0, 5.0, 0, 200000, 0, True),
    Analyte("IL1RA", 350.0, 0.5, 0.3, 0.0, 1.6, 1.0, 0.2, 6.0, 0, 12, 10, 36, 0.25, 0, 20.0, 0, 300000, 0, True),
    Analyte("SGP130", 300.0, 0.2, 0.05, 0.0, 0.12, 0.10, 0.0, 0.6, 0, 12, 24, 72, 0.08, 0, 0, 0, 5000, 0, False),
    Analyte("LDH", 230.0, 0.3, 0.2, 0.35, 0.25, 0.20, 0.0, 1.5, 24, 12, 24, 96, 0.08, 0, 0, 0, 8000, 0, False),
    Analyte("PLT", 170.0, 0.45, -0.15, -0.1, -0.15, -0.25, -2.0, 0.0, 24, 24, 48, 160, 0.08, 0, 0, 0, 900, -0.7, False),
    Analyte("CREAT", 0.85, 0.25, 0.0, 0.0, 0.05, 0.12, 0.0, 1.2, 24, 12, 24, 72, 0.06, 2, 0, 0, 8, 0, False),
    Analyte("ANC", 3.2, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 8, 24, 48, 0.25, 2, 0, 0, 40, -3.2, False),
    Analyte("HGB", 11.2, 0.12, -0.03, -0.03, -0.02, -0.03, -0.2, 0.0, 24, 24, 72, 240, 0.03, 1, 0, 0, 18, -0.10, False),
    Analyte("DDIMER", 0.9, 0.7, 0.4, 0.1, 0.8, 0.6, 0.0, 4.0, 24, 12, 36, 120, 0.15, 2, 0.19, 0, 80, 0, False),
    Analyte("FIBRINOGEN", 3.6, 0.2, 0.15, 0.0, 0.15, 0.10, -0.5, 0.6, 24, 12, 24, 96, 0.06, 2, 0, 0, 12, 0, False),
    Analyte("TEMP", 36.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 12, 10, 36, 0.0, 1, 0, 0, 41.5, 0, False),
)
CODES = [a.code for a in ANALYTE_LIST]
A_IDX = {code: i for i, code in enumerate(CODES)}
N_AN = len(CODES)


def _col(field: str) -> np.ndarray:
    return np.array([getattr(a, field) for a in ANALYTE_LIST], dtype=float)


ROUTINE_PANEL = ["CRP", "FERRITIN", "LDH", "PLT", "CREAT", "ANC", "HGB", "DDIMER", "FIBRINOGEN"]
ROUTINE_KEEP = np.array([0.95, 0.85, 0.90, 0.98, 0.97, 0.97, 0.98, 0.60, 0.65])  # ordered per draw
ROUTINE_DAYS = np.array([-7, -5, -4, -3, -1, *range(0, 15), 17, 21, 24, 28])
CYTOKINE_PANEL = ["IL6", "IFNG", "IL10", "IL8", "MCP1", "IL1RA", "SGP130"]
CYTOKINE_DAYS = np.array([-5, 0, 1, 2, 3, 5, 7, 14, 21, 28])
INPATIENT_DAYS = np.arange(-1, 15)  # temperature on the ward several times a day
VITALS_CLOCK_HOURS = np.array([2.0, 6.0, 10.0, 14.0, 18.0, 22.0])

# Non-quarantine faults: site-specific units and analyte-name dialects.
UNIT_FAULTS = {  # code -> (site index, written unit, factor canonical -> written, decimals, lloq written)
    "CRP": (2, "mg/dL", 0.1, 2),
    "FERRITIN": (1, "ug/L", 1.0, 0),
    "CREAT": (4, "umol/L", 88.4, 0),
}
NAME_DIALECTS = {  # site index -> {code: name as written}
    0: {"IL6": "IL-6", "IFNG": "IFN-gamma", "IL10": "IL-10"},
    3: {"IL6": "Interleukin 6", "CRP": "C-reactive protein", "PLT": "Platelets"},
    5: {"TEMP": "Temperature", "CREAT": "Creatinine", "MCP1": "MCP-1", "IL1RA": "IL-1RA"},
}
# Quarantine faults: fraction of clean measurement rows (at least MIN_FAULT_ROWS each).
FAULT_FRACTIONS = {
    "unparseable_value": 2e-4,
    "missing_value": 2e-4,
    "out_of_range": 1.5e-4,
    "bad_time": 2e-4,
    "duplicates": 5e-4,
}
MIN_FAULT_ROWS = 2
UNPARSEABLE_TEXTS = np.array(["hemolyzed", "see comment", "clotted", "QNS"])
EPOCH_START = np.datetime64("2021-01-04", "m")
TABLE_NAMES = ("patients", "measurements", "events", "treatments")


# ------------------------------------------------------------------------------------------------
# Latent model
# ------------------------------------------------------------------------------------------------


def _ordinal_probs(any_: float, ge3: float, ge2_share: float, ge4_of_ge3: float, g5_of_ge3: float) -> np.ndarray:
    """P(grade >= k) for k = 1..5."""
    ge2 = ge3 + ge2_share * (any_ - ge3)
    return np.array([any_, ge2, ge3, ge4_of_ge3 * ge3, g5_of_ge3 * ge3])


def _draw_latents(arm: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Risk factors and noise terms; shared by the cohort and the calibration reference sample."""
    n = arm.size
    z_burden = rng.standard_normal(n)
    z_infl = RHO_BURDEN_INFL * z_burden + np.sqrt(1 - RHO_BURDEN_INFL**2) * rng.standard_normal(n)
    dose_rel = np.round(np.clip(np.exp(DOSE_LOG_SD * rng.standard_normal(n)), 0.5, 1.6), 2)
    cum = np.cumsum(np.array([a.ld_probs for a in ARMS]), axis=1)[arm]
    ld = (rng.random(n)[:, None] > cum[:, :2]).sum(axis=1)
    return {
        "z_burden": z_burden,
        "z_infl": z_infl,
        "dose_rel": dose_rel,
        "ld": ld,
        "drive": SD_DRIVE * rng.standard_normal(n),
        "e_s": SD_SEVERITY_NOISE * rng.standard_normal(n),
        "e_u": rng.standard_normal(n),
        "z_icans": rng.standard_normal(n),
        "z_t": rng.standard_normal(n),
        "fever_lag_hours": FEVER_LAG_MEDIAN_HOURS * np.exp(0.5 * rng.standard_normal(n)),
    }


def _risk_score(lat: dict[str, np.ndarray]) -> np.ndarray:
    """X·beta: the part of the severity liability carried by observable risk factors."""
    return (
        B_BURDEN * lat["z_burden"]
        + B_INFL * lat["z_infl"]
        + B_LOG_DOSE * np.log(lat["dose_rel"])
        + B_LD[lat["ld"]]
    )


def _amplitude(visible: np.ndarray, e_u: np.ndarray, cut_ge3: np.ndarray | float, sd: np.ndarray | float) -> np.ndarray:
    """Marker amplitude: distance of the marker-visible liability from the arm's grade-3 cut.

    Anchoring on the grade >= 3 threshold (not grade 1) makes peaks comparable across products:
    a severe case looks alike whatever the product, while the many mild cases of high-incidence
    products (cilta-cel, axi-cel) show only modest rises.
    """
    return (visible - cut_ge3) / sd + AMP_AT_GE3_CUT + SD_MARKER_NOISE * e_u


@dataclass(frozen=True)
class _Calibration:
    crs_cut: np.ndarray  # (arms, 5) liability thresholds for grade >= k
    icans_cut: np.ndarray  # (arms, 5)
    s_mean: np.ndarray  # (arms,)
    s_sd: np.ndarray  # (arms,)
    log_t_mid: np.ndarray  # (arms,) mu of log IL-6 half-rise time (hours)


@functools.cache
def _calibration(n_ref: int = 200_000) -> _Calibration:
    """Per-arm thresholds and onset location from a fixed reference sample (independent of the seed)."""
    rng = np.random.default_rng(12345)
    crs_cut = np.zeros((N_ARMS, 5))
    icans_cut = np.zeros((N_ARMS, 5))
    s_mean = np.zeros(N_ARMS)
    s_sd = np.zeros(N_ARMS)
    log_t_mid = np.zeros(N_ARMS)
    for k, a in enumerate(ARMS):  # 7 arms, not patients
        arm = np.full(n_ref, k)
        lat = _draw_latents(arm, rng)
        x = _risk_score(lat)
        s = x + lat["drive"] + lat["e_s"]
        p_crs = _ordinal_probs(a.crs_any, a.crs_ge3, CRS_GE2_SHARE, CRS_GE4_OF_GE3, CRS_G5_OF_GE3)
        crs_cut[k] = np.quantile(s, 1 - p_crs)
        s_mean[k], s_sd[k] = s.mean(), s.std()
        t_liab = RHO_ICANS * (s - s_mean[k]) / s_sd[k] + np.sqrt(1 - RHO_ICANS**2) * lat["z_icans"]
        p_icans = _ordinal_probs(a.icans_any, a.icans_ge3, ICANS_GE2_SHARE, ICANS_GE4_OF_GE3, ICANS_G5_OF_GE3)
        icans_cut[k] = np.quantile(t_liab, 1 - p_icans)
        amp = _amplitude(x + lat["drive"], lat["e_u"], crs_cut[k, 2], s_sd[k])
        has_crs = s > crs_cut[k, 0]
        target_hours = (a.onset_day + ONSET_TARGET_OFFSET_DAYS) * 24
        shape = SD_T_MID * lat["z_t"] - SEVERE_EARLIER * np.clip(amp, -2, 3)
        mu = np.log(target_hours)
        for _ in range(12):  # fixed point on the median onset among patients with CRS
            onset = np.maximum(np.exp(mu + shape), MIN_T_MID_HOURS) + lat["fever_lag_hours"]
            med = np.median(onset[has_crs])
            lag = np.median(lat["fever_lag_hours"][has_crs])
            mu += np.log(max(target_hours - lag, 1.0) / max(med - lag, 1.0))
        log_t_mid[k] = mu
    return _Calibration(crs_cut, icans_cut, s_mean, s_sd, log_t_mid)


def _grade_steps(first_hours: np.ndarray, grade: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) onset hours of grade 1..5 (inf where the grade is never reached): 1 -> 2 -> 3 ..."""
    n = first_hours.size
    gaps = np.maximum(GRADE_GAP_MEDIAN_HOURS * np.exp(0.7 * rng.standard_normal((n, 4))), 1.0)
    # Death (grade 5) comes days after grade 4, not hours.
    gaps[:, 3] = 96.0 * np.exp(0.4 * rng.standard_normal(n))
    steps = first_hours[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    return np.where(np.arange(1, 6)[None, :] <= grade[:, None], steps, np.inf)


# ------------------------------------------------------------------------------------------------
# Formatting helpers (vectorised)
# ------------------------------------------------------------------------------------------------


def _iso_minutes(minutes: np.ndarray) -> pa.Array:
    """Minutes since EPOCH_START -> 'YYYY-MM-DDTHH:MM:00' via day and clock lookup tables."""
    minutes = np.asarray(minutes, dtype=np.int64)
    if minutes.size == 0:
        return pa.array([], pa.string())
    day = minutes // 1440
    lo, hi = int(day.min()), int(day.max())
    days = EPOCH_START.astype("datetime64[D]") + np.arange(lo, hi + 1)
    day_text = pa.array(np.datetime_as_string(days))
    clock_text = pa.array([f"T{h:02d}:{m:02d}:00" for h in range(24) for m in range(60)])
    return pc.binary_join_element_wise(
        pc.take(day_text, pa.array(day - lo)), pc.take(clock_text, pa.array(minutes % 1440)), ""
    )


def _num_text(values: np.ndarray) -> pa.Array:
    """Already-rounded floats as shortest decimal text ('250', '12.3')."""
    return pc.cast(pa.array(np.asarray(values, dtype=float)), pa.string())


def _round_by(values: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for d in np.unique(decimals):  # a handful of decimal settings
        m = decimals == d
        out[m] = np.round(values[m], int(d))
    return out


def _expit(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def _pulse(hours: np.ndarray, mid_hours: np.ndarray, width_hours: np.ndarray, hold_hours: np.ndarray,
           decay_hours: np.ndarray) -> np.ndarray:
    """Share of the peak log fold change: logistic rise from 0 at infusion, plateau, exponential decay.

    The rise is already under way hours before its midpoint, so a patient's early (24-48 h) values
    carry information about a severe onset that comes later.
    """
    at_zero = _expit(-mid_hours / width_hours)
    rise = np.maximum((_expit((hours - mid_hours) / width_hours) - at_zero) / (1 - at_zero), 0.0)
    return rise * np.exp(-np.maximum(hours - mid_hours - hold_hours, 0.0) / decay_hours)


def _soft_cap(values: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Smooth ceiling: ~identity well below cap, approaches cap above it (no pile-up at a bound)."""
    return values / np.sqrt(np.sqrt(1.0 + (values / cap) ** 4))


# ------------------------------------------------------------------------------------------------
# The simulator
# ------------------------------------------------------------------------------------------------


def _simulate_arrow(n_patients: int, seed: int, faults: bool) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    cal = _calibration()
    registry = load_registry()
    rng = np.random.default_rng(seed)
    n = n_patients

    # ---------------- patients ----------------
    weights = np.array([a.weight for a in ARMS])
    arm = rng.choice(N_ARMS, size=n, p=weights / weights.sum())
    lat = _draw_latents(arm, rng)
    disease = np.array([a.disease for a in ARMS])[arm]
    is_lbcl, is_all, is_mcl = disease == "LBCL", disease == "B-ALL", disease == "MCL"
    z_age = rng.standard_normal(n)
    age = np.select(
        [is_lbcl, is_mcl, is_all],
        [np.clip(60 + 11 * z_age, 19, 86), np.clip(65 + 8 * z_age, 38, 84),
         3 + 20 * rng.beta(1.6, 2.2, n)],
        np.clip(61 + 9 * z_age, 35, 82),
    ).astype(int)
    sex = np.where(rng.random(n) < np.where(is_all, 0.57, 0.63), "M", "F")
    site = rng.choice(SITES.size, size=n, p=SITE_WEIGHTS)
    anchor_day = rng.integers(0, 3 * 365, n)
    anchor_clock_min = rng.integers(9 * 60, 16 * 60, n)  # infusions happen late morning / afternoon
    anchor_min = anchor_day * 1440 + anchor_clock_min
    zb = lat["z_burden"]
    # Disease-appropriate burden measure; tumor_burden_std is its z-score against the disease reference.
    burden = np.select(
        [is_lbcl, is_mcl, is_all],
        [np.exp(np.log(35.0) + 1.0 * zb), np.exp(np.log(25.0) + 1.0 * zb), 100 * _expit(1.0 + 1.8 * zb)],
        100 * _expit(-0.6 + 1.3 * zb),
    )
    burden_unit = np.where(is_all, "% marrow blasts", np.where(disease == "MM", "% marrow plasma cells", "SPD cm2"))

    # ---------------- outcomes ----------------
    x = _risk_score(lat)
    s = x + lat["drive"] + lat["e_s"]
    crs_grade = (s[:, None] > cal.crs_cut[arm]).sum(axis=1)
    s_std = (s - cal.s_mean[arm]) / cal.s_sd[arm]
    icans_liab = RHO_ICANS * s_std + np.sqrt(1 - RHO_ICANS**2) * lat["z_icans"]
    icans_grade = (icans_liab[:, None] > cal.icans_cut[arm]).sum(axis=1)
    icans_grade = np.where((crs_grade == 5) & (icans_grade == 5), 4, icans_grade)  # one death cause
    # Marker amplitude: what the cytokines see (risk factors + expansion, not e_S) plus marker noise.
    amp = _amplitude(x + lat["drive"], lat["e_u"], cal.crs_cut[arm, 2], cal.s_sd[arm])
    t_mid = np.maximum(
        np.exp(cal.log_t_mid[arm] + SD_T_MID * lat["z_t"] - SEVERE_EARLIER * np.clip(amp, -2, 3)),
        MIN_T_MID_HOURS,
    )
    crs_first = t_mid + lat["fever_lag_hours"]
    crs_steps = _grade_steps(crs_first, crs_grade, rng)
    icans_first = crs_first + ICANS_AFTER_CRS_MEDIAN_HOURS * np.exp(0.5 * rng.standard_normal(n))
    icans_steps = _grade_steps(icans_first, icans_grade, rng)
    death_hours = np.minimum(crs_steps[:, 4], icans_steps[:, 4])
    # Nothing happens after death.
    crs_steps = np.where(crs_steps > death_hours[:, None], np.inf, crs_steps)
    icans_steps = np.where(icans_steps > death_hours[:, None], np.inf, icans_steps)
    crs_grade = np.isfinite(crs_steps).sum(axis=1)
    icans_grade = np.isfinite(icans_steps).sum(axis=1)

    # ---------------- treatments ----------------
    u = rng.random((n, 8))
    toci1 = crs_steps[:, 1] + 0.5 + 3.5 * u[:, 0]  # tocilizumab at grade 2 CRS
    toci2 = np.maximum(crs_steps[:, 2] + 0.5 + 1.5 * u[:, 1], toci1 + 8.0)  # repeat at grade 3 (>= 8 h)
    dex_crs = crs_steps[:, 2] + 0.5 + 2.0 * u[:, 2]  # dexamethasone for grade >= 3 CRS
    dex_icans = icans_steps[:, 1] + 0.5 + 3.0 * u[:, 3]  # dexamethasone for grade >= 2 ICANS
    dex_start = np.minimum(dex_crs, dex_icans)
    # A 4-dose course, extended to 8 doses only once a grade >= 3 onset has happened by that dose: the
    # decision at each dose uses only the past (a course length set from the eventual grade would leak
    # the outcome into `steroids__*` features before onset).
    severe_onset = np.minimum(crs_steps[:, 2], icans_steps[:, 2])
    mp_start = np.minimum(icans_steps[:, 3], crs_steps[:, 3]) + 1.0 + 2.0 * u[:, 4]  # methylpred at grade 4
    steroid_hours = np.minimum(dex_start, mp_start)
    dose_times = np.concatenate(
        [toci1[:, None], toci2[:, None], dex_start[:, None] + 6.0 * np.arange(8)[None, :],
         mp_start[:, None] + 24.0 * np.arange(3)[None, :]], axis=1
    )
    drug_idx = np.array([0, 0] + [1] * 8 + [2] * 3)
    give = np.isfinite(dose_times) & (dose_times < death_hours[:, None])
    dex_times = dose_times[:, 2:10]
    give[:, 2:10] &= (np.arange(8)[None, :] < 4) | (severe_onset[:, None] <= dex_times)
    tp, tj = np.nonzero(give)
    treat_minutes = anchor_min[tp] + np.round(dose_times[tp, tj] * 60).astype(np.int64)
    t_order = np.lexsort((treat_minutes, tp))
    tp, tj, treat_minutes = tp[t_order], tj[t_order], treat_minutes[t_order]
    drugs = np.array(["tocilizumab", "dexamethasone", "methylprednisolone"])
    doses = np.array([8.0, 10.0, 1000.0])
    dose_units = np.array(["mg/kg", "mg", "mg"])
    toci_hours = np.where(crs_grade >= 2, toci1, np.inf)

    # ---------------- sampling schedule (never looks at outcomes) ----------------
    # Routine labs: one morning draw per scheduled day, some days and some tests skipped.
    n_rd = ROUTINE_DAYS.size
    day_keep = rng.random((n, n_rd)) < np.where(ROUTINE_DAYS == 0, 0.97, 0.87)[None, :]
    clock = 5.0 + 3.5 * rng.random((n, n_rd))
    late = rng.random((n, n_rd)) < 0.08  # an occasional afternoon draw
    clock = np.where(late, 12.0 + 8.0 * rng.random((n, n_rd)), clock)
    anchor_clock_h = anchor_clock_min / 60.0
    # Day 0 draw is before infusion so it can serve as baseline.
    clock[:, ROUTINE_DAYS == 0] = anchor_clock_h[:, None] - 1.0 - 2.5 * rng.random((n, 1))
    routine_hours = ROUTINE_DAYS[None, :] * 24.0 + clock - anchor_clock_h[:, None]
    panel_keep = rng.random((n, n_rd, len(ROUTINE_PANEL))) < ROUTINE_KEEP[None, None, :]
    rp, rd, ra = np.nonzero(day_keep[:, :, None] & panel_keep)
    r_hours = routine_hours[rp, rd]
    r_an = np.array([A_IDX[c] for c in ROUTINE_PANEL])[ra]
    # Outpatient temperature at routine visits outside the ward stay.
    outpatient = ~np.isin(ROUTINE_DAYS, INPATIENT_DAYS)
    op, od = np.nonzero(day_keep & outpatient[None, :] & (rng.random((n, n_rd)) < 0.8))
    # Research cytokine panel on fixed days at irregular clock times.
    n_cd = CYTOKINE_DAYS.size
    c_keep = rng.random((n, n_cd)) < np.where(CYTOKINE_DAYS == 0, 0.95, 0.90)[None, :]
    c_clock = 8.0 + 9.0 * rng.random((n, n_cd))
    c_clock[:, CYTOKINE_DAYS == 0] = anchor_clock_h[:, None] - 0.25 - 2.25 * rng.random((n, 1))
    c_hours_m = CYTOKINE_DAYS[None, :] * 24.0 + c_clock - anchor_clock_h[:, None]
    c_assay = rng.random((n, n_cd, len(CYTOKINE_PANEL))) < 0.97
    cp, cd, ca = np.nonzero(c_keep[:, :, None] & c_assay)
    # Ward vitals: up to six temperatures a day while inpatient.
    n_vd, n_vs = INPATIENT_DAYS.size, VITALS_CLOCK_HOURS.size
    v_keep = rng.random((n, n_vd, n_vs)) < 0.8
    v_jitter = np.clip(0.5 * rng.standard_normal((n, n_vd, n_vs)), -1.5, 1.5)
    vp, vd, vs = np.nonzero(v_keep)
    v_hours = (INPATIENT_DAYS[vd] * 24.0 + VITALS_CLOCK_HOURS[vs] + v_jitter[vp, vd, vs] - anchor_clock_h[vp])

    temp_idx = A_IDX["TEMP"]
    pid = np.concatenate([rp, op, cp, vp]).astype(np.int64)
    hours = np.concatenate([r_hours, routine_hours[op, od], c_hours_m[cp, cd], v_hours])
    an = np.concatenate(
        [r_an, np.full(op.size, temp_idx), np.array([A_IDX[c] for c in CYTOKINE_PANEL])[ca],
         np.full(vp.size, temp_idx)]
    ).astype(np.int64)
    rel_min = np.round(hours * 60).astype(np.int64)
    alive = rel_min < np.where(np.isfinite(death_hours), death_hours * 60, np.inf)[pid]
    pid, rel_min, an = pid[alive], rel_min[alive], an[alive]
    hours = rel_min / 60.0
    n_rows = pid.size

    # ---------------- biomarker values ----------------
    lf = np.clip(
        _col("lf_base")[None, :] + _col("lf_slope")[None, :] * (amp[:, None] + 0.3 * rng.standard_normal((n, N_AN))),
        _col("lf_lo")[None, :], _col("lf_hi")[None, :],
    )
    log_base = (
        np.log(_col("median"))[None, :]
        + _col("infl")[None, :] * lat["z_infl"][:, None]
        + _col("burden")[None, :] * zb[:, None]
        + _col("sd")[None, :] * rng.standard_normal((n, N_AN))
    )
    pulse = _pulse(hours, t_mid[pid] + _col("delay_hours")[an], _col("width_hours")[an],
                   _col("hold_hours")[an], _col("decay_hours")[an])
    # Treatments: steroids damp the inflammatory excess; tocilizumab lowers CRP and raises serum IL-6
    # (the blocked receptor no longer clears it, so IL-6 stops falling and climbs for a day or two).
    since_ster = hours - steroid_hours[pid]
    damp = np.where(_col("inflammatory")[an].astype(bool) & (since_ster > 0), np.exp(-np.maximum(since_ster, 0) / 96), 1.0)
    since_toci = hours - toci_hours[pid]
    st = np.maximum(since_toci, 0)
    crp_after = (an == A_IDX["CRP"]) & (since_toci > 0)
    # CRP already induced keeps coming for about 18 h, then falls with a ~1.5-day time constant.
    damp[crp_after] *= np.exp(-np.maximum(st[crp_after] - 18.0, 0.0) / 36.0)
    il6_after = np.flatnonzero((an == A_IDX["IL6"]) & (since_toci > 0))
    il6_boost = np.zeros(n_rows)
    if il6_after.size:
        tp_il6 = pid[il6_after]
        held = _pulse(toci_hours[tp_il6], t_mid[tp_il6], *(np.full(il6_after.size, _col(f)[A_IDX["IL6"]])
                                                           for f in ("width_hours", "hold_hours", "decay_hours")))
        pulse[il6_after] = np.maximum(pulse[il6_after], held * np.exp(-st[il6_after] / 120))
        il6_boost[il6_after] = 1.0 * (1 - np.exp(-st[il6_after] / 6)) * np.exp(-st[il6_after] / 120)
    # Lymphodepletion (days -5..-3): counts fall over the first days after infusion (nadir ~day 3-10)
    # and recover from about day 16.
    days = hours / 24.0
    recovery_day = 16.0 + 4.0 * rng.standard_normal(n)
    ld_curve = _expit((days - 1.0) / 1.2) * (1 - 0.9 / (1 + np.exp(-(days - recovery_day[pid]) / 3)))
    ld_scale = np.array([1.0, 0.7, 0.15])[lat["ld"]]
    log_v = (
        log_base[pid, an]
        + lf[pid, an] * pulse * damp
        + il6_boost
        + _col("ld")[an] * ld_scale[pid] * ld_curve
        + _col("noise")[an] * rng.standard_normal(n_rows)
    )
    value = _soft_cap(np.exp(log_v), _col("cap")[an])
    # Temperature: fever from CRS onset until it resolves or tocilizumab is given.
    is_temp = an == temp_idx
    fever_end = np.minimum(crs_first + 60.0 * np.exp(0.5 * rng.standard_normal(n)) * (1 + 0.3 * crs_grade),
                           toci_hours + 3.0)
    in_fever = (crs_grade[pid] >= 1) & (hours >= crs_first[pid]) & (hours < fever_end[pid])
    z_temp = rng.standard_normal(n_rows)
    il6_pulse_temp = pulse  # TEMP rows carry the IL-6 timing (same delay and width)
    t_base = 36.7 + 0.15 * rng.standard_normal(n)
    afebrile = np.minimum(t_base[pid] + 0.25 * z_temp + 0.5 * il6_pulse_temp * np.clip(amp[pid], 0, 2), 37.9)
    febrile = 38.05 + 0.3 * np.clip(amp[pid], 0, 3) + 0.45 * np.abs(z_temp)
    antipyretic = rng.random(n_rows) < 0.12
    febrile = np.where(antipyretic, 37.3 + 0.5 * rng.random(n_rows), febrile)
    value = np.where(is_temp, np.clip(np.where(in_fever, febrile, afebrile), 35.0, 41.5), value)

    # ---------------- reporting: units, rounding, censoring, names ----------------
    unit_names: list[str] = [registry.canonical_unit(c) for c in CODES]
    unit_idx = an.copy()
    decimals = _col("decimals")[an].astype(int)
    lloq = _col("lloq")[an]
    uloq = _col("uloq")[an]
    row_site = site[pid]
    for code, (site_i, unit, factor, dec) in UNIT_FAULTS.items():
        m = (an == A_IDX[code]) & (row_site == site_i)
        unit_names.append(unit)
        unit_idx[m] = len(unit_names) - 1
        value[m] *= factor
        lloq[m] *= factor
        decimals[m] = dec
    value = _round_by(value, decimals)
    lloq = _round_by(lloq, decimals + 1)
    cens = np.where((lloq > 0) & (value < lloq), 1, np.where((uloq > 0) & (value > uloq), 2, 0))
    value = np.where(cens == 1, lloq, np.where(cens == 2, uloq, value))
    name_list: list[str] = list(CODES)
    name_idx = an.copy()
    for site_i, mapping in NAME_DIALECTS.items():
        for code, written in mapping.items():
            name_list.append(written)
            name_idx[(an == A_IDX[code]) & (row_site == site_i)] = len(name_list) - 1

    # ---------------- quarantine faults (measurements only, one per row) ----------------
    fault_counts = {k: 0 for k in ("unparseable_value", "missing_value", "out_of_range", "unknown_patient", "bad_time")}
    n_dup = 0
    value_override = np.full(n_rows, -1, dtype=np.int64)  # index into override texts
    override_texts: list[str | None] = []
    time_override = np.full(n_rows, -1, dtype=np.int64)
    time_texts: list[str] = []
    accepted = np.ones(n_rows, dtype=bool)
    extra_src = np.zeros(0, dtype=np.int64)  # rows copied as exact duplicates
    unk_src = np.zeros(0, dtype=np.int64)  # rows copied under unknown patient ids
    unk_pid = np.zeros(0, dtype=np.int64)
    if faults:
        fault_rng = np.random.default_rng([seed, 1])  # separate stream: faults never shift the clean data
        order = fault_rng.permutation(n_rows)
        want = {k: max(MIN_FAULT_ROWS, int(round(f * n_rows))) for k, f in FAULT_FRACTIONS.items()}
        cursor = 0

        def take(k: int, ok: np.ndarray | None = None) -> np.ndarray:
            # Disjoint picks from a single permutation so each faulty row carries exactly one fault.
            nonlocal cursor
            pool = order[cursor:]
            if ok is not None:
                sel = np.flatnonzero(ok[pool])[:k]
                picked = pool[sel]
                used = np.zeros(pool.size, dtype=bool)
                used[sel] = True
                order[cursor:] = np.concatenate([pool[used], pool[~used]])
            else:
                picked = pool[:k]
            cursor += picked.size
            return picked

        rows = take(want["unparseable_value"])
        value_override[rows] = len(override_texts) + np.arange(rows.size)
        override_texts += UNPARSEABLE_TEXTS[fault_rng.integers(0, UNPARSEABLE_TEXTS.size, rows.size)].tolist()
        fault_counts["unparseable_value"] = rows.size
        accepted[rows] = False

        rows = take(want["missing_value"])
        value_override[rows] = len(override_texts)
        override_texts.append(None)
        fault_counts["missing_value"] = rows.size
        accepted[rows] = False

        # Negative values, or a Fahrenheit reading typed into a Celsius field: outside plausible range.
        rows = take(want["out_of_range"], (cens == 0) & (value > 0))
        bad_vals = np.where(an[rows] == temp_idx, np.round(value[rows] * 1.8 + 32, 1), -value[rows])
        texts = _num_text(bad_vals).to_pylist()
        value_override[rows] = len(override_texts) + np.arange(rows.size)
        override_texts += texts
        fault_counts["out_of_range"] = rows.size
        accepted[rows] = False

        # Malformed timestamps, at most one per patient (so two can never be exact duplicates).
        rows = take(want["bad_time"] * 2)
        _, first = np.unique(pid[rows], return_index=True)
        rows = rows[np.sort(first)][: want["bad_time"]]
        abs_min = anchor_min[pid[rows]] + rel_min[rows]
        stamp = (EPOCH_START + abs_min.astype("timedelta64[m]")).astype(object)
        styles = np.arange(rows.size) % 3
        texts = [
            t.strftime("%d/%m/%Y %H:%M") if k == 0 else (f"{t.year}-13-45T25:61:00" if k == 1 else "not recorded")
            for t, k in zip(stamp, styles, strict=True)
        ]
        time_override[rows] = len(time_texts) + np.arange(rows.size)
        time_texts += texts
        fault_counts["bad_time"] = rows.size
        accepted[rows] = False

        extra_src = np.sort(take(want["duplicates"]))
        n_dup = extra_src.size

        # Rows for patients missing from patients.csv: copies of a few patients' rows under new ids.
        n_src = max(1, n // 400)
        src_patients = fault_rng.choice(n, size=min(n_src, n), replace=False)
        cand = np.isin(pid, src_patients) & (fault_rng.random(n_rows) < 0.05)
        cand[order[:cursor]] = False
        unk_src = np.flatnonzero(cand)
        if unk_src.size == 0:
            unk_src = np.flatnonzero(np.isin(pid, src_patients))[:1]
        unk_pid = n + np.searchsorted(np.sort(src_patients), pid[unk_src])
        fault_counts["unknown_patient"] = unk_src.size

    width = max(5, len(str(n + 1001 + n // 400)))
    id_numbers = np.concatenate([np.arange(1, n + 1), 1000 + n + np.arange(1, max(1, n // 400) + 1)])
    patient_ids = pa.array(np.char.add("P", np.char.zfill(id_numbers.astype(str), width)))

    # Assemble measurement rows: clean rows + exact copies + unknown-patient copies, then sort.
    src = np.concatenate([np.arange(n_rows), extra_src, unk_src])
    row_pid = np.concatenate([pid, pid[extra_src], unk_pid])
    row_abs = anchor_min[pid[src]] + rel_min[src]
    key = row_pid * (1 << 42) + (row_abs - row_abs.min()) * 32 + an[src]
    final = src[np.argsort(key, kind="stable")]
    final_pid = row_pid[np.argsort(key, kind="stable")]
    del key

    sign = pa.array(["", "<", ">"])
    v_text = pc.binary_join_element_wise(pc.take(sign, pa.array(cens[final])), _num_text(value[final]), "")
    vo = value_override[final]
    if (vo >= 0).any():
        v_text = pc.replace_with_mask(v_text, pa.array(vo >= 0), pa.array([override_texts[i] for i in vo[vo >= 0]], pa.string()))
    t_text = _iso_minutes(anchor_min[pid[final]] + rel_min[final])
    to = time_override[final]
    if (to >= 0).any():
        t_text = pc.replace_with_mask(t_text, pa.array(to >= 0), pa.array([time_texts[i] for i in to[to >= 0]]))
    measurements = pa.table({
        "patient_id": pc.take(patient_ids, pa.array(final_pid)),
        "time": t_text,
        "analyte": pc.take(pa.array(name_list), pa.array(name_idx[final])),
        "value": v_text,
        "unit": pc.take(pa.array(unit_names), pa.array(unit_idx[final])),
    })

    # ---------------- events ----------------
    ev_steps = np.concatenate([crs_steps, icans_steps, death_hours[:, None]], axis=1)  # (n, 11)
    ev_name = np.array(["CRS"] * 5 + ["ICANS"] * 5 + ["DEATH"])
    ev_grade = np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 5])
    ep, ej = np.nonzero(np.isfinite(ev_steps))
    ev_min = anchor_min[ep] + np.round(ev_steps[ep, ej] * 60).astype(np.int64)
    e_order = np.lexsort((ej, ev_min, ep))
    ep, ej, ev_min = ep[e_order], ej[e_order], ev_min[e_order]
    events = pa.table({
        "patient_id": pc.take(patient_ids, pa.array(ep)),
        "event": pa.array(ev_name[ej]),
        "grade": pa.array(ev_grade[ej]),
        "time": _iso_minutes(ev_min),
    })
    treatments = pa.table({
        "patient_id": pc.take(patient_ids, pa.array(tp)),
        "time": _iso_minutes(treat_minutes),
        "drug": pa.array(drugs[drug_idx[tj]]),
        "dose": _num_text(doses[drug_idx[tj]]),
        "unit": pa.array(dose_units[drug_idx[tj]]),
    })
    products = np.array([a.product for a in ARMS])
    patients = pa.table({
        "patient_id": pc.take(patient_ids, pa.array(np.arange(n))),
        "anchor_time": _iso_minutes(anchor_min),
        "age": pa.array(age),
        "sex": pa.array(sex),
        "site": pa.array(SITES[site]),
        "product": pa.array(products[arm]),
        "costim": pa.array(np.array([a.costim for a in ARMS])[arm]),
        "disease": pa.array(disease),
        "tumor_burden": _num_text(np.round(burden, 1)),
        "tumor_burden_unit": pa.array(burden_unit),
        "tumor_burden_std": _num_text(np.round(zb, 3)),
        "lymphodepletion": pa.array(LD_NAMES[lat["ld"]]),
        "dose_rel": _num_text(lat["dose_rel"]),
    })

    # ---------------- truth ----------------
    acc_an, acc_unit, acc_name = an[accepted], unit_idx[accepted], name_idx[accepted]
    conversions: dict[str, int] = {}
    for u in range(N_AN, len(unit_names)):  # only the written non-canonical units
        c = int((acc_unit == u).sum())
        code = [k for k, v in UNIT_FAULTS.items() if v[1] == unit_names[u]][0]
        if c:
            conversions[f"{code}: {unit_names[u]} -> {registry.canonical_unit(code)}"] = c
    synonyms: dict[str, int] = {}
    found: dict[str, int] = {}
    name_counts = np.bincount(acc_name, minlength=len(name_list))
    for j in range(N_AN, len(name_list)):
        if name_counts[j]:
            key_text = f"{name_list[j]} -> {CODES[an[name_idx == j][0]]}"
            synonyms[key_text] = synonyms.get(key_text, 0) + int(name_counts[j])
    an_counts = np.bincount(acc_an, minlength=N_AN)
    for j, code in enumerate(CODES):
        if an_counts[j]:
            found[code] = int(an_counts[j])
    quarantined = sum(fault_counts.values())
    rows_written = {"patients": patients.num_rows, "measurements": measurements.num_rows,
                    "events": events.num_rows, "treatments": treatments.num_rows}
    files = {
        name: {"rows_read": rows, "rows_accepted": rows, "rows_quarantined": 0, "duplicates_dropped": 0,
               "quarantine_by_reason": {}}
        for name, rows in rows_written.items()
    }
    files["measurements"] = {
        "rows_read": measurements.num_rows,
        "rows_accepted": int(accepted.sum()),
        "rows_quarantined": quarantined,
        "duplicates_dropped": n_dup,
        "quarantine_by_reason": {k: v for k, v in sorted(fault_counts.items()) if v > 0},
    }
    truth: dict[str, Any] = {
        "n_patients": n,
        "seed": seed,
        "faults_enabled": bool(faults),
        "tables": {name: {"rows_written": rows} for name, rows in rows_written.items()},
        "expected_ingest": {
            "rows_read": sum(rows_written.values()),
            "rows_accepted": sum(f["rows_accepted"] for f in files.values()),
            "rows_quarantined": quarantined,
            "duplicates_dropped": n_dup,
            "quarantine_by_reason": {k: v for k, v in sorted(fault_counts.items()) if v > 0},
            "files": files,
            "patients": n,
            "analytes_found": dict(sorted(found.items())),
            "unknown_analytes": {},
            "unit_conversions": dict(sorted(conversions.items())),
            "synonyms_mapped": dict(sorted(synonyms.items())),
        },
        "incidence": _incidence(arm, crs_grade, icans_grade, crs_first),
    }
    return {"patients": patients, "measurements": measurements, "events": events, "treatments": treatments}, truth


def _incidence(arm: np.ndarray, crs_grade: np.ndarray, icans_grade: np.ndarray, crs_first_hours: np.ndarray) -> dict:
    """Simulated incidence per arm beside the published figure it is calibrated to."""
    out: dict[str, Any] = {}
    for k, a in enumerate(ARMS):
        m = arm == k
        if not m.any():
            continue
        onset = crs_first_hours[m & (crs_grade >= 1)] / 24
        out[a.key] = {
            "product": a.product,
            "disease": a.disease,
            "n": int(m.sum()),
            "crs_any": round(float((crs_grade[m] >= 1).mean()), 4),
            "crs_ge3": round(float((crs_grade[m] >= 3).mean()), 4),
            "icans_any": round(float((icans_grade[m] >= 1).mean()), 4),
            "icans_ge3": round(float((icans_grade[m] >= 3).mean()), 4),
            "median_crs_onset_day": round(float(np.median(onset)), 2) if onset.size else None,
            "published": {"trial": a.trial, "crs_any": a.crs_any, "crs_ge3": a.crs_ge3, "icans_any": a.icans_any,
                          "icans_ge3": a.icans_ge3, "median_crs_onset_day": a.onset_day},
        }
    return out


def simulate_cohort(n_patients: int, seed: int, faults: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Simulate a cohort: (table name -> DataFrame of the text written to CSV, truth dict). Pure."""
    tables, truth = _simulate_arrow(n_patients, seed, faults)
    return {name: table.to_pandas() for name, table in tables.items()}, truth


def write_cohort(tables: dict[str, pa.Table], truth: dict[str, Any], out: str | Path) -> None:
    """Write the four CSVs and truth.json atomically (a failed run leaves no partial directory)."""
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    with atomic_dir(out) as tmp:
        for name in TABLE_NAMES:
            table = tables[name]
            with pa.OSFile(str(tmp / f"{name}.csv"), "wb") as sink:
                sink.write((",".join(table.column_names) + "\n").encode())
                pcsv.write_csv(table, sink, options)
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


def main(config: Any, out: str | Path = Path("data/raw/synthetic"), n_patients: int | None = None,
         seed: int | None = None) -> dict[str, Any]:
    """``crs simulate``: write the cohort for ``config.simulate`` (CLI overrides win); returns truth."""
    sim = config.simulate
    n = sim.n_patients if n_patients is None else n_patients
    s = sim.seed if seed is None else seed
    start = _time.perf_counter()
    tables, truth = _simulate_arrow(n, s, sim.faults)
    write_cohort(tables, truth, out)
    rows = truth["tables"]["measurements"]["rows_written"]
    print(f"simulate: {n} patients, {rows} measurement rows -> {out} ({_time.perf_counter() - start:.1f} s)")
    return truth
