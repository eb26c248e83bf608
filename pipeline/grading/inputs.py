"""The ingest-contract tables, reduced to the rows grading reads, as numpy arrays with patient codes.

Patient codes follow the sorted patient ids, so a stream sorted by code is already in the timeline's
output order. Any table but ``patients`` may be missing or empty. Arrays, not DataFrames: building
frames of string columns (pandas' Arrow strings) cost more than the grading itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.lookup import id_texts, positions

from .rules import GradingRules

MEASURED = ("TEMP", "SBP", "MAP", "O2_FLOW")
TIME = "hours_since_anchor"
Rows = dict[str, np.ndarray]


@dataclass(frozen=True)
class Inputs:
    ids: np.ndarray  # sorted unique patient ids (object array); a code indexes it
    child: np.ndarray  # bool per code: age <= paediatric_max_age_years (missing age: adult)
    measurements: Rows  # code, time, analyte (index into MEASURED), value
    observations: Rows  # code, time, item (index into the items read), term (index into words), score
    words: np.ndarray  # the distinct observation terms (object array)
    items: tuple[str, ...]
    treatments: Rows  # code, time, drug, end
    deaths: np.ndarray  # first DEATH time per code (inf: none)

    def observed(self, item: str) -> Rows:
        """The observation rows of one item."""
        return select(self.observations, self.observations["item"] == self.items.index(item))

    def measured(self, analyte: str) -> np.ndarray:
        return self.measurements["analyte"] == MEASURED.index(analyte)


def select(rows: Rows, mask: np.ndarray) -> Rows:
    return {name: column[mask] for name, column in rows.items()}


def _frame(tables: dict[str, pd.DataFrame], name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return _empty(columns)  # read, never written: one per process
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"grading: table '{name}' lacks column(s) {missing}")
    return frame


@functools.cache
def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("patient_id",) else float) for c in columns})


def _factorize(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and distinct values (object array) of a string column: hashes each distinct text once."""
    if len(column) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=object)
    codes, uniques = pd.factorize(column, sort=False, use_na_sentinel=False)
    return codes, pd.Index(uniques).astype(str).to_numpy(dtype=object)


def _rows(frame: pd.DataFrame, ids: np.ndarray, keep: dict[str, np.ndarray], mask: np.ndarray | None = None,
          factorized: tuple[np.ndarray, np.ndarray] | None = None) -> Rows:
    """``code``, ``time`` and the ``keep`` columns of the rows in ``mask`` that have a time.
    ``factorized``: the frame's :func:`_factorize` of ``patient_id``, when already done."""
    if len(frame) == 0:
        return {"code": np.zeros(0, dtype=np.intp), "time": np.zeros(0), **keep}
    local, uniques = factorized or _factorize(frame["patient_id"])
    rows = {"code": positions(ids, uniques)[local] if len(uniques) else local,
            "time": frame[TIME].to_numpy(dtype=np.float64), **keep}
    mask = ~np.isnan(rows["time"]) if mask is None else mask & ~np.isnan(rows["time"])
    return rows if mask.all() else select(rows, mask)


def _which(column: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    """Index into ``names`` of each cell (-1: none); one hash per distinct text."""
    codes, uniques = _factorize(column)
    table = np.array([names.index(u) if u in names else -1 for u in uniques], dtype=np.int64)
    return table[codes] if len(uniques) else np.zeros(0, dtype=np.int64)


def _patient_ids(frames: dict[str, pd.DataFrame]) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The sorted distinct ids of every frame, and each non-empty frame's factorized ids (read once)."""
    factorized = {name: _factorize(f["patient_id"]) for name, f in frames.items() if len(f)}
    uniques = [np.zeros(0, dtype=object)] + [u for _, u in factorized.values()]
    return np.unique(np.concatenate(uniques)), factorized


def _treatment_rows(treatments: pd.DataFrame, ids: np.ndarray, factorized: tuple | None) -> Rows:
    if not len(treatments):  # most requests: no treatment given
        return {"code": np.zeros(0, dtype=np.intp), "time": np.zeros(0), "drug": np.zeros(0, dtype=object),
                "end": np.zeros(0)}
    end = treatments.get("end_hours_since_anchor", pd.Series(np.nan, index=treatments.index))
    return _rows(treatments, ids, {"drug": treatments["drug"].astype(str).to_numpy(dtype=object),
                                   "end": pd.to_numeric(end).to_numpy(dtype=np.float64)}, factorized=factorized)


def prepare(tables: dict[str, pd.DataFrame], rules: GradingRules, items: tuple[str, ...]) -> Inputs:
    """``items``: the observation items grading reads (others are dropped here)."""
    patients = tables["patients"]
    frames = {"patients": patients,
              "measurements": _frame(tables, "measurements", ("patient_id", TIME, "analyte", "value")),
              "observations": _frame(tables, "observations", ("patient_id", TIME, "item", "value", "score")),
              "treatments": _frame(tables, "treatments", ("patient_id", TIME, "drug")),
              "events": _frame(tables, "events", ("patient_id", "event", TIME))}
    # Codes cover every id seen anywhere (a row for a patient missing from `patients` still grades).
    ids, factorized = _patient_ids(frames)

    child = np.zeros(len(ids), dtype=bool)
    if "age" in patients.columns:
        age = pd.to_numeric(patients["age"], errors="coerce").to_numpy(dtype=np.float64)
        child[positions(ids, id_texts(patients["patient_id"]))] = age <= rules.paediatric_max_age_years
    deaths = np.full(len(ids), np.inf)
    events = frames["events"]
    if len(events):
        dead = _rows(events, ids, {}, (events["event"].astype(str) == "DEATH").to_numpy(dtype=bool),
                     factorized["events"])
        np.minimum.at(deaths, dead["code"], dead["time"])

    measurements, observations = frames["measurements"], frames["observations"]
    analyte = _which(measurements["analyte"], MEASURED)
    value = measurements["value"].to_numpy(dtype=np.float64)
    m = _rows(measurements, ids, {"analyte": analyte, "value": value}, (analyte >= 0) & ~np.isnan(value),
              factorized.get("measurements"))
    item = _which(observations["item"], items)
    term, words = _factorize(observations["value"])
    o = _rows(observations, ids, {"item": item, "term": term, "score": observations["score"].to_numpy(np.float64)},
              item >= 0, factorized.get("observations"))
    t = _treatment_rows(frames["treatments"], ids, factorized.get("treatments"))
    return Inputs(ids=ids, child=child, measurements=m, observations=o, words=words,
                  items=items, treatments=t, deaths=deaths)
