"""Which analytes get features: ``analytes="auto"`` picks them from the measurements (never from labels).

Rule (docs/features.md, "Choosing the analytes"): an analyte is used when at least ``min_coverage``
of the patients AND at least ``min_patients`` patients have at least one value at or before the LAST
landmark. An analyte the registry does not know (``known_analyte`` False, as ingest writes it) is used
only when all its rows share one unit, since ingest cannot convert it. Names are matched after trim +
upper-case, like :func:`features.landmarks.encode_cohort`; the output is sorted by code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.definitions import feature_stem
from features.landmarks import (
    MEASUREMENT_COLUMNS,
    MeasurementKeys,
    _float,
    _name_index,
    _require,
    measurement_keys,
)

#: Columns of the table :func:`choose_analytes` returns (one row per analyte in the data or the list).
CHOICE_COLUMNS = ("analyte", "known", "units", "n_patients", "coverage", "used", "reason")


def _name_codes(values: pd.Series, upper: bool = True) -> tuple[np.ndarray, list[str]]:
    """Code per row into a sorted list of distinct trimmed (upper-case) names (-1 for null / empty)."""
    return _sorted_codes(*_name_index(values), upper=upper)


def _sorted_codes(name_index: np.ndarray, uniques: list[str | None], upper: bool = True) -> tuple[np.ndarray, list[str]]:
    """:func:`_name_codes` from rows already hashed (``name_index`` into ``uniques``, ``len(uniques)``
    for a missing value)."""
    raw = [None if u is None else u.strip() for u in uniques]
    raw = [n.upper() if upper and n else n for n in raw]
    names = sorted({n for n in raw if n})
    position = {n: i for i, n in enumerate(names)}
    lut = np.array([position.get(n, -1) if n else -1 for n in raw] + [-1], dtype=np.int32)
    return np.take(lut, name_index), names


def _seen(group: np.ndarray, member: np.ndarray, n_groups: int, n_members: int) -> np.ndarray:
    """Boolean (group, member) matrix: True where the pair occurs (one scatter, no sort)."""
    seen = np.zeros((n_groups, max(n_members, 1)), dtype=bool)
    seen[group, member] = True
    return seen


def _units_per_analyte(measurements: pd.DataFrame, analyte: np.ndarray, n: int, keep: np.ndarray) -> list[list[str]]:
    if "unit" not in measurements.columns:
        return [[] for _ in range(n)]
    unit, unit_names = _name_codes(measurements["unit"], upper=False)  # missing and "" both -1
    rows = keep & (unit >= 0)
    seen = _seen(analyte[rows], unit[rows], n, len(unit_names))
    return [[unit_names[j] for j in np.flatnonzero(seen[i])] for i in range(n)]


def _known_per_analyte(measurements: pd.DataFrame, analyte: np.ndarray, n: int, keep: np.ndarray) -> np.ndarray:
    """True unless every row of the analyte says ``known_analyte`` False (no column: all known)."""
    if "known_analyte" not in measurements.columns:
        return np.ones(n, dtype=bool)
    known = measurements["known_analyte"].fillna(True).to_numpy(dtype=bool)
    return np.bincount(analyte[keep], weights=known[keep], minlength=n) > 0


def _reason(row: dict, min_coverage: float, min_patients: int, last_landmark: float, listed: bool) -> str:
    if listed:
        return ""
    if not row["known"] and len(row["units"]) > 1:
        return f"unknown to the registry with {len(row['units'])} units ({', '.join(row['units'])}); ingest cannot convert it"
    if row["n_patients"] < min_patients:
        return f"{row['n_patients']} patients with a value at or before {last_landmark:g} h (min_patients {min_patients})"
    if row["coverage"] < min_coverage:
        return f"coverage {row['coverage']:.3f} at or before {last_landmark:g} h (min_coverage {min_coverage:g})"
    return ""


def choose_analytes(
    measurements: pd.DataFrame,
    patient_ids: np.ndarray,
    last_landmark: float,
    min_coverage: float = 0.2,
    min_patients: int = 10,
    explicit: Sequence[str] | None = None,
    keys: MeasurementKeys | None = None,
) -> pd.DataFrame:
    """One row per analyte (columns :data:`CHOICE_COLUMNS`): coverage at the last landmark, used or why not.

    ``patient_ids`` is the patient universe (coverage = patients with a value / its length); rows of
    other patients, or without a finite time and value, are ignored. With ``explicit`` (a fixed list),
    exactly the listed analytes are used (reason "not in the analytes list" for the others) and the
    table only reports their coverage. ``keys``: :func:`features.landmarks.measurement_keys` of these
    measurements and ``patient_ids``, when already hashed.
    """
    _require(measurements, MEASUREMENT_COLUMNS, "measurements")
    n_total = max(len(patient_ids), 1)
    if keys is None or keys.patient_ids is not patient_ids and not np.array_equal(keys.patient_ids, patient_ids):
        keys = measurement_keys(measurements, patient_ids)
    patient = keys.patient
    analyte, names = _sorted_codes(keys.name_index, keys.names)
    hours = _float(measurements["hours_since_anchor"])
    keep = (patient >= 0) & (analyte >= 0) & np.isfinite(hours) & np.isfinite(_float(measurements["value"]))
    early = keep & (hours <= last_landmark)
    n_patients = _seen(analyte[early], patient[early], len(names), len(patient_ids)).sum(axis=1)
    units = _units_per_analyte(measurements, analyte, len(names), keep)
    known = _known_per_analyte(measurements, analyte, len(names), keep)
    listed = None if explicit is None else list(dict.fromkeys(a.strip().upper() for a in explicit))
    rows = {
        name: {"analyte": name, "known": bool(known[i]), "units": units[i], "n_patients": int(n_patients[i]),
               "coverage": float(n_patients[i]) / n_total}
        for i, name in enumerate(names)
    }
    for name in listed or []:
        rows.setdefault(name, {"analyte": name, "known": True, "units": [], "n_patients": 0, "coverage": 0.0})
    stems: set[str] = set()
    for name in sorted(rows):
        row = rows[name]
        row["reason"] = _reason(row, min_coverage, min_patients, last_landmark, listed is not None and name in listed)
        if listed is not None and name not in listed:
            row["reason"] = "not in the analytes list"
        if not row["reason"] and not feature_stem(name):
            row["reason"] = "name has no letters or digits to name features by"
        if not row["reason"] and feature_stem(name) in stems:
            row["reason"] = f"feature names would collide with another analyte's ({feature_stem(name)}__*)"
        row["used"] = not row["reason"]
        stems |= {feature_stem(name)} if row["used"] else set()
    return pd.DataFrame([rows[name] for name in sorted(rows)], columns=list(CHOICE_COLUMNS))
