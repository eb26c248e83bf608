"""Views of a grading timeline: onset events (first time at each grade) and daily maximum grades."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .rules import EVENTS

HOURS_PER_DAY = 24.0


def _groups(timeline: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The timeline sorted by (patient, event, time) and a bool marking each group's first row."""
    t = timeline.sort_values(["patient_id", "event", "hours_since_anchor"], kind="stable").reset_index(drop=True)
    pid, ev = t["patient_id"].to_numpy(dtype=object), t["event"].to_numpy(dtype=object)
    first = np.ones(len(t), dtype=bool)
    first[1:] = (pid[1:] != pid[:-1]) | (ev[1:] != ev[:-1])
    return t, first


def onset_events(timeline: pd.DataFrame) -> pd.DataFrame:
    """Canonical events from a timeline: for each patient, event and k = 1..max grade, one row at the
    first time the grade was >= k. Columns ``patient_id, event, grade, hours_since_anchor``, sorted by
    patient, time, event, grade. (The caller adds DEATH rows.)"""
    t, first = _groups(timeline)
    group = np.cumsum(first) - 1
    running = pd.Series(t["grade"].to_numpy(dtype=np.int64)).groupby(group).cummax().to_numpy()
    before = np.zeros_like(running)
    before[1:] = running[:-1]
    before[first] = 0
    new = np.maximum(running - before, 0)  # grades first reached at this row
    rows = np.repeat(np.arange(len(t)), new)
    step = np.arange(len(rows)) - np.repeat(np.cumsum(new) - new, new)
    out = pd.DataFrame({
        "patient_id": pd.array(t["patient_id"].to_numpy(dtype=object)[rows], dtype="str"),
        "event": pd.array(t["event"].to_numpy(dtype=object)[rows], dtype="str"),
        "grade": (before[rows] + 1 + step).astype(np.int8),
        "hours_since_anchor": t["hours_since_anchor"].to_numpy(dtype=np.float64)[rows],
    })
    return out.sort_values(["patient_id", "hours_since_anchor", "event", "grade"], kind="stable",
                           ignore_index=True)


def daily_grades(timeline: pd.DataFrame) -> pd.DataFrame:
    """Per patient and day d (hours [24d, 24d + 24)): the maximum over the day of the CRS and ICANS
    grade in force. Days run from min(0, the first row's day) to the day of the patient's last row;
    a patient without timeline rows has none. Columns ``patient_id, day, crs_grade, icans_grade``."""
    t, first = _groups(timeline)
    if not len(t):
        return pd.DataFrame({"patient_id": pd.array([], dtype="str"), "day": np.zeros(0, np.int64),
                             "crs_grade": np.zeros(0, np.int8), "icans_grade": np.zeros(0, np.int8)})
    hours = t["hours_since_anchor"].to_numpy(dtype=np.float64)
    pid = t["patient_id"].to_numpy(dtype=object)
    span = pd.DataFrame({"patient_id": pid, "day": np.floor(hours / HOURS_PER_DAY)})
    span = span.groupby("patient_id", sort=True)["day"].agg(["min", "max"])
    span["min"] = np.minimum(span["min"], 0)

    last = np.r_[first[1:], True]  # the last row of a group holds until the patient's last day
    start = np.floor(hours / HOURS_PER_DAY).astype(np.int64)
    stop = np.empty(len(t), dtype=np.int64)
    stop[:-1] = np.ceil(hours[1:] / HOURS_PER_DAY).astype(np.int64) - 1  # next row's time is exclusive
    stop[last] = span.loc[pid[last], "max"].to_numpy(dtype=np.int64)
    stop = np.maximum(stop, start)
    covered = pd.DataFrame({
        "patient_id": np.repeat(pid, stop - start + 1), "event": np.repeat(t["event"].to_numpy(dtype=object), stop - start + 1),
        "day": _ranges(start, stop), "grade": np.repeat(t["grade"].to_numpy(dtype=np.int64), stop - start + 1),
    })
    wide = covered.pivot_table(index=["patient_id", "day"], columns="event", values="grade", aggfunc="max")

    n_days = (span["max"] - span["min"] + 1).to_numpy(dtype=np.int64)
    days = pd.MultiIndex.from_arrays([np.repeat(span.index.to_numpy(dtype=object), n_days),
                                      _ranges(span["min"].to_numpy(dtype=np.int64), span["max"].to_numpy(dtype=np.int64))],
                                     names=["patient_id", "day"])
    wide = wide.reindex(days).reindex(columns=list(EVENTS)).fillna(0)
    return pd.DataFrame({
        "patient_id": pd.array(days.get_level_values(0).to_numpy(dtype=object), dtype="str"),
        "day": days.get_level_values(1).to_numpy(dtype=np.int64),
        "crs_grade": wide["CRS"].to_numpy(dtype=np.int8),
        "icans_grade": wide["ICANS"].to_numpy(dtype=np.int8),
    })


def _ranges(start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Concatenated integer ranges [start_i, stop_i] (inclusive)."""
    n = stop - start + 1
    return np.repeat(start - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
