"""A slow, literal reading of docs/grading.md for one patient at one time: the oracle the vectorised
engine is checked against. Plain loops over a handful of facts (the ``cohort.build`` notation)."""

from __future__ import annotations

import math

from pipeline.grading import GradingRules
from pipeline.registry import drug_classes, observation_terms

TERM_GRADE = {(r.item, r.term): r.grade for r in observation_terms().itertuples()}
HOLDS = {"CONSCIOUSNESS": "consciousness_hold_hours", "SEIZURE": "seizure_hold_hours",
         "MOTOR_WEAKNESS": "motor_hold_hours", "CEREBRAL_EDEMA": "edema_hold_hours"}


def _latest(facts: list[tuple], name: str, t: float, hold: float, worse) -> tuple | None:
    """The latest fact of ``name`` at or before t still held at t; at one time the worst (max of ``worse``)."""
    rows = [f for f in facts if f[0] == name and f[1] <= t]
    if not rows:
        return None
    last = max(f[1] for f in rows)
    best = max((f for f in rows if f[1] == last), key=worse)
    return best if t < best[1] + hold else None


def crs_grade(facts: list[tuple], t: float, r: GradingRules) -> int:
    fevers = [f[1] for f in facts if f[0] == "TEMP" and f[2] >= r.fever_celsius]
    fever = any(h <= t < h + r.fever_window_hours for h in fevers)
    waived = False
    if fevers and min(fevers) <= t:
        last = max(h for h in fevers if h <= t)
        doses = [f for f in facts if drug_classes().get(f[0]) in ("anti_cytokine", "steroid", "antipyretic")
                 and min(fevers) <= f[1] <= t]
        waived = bool(doses) and t < last + r.fever_waiver_hours
    if not (fever or waived):
        return 0
    sbp = _latest(facts, "SBP", t, r.vital_hold_hours, lambda f: -f[2])
    mean = _latest(facts, "MAP", t, r.vital_hold_hours, lambda f: -f[2])
    active = {f[0] for f in facts if drug_classes().get(f[0]) in ("vasopressor", "vasopressin")
              and f[1] <= t < (f[1] + r.vasopressor_row_hours if len(f) < 3 or math.isnan(f[2]) else f[2])}
    counted = [d for d in active if drug_classes()[d] == "vasopressor"]
    if len(counted) >= 2:
        hyp = 4
    elif counted or active:
        hyp = 3
    else:
        hyp = 2 if (sbp and sbp[2] < r.sbp_below_mmhg) or (mean and mean[2] < r.map_below_mmhg) else 0
    device = _latest(facts, "O2_DEVICE", t, r.device_hold_hours, lambda f: TERM_GRADE[("O2_DEVICE", f[2])])
    flow_row = _latest(facts, "O2_FLOW", t, r.vital_hold_hours, lambda f: f[2])
    flow = flow_row[2] if flow_row else 0.0
    if device is None:
        hypox = 3 if flow > r.low_flow_max_l_min else 2 if flow > 0 else 0
    elif device[2] == "nasal_cannula" and flow > r.low_flow_max_l_min:
        hypox = 3
    else:
        hypox = TERM_GRADE[("O2_DEVICE", device[2])]
    return max(1, hyp, hypox)


def _ice(score: float | None) -> int:
    if score is None:
        return 0
    return 0 if score >= 10 else 1 if score >= 7 else 2 if score >= 3 else 3


def icans_grade(facts: list[tuple], t: float, r: GradingRules, child: bool) -> int:
    grades = []
    for item, hold in HOLDS.items():
        row = _latest(facts, item, t, getattr(r, hold), lambda f, item=item: TERM_GRADE[(item, f[2])])
        grades.append(TERM_GRADE[(item, row[2])] if row else 0)
    nan_last = lambda f: -math.inf if f[2] is None else -f[2]  # noqa: E731  lowest score is worst
    ice = _latest(facts, "ICE_SCORE", t, r.ice_hold_hours, nan_last)
    capd = _latest(facts, "CAPD_SCORE", t, r.ice_hold_hours, lambda f: -math.inf if f[2] is None else f[2])
    if child and capd and capd[2] is not None:
        grades.append(3 if capd[2] >= 9 else 1 if capd[2] >= 1 else 0)
    else:
        grades.append(_ice(ice[2]) if ice else 0)
    return max(grades)


def reference_timeline(facts: list[tuple], child: bool, r: GradingRules) -> list[tuple]:
    """(time, event, grade) at every change, evaluated at every fact time and every expiry time."""
    deaths = [f[1] for f in facts if f[0] == "DEATH"]
    death = min(deaths) if deaths else math.inf
    holds = [r.fever_window_hours, r.fever_waiver_hours, r.vital_hold_hours, r.device_hold_hours,
             r.ice_hold_hours, r.seizure_hold_hours, r.motor_hold_hours, r.vasopressor_row_hours]
    times = {f[1] for f in facts} | {f[1] + h for f in facts for h in holds}
    times |= {f[2] for f in facts if drug_classes().get(f[0]) and len(f) > 2 and not math.isnan(f[2])}
    out, last = [], {"CRS": 0, "ICANS": 0}
    for t in sorted(x for x in times if x <= death):
        now = {"CRS": crs_grade(facts, t, r), "ICANS": icans_grade(facts, t, r, child)}
        if t == death:
            if now["CRS"] == 4:
                now["CRS"] = 5
            elif now["ICANS"] == 4:
                now["ICANS"] = 5
        for event in ("CRS", "ICANS"):
            if now[event] != last[event]:
                out.append((t, event, now[event]))
                last[event] = now[event]
    return out
