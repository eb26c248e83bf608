"""Plain-language wording of model features and SHAP drivers for clinicians.

Pure functions (no I/O). A feature name such as ``il6__fold_change`` maps back to its analyte,
summary and unit through ``features.feature_table``; here those become readable phrases such as
"IL-6 74 pg/mL, 12x baseline (6.1 pg/mL), rising 3x per day: pushes the estimate up".

Drivers are reported per *clinical group* (one analyte, one score, fever, one treatment class or one
covariate): the SHAP values of all features of a group are summed. Sums of SHAP values are exact
(additivity), so ``base + sum(groups) == margin`` still holds, and the clinician reads "IL-6" once
rather than five correlated IL-6 features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from features.definitions import analyte_feature_name
from pipeline.contracts import ANALYTE_SEPARATOR, LANDMARK_HOURS

#: Display names for canonical analyte codes and derived-feature prefixes.
DISPLAY_NAMES: dict[str, str] = {
    "IL6": "IL-6",
    "IFNG": "IFN-γ",
    "CRP": "CRP",
    "FERRITIN": "Ferritin",
    "IL10": "IL-10",
    "IL8": "IL-8",
    "IL2": "IL-2",
    "IL2R": "sIL-2R",
    "IL1B": "IL-1β",
    "IL1RA": "IL-1RA",
    "TNFA": "TNF-α",
    "MCP1": "MCP-1",
    "MIP1A": "MIP-1α",
    "MIP1B": "MIP-1β",
    "IP10": "IP-10",
    "GMCSF": "GM-CSF",
    "SGP130": "sgp130",
    "IL15": "IL-15",
    "IL18": "IL-18",
    "LDH": "LDH",
    "PLT": "Platelets",
    "CREAT": "Creatinine",
    "ANC": "Neutrophils (ANC)",
    "ALC": "Lymphocytes (ALC)",
    "HGB": "Haemoglobin",
    "DDIMER": "D-dimer",
    "FIBRINOGEN": "Fibrinogen",
    "TEMP": "Temperature",
    # derived-feature groups
    "EASIX": "EASIX",
    "M_EASIX": "m-EASIX",
    "CAR_HEMATOTOX": "CAR-HEMATOTOX",
    "FEVER": "Fever",
    "TOCILIZUMAB": "Tocilizumab",
    "STEROIDS": "Corticosteroids",
    "LANDMARK": "Time since infusion",
}

#: Static covariates with a nicer label than the column name.
COVARIATE_NAMES: dict[str, str] = {
    "age": "Age",
    "product": "CAR-T product",
    "costim": "Costimulatory domain",
    "disease": "Disease",
    "tumor_burden_std": "Tumour burden",
    "tumor_burden": "Tumour burden",
    "lymphodepletion": "Lymphodepletion",
    "dose_rel": "Relative cell dose",
    "sex": "Sex",
    "site": "Site",
}

#: Markers a treatment is known to move, so a clinician reads them with care once it was given:
#: analyte -> (the "given" feature, the caveat). Serum IL-6 rises after tocilizumab (it blocks the receptor,
#: docs/clinical.md#kinetics-and-treatment-effects), whatever the course of CRS; CRP falls (its hepatic
#: synthesis is IL-6 driven), so a falling CRP after tocilizumab does not show CRS is resolving.
TREATMENT_CAVEATS: dict[str, tuple[str, str]] = {
    "IL6": ("tocilizumab__given", "after tocilizumab, which itself raises serum IL-6: read with care"),
    "CRP": ("tocilizumab__given", "after tocilizumab, which itself lowers CRP: read with care"),
}

#: Below this change per day a marker is called stable (10%).
STABLE_FOLD_PER_DAY = 1.1
RAISES, LOWERS = "pushes the estimate up", "pushes the estimate down"

# Groups that are not an analyte: derived prefix -> group key.
_DERIVED_GROUPS = {"temp": "FEVER", "fever": "FEVER", "easix": "EASIX", "m_easix": "M_EASIX",
                   "car_hematotox": "CAR_HEMATOTOX", "tocilizumab": "TOCILIZUMAB", "steroids": "STEROIDS"}


def display_name(code: str) -> str:
    """``"IL6" -> "IL-6"``; unknown codes are returned unchanged."""
    return DISPLAY_NAMES.get(code.upper(), code)


def feature_group(feature: str) -> str:
    """Clinical group of a model feature: analyte code (``IL6``), derived group or covariate name."""
    if feature == LANDMARK_HOURS:
        return "LANDMARK"
    prefix, sep, _ = feature.partition(ANALYTE_SEPARATOR)
    if not sep:
        return feature  # static covariate: its own group
    if prefix in _DERIVED_GROUPS:
        return _DERIVED_GROUPS[prefix]
    return prefix.upper()


def group_label(group: str) -> str:
    if group in COVARIATE_NAMES:
        return COVARIATE_NAMES[group]
    return DISPLAY_NAMES.get(group, group.replace("_", " "))


#: Longest text value shown as-is (a covariate cell can hold anything; pages stay readable).
MAX_TEXT_CHARS = 120


def _missing(value: object) -> bool:
    """None, NaN, NA, NaT (anything else, text included, is a value)."""
    try:
        return bool(pd.isna(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a list or array: not a cell value
        return False


def to_number(value: object) -> float | None:
    """``value`` as a float; None when missing or not a number (text in a numeric column: ``unknown``)."""
    if value is None or isinstance(value, str | bytes):  # float(pd.NA) raises, float(pd.NaT) is NaN
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(number) else number


def _text(value: object) -> str:
    """Any cell value as display text, shortened to :data:`MAX_TEXT_CHARS` (escaping is the template's job)."""
    text = str(value)
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def format_number(value: object) -> str:
    """Clinically sensible precision: 74, 39.2, 6.1, 0.42, 12,400 (no scientific notation below 10^9).

    Anything else still formats: missing -> ``–``, infinite -> ``∞``, text -> the (shortened) text.
    """
    v = to_number(value)
    if v is None:
        return "–" if _missing(value) else _text(value)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    a = abs(v)
    if a >= 1e9:
        return f"{v:.3g}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2g}"


def format_value(value: float, unit: str, censoring: str | None = None) -> str:
    """``74 pg/mL``; a censored result keeps its sign: ``<1.5 pg/mL (below assay limit)``."""
    text = format_number(value)
    if censoring == "left":
        text, note = f"<{text}", " (below assay limit)"
    elif censoring == "right":
        text, note = f">{text}", " (above assay limit)"
    else:
        note = ""
    unit = display_unit(unit)
    sep = "" if unit in ("", "%") else " "
    return f"{text}{sep}{unit}{note}"


def display_unit(unit: str) -> str:
    """Canonical unit as printed: ``10^9/L -> ×10⁹/L``, ``C -> °C``."""
    return {"C": "°C", "10^9/L": "×10⁹/L"}.get(unit, unit)


def format_fold(ratio: float) -> str:
    """Fold change vs baseline: ``12x``, ``2.5x``, ``0.4x``."""
    if not math.isfinite(ratio) or ratio >= 1e9:
        return f"{format_number(ratio)}x"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    return f"{ratio:.1f}x".replace(".0x", "x") if ratio >= 1 else f"{ratio:.2g}x"


def fold_per_day(slope_log2_per_hour: float) -> float:
    """Slope of log2(value) per hour -> multiplicative change per 24 h."""
    return float(2.0 ** (slope_log2_per_hour * 24.0))


def format_trend(slope_log2_per_hour: object) -> str | None:
    """``rising 3x per day`` / ``falling 2x per day`` / ``stable``; None when unknown."""
    slope_log2_per_hour = to_number(slope_log2_per_hour)
    if slope_log2_per_hour is None:
        return None
    try:
        fold = fold_per_day(slope_log2_per_hour)
    except OverflowError:  # 2 ** huge
        fold = math.inf
    if not math.isfinite(fold):
        return "rising very fast" if slope_log2_per_hour > 0 else "falling very fast"
    if 1 / STABLE_FOLD_PER_DAY < fold < STABLE_FOLD_PER_DAY:
        return "stable"
    if fold >= 2:
        return f"rising {format_fold(fold)} per day"
    if fold > 1:
        return f"rising {(fold - 1) * 100:.0f}% per day"
    return f"falling {(1 - fold) * 100:.0f}% per day"


def direction(shap_value: float) -> str:
    return RAISES if shap_value > 0 else LOWERS


def _hours(value: float) -> str:
    return f"{format_number(value)} h"


def describe_analyte(
    code: str, row: Mapping[str, object], unit: str, *, censoring: str | None = None, landmark_hours: float | None = None
) -> str:
    """Latest value, fold change vs baseline (with the baseline) and trend of one analyte at L.

    ``row`` maps feature names to values at the landmark. ``censoring`` is that of the latest result
    (``left``/``right``/``none``) when known.
    """
    name = display_name(code)
    latest = row.get(analyte_feature_name(code, "latest"))
    when = f" before {format_number(landmark_hours)} h" if landmark_hours is not None else ""
    if _missing(latest):
        return f"{name} not measured{when}"
    parts = [f"{name} {format_value(latest, unit, censoring)}"]
    baseline, fold = row.get(analyte_feature_name(code, "baseline")), row.get(analyte_feature_name(code, "fold_change"))
    after_anchor = row.get(analyte_feature_name(code, "baseline_after_anchor"))
    which = "first value after infusion" if to_number(after_anchor) == 1 else "baseline"
    if not _missing(baseline) and to_number(fold) is not None:
        parts.append(f"{format_fold(to_number(fold))} {which} ({format_value(baseline, unit)})")  # type: ignore[arg-type]
    elif _missing(baseline):
        parts.append("no pre-infusion baseline")
    slope = row.get(analyte_feature_name(code, "slope_24h"))
    if _missing(slope):
        slope = row.get(analyte_feature_name(code, "slope_48h"))
    trend = format_trend(slope)
    if trend:
        parts.append(trend)
    for summary, words in (("n_below_limit", "below"), ("n_above_limit", "above")):
        count = to_number(row.get(analyte_feature_name(code, summary)))
        # A censored latest result already says so; otherwise name the earlier ones.
        if count is not None and math.isfinite(count) and count > 0 and censoring not in ("left", "right"):
            k = int(count)
            parts.append(f"{k} result{'s' if k > 1 else ''} {words} the assay limit")
    caveat = TREATMENT_CAVEATS.get(code)
    if caveat and to_number(row.get(caveat[0])) == 1:
        parts.append(caveat[1])
    return ", ".join(parts)


def describe_group(
    group: str,
    row: Mapping[str, object],
    units: Mapping[str, str],
    *,
    censoring: str | None = None,
) -> str:
    """Plain words for one driver group at the landmark row ``row`` (feature name -> value)."""
    lm = to_number(row.get(LANDMARK_HOURS))
    if group == "LANDMARK":
        return f"Time since infusion {_hours(lm)}" if lm is not None else "Time since infusion"
    if group == "FEVER":
        tmax, since = row.get(analyte_feature_name("TEMP", "max")), row.get(analyte_feature_name("FEVER", "hours_since_first"))
        text = "Temperature not recorded since infusion" if _missing(tmax) else (
            f"Highest temperature since infusion {format_value(tmax, 'C')}")
        if not _missing(since):
            text += f", fever (>= 38.0 °C) for {_hours(since)}"
        elif not _missing(tmax):
            text += ", no fever yet"
        return text
    if group in ("TOCILIZUMAB", "STEROIDS"):
        name = "Tocilizumab" if group == "TOCILIZUMAB" else "Corticosteroids"
        given, since = row.get(analyte_feature_name(group, "given")), row.get(analyte_feature_name(group, "hours_since"))
        if to_number(given) in (None, 0.0):
            return f"{name} not given yet"
        return f"{name} given, last dose {_hours(since)} ago" if not _missing(since) else f"{name} given"
    if group in ("EASIX", "M_EASIX"):
        latest, base = row.get(analyte_feature_name(group, "latest")), row.get(analyte_feature_name(group, "baseline"))
        name = display_name(group)
        if _missing(latest) and _missing(base):
            return f"{name} not computable (missing LDH, platelets or {'CRP' if group == 'M_EASIX' else 'creatinine'})"
        parts = [f"{name} {format_number(latest)}" if not _missing(latest) else f"{name} latest not computable"]
        if not _missing(base):
            parts.append(f"baseline {format_number(base)}")
        return ", ".join(parts)
    if group == "CAR_HEMATOTOX":
        value = to_number(row.get(analyte_feature_name("CAR_HEMATOTOX", "baseline")))
        if value is None:
            return "CAR-HEMATOTOX not computable (a baseline blood count or CRP/ferritin missing)"
        return f"CAR-HEMATOTOX {format_number(value)} points at baseline ({'high' if value >= 2 else 'low'} risk group)"
    if group in row or group in COVARIATE_NAMES:  # a static covariate is its own column
        value = row.get(group)
        label = group_label(group)
        number = to_number(value)
        if _missing(value):
            return f"{label} not recorded"
        if number is None:  # text, also in a numeric column (age=unknown): shown as given
            return f"{label}: {_text(value)}"
        if group == "tumor_burden_std" and math.isfinite(number):
            return f"{label} {number:+.1f} SD from the training cohort mean (same disease and unit)"
        if group == "age":
            return f"{label} {format_number(number)} years"
        return f"{label} {format_number(number)}"
    # an analyte
    return describe_analyte(group, row, units.get(group, ""), censoring=censoring, landmark_hours=lm)


def driver_sentence(text: str, shap_value: float) -> str:
    """``"IL-6 74 pg/mL, 12x baseline (6.1 pg/mL), rising 3x per day: pushes the estimate up"``."""
    return f"{text}: {direction(shap_value)}"
