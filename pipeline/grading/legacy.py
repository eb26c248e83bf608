"""Grades recorded on a legacy scale (Lee 2014, Penn, CARTOX, CTCAE) -> ASTCT, where that is possible.

Driven by ``pipeline/registry/legacy_grades.csv``: a (scale, event, legacy grade) listed there maps to
its ASTCT grade (only 0 and 5 today); any other CRS/ICANS row is refused, per row, with a reason. The
grades 1-4 of these scales measure different things, so a mapping would be a guess.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import pandas as pd

ASTCT = "ASTCT"
#: Scale names as a reason spells them.
SCALE_NAMES = {"Lee2014": "Lee 2014", "Penn": "Penn", "CARTOX": "CARTOX", "CTCAE": "CTCAE"}
GRADED = ("CRS", "ICANS")
REFUSAL_COLUMNS = ("scale", "event", "legacy_grade", "reason")


@functools.cache
def legacy_grades() -> pd.DataFrame:
    """``legacy_grades.csv``: scale, event, legacy_grade (int), astct_grade (int), note."""
    with resources.files("pipeline.registry").joinpath("legacy_grades.csv").open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")
    return table.astype({"legacy_grade": int, "astct_grade": int})


def regrade_legacy(events: pd.DataFrame, scale: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``events`` (patient_id, event, grade, hours_since_anchor) graded on ``scale`` -> (ASTCT events,
    refusals). DEATH and other non-graded rows pass through; ASTCT is the identity. ``refusals`` is
    indexed by the refused rows' original index labels (name ``row``), columns ``REFUSAL_COLUMNS``."""
    if scale == ASTCT:
        return events.copy(), _refusals(pd.DataFrame(columns=list(REFUSAL_COLUMNS)))
    if scale not in SCALE_NAMES:
        raise ValueError(f"unknown grading scale '{scale}': expected one of {[ASTCT, *SCALE_NAMES]}")
    table = legacy_grades()
    table = table[table["scale"] == scale]
    mapping = {(e, g): a for e, g, a in zip(table["event"], table["legacy_grade"], table["astct_grade"], strict=True)}

    event = events["event"].astype(str).to_numpy(dtype=object)
    grade = pd.to_numeric(events["grade"], errors="coerce").to_numpy(dtype=np.float64)
    graded = np.isin(event, GRADED)
    whole = np.isfinite(grade) & (grade == np.round(grade))
    key = [(e, int(g)) if w else None for e, g, w in zip(event, grade, whole, strict=True)]
    astct = np.array([mapping.get(k, -1) if k else -1 for k in key], dtype=np.int64)
    refused = graded & (astct < 0)

    kept = events[~refused].copy()
    converted = graded[~refused]
    if converted.any():  # an empty assignment into an integer column raises in pandas
        kept.loc[converted, "grade"] = astct[~refused][converted]
    refusals = pd.DataFrame({
        "scale": scale, "event": event[refused], "legacy_grade": events["grade"].to_numpy()[refused],
        "reason": [f"{SCALE_NAMES[scale]} grade {_grade_text(g)} -> ASTCT needs the underlying observations "
                   "(set cohort.grades: derive)" for g in events["grade"].to_numpy()[refused]],
    }, index=events.index[refused])
    return kept, _refusals(refusals)


def _grade_text(grade: object) -> str:
    value = pd.to_numeric(pd.Series([grade]), errors="coerce").iloc[0]
    return str(int(value)) if np.isfinite(value) and value == round(value) else "(not a whole number)"


def _refusals(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[list(REFUSAL_COLUMNS)]
    frame.index.name = "row"
    return frame
