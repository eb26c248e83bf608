"""Harmonised static covariates: what a real cohort records -> inputs comparable across cohorts.

Real cohorts carry tumour burden in their own units (SPD in cm2, marrow blasts in %, ...), the CAR-T
dose in cells or cells/kg, and the product under a generic or a brand name. A static feature named
after one of these patients-table columns becomes, in the model:

* ``tumor_burden`` -> ``tumor_burden_std``: the burden on a log (sizes, volumes) or logit (percentages)
  scale, standardised against a reference (mean, SD) per disease and unit, else per unit, fixed on the
  training cohort (:class:`CovariateReference`, stored with the model, never refitted at scoring);
* ``dose`` -> ``dose_rel``: the administered dose over the product's reference dose on the same basis
  (cells or cells/kg), read with ``dose_unit`` (``cells/kg``, ``x10^6 cells/kg``, ``10^8 cells``, ...);
* ``product`` -> ``product`` (canonical code), ``costim`` and ``target_antigen`` from the products
  table, so a brand name (Kymriah) and its generic name (tisagenlecleucel) are one product.

A value that cannot be harmonised (unit or product not recognised, no unit, no reference) becomes
missing and is reported per patient (:attr:`Harmonised.problems`): never guessed. The reference uses
covariates only, never outcomes. The tables are data (``features/tables/*.csv``: products,
product_doses, tumor_burden_units): adding a product or a unit is one row.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

#: Patients-table column -> the model covariates derived from it.
DERIVED: dict[str, tuple[str, ...]] = {
    "tumor_burden": ("tumor_burden_std",),
    "dose": ("dose_rel",),
    "product": ("product", "costim", "target_antigen"),
}
#: Companion columns read with a source column (never model features themselves).
UNIT_COLUMNS = {"tumor_burden": "tumor_burden_unit", "dose": "dose_unit"}
#: A disease-specific burden reference needs this many patients; fewer use the unit's pooled reference.
MIN_REFERENCE_PATIENTS = 10
#: Percentages are clipped to this range before the logit (0 % and 100 % are measurable).
_PERCENT_CLIP = (0.5, 99.5)
_WORD_MULTIPLIERS = {"thousand": 1e3, "million": 1e6, "billion": 1e9}
_DOSE_UNIT = re.compile(
    r"^(?:x?(?:10\^|10\*\*|10e|1e)(?P<exp>\d{1,2})|(?P<word>thousand|million|billion))?"
    r"(?P<what>(?:car\+?|car-?positive|viable|car-?t|t)*cells?)?(?P<kg>/kg)?$"
)


def model_covariates(static_features: Sequence[str]) -> list[str]:
    """The model's static columns for the configured patients-table columns (derived ones expanded)."""
    out: list[str] = []
    for column in static_features:
        out.extend(DERIVED.get(column, (column,)))
    return list(dict.fromkeys(out))


def _name_key(text: object) -> str:
    return re.sub(r"\s+", " ", str(text).strip().lower())


def _unit_key(text: object) -> str:
    return re.sub(r"\s+", "", str(text).strip().lower()).replace("×", "x").replace("·", "")


def parse_dose_unit(unit: object) -> tuple[float, bool] | None:
    """``(multiplier into cells, per kg)`` for a dose unit (``x10^6 cells/kg`` -> ``(1e6, True)``), else None."""
    match = _DOSE_UNIT.match(_unit_key(unit))
    if match is None or not (match["exp"] or match["word"] or match["what"] or match["kg"]):
        return None
    multiplier = 10.0 ** int(match["exp"]) if match["exp"] else _WORD_MULTIPLIERS.get(match["word"] or "", 1.0)
    return multiplier, bool(match["kg"])


@dataclass(frozen=True)
class CovariateTables:
    """The tables harmonisation reads (``features/tables``: products, product_doses,
    tumor_burden_units), with their lookups built once."""

    products: pd.DataFrame  # product, synonyms (|), costim, target_antigen
    doses: pd.DataFrame  # product, per_kg (true/false), reference_dose_cells
    burden_units: pd.DataFrame  # canonical_unit, synonyms (|), scale_to_canonical, transform
    product_of: dict[str, str] = field(init=False, repr=False)
    burden_unit_of: dict[str, tuple[str, float, str]] = field(init=False, repr=False)
    reference_dose: dict[tuple[str, bool], float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        product_of = {}
        for row in self.products.itertuples(index=False):
            for name in (row.product, *str(row.synonyms).split("|")):
                product_of[_name_key(name)] = row.product
        units = {}
        for row in self.burden_units.itertuples(index=False):
            for name in (row.canonical_unit, *str(row.synonyms).split("|")):
                units.setdefault(_unit_key(name), (row.canonical_unit, float(row.scale_to_canonical), row.transform))
        doses = {(row.product, str(row.per_kg).strip().lower() == "true"): float(row.reference_dose_cells)
                 for row in self.doses.itertuples(index=False)}
        object.__setattr__(self, "product_of", product_of)
        object.__setattr__(self, "burden_unit_of", units)
        object.__setattr__(self, "reference_dose", doses)

    def product_attribute(self, column: str) -> dict[str, str]:
        """Canonical product -> one attribute (``costim``, ``target_antigen``)."""
        return dict(zip(self.products["product"], self.products[column], strict=True))


@dataclass(frozen=True)
class BurdenReference:
    transform: str  # log | logit | identity
    mean: float
    sd: float
    n_patients: int


@dataclass(frozen=True)
class CovariateReference:
    """Tumour-burden references fixed on the training cohort: ``"disease|unit"`` or ``"*|unit"`` -> stats."""

    burden: dict[str, BurdenReference] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"tumor_burden": {key: vars(ref) for key, ref in sorted(self.burden.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CovariateReference:
        burden = (data or {}).get("tumor_burden", {})
        return cls({key: BurdenReference(**value) for key, value in burden.items()})


@dataclass(frozen=True)
class Harmonised:
    """The patients table with the derived columns, and per patient what could not be harmonised."""

    patients: pd.DataFrame
    #: One row per (patient_id, covariate) that is missing for a reason: ``reason`` is a short code.
    problems: pd.DataFrame


#: Up to this many rows the text cleaning below runs per cell; above, once per distinct value (same
#: results; a lookup of the distinct values costs more than it saves on one new patient's row).
FEW_ROWS = 64


def _text(values: pd.Series) -> pd.Series:
    """Trimmed text, missing (None) for empty cells."""
    if 0 < len(values) <= FEW_ROWS:  # per cell; the constructor infers the dtype the per-cell map gave
        cells = [None if _missing(v) or str(v).strip() == "" else str(v).strip() for v in values.to_numpy(dtype=object)]
        dtype = "str" if any(c is not None for c in cells) else object
        return pd.Series(cells, index=values.index, dtype=dtype, name=values.name)
    text = values.astype("object").where(values.notna(), None)
    if len(text) <= FEW_ROWS:
        return text.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())
    # Once per distinct value (a cohort has few products, units, diseases), not once per patient.
    cleaned = {v: (None if str(v).strip() == "" else str(v).strip()) for v in text.dropna().unique()}
    if not any(v is not None for v in cleaned.values()):  # all missing: the dtype the per-cell map gives
        return text.map(lambda v: None)
    return text.map(cleaned)


def _missing(value: object) -> bool:
    """What ``Series.notna`` calls missing, for one cell (None, NaN, NA, NaT)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _numbers(patients: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(patients[column], errors="coerce").to_numpy(dtype=float)


def _problems(patient_ids: pd.Series, covariate: str, reasons: np.ndarray) -> pd.DataFrame:
    has = pd.notna(reasons)
    if not has.any():
        return _NO_PROBLEMS  # left out by harmonise (only rows are kept), never written to
    return pd.DataFrame({"patient_id": patient_ids.astype(str).to_numpy()[has], "covariate": covariate,
                         "reason": reasons[has].astype(str)})


_NO_PROBLEMS = pd.DataFrame({"patient_id": [], "covariate": [], "reason": []})


def _first_reason(checks: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """Per row the first reason whose mask is true (None when none applies)."""
    reasons = np.full(len(checks[0][0]), None, dtype=object)
    for mask, reason in reversed(checks):
        reasons[np.asarray(mask, dtype=bool)] = reason
    return reasons


# --------------------------------------------------------------------------------------------------
# Tumour burden


def _burden_units(patients: pd.DataFrame, tables: CovariateTables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient: burden in its canonical unit, the canonical unit (a unit not in the table is kept as
    written; ``""`` when the cohort has no unit column), and the unit's known transform (``""``: infer)."""
    values = _numbers(patients, "tumor_burden")
    if UNIT_COLUMNS["tumor_burden"] not in patients.columns:
        blank = np.full(len(patients), "", dtype=object)
        return values, blank, blank.copy()
    text = _text(patients[UNIT_COLUMNS["tumor_burden"]])
    if len(text) <= FEW_ROWS:  # per cell, in arrays: no pandas call per attribute
        found = [None if _missing(u) else tables.burden_unit_of.get(_unit_key(u), (u, 1.0, ""))
                 for u in text.to_numpy(dtype=object)]
        unit = np.array([None if f is None else f[0] for f in found], dtype=object)
        scale = np.array([np.nan if f is None else f[1] for f in found], dtype=float)
        transform = np.array([None if f is None else f[2] for f in found], dtype=object)
        return values * scale, _none_for_missing(unit), _none_for_missing(transform)
    looked_up = {u: tables.burden_unit_of.get(_unit_key(u), (u, 1.0, "")) for u in text.dropna().unique()}
    if not looked_up:  # no unit at all: what the per-cell map gives
        return values * np.nan, np.full(len(text), None, dtype=object), np.full(len(text), None, dtype=object)
    unit = text.map({u: v[0] for u, v in looked_up.items()}).to_numpy(dtype=object)  # once per distinct unit
    scale = text.map({u: v[1] for u, v in looked_up.items()}).to_numpy(dtype=float, na_value=np.nan)
    transform = text.map({u: v[2] for u, v in looked_up.items()}).to_numpy(dtype=object)
    return values * scale, _none_for_missing(unit), _none_for_missing(transform)


def _none_for_missing(values: np.ndarray) -> np.ndarray:
    """None where a value is missing: pandas' map may give NaN for a None result (pandas 3 does for some
    inputs), and NaN is not a unit (sorting units with a NaN among them raised TypeError)."""
    return np.where(pd.isna(values), None, values).astype(object)


def _transformed(values: np.ndarray, transform: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if transform == "log":
            return np.where(values > 0, np.log(values), np.nan)
        if transform == "logit":
            p = np.clip(values, *_PERCENT_CLIP) / 100.0
            return np.where(np.isfinite(values) & (values >= 0) & (values <= 100), np.log(p / (1 - p)), np.nan)
    return values


def _stats(values: np.ndarray, transform: str, min_patients: int) -> BurdenReference | None:
    z_input = _transformed(values, transform)
    z_input = z_input[np.isfinite(z_input)]
    if z_input.size < min_patients:
        return None
    sd = float(np.std(z_input, ddof=1))
    return BurdenReference(transform, float(np.mean(z_input)), sd, int(z_input.size)) if sd > 0 else None


def _disease(patients: pd.DataFrame) -> np.ndarray:
    """Disease per patient, None for an empty cell (a "str" Series gives NaN there, which sorts with no
    string and would key a reference as "nan|<unit>")."""
    return _none_for_missing(_text(patients["disease"]).to_numpy(dtype=object))


def fit_covariate_reference(patients: pd.DataFrame, tables: CovariateTables) -> CovariateReference:
    """Burden references per unit (pooled over diseases) and per disease and unit (from
    ``MIN_REFERENCE_PATIENTS`` patients); a unit the table does not know uses log when all its values are
    positive. Label-free: covariates only."""
    if "tumor_burden" not in patients.columns:
        return CovariateReference()
    values, unit, known = _burden_units(patients, tables)
    disease = _disease(patients) if "disease" in patients.columns else None
    burden: dict[str, BurdenReference] = {}
    for u in sorted({x for x in unit if x is not None}):
        in_unit = (unit == u) & np.isfinite(values)
        transform = next((t for t in known[in_unit] if t), "") or (
            "log" if (values[in_unit] > 0).all() else "identity")
        pooled = _stats(values[in_unit], transform, 2)
        if pooled is not None:
            burden[f"*|{u}"] = pooled
        for d in sorted({x for x in (disease[in_unit] if disease is not None else []) if x is not None}):
            own = _stats(values[in_unit & (disease == d)], transform, MIN_REFERENCE_PATIENTS)
            if own is not None:
                burden[f"{d}|{u}"] = own
    return CovariateReference(burden)


def _burden_std(patients: pd.DataFrame, tables: CovariateTables, reference: CovariateReference
                ) -> tuple[np.ndarray, np.ndarray]:
    """``tumor_burden_std`` and the per-patient reason it is missing (None when present)."""
    values, unit, _ = _burden_units(patients, tables)
    disease = _disease(patients) if "disease" in patients.columns else np.full(len(patients), None, dtype=object)
    keys = np.array([f"{d}|{u}" if f"{d}|{u}" in reference.burden else f"*|{u}" for d, u in zip(
        disease, unit, strict=True)], dtype=object)
    z = np.full(len(patients), np.nan)
    for key in dict.fromkeys(keys.tolist()):  # once per distinct key, in order of appearance
        ref = reference.burden.get(key)
        if ref is not None:
            rows = keys == key
            z[rows] = (_transformed(values[rows], ref.transform) - ref.mean) / ref.sd
    known = np.array([key in reference.burden for key in keys.tolist()], dtype=bool)
    recorded = np.isfinite(_numbers(patients, "tumor_burden"))
    return z, _first_reason([(~recorded, "not_recorded"), (pd.isna(unit), "no_unit"),
                             (~known, "unit_not_in_reference"), (np.isnan(z), "out_of_scale")])


# --------------------------------------------------------------------------------------------------
# Product and dose


def _products(patients: pd.DataFrame, tables: CovariateTables) -> tuple[np.ndarray, np.ndarray]:
    """Canonical product per patient (a name the table does not know is kept as written) and whether
    the table knows it."""
    if "product" not in patients.columns:
        missing = np.full(len(patients), None, dtype=object)
        return missing, np.zeros(len(patients), dtype=bool)
    text = _text(patients["product"])
    if len(text) <= FEW_ROWS:
        canonical = text.map(lambda v: None if pd.isna(v) else tables.product_of.get(_name_key(v), v))
        known = text.map(lambda v: not pd.isna(v) and _name_key(v) in tables.product_of)
        return canonical.to_numpy(dtype=object), known.to_numpy(dtype=bool)
    names = {v: _name_key(v) for v in text.dropna().unique()}  # once per distinct value
    if not names:
        return np.full(len(text), None, dtype=object), np.zeros(len(text), dtype=bool)
    canonical = text.map({v: tables.product_of.get(key, v) for v, key in names.items()})
    known = text.map({v: key in tables.product_of for v, key in names.items()}).fillna(False)
    return canonical.to_numpy(dtype=object), known.to_numpy(dtype=bool)


def _product_attribute(patients: pd.DataFrame, tables: CovariateTables, column: str,
                       product: np.ndarray) -> np.ndarray:
    """From the products table; for a product it does not know, the cohort's own column when it has one."""
    if len(product) <= FEW_ROWS:  # per cell: the table's value, else the cohort's (else missing)
        of = _product_attributes(tables, column)
        own = (_text(patients[column]).to_numpy(dtype=object) if column in patients.columns
               else np.full(len(product), None, dtype=object))
        return np.array([of[p] if isinstance(p, str) and p in of else o for p, o in zip(product, own, strict=True)],
                        dtype=object)
    mapped = pd.Series(product, dtype=object).map(tables.product_attribute(column))
    if column in patients.columns:
        mapped = mapped.where(mapped.notna(), _text(patients[column]).reset_index(drop=True))
    return mapped.to_numpy(dtype=object)


def _product_attributes(tables: CovariateTables, column: str) -> dict[str, str]:
    """:meth:`CovariateTables.product_attribute`, built once per (frozen) table and column."""
    cache = tables.__dict__.setdefault("_attribute_cache", {})
    if column not in cache:
        cache[column] = tables.product_attribute(column)
    return cache[column]


def _dose_rel(patients: pd.DataFrame, tables: CovariateTables, product: np.ndarray, known: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Dose over the product's reference dose on the same basis, and the reason it is missing."""
    values = _numbers(patients, "dose")
    unit_column = UNIT_COLUMNS["dose"]
    units = (_text(patients[unit_column]) if unit_column in patients.columns
             else pd.Series([None] * len(patients), dtype=object))
    if len(units) <= FEW_ROWS:  # per cell: no pandas call
        no_unit = pd.isna(units.to_numpy(dtype=object))
        unit_of = [None if m else parse_dose_unit(u) for u, m in zip(units.to_numpy(dtype=object), no_unit, strict=True)]
    else:
        parsed = {u: parse_dose_unit(u) for u in units.dropna().unique()}
        unit_of = units.map(lambda u: None if pd.isna(u) else parsed[u]).to_numpy(dtype=object)
        no_unit = units.isna().to_numpy()
    multiplier = np.array([np.nan if p is None else p[0] for p in unit_of])
    per_kg = np.array([p is not None and p[1] for p in unit_of])
    reference = np.array([tables.reference_dose.get((p, bool(k)), np.nan) for p, k in zip(
        product, per_kg, strict=True)])
    dose_rel = values * multiplier / reference
    reasons = _first_reason([
        (np.isnan(values), "not_recorded"), (no_unit, "no_unit"),
        (np.isnan(multiplier), "unit_not_recognised"), (~known, "product_not_recognised"),
        (np.isnan(reference), "no_reference_dose"), (~np.isfinite(dose_rel), "not_recorded")])
    return np.where(reasons == None, dose_rel, np.nan), reasons  # noqa: E711 (elementwise)


# --------------------------------------------------------------------------------------------------
# Entry point


def harmonise(patients: pd.DataFrame, static_features: Sequence[str], tables: CovariateTables,
              reference: CovariateReference) -> Harmonised:
    """The patients table plus the derived columns of the configured ``static_features`` (others
    untouched). A source column the table lacks gives missing values and a ``column_absent`` problem for
    every patient (scoring tolerates it; training checks columns first)."""
    out = patients.reset_index(drop=True).copy()
    ids = out["patient_id"] if "patient_id" in out.columns else pd.Series(out.index.astype(str))
    problems: list[pd.DataFrame] = []
    absent = np.full(len(out), "column_absent", dtype=object)
    product, known = _products(out, tables)
    if "product" in static_features:
        reasons = absent if "product" not in patients.columns else _first_reason(
            [(pd.isna(product), "not_recorded"), (~known, "not_in_registry")])
        problems.append(_problems(ids, "product", reasons))
        out["product"] = pd.array(product, dtype="str")
        for column in ("costim", "target_antigen"):  # each read from `out` before it is replaced
            out[column] = pd.array(_product_attribute(out, tables, column, product), dtype="str")
    if "tumor_burden" in static_features:
        z, reasons = (_burden_std(out, tables, reference) if "tumor_burden" in out.columns
                      else (np.full(len(out), np.nan), absent))
        out["tumor_burden_std"] = z
        problems.append(_problems(ids, "tumor_burden", reasons))
    if "dose" in static_features:
        rel, reasons = _dose_rel(out, tables, product, known) if "dose" in out.columns else (
            np.full(len(out), np.nan), absent)
        out["dose_rel"] = rel
        problems.append(_problems(ids, "dose", reasons))
    found = [p for p in problems if len(p)]
    frame = pd.concat(found, ignore_index=True)[list(_PROBLEM_COLUMNS)] if found else _no_problems().copy(deep=False)
    return Harmonised(out, frame)


_PROBLEM_COLUMNS = ("patient_id", "covariate", "reason")


@functools.cache
def _no_problems() -> pd.DataFrame:
    """:func:`harmonise`'s problems when there are none (a template: callers get shallow copies)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in _PROBLEM_COLUMNS})


def source_columns(static_features: Sequence[str]) -> list[str]:
    """The patients-table columns harmonising ``static_features`` reads (sources, their unit columns,
    ``disease`` for the disease-specific burden reference, ``product`` for the reference dose)."""
    out = list(static_features)
    for column in static_features:
        out.extend(c for c in (UNIT_COLUMNS.get(column),) if c)
    if "tumor_burden" in static_features:
        out.append("disease")
    if "dose" in static_features or "product" in static_features:
        out.extend(["product", "costim", "target_antigen"])
    return list(dict.fromkeys(out))


def _read_table(name: str) -> pd.DataFrame:
    with resources.files("features").joinpath("tables", name).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")


@functools.cache
def default_covariate_tables() -> CovariateTables:
    """The packaged tables: ``features/tables/{products,product_doses,tumor_burden_units}.csv``."""
    return CovariateTables(_read_table("products.csv"), _read_table("product_doses.csv"),
                           _read_table("tumor_burden_units.csv"))
