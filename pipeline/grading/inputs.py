"""The ingest-contract tables, reduced to the rows grading reads, with integer patient codes.

Patient codes follow the sorted patient ids, so a stream sorted by code is already in the timeline's
output order. Any table but ``patients`` may be missing or empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .rules import GradingRules

MEASURED = ("TEMP", "SBP", "MAP", "O2_FLOW")
TIME = "hours_since_anchor"


@dataclass(frozen=True)
class Inputs:
    ids: np.ndarray  # sorted unique patient ids (object array); a code indexes it
    child: np.ndarray  # bool per code: age <= paediatric_max_age_years (missing age: adult)
    measurements: pd.DataFrame  # code, time, analyte, value
    observations: pd.DataFrame  # code, time, item, value (term or integer text), score
    treatments: pd.DataFrame  # code, time, drug, end
    deaths: np.ndarray  # first DEATH time per code (inf: none)


def _frame(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("patient_id",) else float) for c in columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"grading: table '{name}' lacks column(s) {missing}")
    return frame


def _coded(frame: pd.DataFrame, ids: pd.Index, keep: list[str]) -> pd.DataFrame:
    """``frame[keep]`` with ``code`` and ``time`` columns; rows without a time are not evidence."""
    out = pd.DataFrame({"code": ids.get_indexer(frame["patient_id"].astype(str)),
                        "time": frame[TIME].to_numpy(dtype=np.float64)})
    for column in keep:
        out[column] = frame[column].to_numpy()
    return out[out["time"].notna().to_numpy()].reset_index(drop=True)


def prepare(tables: dict[str, pd.DataFrame], rules: GradingRules) -> Inputs:
    patients = tables["patients"]
    measurements = _frame(tables, "measurements", ("patient_id", TIME, "analyte", "value"))
    measurements = measurements[measurements["analyte"].isin(MEASURED).to_numpy()]
    observations = _frame(tables, "observations", ("patient_id", TIME, "item", "value", "score"))
    treatments = _frame(tables, "treatments", ("patient_id", TIME, "drug"))
    events = _frame(tables, "events", ("patient_id", "event", TIME))
    events = events[(events["event"].astype(str) == "DEATH").to_numpy()]

    # Codes cover every id seen anywhere (a row for a patient missing from `patients` still grades).
    seen = [patients["patient_id"], measurements["patient_id"], observations["patient_id"],
            treatments["patient_id"], events["patient_id"]]
    ids = pd.Index(np.unique(np.concatenate([s.astype(str).to_numpy(dtype=object) for s in seen])))

    child = np.zeros(len(ids), dtype=bool)
    if "age" in patients.columns:
        age = pd.to_numeric(patients["age"], errors="coerce").to_numpy(dtype=np.float64)
        child[ids.get_indexer(patients["patient_id"].astype(str))] = age <= rules.paediatric_max_age_years

    treatments = treatments.assign(end=treatments["end_hours_since_anchor"] if "end_hours_since_anchor"
                                   in treatments.columns else np.nan)
    m = _coded(measurements, ids, ["analyte", "value"])
    deaths = np.full(len(ids), np.inf)
    dead = _coded(events, ids, [])
    np.minimum.at(deaths, dead["code"].to_numpy(), dead["time"].to_numpy())
    return Inputs(
        ids=ids.to_numpy(dtype=object), child=child,
        measurements=m[m["value"].notna().to_numpy()],
        observations=_coded(observations, ids, ["item", "value", "score"]),
        treatments=_coded(treatments, ids, ["drug", "end"]),
        deaths=deaths,
    )
