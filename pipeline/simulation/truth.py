"""truth.json: what ingest must report for the written files, and the simulated incidence per arm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.registry import Registry
from pipeline.simulation.analytes import CODES, N_ANALYTES
from pipeline.simulation.arms import ARMS
from pipeline.simulation.assay import UNIT_FAULTS, Reported
from pipeline.simulation.bedside import (
    CAPD_SCORE,
    ICE_SCORE,
    OBSERVATION_ITEMS,
    PRESSORS,
    VITAL_CODES,
    Charted,
)
from pipeline.simulation.faults import Faults
from pipeline.simulation.sampling import Rows
from pipeline.simulation.severity import Outcomes
from pipeline.simulation.tables import TABLE_NAMES


def _unit_conversions(reported: Reported, accepted: np.ndarray, registry: Registry) -> dict[str, int]:
    """Accepted rows written in a site unit, per conversion ingest must apply."""
    accepted_units = reported.unit_index[accepted]
    conversions: dict[str, int] = {}
    for unit_index in range(N_ANALYTES, len(reported.unit_names)):  # only the written non-canonical units
        count = int((accepted_units == unit_index).sum())
        unit = reported.unit_names[unit_index]
        code = [k for k, v in UNIT_FAULTS.items() if v[1] == unit][0]
        if count:
            conversions[f"{code}: {unit} -> {registry.canonical_unit(code)}"] = count
    return dict(sorted(conversions.items()))


def _synonyms_mapped(rows: Rows, reported: Reported, accepted: np.ndarray) -> dict[str, int]:
    """Accepted rows written under a site dialect name, per name -> code mapping."""
    synonyms: dict[str, int] = {}
    name_counts = np.bincount(reported.name_index[accepted], minlength=len(reported.analyte_names))
    for name_index in range(N_ANALYTES, len(reported.analyte_names)):
        if name_counts[name_index]:
            code = CODES[rows.analyte[reported.name_index == name_index][0]]
            key_text = f"{reported.analyte_names[name_index]} -> {code}"
            synonyms[key_text] = synonyms.get(key_text, 0) + int(name_counts[name_index])
    return dict(sorted(synonyms.items()))


def _analytes_found(rows: Rows, accepted: np.ndarray) -> dict[str, int]:
    analyte_counts = np.bincount(rows.analyte[accepted], minlength=N_ANALYTES)
    found = {code: int(analyte_counts[j]) for j, code in enumerate(CODES) if analyte_counts[j]}
    return dict(sorted(found.items()))


def _file_counts(rows_written: dict[str, int], faults: Faults, observation_faults: dict[str, int]
                 ) -> dict[str, dict[str, Any]]:
    """Per file: rows read / accepted / quarantined; measurements and observations carry faults."""
    files: dict[str, dict[str, Any]] = {
        name: {"rows_read": rows, "rows_accepted": rows, "rows_quarantined": 0, "duplicates_dropped": 0,
               "quarantine_by_reason": {}}
        for name, rows in rows_written.items()
    }
    files["measurements"] = {
        "rows_read": rows_written["measurements"],
        "rows_accepted": int(faults.accepted.sum()),
        "rows_quarantined": sum(faults.counts.values()),
        "duplicates_dropped": faults.duplicate_rows.size,
        "quarantine_by_reason": {k: v for k, v in sorted(faults.counts.items()) if v > 0},
    }
    if "observations" in files and observation_faults:
        quarantined = sum(observation_faults.values())
        files["observations"].update({
            "rows_accepted": rows_written["observations"] - quarantined, "rows_quarantined": quarantined,
            "quarantine_by_reason": dict(sorted(observation_faults.items())),
        })
    return files


def _bedside_counts(charted: Charted, vital_names: np.ndarray) -> dict[str, Any]:
    """Rows the bedside adds: vitals per code, observations per item and term, vasopressor courses per drug."""
    def counts(values: np.ndarray) -> dict[str, int]:
        names, n = np.unique(values.astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, n, strict=True)}

    renamed = np.flatnonzero(vital_names != np.array(VITAL_CODES, dtype=object)[charted.vital_code])
    return {
        "vital_rows": {code: int(k) for code, k in
                       sorted(zip(VITAL_CODES, np.bincount(charted.vital_code, minlength=len(VITAL_CODES)),
                                  strict=True)) if k},
        "vital_synonyms": counts(np.char.add(np.char.add(vital_names[renamed].astype(str), " -> "),
                                             np.array(VITAL_CODES)[charted.vital_code[renamed]])),
        "observation_rows": counts(OBSERVATION_ITEMS[charted.obs_item]),
        "observation_terms": counts(np.char.add(np.char.add(OBSERVATION_ITEMS[charted.obs_item], ": "),
                                                np.where(np.isin(charted.obs_item, (ICE_SCORE, CAPD_SCORE)), "score",
                                                         charted.obs_value.astype(str)))),
        "vasopressor_courses": counts(PRESSORS[charted.pressor_drug]),
    }


def _merge_counts(*parts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            merged[key] = merged.get(key, 0) + value
    return dict(sorted(merged.items()))


def incidence(arm: np.ndarray, outcomes: Outcomes) -> dict[str, Any]:
    """Simulated incidence per arm beside the published figure it is calibrated to."""
    crs_grade, icans_grade = outcomes.crs_grade, outcomes.icans_grade
    out: dict[str, Any] = {}
    for k, spec in enumerate(ARMS):
        in_arm = arm == k
        if not in_arm.any():
            continue
        onset_days = outcomes.crs_onset_hours[in_arm & (crs_grade >= 1)] / 24
        out[spec.key] = {
            "product": spec.product,
            "disease": spec.disease,
            "n": int(in_arm.sum()),
            "crs_any": round(float((crs_grade[in_arm] >= 1).mean()), 4),
            "crs_ge3": round(float((crs_grade[in_arm] >= 3).mean()), 4),
            "icans_any": round(float((icans_grade[in_arm] >= 1).mean()), 4),
            "icans_ge3": round(float((icans_grade[in_arm] >= 3).mean()), 4),
            "median_crs_onset_day": round(float(np.median(onset_days)), 2) if onset_days.size else None,
            "published": {"trial": spec.trial, "crs_any": spec.crs_any, "crs_ge3": spec.crs_ge3,
                          "icans_any": spec.icans_any, "icans_ge3": spec.icans_ge3,
                          "median_crs_onset_day": spec.onset_day},
        }
    return out


def build_truth(tables: dict[str, pa.Table], rows: Rows, reported: Reported, faults: Faults, registry: Registry,
                arm: np.ndarray, outcomes: Outcomes, seed: int, faults_enabled: bool, charted: Charted,
                vital_names: np.ndarray, observation_faults: dict[str, int]) -> dict[str, Any]:
    """The truth.json document (key order is part of the byte-identical output)."""
    rows_written = {name: tables[name].num_rows for name in TABLE_NAMES}
    files = _file_counts(rows_written, faults, observation_faults)
    files["measurements"]["rows_accepted"] += int(charted.vital_patient.size)  # bedside vitals carry no fault
    quarantined = sum(faults.counts.values()) + sum(observation_faults.values())
    bedside = _bedside_counts(charted, vital_names)
    n_duplicates = faults.duplicate_rows.size
    return {
        "n_patients": int(arm.size),
        "seed": seed,
        "faults_enabled": bool(faults_enabled),
        "tables": {name: {"rows_written": count} for name, count in rows_written.items()},
        "expected_ingest": {
            "rows_read": sum(rows_written.values()),
            "rows_accepted": sum(f["rows_accepted"] for f in files.values()),
            "rows_quarantined": quarantined,
            "duplicates_dropped": n_duplicates,
            "quarantine_by_reason": _merge_counts({k: v for k, v in faults.counts.items() if v > 0},
                                                  observation_faults),
            "files": files,
            "patients": int(arm.size),
            "analytes_found": _merge_counts(_analytes_found(rows, faults.accepted), bedside["vital_rows"]),
            "unknown_analytes": {},
            "unit_conversions": _unit_conversions(reported, faults.accepted, registry),
            "synonyms_mapped": _merge_counts(_synonyms_mapped(rows, reported, faults.accepted),
                                             bedside["vital_synonyms"]),
        },
        "bedside": {key: value for key, value in bedside.items() if key != "vital_synonyms"},
        "incidence": incidence(arm, outcomes),
    }
