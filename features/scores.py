"""Published clinical scores (EASIX, m-EASIX, CAR-HEMATOTOX) as vectorised array functions.

Every argument is an array (or scalar) in the pipeline's **canonical unit** (registry
``analytes.csv``): LDH U/L, creatinine mg/dL, platelets 10^9/L, CRP **mg/L**, ANC 10^9/L,
haemoglobin g/dL, ferritin ng/mL. A missing input (NaN) gives a missing score; a score is never
computed from a partial set of inputs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike

#: m-EASIX and CAR-HEMATOTOX are published with CRP in mg/dL; the pipeline stores mg/L.
CRP_MG_PER_L_PER_MG_PER_DL = 10.0


def safe_ratio(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    """``numerator / denominator`` where the denominator is finite and > 0, else NaN.

    Why: a zero or negative denominator (platelets 0, baseline 0) has no meaningful ratio; NaN lets
    the model treat it as missing instead of learning from +-inf.
    """
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    ok = np.isfinite(den) & (den > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def safe_log2(values: ArrayLike) -> np.ndarray:
    """log2 of values > 0; NaN for non-positive or missing values (never -inf)."""
    arr = np.asarray(values, dtype=np.float64)
    ok = arr > 0
    return np.where(ok, np.log2(np.where(ok, arr, 1.0)), np.nan)


def easix(ldh_u_per_l: ArrayLike, creatinine_mg_per_dl: ArrayLike, platelets_1e9_per_l: ArrayLike) -> np.ndarray:
    """EASIX = LDH (U/L) x creatinine (mg/dL) / platelets (10^9/L); NaN when platelets <= 0."""
    ldh = np.asarray(ldh_u_per_l, dtype=np.float64)
    creat = np.asarray(creatinine_mg_per_dl, dtype=np.float64)
    return safe_ratio(ldh * creat, platelets_1e9_per_l)


def m_easix(ldh_u_per_l: ArrayLike, crp_mg_per_l: ArrayLike, platelets_1e9_per_l: ArrayLike) -> np.ndarray:
    """m-EASIX = LDH (U/L) x CRP (**mg/dL**) / platelets (10^9/L) (Pennisi et al. 2021).

    Takes CRP in the pipeline's canonical mg/L and divides by 10 so the score matches the paper.
    """
    ldh = np.asarray(ldh_u_per_l, dtype=np.float64)
    crp_mg_per_dl = np.asarray(crp_mg_per_l, dtype=np.float64) / CRP_MG_PER_L_PER_MG_PER_DL
    return safe_ratio(ldh * crp_mg_per_dl, platelets_1e9_per_l)


def car_hematotox(
    platelets_1e9_per_l: ArrayLike,
    anc_1e9_per_l: ArrayLike,
    haemoglobin_g_per_dl: ArrayLike,
    crp_mg_per_l: ArrayLike,
    ferritin_ng_per_ml: ArrayLike,
) -> np.ndarray:
    """CAR-HEMATOTOX points, 0-7 (Rejeski et al. 2021); NaN unless all five inputs are present.

    Platelets > 175 -> 0, 75-175 -> 1, < 75 -> 2; ANC <= 1.2 -> 1; haemoglobin <= 9.0 g/dL -> 1;
    CRP >= 3.0 mg/dL (= 30 mg/L) -> 1; ferritin < 650 -> 0, 650-2000 -> 1, > 2000 ng/mL -> 2.
    Interval ends are inclusive on the middle band (platelets 75 and 175 score 1; ferritin 650 and
    2000 score 1). High risk is >= 2.
    """
    plt_ = np.asarray(platelets_1e9_per_l, dtype=np.float64)
    anc = np.asarray(anc_1e9_per_l, dtype=np.float64)
    hgb = np.asarray(haemoglobin_g_per_dl, dtype=np.float64)
    crp_mg_per_dl = np.asarray(crp_mg_per_l, dtype=np.float64) / CRP_MG_PER_L_PER_MG_PER_DL
    ferritin = np.asarray(ferritin_ng_per_ml, dtype=np.float64)
    points = (
        np.where(plt_ < 75.0, 2.0, np.where(plt_ <= 175.0, 1.0, 0.0))
        + (anc <= 1.2)
        + (hgb <= 9.0)
        + (crp_mg_per_dl >= 3.0)
        + np.where(ferritin > 2000.0, 2.0, np.where(ferritin >= 650.0, 1.0, 0.0))
    )
    complete = ~(np.isnan(plt_) | np.isnan(anc) | np.isnan(hgb) | np.isnan(crp_mg_per_dl) | np.isnan(ferritin))
    return np.where(complete, points, np.nan)


def doubling_time_hours(log2_slope_per_hour: ArrayLike) -> np.ndarray:
    """Hours for the value to double at a log2 slope: ``1 / slope`` when slope > 0, else NaN.

    Why NaN for a flat or falling marker: it never doubles, and +inf would be an outlier to most
    models; the slope feature itself still carries the direction and size of the change.
    (Equivalent to ``ln 2 / k`` for a natural-log slope ``k``.)
    """
    slope = np.asarray(log2_slope_per_hour, dtype=np.float64)
    ok = slope > 0
    return np.where(ok, 1.0 / np.where(ok, slope, 1.0), np.nan)


def hay_2017_flag(
    max_temp_celsius: ArrayLike, max_mcp1_pg_per_ml: ArrayLike, fever_celsius: float, mcp1_pg_per_ml: float
) -> np.ndarray:
    """Hay et al. 2017 rule from the maxima over its early window: 1 when fever >= ``fever_celsius`` and
    MCP-1 >= ``mcp1_pg_per_ml`` were both seen, 0 otherwise, NaN when neither marker was measured.

    Partial data: a patient with only one of the two markers measured scores 0 (the rule needs both
    criteria met; an unmeasured criterion is not met), not NaN; only a patient with neither is unknown.
    """
    temp = np.asarray(max_temp_celsius, dtype=np.float64)
    mcp1 = np.asarray(max_mcp1_pg_per_ml, dtype=np.float64)
    met = (temp >= fever_celsius) & (mcp1 >= mcp1_pg_per_ml)  # NaN compares False
    return np.where(np.isnan(temp) & np.isnan(mcp1), np.nan, met.astype(np.float64))
