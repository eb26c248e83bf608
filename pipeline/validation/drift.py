"""Drift between the training cohort and a new cohort, from a small stored summary (no patient rows).

:func:`feature_summary` condenses the TRAINING cohort into a JSON-able dict stored with the model: per
model feature its decile bins (numeric) or category shares (categorical) and missing fraction, per
analyte its median value, the share of patients with any value and its sampling density. No patient
id and no row is kept; quantile statistics (bin edges, medians) are withheld when fewer than
:data:`MIN_PATIENTS_FOR_QUANTILES` patients contribute, so a small cohort cannot leak single values.

:func:`drift_report` compares a NEW cohort with that summary: per feature the population stability
index and a chi-square goodness-of-fit test; per analyte missingness shift, unit-shift suspicion (the
median off by a known unit factor of the registry) and sampling-density shift. Everything is group-bys
and array maths; the only Python loops run over features and analytes, never over patients.

Conventions (as everywhere after ingest): ``landmarks`` has ``patient_id``, ``landmark_hours`` and one
column per feature; ``measurements`` is long, with ``patient_id``, ``hours_since_anchor``, ``analyte``
(canonical code), ``value`` (canonical unit) and optionally ``censoring`` (0 none, 1 left, 2 right).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.contracts import HOURS_SINCE_ANCHOR, LANDMARK_HOURS, PATIENT_ID
from pipeline.registry import load_registry, normalize_unit
from pipeline.validation.summary_stats import (
    bin_counts,
    group_medians,
    lookup_codes,
    order_statistics,
    string_codes,
)

SIGNIFICANT_DIGITS = 6
#: Quantile bins of a numeric feature: deciles (9 inner edges; the outer bins are open-ended).
N_QUANTILE_BINS = 10
#: The inner decile levels 0.1 .. 0.9 (as ``np.quantile`` receives them).
DECILE_LEVELS = np.arange(1, N_QUANTILE_BINS) / N_QUANTILE_BINS
#: Below this many contributing patients, bin edges and medians are not stored (small-cell rule).
MIN_PATIENTS_FOR_QUANTILES = 10
#: Floor for an empty bin's share in PSI and in the chi-square expectation (avoids log(0), division by 0).
PSI_EPSILON = 1e-4
# Usual PSI conventions (Siddiqi, "Credit Risk Scorecards", 2006; Yurdakul, "Statistical properties of
# the population stability index", 2018): < 0.1 no significant shift, 0.1-0.25 moderate, >= 0.25 major.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
#: A median ratio within 25 % (log scale) of a unit factor is a unit-shift suspicion.
UNIT_TOLERANCE_LOG10 = math.log10(1.25)
#: Missingness shift flagged at this absolute change in the share of patients with any value.
MISSINGNESS_SHIFT = 0.2
#: Sampling-density shift flagged when new / training measurements per patient-day is beyond x or 1/x.
DENSITY_RATIO = 1.5
#: Measurements are counted from 7 days before the anchor up to the last landmark.
WINDOW_START_HOURS = -7 * 24.0
MISSING_BIN = "(missing)"
UNSEEN_CATEGORY = "(not seen in training)"


def _round(x: object) -> float | None:
    """``x`` to 6 significant digits as a plain float; None for None, NaN and infinities (JSON-able)."""
    if x is None:
        return None
    value = float(x)  # type: ignore[arg-type]
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _is_categorical(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.CategoricalDtype) or series.dtype == object or pd.api.types.is_string_dtype(
        series.dtype)


def _numeric(series: pd.Series) -> np.ndarray:
    """Float values with non-finite entries as NaN (missing)."""
    numbers = series if series.dtype == np.float64 else pd.to_numeric(series, errors="coerce")
    values = numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def _finite_or_numeric(series: pd.Series) -> np.ndarray:
    """A float64 column's values as they are (read, not copied: :func:`_numeric_summary` takes only the
    finite ones); any other column through :func:`_numeric`."""
    if series.dtype == np.float64:
        return series.to_numpy()
    return _numeric(series)


def _bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts of non-missing ``values`` in (-inf, e1], (e1, e2], ..., (ek, inf)."""
    present = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges, dtype=float), present, side="left"),
                       minlength=len(edges) + 1).astype(float)


def _enough_patients(present: np.ndarray, patient_codes: np.ndarray, most_rows: int) -> bool:
    """At least :data:`MIN_PATIENTS_FOR_QUANTILES` patients have a value. No patient has more than
    ``most_rows`` rows, so that many times as many present rows settle it without counting patients."""
    n_present = int(np.count_nonzero(present))
    if n_present >= MIN_PATIENTS_FOR_QUANTILES * most_rows:
        return True
    return n_present > 0 and int(np.count_nonzero(np.bincount(patient_codes[present]))) >= MIN_PATIENTS_FOR_QUANTILES


def _numeric_summary(values: np.ndarray, patient_codes: np.ndarray, most_rows: int | None = None) -> dict:
    """Decile bins, missing fraction and median of one numeric feature; ``patient_codes`` are 0..P-1 and
    ``most_rows`` bounds the rows of one patient (counted from the codes when not given).

    One sort of the non-missing values gives the deciles, the median and the bin counts
    (:mod:`pipeline.validation.summary_stats`; equal to ``np.quantile``, ``np.median`` and a binary search).
    """
    if most_rows is None:
        most_rows = int(np.bincount(patient_codes).max()) if len(patient_codes) else 0
    present = np.isfinite(values)  # = ~isnan after _numeric; an infinity in a raw column is missing too
    kept = values[present]
    edges: list[float] = []
    median = None
    part, kth = kept, np.empty(0, dtype=np.intp)
    if _enough_patients(present, patient_codes, most_rows):
        quantiles, middle, part, kth = order_statistics(kept, DECILE_LEVELS)
        edges = sorted({_round(q) for q in quantiles})  # rounded first, so stored edges and shares agree
        median = _round(middle)
    counts = bin_counts(part, kth, edges)
    return {
        "kind": "numeric",
        "edges": edges,
        "bin_shares": [_round(c / counts.sum()) for c in counts] if counts.sum() else [],
        "missing_fraction": _round(1 - present.mean()) if len(values) else None,
        "median": median,
    }


def _categorical_summary(series: pd.Series) -> dict:
    values = series.astype(object)
    missing = values.isna()
    shares = values[~missing].astype(str).value_counts(normalize=True)
    return {
        "kind": "categorical",
        "categories": {str(k): _round(v) for k, v in shares.items()},
        "missing_fraction": _round(missing.mean()) if len(values) else None,
    }


def _censored(values: pd.Series) -> np.ndarray:
    """True for a censored result, written either as ingest's words (``left`` / ``right``: what
    ``crs validate`` passes) or as the 1 / 2 codes (what featurize passes, converted once with Arrow)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.fillna(0).to_numpy() != 0
    text = values.astype("string").str.strip().str.lower()
    return (text.isin(["left", "right"]) | (pd.to_numeric(values, errors="coerce").fillna(0) != 0)).to_numpy()


def _censored_rows(values: pd.Series) -> np.ndarray:
    """:func:`_censored` per row; a text column is judged once per distinct word, not once per row."""
    if not isinstance(values.dtype, pd.StringDtype):
        return _censored(values)
    codes, words = string_codes(values)
    flags = _censored(pd.Series(words, dtype=values.dtype))
    return np.append(flags, False)[codes]  # code -1 (missing) -> not censored


def _per_analyte_counts(patient: np.ndarray, analyte: np.ndarray, valid: np.ndarray, censored: np.ndarray | None,
                        shape: tuple[int, int], counted: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per analyte code: contributing patients, measurements, censored measurements (None without a
    censoring column), over the ``valid`` rows. ``counted`` marks the patients that count as patients (a
    missing id contributes rows but no patient, as in ``nunique``). One bincount over (patient, analyte)
    cells: memory 8 bytes per cell."""
    n_patients, n_analytes = shape
    key = patient.astype(np.intp)
    key *= n_analytes
    key += analyte
    key[~valid] = n_patients * n_analytes
    cells = np.bincount(key, minlength=n_patients * n_analytes + 1)[:-1].reshape(n_patients, n_analytes)
    n_measurements = cells.sum(axis=0)
    with_value = np.count_nonzero(cells[counted], axis=0).astype(np.int64)
    n_censored = None if censored is None else np.bincount(analyte[valid & censored], minlength=n_analytes)
    return with_value, n_measurements, n_censored


def _float_column(series: pd.Series) -> np.ndarray:
    """Float values (unparseable -> NaN); a float64 column is read in place, not copied."""
    if series.dtype == np.float64:  # pd.to_numeric would return the same values, copied
        return series.to_numpy()
    return pd.to_numeric(series, errors="coerce").astype(float).to_numpy(dtype=float, na_value=np.nan)


def _analyte_stats(measurements: pd.DataFrame, patients: np.ndarray, window_hours: tuple[float, float]
                   ) -> tuple[pd.DataFrame, float | None]:
    """Per analyte (index, sorted): median value, share of ``patients`` with a value, measurements per
    patient-day, censored fraction, contributing patients; plus the overall measurements per patient-day.

    Only finite values of ``patients`` inside ``window_hours`` count; the median pools all such values.
    Text columns are encoded to integer codes once; the statistics are bincounts over the codes (equal to
    the pandas group-by they replace, see ``tests/pipeline/test_validation_summary_stats.py``).
    """
    lo, hi = window_hours
    patient = lookup_codes(measurements[PATIENT_ID], patients)
    hours = _float_column(measurements[HOURS_SINCE_ANCHOR].astype(float))
    value = _float_column(measurements["value"])
    keep = (patient >= 0) & (hours >= lo) & (hours <= hi) & np.isfinite(value)
    analyte, names = string_codes(measurements["analyte"])
    valid = keep & (analyte >= 0)  # a row without analyte counts overall, in no group
    censored = _censored_rows(measurements["censoring"]) if "censoring" in measurements else None
    counted = pd.notna(np.asarray(patients, dtype=object)) if len(patients) else np.zeros(0, dtype=bool)
    n_patients, n_measurements, n_censored = _per_analyte_counts(
        patient, analyte, valid, censored, (len(patients), len(names)), counted)
    medians = group_medians(value, np.where(valid, analyte, -1), n_measurements,
                            n_patients >= MIN_PATIENTS_FOR_QUANTILES)
    patient_days = len(patients) * (hi - lo) / 24.0
    has = n_measurements > 0  # a group-by only has the analytes that have rows
    out = pd.DataFrame({"n_patients": n_patients[has], "median_value": medians[has],
                        "n_measurements": n_measurements[has]},
                       index=pd.Index(np.asarray(names, dtype=object)[has], dtype="str", name="analyte"))
    out["share_with_value"] = out["n_patients"] / len(patients) if len(patients) else np.nan
    out["per_patient_day"] = out["n_measurements"] / patient_days if patient_days > 0 else np.nan
    out["censored_fraction"] = n_censored[has] / out["n_measurements"] if n_censored is not None else np.nan
    overall = int(np.count_nonzero(keep)) / patient_days if patient_days > 0 else None
    return out.sort_index(), overall


@dataclass(frozen=True)
class MeasurementStats:
    """:func:`_analyte_stats` of ``measurements`` for ``patients`` (sorted ids) in ``window_hours``: what
    :func:`feature_summary` stores about the measurements, computable before the landmark table exists."""

    patients: np.ndarray
    window_hours: tuple[float, float]
    per_analyte: pd.DataFrame
    per_patient_day: float | None


def measurement_stats(measurements: pd.DataFrame, patients: np.ndarray, last_landmark_hours: float) -> MeasurementStats:
    """The measurement statistics of :func:`feature_summary` for a landmark table whose patients are
    ``patients`` (in the table's order) and whose last landmark is ``last_landmark_hours``."""
    window = (WINDOW_START_HOURS, float(last_landmark_hours))
    return MeasurementStats(patients, window, *_analyte_stats(measurements, patients, window))


#: Threads computing the features' decile summaries.
SUMMARY_THREADS = 2


def feature_summary(landmarks: pd.DataFrame, feature_columns: list[str], measurements: pd.DataFrame,
                    stats: MeasurementStats | None = None) -> dict:
    """JSON-able summary of a TRAINING cohort, stored with the model (no patient rows, no single values).

    Returns ``{"n_patients", "n_rows", "landmarks_hours": [h, ...], "window_hours": [-168.0, last
    landmark], "features": {name: numeric | categorical}, "analytes": {code: {"median_value",
    "share_with_value", "per_patient_day", "censored_fraction"}}, "per_patient_day"}`` where numeric is
    ``{"kind": "numeric", "edges": [9 inner decile edges at most, deduplicated], "bin_shares": [share of
    the non-missing rows in (-inf, e1], ..., (ek, inf)], "missing_fraction", "median"}`` and categorical is
    ``{"kind": "categorical", "categories": {value: share of non-missing rows}, "missing_fraction"}``.
    Numbers have 6 significant digits; edges and medians are None / empty below
    :data:`MIN_PATIENTS_FOR_QUANTILES` contributing patients. Measurement statistics use the window from
    7 days before the anchor to the last landmark (hours); ``stats``, when computed ahead for the same
    patients and window, are used instead of computing them again (else they are recomputed).
    """
    ids = landmarks[PATIENT_ID].astype(str).to_numpy()
    codes, patients = pd.factorize(ids)
    most_rows = int(np.bincount(codes[codes >= 0]).max()) if (codes >= 0).any() else 0  # rows of one patient
    hours = landmarks[LANDMARK_HOURS]
    distinct = hours if hours.isna().any() else pd.unique(hours)  # the same set, without a float per row
    landmarks_hours = sorted({float(h) for h in distinct})
    window = (WINDOW_START_HOURS, float(landmarks[LANDMARK_HOURS].max()))

    def summary(name: str) -> dict:
        column = landmarks[name]
        return _categorical_summary(column) if _is_categorical(column) else _numeric_summary(
            _finite_or_numeric(column), codes, most_rows)

    # Each feature's summary is independent: threads compute them at once (numpy releases the GIL in
    # the sorts; the same numbers in any order).
    with ThreadPoolExecutor(max_workers=SUMMARY_THREADS) as pool:
        features = dict(zip(feature_columns, pool.map(summary, feature_columns), strict=True))
    if stats is None or stats.window_hours != window or not np.array_equal(stats.patients, patients):
        stats = measurement_stats(measurements, patients, window[1])
    per_analyte, overall = stats.per_analyte, stats.per_patient_day
    analytes = {
        str(code): {key: _round(row[key]) for key in
                    ("median_value", "share_with_value", "per_patient_day", "censored_fraction")}
        for code, row in per_analyte.iterrows()
    }
    return {
        "n_patients": int(len(patients)),
        "n_rows": int(len(landmarks)),
        "landmarks_hours": [_round(h) for h in landmarks_hours],
        "window_hours": [_round(window[0]), _round(window[1])],
        "features": features,
        "analytes": analytes,
        "per_patient_day": _round(overall),
    }


# ----------------------------------------------------------------------------- feature drift


def psi(expected_shares: np.ndarray, observed_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum((q - p) ln(q / p)), p the training shares and q the new cohort's
    shares per bin; shares below ``epsilon`` (empty bins) are raised to ``epsilon``. NaN without rows."""
    counts = np.asarray(observed_counts, dtype=float)
    if counts.sum() <= 0:
        return math.nan
    p = np.maximum(np.asarray(expected_shares, dtype=float), epsilon)
    q = np.maximum(counts / counts.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def chi_square_test(expected_shares: np.ndarray, observed_counts: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square goodness of fit of counts against training shares: the statistic and p-value
    of ``scipy.stats.chisquare`` (computed here directly, with ``scipy.stats.chi2.sf``: the wrapper's
    overhead dominated for hundreds of features).

    Bins empty in both are dropped; training shares are floored at :data:`PSI_EPSILON` and renormalised
    (a bin the training cohort never filled gives a huge statistic, not a division by zero). Returns
    (statistic, p-value, degrees of freedom); NaNs when fewer than two bins or no counts remain.
    """
    p = np.asarray(expected_shares, dtype=float)
    counts = np.asarray(observed_counts, dtype=float)
    keep = (p > 0) | (counts > 0)
    if keep.sum() < 2 or counts.sum() <= 0:
        return math.nan, math.nan, 0
    shares = np.maximum(p[keep], PSI_EPSILON)
    expected = shares / shares.sum() * counts[keep].sum()
    statistic = float(np.sum((counts[keep] - expected) ** 2 / expected))
    dof = int(keep.sum() - 1)
    return statistic, float(stats.chi2.sf(statistic, dof)), dof


def _numeric_bins(stored: dict, series: pd.Series | None, n_rows: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    edges = list(stored["edges"])
    labels = ([f"<= {edges[0]:g}"] if edges else ["all values"]) + [
        f"({a:g}, {b:g}]" for a, b in zip(edges[:-1], edges[1:], strict=True)] + ([f"> {edges[-1]:g}"] if edges else [])
    values = _numeric(series) if series is not None else np.full(n_rows, np.nan)
    counts = np.append(_bin_counts(values, edges), np.isnan(values).sum())
    return labels, np.asarray(stored["bin_shares"] or [1.0], dtype=float), counts


def _categorical_bins(stored: dict, series: pd.Series | None, n_rows: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    categories = list(stored["categories"])
    values = series.astype(object) if series is not None else pd.Series([None] * n_rows, dtype=object)
    missing = values.isna()
    present = values[~missing].astype(str)
    seen = present.value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    counts = np.concatenate([seen, [(~present.isin(categories)).sum(), missing.sum()]])
    shares = np.append(np.asarray(list(stored["categories"].values()), dtype=float), 0.0)
    return [*categories, UNSEEN_CATEGORY], shares, counts


def _psi_level(value: float) -> str:
    if not np.isfinite(value):
        return "unknown"
    return "major" if value >= PSI_MAJOR else "moderate" if value >= PSI_MODERATE else "none"


def _feature_drift(name: str, stored: dict, series: pd.Series | None, n_rows: int, n_patients: int) -> dict:
    """PSI and chi-square test of one feature; bins are the stored ones plus a missing bin."""
    bins = _categorical_bins if stored["kind"] == "categorical" else _numeric_bins
    labels, present_shares, counts = bins(stored, series, n_rows)
    missing = float(stored["missing_fraction"] or 0.0)
    expected = np.append(present_shares * (1 - missing), missing)
    value = psi(expected, counts)
    # Rows of one patient (several landmarks) are not independent: counts are scaled to the number of
    # patients, which makes the test conservative.
    scale = n_patients / n_rows if n_rows else 0.0
    statistic, p_value, dof = chi_square_test(expected, counts * scale)
    shares_new = counts / counts.sum() if counts.sum() else np.full(len(counts), np.nan)
    return {
        "feature": name, "kind": stored["kind"], "absent": series is None,
        "psi": _round(value), "level": _psi_level(value),
        "chi2": _round(statistic), "p_value": _round(p_value), "dof": dof,
        "missing_fraction_training": _round(missing), "missing_fraction_new": _round(shares_new[-1]),
        "bins": [{"bin": label, "share_training": _round(e), "share_new": _round(q)}
                 for label, e, q in zip([*labels, MISSING_BIN], expected, shares_new, strict=True)],
    }


def _feature_message(item: dict) -> str:
    if item["absent"]:
        return f"Feature {item['feature']} is absent from the new cohort (scored as missing)."
    p = item["p_value"]
    test = "n/a" if p is None else "< 0.001" if p < 0.001 else f"= {p:.3g}"
    unseen = sum(b["share_new"] or 0.0 for b in item["bins"] if b["bin"] == UNSEEN_CATEGORY)
    unseen_text = f"; {_pct(unseen)} of values not seen in training" if unseen > 0 else ""
    return (f"Feature {item['feature']}: {item['level']} shift, PSI {item['psi']:.2f} "
            f"(chi-square p {test}; missing {_pct(item['missing_fraction_training'])} in training, "
            f"{_pct(item['missing_fraction_new'])} now{unseen_text}).")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


# ----------------------------------------------------------------------------- analyte drift


def unit_factors_from_registry() -> dict[str, list[float]]:
    """Analyte code -> the distinct scale factors (other than 1) of its purely multiplicative unit
    conversions in ``pipeline/registry/units.csv`` (rows with an offset are left out)."""
    factors: dict[str, set[float]] = {}
    for (code, _unit), (scale, offset) in load_registry().conversions.items():
        if offset == 0 and scale > 0 and not math.isclose(scale, 1.0):
            factors.setdefault(code, set()).add(float(scale))
    return {code: sorted(values) for code, values in sorted(factors.items())}


@functools.cache
def _unit_spellings() -> dict[str, str]:
    """Normalised unit -> the spelling written in the registry tables (``mg/dl`` -> ``mg/dL``)."""
    registry = load_registry()
    with resources.files("pipeline.registry").joinpath("units.csv").open("r", encoding="utf-8") as handle:
        written = pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")["unit"].tolist()
    written += registry.analytes["canonical_unit"].tolist()
    return {normalize_unit(unit): unit for unit in written}


def _units_with_scale(code: str, scale: float) -> list[str]:
    spell = _unit_spellings()
    return sorted({spell.get(unit, unit) for (c, unit), (s, offset) in load_registry().conversions.items()
                   if c == code and offset == 0 and math.isclose(s, scale, rel_tol=1e-6)})


def _canonical_unit(code: str) -> str | None:
    registry = load_registry()
    return registry.canonical_unit(code) if code in registry.analytes.index else None


def _close_log10(a: float, b: float) -> bool:
    return abs(math.log10(a) - math.log10(b)) < UNIT_TOLERANCE_LOG10


def _unit_explanations(code: str, ratio: float, factors: list[float]) -> list[str]:
    """Why values could be ``ratio`` times the training ones: a unit of scale s (canonical = value x s)
    read as canonical gives ratio 1/s; canonical values labelled with that unit give ratio s."""
    canonical = _canonical_unit(code)
    out = []
    for scale in factors:
        units = " or ".join(_units_with_scale(code, scale))
        if not (canonical and units):
            continue
        if _close_log10(ratio, 1 / scale):
            out.append(f"reported in {units} but labelled {canonical}")
        if _close_log10(ratio, scale):
            out.append(f"reported in {canonical} but labelled {units}")
    return out


def _unit_shift(code: str, median_training: float, median_new: float, factors: list[float]) -> dict:
    ratio = median_new / median_training
    candidates = [f for s in factors for f in (s, 1 / s)]
    matches = [f for f in candidates if _close_log10(ratio, f)]
    suspected = bool(matches) and not _close_log10(ratio, 1.0)  # a ratio near 1 is never suspicious
    item = {"analyte": code, "ratio_new_to_training": _round(ratio), "suspected": suspected,
            "factor": None, "message": None}
    if suspected:
        factor = min(matches, key=lambda f: abs(math.log10(ratio / f)))
        times = max(factor, 1 / factor)
        size = f"{times:.0f}x" if times >= 10 else f"{times:.2g}x"
        size += " lower" if factor < 1 else " higher"
        why = _unit_explanations(code, ratio, factors)
        reason = " or ".join(why) + "?" if why else "a unit mix-up?"
        item.update(factor=_round(factor), message=f"{code} values about {size} than in training: {reason}")
    return item


def _unit_shifts(training: pd.DataFrame, new: pd.DataFrame, unit_factors: dict[str, list[float]]) -> list[dict]:
    """Per analyte with a median in both cohorts: ratio of medians and whether it matches a unit factor."""
    both = training[["median_value"]].join(new[["median_value"]], rsuffix="_new", how="inner")
    both = both[(both["median_value"] > 0) & (both["median_value_new"] > 0)]
    items = [_unit_shift(str(code), row["median_value"], row["median_value_new"], unit_factors.get(str(code), []))
             for code, row in both.iterrows()]
    return sorted(items, key=lambda d: (not d["suspected"], -abs(math.log10(d["ratio_new_to_training"] or 1.0))))


def _missingness_shifts(training: pd.DataFrame, new: pd.DataFrame) -> list[dict]:
    share_new = new["share_with_value"].reindex(training.index).fillna(0.0)
    difference = share_new - training["share_with_value"]
    flagged = (difference.abs() >= MISSINGNESS_SHIFT) | ((training["share_with_value"] > 0) & (share_new == 0))
    order = difference.abs().sort_values(ascending=False, kind="stable").index
    return [{"analyte": str(code), "share_training": _round(training.at[code, "share_with_value"]),
             "share_new": _round(share_new[code]), "difference": _round(difference[code]),
             "flagged": bool(flagged[code])}
            for code in sorted(order, key=lambda c: not flagged[c])]


def _density_item(training: float | None, new: float | None) -> dict:
    ratio = new / training if training and new is not None else None
    flagged = bool(ratio) and bool(ratio >= DENSITY_RATIO or ratio <= 1 / DENSITY_RATIO)
    return {"per_patient_day_training": _round(training), "per_patient_day_new": _round(new),
            "ratio": _round(ratio), "flagged": flagged}


def _density_shifts(training: pd.DataFrame, new: pd.DataFrame, overall_training: float | None,
                    overall_new: float | None) -> dict:
    """Measurements per patient-day, training vs new, per analyte measured in both and overall."""
    both = training[["per_patient_day"]].join(new[["per_patient_day"]], rsuffix="_new", how="inner")
    items = [{"analyte": str(code), **_density_item(row["per_patient_day"], row["per_patient_day_new"])}
             for code, row in both.iterrows()]
    items.sort(key=lambda d: (not d["flagged"], -abs(math.log(d["ratio"])) if d["ratio"] else 0.0))
    return {"overall": _density_item(overall_training, overall_new), "analytes": items}


# ----------------------------------------------------------------------------- report


def _training_analytes(summary: dict) -> pd.DataFrame:
    columns = ["median_value", "share_with_value", "per_patient_day"]
    frame = pd.DataFrame.from_dict(summary["analytes"], orient="index", columns=columns, dtype=float)
    return frame.reindex(columns=columns).astype(float)


def _messages(report: dict, window_hours: list[float]) -> list[str]:
    """One line per flagged item, most actionable first: unit shifts, major then moderate feature shifts,
    missingness, sampling density."""
    lines = [u["message"] for u in report["unit_shifts"] if u["suspected"]]
    for level in ("major", "moderate"):
        lines += [_feature_message(f) for f in report["features"] if f["level"] == level]
    lines += [f"{m['analyte']} measured in {_pct(m['share_new'])} of patients "
              f"({_pct(m['share_training'])} in training)." for m in report["missingness"] if m["flagged"]]
    density = report["sampling_density"]
    window = f"between {window_hours[0]:g} h and {window_hours[1]:g} h"
    if density["overall"]["flagged"]:
        o = density["overall"]
        lines.append(f"Sampling density {o['ratio']:.2g}x training overall ({o['per_patient_day_new']:.3g} vs "
                     f"{o['per_patient_day_training']:.3g} measurements per patient-day {window}).")
    lines += [f"{d['analyte']} sampled {d['ratio']:.2g}x as often as in training ({d['per_patient_day_new']:.3g} "
              f"vs {d['per_patient_day_training']:.3g} per patient-day)." for d in density["analytes"] if d["flagged"]]
    return lines


def drift_report(summary: dict, landmarks: pd.DataFrame, measurements: pd.DataFrame,
                 unit_factors: dict[str, list[float]]) -> dict:
    """Drift of a NEW cohort against the training ``summary`` of :func:`feature_summary`.

    Feature rows are restricted to the training landmarks when the cohorts share any. Per feature:
    PSI over the stored bins plus a missing bin (categorical: stored categories, an unseen-category bin
    and a missing bin), and a chi-square goodness-of-fit test (:func:`chi_square_test`, as ``scipy.stats.chisquare``) of the new
    bin counts, scaled to one row per patient, against the training shares. Per analyte (the same window
    as in training): missingness shift, unit-shift suspicion (``unit_factors``, see
    :func:`unit_factors_from_registry`), sampling-density shift. Returns::

        {"n_patients", "n_rows", "thresholds": {...},
         "features": [{"feature", "kind", "absent", "psi", "level": "major|moderate|none|unknown", "chi2",
                       "p_value", "dof", "missing_fraction_training", "missing_fraction_new",
                       "bins": [{"bin", "share_training", "share_new"}]}],          # PSI, largest first
         "unit_shifts": [{"analyte", "ratio_new_to_training", "suspected", "factor", "message"}],
         "missingness": [{"analyte", "share_training", "share_new", "difference", "flagged"}],
         "sampling_density": {"overall": {"per_patient_day_training", "per_patient_day_new", "ratio",
                                          "flagged"}, "analytes": [{"analyte", ...same keys}]},
         "summary": ["one line per flagged item"]}

    Lists hold flagged items first, then by size of the shift. No patient id or value is echoed.
    """
    trained = set(summary["landmarks_hours"])
    rows = landmarks[landmarks[LANDMARK_HOURS].astype(float).isin(trained)]
    rows = rows if len(rows) else landmarks
    patients = pd.unique(landmarks[PATIENT_ID].astype(str))
    n_patients = int(rows[PATIENT_ID].astype(str).nunique())
    features = [_feature_drift(name, stored, rows[name] if name in rows else None, len(rows), n_patients)
                for name, stored in summary["features"].items()]
    features.sort(key=lambda f: -f["psi"] if f["psi"] is not None else math.inf)
    window = summary["window_hours"]
    training = _training_analytes(summary)
    new, overall_new = _analyte_stats(measurements, patients, (float(window[0]), float(window[1])))
    report = {
        "n_patients": int(len(patients)), "n_rows": int(len(rows)),
        "thresholds": {"psi_moderate": PSI_MODERATE, "psi_major": PSI_MAJOR,
                       "unit_tolerance_ratio": 1.25, "missingness_shift": MISSINGNESS_SHIFT,
                       "density_ratio": DENSITY_RATIO, "window_hours": window},
        "features": features,
        "unit_shifts": _unit_shifts(training, new, unit_factors),
        "missingness": _missingness_shifts(training, new),
        "sampling_density": _density_shifts(training, new, summary.get("per_patient_day"), overall_new),
    }
    report["summary"] = _messages(report, window)
    return report
