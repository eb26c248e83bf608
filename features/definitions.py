"""The declarative feature table: adding a feature is one line here.

* :data:`SUMMARIES` — one line per per-analyte summary. Every analyte in ``featurize.analytes`` gets
  every summary, named ``<code lower>__<summary>`` (``il6__fold_change``).
* :data:`DERIVED` — cross-marker scores and clinical features, one line each.
* :data:`TREATMENT_CLASSES` — drug names (lower case, as ingest writes them) per treatment class.

Each line holds a ``compute`` callable. It receives only objects built from data already cut at the
landmark (:class:`features.landmarks.AnalyteAtLandmark` / :class:`features.landmarks.LandmarkContext`),
so no definition here can see a row after L.

Conventions (see ``docs/features.md``): "log" is log2 everywhere, so a slope is in doublings per hour
and the doubling time is ``1 / slope``; times are real hours since the anchor (infusion).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features import scores

#: The pre-``auto`` default list (``LandmarkFeaturizer`` now defaults to ``analytes="auto"``).
DEFAULT_ANALYTES: tuple[str, ...] = ("IL6", "IFNG", "CRP", "FERRITIN", "IL10", "MCP1", "LDH", "PLT")
#: Analytes the scores and clinical features read, whatever ``featurize.analytes`` says.
DERIVED_ANALYTES: tuple[str, ...] = ("LDH", "CREAT", "PLT", "CRP", "ANC", "HGB", "FERRITIN", "TEMP")
FEVER_CELSIUS = 38.0

#: Treatment class -> drug names that count as that class (exact match after strip + lower-case).
TREATMENT_CLASSES: dict[str, tuple[str, ...]] = {
    "tocilizumab": ("tocilizumab", "actemra", "roactemra", "tocilizumab-aazg", "tofidence", "tyenne"),
    "steroids": (
        "dexamethasone",
        "methylprednisolone",
        "prednisone",
        "prednisolone",
        "hydrocortisone",
        "betamethasone",
        "solu-medrol",
        "decadron",
    ),
    "vasopressors": ("norepinephrine", "epinephrine", "phenylephrine", "dopamine", "vasopressin",
                     "noradrenaline", "adrenaline"),
}


@dataclass(frozen=True)
class Summary:
    """A per-analyte feature: ``compute(analyte_at_L) -> float array (n_patients,)``.

    ``description`` and ``unit`` may hold ``{analyte}`` and ``{unit}`` (the analyte's canonical unit).
    """

    name: str
    compute: Callable[[Any], np.ndarray]  # takes a features.landmarks.AnalyteAtLandmark
    description: str
    unit: str


@dataclass(frozen=True)
class Derived:
    """A cross-marker / clinical feature: ``compute(landmark_context) -> float array (n_patients,)``."""

    name: str
    compute: Callable[[Any], np.ndarray]  # takes a features.landmarks.LandmarkContext
    description: str
    unit: str


_NOT_NAME = re.compile(r"[^a-z0-9]+")
_ratio = scores.safe_ratio
_log2 = scores.safe_log2
_dt = scores.doubling_time_hours

# fmt: off
SUMMARIES: tuple[Summary, ...] = (
    Summary("latest", lambda a: a.latest, "most recent {analyte} after the anchor, in (0, L] h; NaN before the first post-anchor sample", "{unit}"),
    Summary("hours_since_latest", lambda a: a.hours_since_latest, "hours from the most recent post-anchor {analyte} to L", "h"),
    Summary("count", lambda a: a.count, "number of {analyte} measurements at or before L", "n"),
    Summary("first", lambda a: a.first, "first {analyte} at or before L (any time, pre-anchor included)", "{unit}"),
    Summary("baseline", lambda a: a.baseline, "last {analyte} in [-baseline window, 0] h; without one, the first in (0, min(L, fallback)] h", "{unit}"),
    Summary("has_baseline", lambda a: a.has_baseline, "1 if a baseline {analyte} exists (either kind), else 0", "0/1"),
    Summary("baseline_after_anchor", lambda a: a.baseline_after_anchor, "1 if the {analyte} baseline is the post-anchor fallback, 0 if pre-anchor, NaN if none", "0/1"),
    Summary("fold_change", lambda a: _ratio(a.latest, a.baseline), "latest / baseline {analyte}", "ratio"),
    Summary("log2_fold_change", lambda a: _log2(_ratio(a.latest, a.baseline)), "log2(latest / baseline {analyte})", "log2 ratio"),
    Summary("log2_latest_over_first", lambda a: _log2(_ratio(a.latest, a.first)), "log2(latest / first {analyte})", "log2 ratio"),
    Summary("max", lambda a: a.maximum, "maximum {analyte} at or before L", "{unit}"),
    Summary("min", lambda a: a.minimum, "minimum {analyte} at or before L (nadir of a falling marker)", "{unit}"),
    Summary("max_fold_change", lambda a: _ratio(a.maximum, a.baseline), "maximum so far / baseline {analyte}", "ratio"),
    Summary("slope_24h", lambda a: a.log2_slope(24.0), "least-squares slope of log2 {analyte} on real hours in [L-24, L]; NaN if < 2 points", "log2/h"),
    Summary("slope_48h", lambda a: a.log2_slope(48.0), "least-squares slope of log2 {analyte} on real hours in [L-48, L]; NaN if < 2 points", "log2/h"),
    Summary("doubling_time_24h", lambda a: _dt(a.log2_slope(24.0)), "hours for {analyte} to double at the 24 h slope (1/slope; NaN if slope <= 0)", "h"),
    Summary("doubling_time_48h", lambda a: _dt(a.log2_slope(48.0)), "hours for {analyte} to double at the 48 h slope (1/slope; NaN if slope <= 0)", "h"),
    Summary("auc_log2_fold_change", lambda a: a.auc_log2_fold_change, "trapezoid area of log2({analyte} / baseline) over real hours [0, L], last value held to L", "log2 ratio x h"),
    Summary("n_below_limit", lambda a: a.n_below_limit, "number of {analyte} results below the assay limit ('<x', used at x) at or before L", "n"),
    Summary("n_above_limit", lambda a: a.n_above_limit, "number of {analyte} results above the assay limit ('>x', used at x) at or before L", "n"),
)

DERIVED: tuple[Derived, ...] = (
    Derived("easix__baseline", lambda c: scores.easix(c.score_baseline("LDH"), c.score_baseline("CREAT"), c.score_baseline("PLT")), "EASIX = LDH x creatinine / platelets, baseline values (before lymphodepletion when its start is known)", "U/L x mg/dL / 10^9/L"),
    Derived("easix__latest", lambda c: scores.easix(c["LDH"].latest, c["CREAT"].latest, c["PLT"].latest), "EASIX from the latest LDH, creatinine, platelets at L", "U/L x mg/dL / 10^9/L"),
    Derived("m_easix__baseline", lambda c: scores.m_easix(c.score_baseline("LDH"), c.score_baseline("CRP"), c.score_baseline("PLT")), "m-EASIX = LDH x CRP (mg/dL) / platelets, baseline values (before lymphodepletion when its start is known)", "U/L x mg/dL / 10^9/L"),
    Derived("m_easix__latest", lambda c: scores.m_easix(c["LDH"].latest, c["CRP"].latest, c["PLT"].latest), "m-EASIX from the latest LDH, CRP (mg/dL), platelets at L", "U/L x mg/dL / 10^9/L"),
    Derived("car_hematotox__baseline", lambda c: scores.car_hematotox(*(c.score_baseline(a) for a in ("PLT", "ANC", "HGB", "CRP", "FERRITIN"))), "CAR-HEMATOTOX points from baseline PLT, ANC, HGB, CRP, ferritin, before lymphodepletion when its start is known (NaN if any missing)", "points 0-7"),
    Derived("temp__max", lambda c: c["TEMP"].max_since_anchor, "maximum body temperature in [0, L] h", "C"),
    Derived("fever__hours_since_first", lambda c: c["TEMP"].hours_since_first_at_least(FEVER_CELSIUS), "hours from the first temperature >= 38.0 C in [0, L] to L; NaN if none", "h"),
    Derived("tocilizumab__given", lambda c: c.treatment("tocilizumab").given, "1 if tocilizumab was given at or before L, else 0", "0/1"),
    Derived("tocilizumab__hours_since", lambda c: c.treatment("tocilizumab").hours_since_last, "hours from the most recent tocilizumab dose to L; NaN if none", "h"),
    Derived("steroids__given", lambda c: c.treatment("steroids").given, "1 if a corticosteroid was given at or before L, else 0", "0/1"),
    Derived("steroids__hours_since", lambda c: c.treatment("steroids").hours_since_last, "hours from the most recent corticosteroid dose to L; NaN if none", "h"),
    Derived("vasopressors__given", lambda c: c.treatment("vasopressors").given, "1 if a vasopressor (norepinephrine, epinephrine, phenylephrine, dopamine, vasopressin) was given at or before L, else 0", "0/1"),
    Derived("vasopressors__hours_since", lambda c: c.treatment("vasopressors").hours_since_last, "hours from the most recent vasopressor row to L; NaN if none", "h"),
    Derived("crs_grade__current", lambda c: c.grade("CRS").current, "CRS grade in force at L (ASTCT; from graded observations, or the highest recorded onset so far); 0 if none", "grade 0-5"),
    Derived("crs_grade__max", lambda c: c.grade("CRS").maximum, "highest CRS grade in [0, L]; 0 if none", "grade 0-5"),
    Derived("crs_grade__hours_since_onset", lambda c: c.grade("CRS").hours_since_onset, "hours from the first CRS grade >= 1 to L; NaN if none", "h"),
    Derived("icans_grade__current", lambda c: c.grade("ICANS").current, "ICANS grade in force at L (ASTCT); 0 if none", "grade 0-5"),
    Derived("icans_grade__max", lambda c: c.grade("ICANS").maximum, "highest ICANS grade in [0, L]; 0 if none", "grade 0-5"),
    Derived("icans_grade__hours_since_onset", lambda c: c.grade("ICANS").hours_since_onset, "hours from the first ICANS grade >= 1 to L; NaN if none", "h"),
    Derived("hypotension__max_grade", lambda c: c.grade("HYPOTENSION").maximum, "highest CRS hypotension grade in [0, L] graded from vitals and vasopressors (2: no vasopressor, 3: one, 4: several); NaN if the cohort has no graded observations", "grade 0-4"),
    Derived("hypoxia__max_grade", lambda c: c.grade("HYPOXIA").maximum, "highest CRS oxygen-support grade in [0, L] graded from oxygen devices and flow (2: low-flow, 3: high-flow or mask, 4: positive pressure); NaN if the cohort has no graded observations", "grade 0-4"),
    Derived("hay_2017__flag", lambda c: hay_2017_flag_at_landmark(c), "Hay 2017 rule: 1 if temperature >= 38.9 C and MCP-1 >= 1343.5 pg/mL in (0, min(L, 36)] h after infusion; 0 if not (one marker measured counts); NaN if neither measured", "0/1"),
)
# fmt: on


def analyte_summaries(code: str) -> list[tuple[str, Summary]]:
    """``(feature name, summary)`` for every summary of ``code``, except those whose name a
    :data:`DERIVED` feature already has (``temp__max`` is the post-anchor clinical feature, so TEMP's
    all-time ``max`` summary is left out rather than shadowed)."""
    derived = {d.name for d in DERIVED}
    pairs = [(analyte_feature_name(code, s.name), s) for s in SUMMARIES]
    return [(name, s) for name, s in pairs if name not in derived]


def analyte_feature_name(code: str, summary: str) -> str:
    """``("IL6", "fold_change") -> "il6__fold_change"``.

    Registry codes are upper-case letters, digits and single ``_``; in a cohort's own analyte name (kept by
    ``analytes="auto"``) every run of other characters becomes one ``_``
    (``"Troponin I (hs)"`` -> ``troponin_i_hs__latest``), so names stay valid column and XGBoost names.
    """
    return f"{feature_stem(code)}__{summary}"


def feature_stem(code: str) -> str:
    """The lower-case, ``[a-z0-9_]`` prefix of an analyte's feature names."""
    return _NOT_NAME.sub("_", code.strip().lower()).strip("_")


def feature_table(
    analytes: Sequence[str] = DEFAULT_ANALYTES,
    static_features: Sequence[str] = (),
    units: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Every model feature in output order: columns ``name, analyte, summary, description, unit``.

    ``analytes`` are canonical codes; ``units`` maps code -> canonical unit (the pipeline passes its
    analyte registry's); an analyte without one is described in "canonical unit".
    """
    units = dict(units or {})
    rows: list[dict[str, str]] = [
        {"name": "landmark_hours", "analyte": "", "summary": "landmark",
         "description": "the landmark L itself: hours after infusion the prediction is made", "unit": "h"}
    ]
    for code in analytes:
        code = code.strip().upper()
        unit = units.get(code, "") or "canonical unit"
        for name, s in analyte_summaries(code):
            rows.append({
                "name": name,
                "analyte": code,
                "summary": s.name,
                "description": s.description.format(analyte=code),
                "unit": s.unit.format(unit=unit),
            })
    for d in DERIVED:
        prefix, _, summary = d.name.partition("__")
        rows.append({"name": d.name, "analyte": prefix.upper(), "summary": summary,
                     "description": d.description, "unit": d.unit})
    for column in static_features:
        rows.append({"name": column, "analyte": "", "summary": "static",
                     "description": f"static covariate '{column}' from the patients table", "unit": ""})
    return pd.DataFrame(rows, columns=["name", "analyte", "summary", "description", "unit"])


#: Hay et al., Blood 2017 (docs/clinical.md#published-scores): fever and serum MCP-1 cut-offs within the first 36 h.
#: A published rule, so fixed constants rather than params. From the clinical notes, not re-verified
#: against the paper here (docs/training.md).
HAY_FEVER_CELSIUS = 38.9
HAY_MCP1_PG_ML = 1343.5
HAY_WINDOW_HOURS = 36.0


def _max_in_window(ctx: Any, code: str, end_hours: float) -> np.ndarray | None:
    """Per-patient maximum of ``code`` over rows with 0 < hours <= end_hours (NaN if none); None when
    the analyte was not encoded at all. Reads the cut timeline, so never a row after L. The window opens
    after the anchor: a sample at 0 h is the pre-infusion one, and the rule is about the post-infusion
    rise, so at L = 0 no patient has the rule (NaN: the baseline is reported as not computable there)."""
    series = ctx.cut.analytes.get(code)
    if series is None:
        return None
    keep = (series.hours > 0.0) & (series.hours <= end_hours) & np.isfinite(series.value)
    out = np.full(ctx.n_patients, -np.inf)
    np.maximum.at(out, series.patient[keep], series.value[keep])
    return np.where(np.isinf(out), np.nan, out)


def hay_2017_flag_at_landmark(
    ctx: Any,
    fever_celsius: float = HAY_FEVER_CELSIUS,
    mcp1_pg_ml: float = HAY_MCP1_PG_ML,
    window_hours: float = HAY_WINDOW_HOURS,
) -> np.ndarray:
    """The Hay 2017 flag at L from TEMP and MCP1 rows in (0, min(L, window_hours)] h (all NaN when either
    analyte is not in the feature set at all: the rule cannot be evaluated on this cohort)."""
    end = min(ctx.landmark_hours, window_hours)
    temp, mcp1 = _max_in_window(ctx, "TEMP", end), _max_in_window(ctx, "MCP1", end)
    if temp is None or mcp1 is None:
        return np.full(ctx.n_patients, np.nan)
    return scores.hay_2017_flag(temp, mcp1, fever_celsius, mcp1_pg_ml)
