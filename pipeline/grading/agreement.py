"""Agreement between given and derived grades (``crs grade`` report): counts and statistics only."""

from __future__ import annotations

import numpy as np
import pandas as pd

GRADES = [0, 1, 2, 3, 4, 5]
#: A grade >= 3 onset counts as on time when derived within this many hours of the given one.
ONSET_TOLERANCE_HOURS = 8.0


def _max_grade(events: pd.DataFrame, event: str, patients: list[str]) -> np.ndarray:
    rows = events[events["event"] == event]
    return rows.groupby("patient_id")["grade"].max().reindex(patients, fill_value=0).to_numpy(dtype=int)


def _onset(events: pd.DataFrame, event: str, min_grade: int) -> pd.Series:
    rows = events[(events["event"] == event) & (events["grade"] >= min_grade)]
    return rows.groupby("patient_id")["hours_since_anchor"].min()


def onset_agreement(given: pd.DataFrame, derived: pd.DataFrame, event: str, min_grade: int = 3) -> dict:
    """For patients with a given grade >= ``min_grade``: how many the derived grades find, and how close."""
    given_onset, derived_onset = _onset(given, event, min_grade), _onset(derived, event, min_grade)
    both = given_onset.index.intersection(derived_onset.index)
    gap = (derived_onset.reindex(both) - given_onset.reindex(both)).abs()
    n = int(len(given_onset))
    within = int((gap <= ONSET_TOLERANCE_HOURS).sum())
    return {
        "patients_given": n,
        "patients_derived": int(len(derived_onset)),
        "found": int(len(both)),
        f"within_{ONSET_TOLERANCE_HOURS:g}_hours": within,
        "share_within": round(within / n, 4) if n else None,
        "median_abs_gap_hours": round(float(gap.median()), 2) if len(gap) else None,
    }


def agreement_report(given: pd.DataFrame, derived: pd.DataFrame, patients: list[str]) -> dict:
    """Per syndrome: confusion matrix of each patient's maximum grade (rows given, columns derived),
    exact agreement, Cohen's kappa (unweighted and quadratic), and the grade >= 3 onset agreement."""
    # Imported here: only `cohort.grades: compare` needs it, and every other grade run would pay about a
    # second of start-up for scikit-learn.
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    out = {}
    for event in ("CRS", "ICANS"):
        g, d = _max_grade(given, event, patients), _max_grade(derived, event, patients)
        same = (g == d).all()  # kappa is undefined when both raters give one category only
        out[event] = {
            "patients": len(patients),
            "exact_agreement": round(float((g == d).mean()), 4) if len(patients) else None,
            "cohen_kappa": 1.0 if same else round(float(cohen_kappa_score(g, d, labels=GRADES)), 4),
            "cohen_kappa_quadratic": 1.0 if same else round(float(cohen_kappa_score(g, d, labels=GRADES,
                                                                                    weights="quadratic")), 4),
            "confusion_max_grade": {"labels": GRADES, "rows_given_columns_derived":
                                    confusion_matrix(g, d, labels=GRADES).tolist()},
            "onset_grade_ge3": onset_agreement(given, derived, event),
        }
    return out
