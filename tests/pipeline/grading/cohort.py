"""Hand-built patients for the grading tests: one row per fact, readable at a glance.

``build(("TEMP", 0, 38.0), ("O2_DEVICE", 1, "nasal_cannula"), ("norepinephrine", 2), ("DEATH", 9))``
gives the ingest-contract tables of one patient; ``grade_at`` reads the grade in force at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.grading import GradingRules, grade_timeline

MEASURED = {"TEMP", "SBP", "MAP", "O2_FLOW", "HR"}
TERM_ITEMS = {"O2_DEVICE", "CONSCIOUSNESS", "SEIZURE", "MOTOR_WEAKNESS", "CEREBRAL_EDEMA"}
SCORE_ITEMS = {"ICE_SCORE", "CAPD_SCORE"}


def build(*facts: tuple, age: float | None = 50.0, pid: str = "P1") -> dict[str, pd.DataFrame]:
    m, o, t, e = [], [], [], []
    for fact in facts:
        name, hour, *rest = fact
        if name in MEASURED:
            m.append((pid, float(hour), name, float(rest[0])))
        elif name in TERM_ITEMS:
            o.append((pid, float(hour), name, rest[0], math.nan))
        elif name in SCORE_ITEMS:
            score = rest[0]
            o.append((pid, float(hour), name, "not_assessable" if score is None else str(score),
                      math.nan if score is None else float(score)))
        elif name == "DEATH":
            e.append((pid, "DEATH", 5, float(hour)))
        else:  # a drug: (drug, start[, end])
            t.append((pid, float(hour), name, float(rest[0]) if rest else math.nan))
    return {
        "patients": pd.DataFrame({"patient_id": [pid], "age": [np.nan if age is None else age]}),
        "measurements": pd.DataFrame(m, columns=["patient_id", "hours_since_anchor", "analyte", "value"]),
        "observations": pd.DataFrame(o, columns=["patient_id", "hours_since_anchor", "item", "value", "score"]),
        "treatments": pd.DataFrame(t, columns=["patient_id", "hours_since_anchor", "drug", "end_hours_since_anchor"]),
        "events": pd.DataFrame(e, columns=["patient_id", "event", "grade", "hours_since_anchor"]),
    }


def merge(*cohorts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: pd.concat([c[name] for c in cohorts], ignore_index=True) for name in cohorts[0]}


def state_at(timeline: pd.DataFrame, event: str, hour: float, pid: str = "P1") -> pd.Series | None:
    """The timeline row in force at ``hour`` (the last change at or before it), or None (grade 0)."""
    rows = timeline[(timeline["patient_id"] == pid) & (timeline["event"] == event)
                    & (timeline["hours_since_anchor"] <= hour)]
    return None if rows.empty else rows.iloc[-1]


def grade_at(tables: dict[str, pd.DataFrame] | pd.DataFrame, event: str, hour: float, pid: str = "P1",
             rules: GradingRules | None = None) -> int:
    timeline = tables if isinstance(tables, pd.DataFrame) else grade_timeline(tables, rules or GradingRules())
    row = state_at(timeline, event, hour, pid)
    return 0 if row is None else int(row["grade"])


def reason_at(tables: dict[str, pd.DataFrame], event: str, hour: float) -> str:
    row = state_at(grade_timeline(tables, GradingRules()), event, hour)
    return "" if row is None else str(row["reason"])
