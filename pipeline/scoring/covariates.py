"""Covariates at scoring time: what the model was trained with but the cohort lacks, said out loud.

A cohort scored by a model trained elsewhere often lacks covariates (no ``product`` column, no tumour
burden unit, a brand name the model never saw). None of that stops scoring: the value is scored as
missing (the booster has a learnt direction for missing values), and the patient's message and a
per-run warning say which covariates were missing and that the risk is less certain. Messages name
columns and reasons, never cell values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.covariates import DERIVED
from pipeline.model import FeatureSpec, ScoringSetup

#: Readable words for :mod:`features.covariates` problem codes.
PROBLEM_TEXT = {
    "not_recorded": "not recorded",
    "no_unit": "no unit given",
    "unit_not_recognised": "unit not recognised",
    "unit_not_in_reference": "unit not among those the model was trained with",
    "product_not_recognised": "product not recognised, so no reference dose",
    "no_reference_dose": "no reference dose for this product in this unit",
    "out_of_scale": "value outside its unit's scale",
    "not_trained": "a value the model was not trained on",
}
_LESS_CERTAIN = "scored as missing, so the risk is less certain"


@dataclass
class CovariateCheck:
    """The patients table with every model covariate present (absent columns empty, harmonised ones
    derived) and the messages."""

    patients: pd.DataFrame
    absent_columns: list[str] = field(default_factory=list)
    #: patient id -> "covariate (reason)" items
    per_patient: dict[str, list[str]] = field(default_factory=dict)

    def run_warnings(self) -> list[str]:
        out = []
        if self.absent_columns:
            out.append(f"the patients table has no {', '.join(self.absent_columns)} column: "
                       f"{_LESS_CERTAIN} for every patient")
        n = sum(1 for items in self.per_patient.values() if items)
        if n:
            out.append(f"{n} patient(s) have covariates {_LESS_CERTAIN} (see their messages)")
        return out

    def message(self, patient_id: str) -> str | None:
        items = self.per_patient.get(patient_id)
        return f"covariates {_LESS_CERTAIN}: {'; '.join(items)}" if items else None


def _all_known(column: pd.Series, spec: FeatureSpec) -> bool:
    """Whether every value (or, for a categorical column, every category) is one the model was trained on:
    the common case, checked once per distinct value."""
    known = _known(spec.categories)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return all(str(v) in known for v in column.cat.categories)
    if len(column) <= _FEW:  # per cell (repeats change nothing): no pandas call per feature
        return all(str(v) in known for v in column.to_numpy(dtype=object) if not _missing(v))
    return all(str(v) in known for v in pd.unique(column.dropna()))


#: Up to this many rows, :func:`_all_known` reads the cells one by one (one new patient).
_FEW = 64


@functools.cache
def _known(categories: tuple[str, ...]) -> frozenset[str]:
    return frozenset(categories)


def _missing(value: object) -> bool:
    """What ``Series.dropna`` drops, for one cell (None, NaN, NA, NaT)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _category_problems(harmonised: pd.DataFrame, setup: ScoringSetup, sources: dict[str, str]) -> pd.DataFrame:
    """Rows (patient, covariate) whose category is not in the model's list for that feature."""
    parts = []
    for spec in setup.category_specs:
        if spec.name not in harmonised.columns or _all_known(harmonised[spec.name], spec):
            continue
        values = harmonised[spec.name].astype("object")
        unseen = values.notna().to_numpy() & ~values.astype(str).isin(spec.categories).to_numpy()
        if unseen.any():
            parts.append(pd.DataFrame({"patient_id": harmonised["patient_id"].astype(str).to_numpy()[unseen],
                                       "covariate": sources.get(spec.name, spec.name), "reason": "not_trained"}))
    return pd.concat(parts, ignore_index=True) if parts else _NO_PROBLEMS.copy(deep=False)


def _missing_plain(patients: pd.DataFrame, plain: list[str]) -> pd.DataFrame:
    """Empty cells of covariates used as given (not harmonised)."""
    parts = []
    for column in plain:
        empty = patients[column].isna().to_numpy()
        if empty.any():
            parts.append(pd.DataFrame({"patient_id": patients["patient_id"].astype(str).to_numpy()[empty],
                                       "covariate": column, "reason": "not_recorded"}))
    return pd.concat(parts, ignore_index=True) if parts else _NO_PROBLEMS.copy(deep=False)


#: What the two checks above give when nothing is wrong (read, never written: callers keep rows only).
_NO_PROBLEMS = pd.DataFrame(columns=["patient_id", "covariate", "reason"])


def check_covariates(patients: pd.DataFrame, setup: ScoringSetup) -> CovariateCheck:
    """Add absent covariate columns (empty), harmonise (once), and word every covariate scored as missing,
    per patient. ``CovariateCheck.patients`` is what :meth:`ScoringSetup.featurizer` expects."""
    static = list(setup.config.static_features)
    absent = [c for c in static if c not in patients.columns]
    filled = patients.assign(**{c: pd.Series(np.nan, index=patients.index, dtype=object) for c in absent}) if (
        absent or not setup.harmonising) else patients  # harmonise copies it
    harmonising = setup.harmonising
    harmonised = setup.harmonise(filled)  # unchanged (and no problems) when not harmonising
    sources = {derived: source for source, names in DERIVED.items() if harmonising and source in static
               for derived in names}
    plain = [c for c in static if not (harmonising and c in DERIVED)]
    problems = harmonised.problems
    frames = [problems[problems["reason"] != "not_in_registry"] if len(problems) else problems,
              _missing_plain(filled, plain),
              _category_problems(harmonised.patients, setup, sources)]
    found = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    per_patient: dict[str, list[str]] = {}
    if found is not None:
        found = found[~found["covariate"].isin(absent)].drop_duplicates(["patient_id", "covariate"])
        for pid, rows in found.groupby("patient_id", sort=True):
            per_patient[str(pid)] = [f"{c} ({PROBLEM_TEXT.get(r, r)})" for c, r in
                                     zip(rows["covariate"], rows["reason"], strict=True)]
    return CovariateCheck(harmonised.patients, absent, per_patient)


#: How a category value the model does not know is shown (pages, drivers): never as if recognised.
NOT_RECOGNISED = " (not recognised by the model: scored as missing)"


def annotate_unrecognised(frame: pd.DataFrame, setup: ScoringSetup) -> pd.DataFrame:
    """``frame`` with every category value outside the model's list marked :data:`NOT_RECOGNISED` (the
    model matrix maps such values to missing whatever their text, so scores do not change)."""
    out = frame
    for spec in setup.category_specs:
        if spec.name not in frame.columns or _all_known(frame[spec.name], spec):
            continue
        values = frame[spec.name].astype("object")
        unseen = values.notna() & ~values.astype(str).isin(spec.categories)
        if unseen.any():
            out = out.assign(**{spec.name: values.where(~unseen, values.astype(str) + NOT_RECOGNISED)})
    return out
