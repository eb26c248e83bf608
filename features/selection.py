"""Which analytes get features: ``analytes="auto"`` picks them from the measurements (never from labels).

Rule (docs/features.md, "Choosing the analytes"): an analyte is used when at least ``min_coverage``
of the patients AND at least ``min_patients`` patients have at least one value at or before the LAST
landmark. An analyte the registry does not know (``known_analyte`` False, as ingest writes it) is used
only when all its rows share one unit, since ingest cannot convert it. Names are matched after trim +
upper-case, like :func:`features.landmarks.encode_cohort`; the output is sorted by code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


#: Rows per block when scanning the measurements: block-sized temporaries are reused from one block to
#: the next instead of whole-table masks and copies (fresh memory costs more than the arithmetic).
BLOCK_ROWS = 1 << 20


def _sorted_lut(uniques: list[str | None], upper: bool = True) -> tuple[np.ndarray, list[str]]:
    """Per distinct text (plus a last entry for a missing one), its code in the sorted list of distinct
    trimmed (upper-case) names (-1 for null / empty), and that list."""
    raw = [None if u is None else u.strip() for u in uniques]
    raw = [n.upper() if upper and n else n for n in raw]
    names = sorted({n for n in raw if n})
    position = {n: i for i, n in enumerate(names)}
    return np.array([position.get(n, -1) if n else -1 for n in raw] + [-1], dtype=np.int32), names


def _known_column(measurements: pd.DataFrame) -> np.ndarray | None:
    """``known_analyte`` as booleans (missing = known); None without the column (all known)."""
    if "known_analyte" not in measurements.columns:
        return None
    column = measurements["known_analyte"]
    if column.dtype == np.bool_:
        return column.to_numpy()
    return column.fillna(True).to_numpy(dtype=bool)


@dataclass
class _Seen:
    """What :func:`choose_analytes` counts, OR-ed block by block: (analyte, patient) pairs at or before
    the last landmark, (analyte, unit) pairs, and analytes with a row the registry knows."""

    patients: np.ndarray
    units: np.ndarray
    known: np.ndarray


def _scan(measurements: pd.DataFrame, keys: MeasurementKeys, analyte_lut: np.ndarray, n: int,
          last_landmark: float) -> tuple[_Seen, list[str]]:
    """One pass over the measurements in blocks of :data:`BLOCK_ROWS` rows (rows of unknown patients
    or analytes, or without a finite time and value, are ignored); also returns the unit names.

    The (analyte, patient) and (analyte, unit) pairs seen are marked through one flat key per row
    (rows not counted get a last, spare slot) instead of two gathers and a 2-D scatter per block."""
    hours = _float(measurements["hours_since_anchor"])
    value = _float(measurements["value"])
    units = "unit" in measurements.columns
    unit_index, unit_names = _name_index(measurements["unit"]) if units else (None, [])
    unit_lut, unit_names = _sorted_lut(unit_names, upper=False)  # missing and "" both -1
    known = _known_column(measurements)
    n_patients, n_units = max(len(keys.patient_ids), 1), max(len(unit_names), 1)
    pairs = np.zeros(n * n_patients + 1, dtype=bool)
    unit_pairs = np.zeros(n * n_units + 1, dtype=bool)
    seen_known = np.zeros(n, dtype=bool)
    for lo in range(0, len(hours), BLOCK_ROWS):
        block = slice(lo, lo + BLOCK_ROWS)
        patient, analyte, h = keys.patient[block], np.take(analyte_lut, keys.name_index[block]), hours[block]
        keep = (patient >= 0) & (analyte >= 0) & np.isfinite(h) & np.isfinite(value[block])
        key = analyte.astype(np.int64)
        key *= n_patients
        key += patient
        key[~(keep & (h <= last_landmark))] = n * n_patients
        pairs[key] = True
        if units:
            unit = np.take(unit_lut, unit_index[block])
            unit_key = analyte.astype(np.int64)
            unit_key *= n_units
            unit_key += unit
            unit_key[~(keep & (unit >= 0))] = n * n_units
            unit_pairs[unit_key] = True
        seen_known[analyte[keep if known is None else keep & known[block]]] = True
    seen = _Seen(pairs[:-1].reshape(n, n_patients), unit_pairs[:-1].reshape(n, n_units), seen_known)
    return seen, unit_names


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
    analyte_lut, names = _sorted_lut(keys.names)
    seen, unit_names = _scan(measurements, keys, analyte_lut, len(names), last_landmark)
    n_patients = seen.patients.sum(axis=1)
    units = [[unit_names[j] for j in np.flatnonzero(seen.units[i])] for i in range(len(names))]
    known = seen.known if "known_analyte" in measurements.columns else np.ones(len(names), dtype=bool)
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
