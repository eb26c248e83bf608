"""``grade_timeline``: every change of a patient's ASTCT CRS and ICANS grade, with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.registry import drug_classes

from . import stream as s
from .crs import (
    FLOW_HIGH_NO_DEVICE,
    FLOW_LOW_NO_DEVICE,
    NC_HIGH_FLOW,
    CrsGrades,
    add_crs_entries,
    evaluate_crs,
)
from .icans import IcansGrades, add_icans_entries, evaluate_icans
from .inputs import prepare
from .rules import (
    CAPD_REASON,
    DOMAIN,
    DOMAINS,
    EVENTS,
    ICANS_TERM_ITEMS,
    ICE_REASON,
    VASOPRESSIN,
    GradingRules,
    term_reason,
)

#: Observation items read: the oxygen device, the ICANS term items, and the two cognitive scores.
TERM_ITEMS = ("O2_DEVICE", *(item for item, _, _ in ICANS_TERM_ITEMS))
ITEMS = (*TERM_ITEMS, "ICE_SCORE", "CAPD_SCORE")
COLUMNS = ("patient_id", "hours_since_anchor", "event", "grade", "domain", "reason",
           "hypotension_grade", "hypoxia_grade")


def grade_timeline(tables: dict[str, pd.DataFrame], rules: GradingRules | None = None) -> pd.DataFrame:
    """One row per (patient, event, time) where the patient's ASTCT grade for the event changes.

    ``tables``: the ingest output contract (``patients`` required; ``measurements``, ``observations``,
    ``treatments``, ``events`` optional). Times are hours since the anchor. Output columns: ``COLUMNS``,
    sorted by patient_id, hours_since_anchor, event; no leading grade-0 rows.
    """
    return timeline_frame(timeline_columns(tables, rules))


def timeline_columns(tables: dict[str, pd.DataFrame], rules: GradingRules | None = None) -> dict[str, np.ndarray]:
    """:func:`grade_timeline` as numpy columns (``COLUMNS``; texts as object arrays): what ``crs predict``
    reads for one new patient, where building the frame cost more than the grading."""
    rules = rules or GradingRules()
    data = prepare(tables, rules, ITEMS)
    parts = s.Parts()
    add_crs_entries(parts, data, rules)
    add_icans_entries(parts, data, rules)
    alive = np.isfinite(data.deaths)
    parts.add(np.flatnonzero(alive), data.deaths[alive], s.DEATH)
    st = parts.build()

    crs, icans = evaluate_crs(st, rules), evaluate_icans(st, rules)
    death = data.deaths[st.gcode]
    _attribute_death(st.gtime == death, crs, icans)
    # Nothing is graded after death (the grade at death stands).
    kept = st.gtime <= death
    rows = [_changes(st, kept, event, grades) for event, grades in zip(EVENTS, (crs, icans), strict=True)]
    out = {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
    order = np.lexsort((out["event_code"], out["hours_since_anchor"], out["code"]))
    out = {name: column[order] for name, column in out.items()}
    return {
        "patient_id": data.ids[out["code"]],
        "hours_since_anchor": out["hours_since_anchor"].astype(np.float64),
        "event": np.array(EVENTS, dtype=object)[out["event_code"]],
        "grade": out["grade"].astype(np.int8),
        "domain": np.array(DOMAINS, dtype=object)[out["domain"]],
        "reason": _reasons(out, st, crs.pressor_names, rules),
        "hypotension_grade": out["hypotension_grade"].astype(np.int8),
        "hypoxia_grade": out["hypoxia_grade"].astype(np.int8),
    }


def timeline_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The timeline frame of :func:`timeline_columns` (texts as ``str`` columns)."""
    text = ("patient_id", "event", "domain", "reason")
    return pd.DataFrame({name: pd.array(columns[name], dtype="str") if name in text else columns[name]
                         for name in COLUMNS})


def _attribute_death(at_death: np.ndarray, crs: CrsGrades, icans: IcansGrades) -> None:
    """Grade 5: a death while CRS is grade 4 is CRS's; otherwise, while ICANS is grade 4, ICANS's."""
    to_crs = at_death & (crs.grade == 4)
    to_icans = at_death & ~to_crs & (icans.grade == 4)
    for grades, hit in ((crs, to_crs), (icans, to_icans)):
        grades.grade[hit] = 5
        grades.domain[hit] = DOMAIN["death"]
        grades.detail[hit] = 0


def _changes(st: s.Stream, kept: np.ndarray, event: str, g: CrsGrades | IcansGrades) -> dict[str, np.ndarray]:
    code, grade = st.gcode[kept], g.grade[kept]
    previous = np.zeros_like(grade)
    previous[1:] = grade[:-1]
    first = np.ones(len(code), dtype=bool)
    first[1:] = code[1:] != code[:-1]
    previous[first] = 0  # each patient starts at grade 0: no leading 0 rows
    changed = grade != previous
    hyp = g.hypotension[kept] if isinstance(g, CrsGrades) else np.zeros(len(code), dtype=np.int8)
    hypox = g.hypoxia[kept] if isinstance(g, CrsGrades) else np.zeros(len(code), dtype=np.int8)
    return {
        "code": code[changed], "hours_since_anchor": st.gtime[kept][changed],
        "event_code": np.full(int(changed.sum()), EVENTS.index(event), dtype=np.int8),
        "grade": grade[changed], "domain": g.domain[kept][changed], "detail": g.detail[kept][changed],
        "hypotension_grade": hyp[changed], "hypoxia_grade": hypox[changed],
    }


def _reasons(out: dict[str, np.ndarray], st: s.Stream, pressor_names: list[str], rules: GradingRules) -> np.ndarray:
    """Reason text per output row, formatted once per distinct (event, domain, detail)."""
    keys = np.stack([out[name].astype(np.int64) for name in ("event_code", "domain", "detail")], axis=1)
    if not len(keys):
        return np.zeros(0, dtype=object)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    text = [reason(EVENTS[e], DOMAINS[d], int(detail), st.labels, pressor_names, rules) for e, d, detail in unique]
    return np.array(text, dtype=object)[inverse.ravel()]


def reason(event: str, domain: str, detail: int, labels: list[str], pressor_names: list[str],
           rules: GradingRules) -> str:
    """Short English for what set a grade; thresholds named as categories, never measured values."""
    if domain == "":
        return (f"no temperature >= {rules.fever_celsius:.1f} C in the last {rules.fever_window_hours:g} h"
                " and the fever rule not waived" if event == "CRS" else "no neurological finding in force")
    if domain == "death":
        return f"death while {event} grade 4"
    if domain == "fever":
        if detail < 0:
            return f"temperature >= {rules.fever_celsius:.1f} C in the last {rules.fever_window_hours:g} h"
        return f"fever rule waived after {labels[detail]}"
    if domain == "hypotension":
        found = [f"SBP < {rules.sbp_below_mmhg:g} mmHg"] * (detail & 1) + [f"MAP < {rules.map_below_mmhg:g} mmHg"] * (detail >> 1 & 1)
        return " and ".join(found) + " without vasopressors"
    if domain == "vasopressors":
        return _pressor_reason([n for bit, n in enumerate(pressor_names) if detail >> bit & 1])
    if domain == "hypoxia":
        flow = f"{rules.low_flow_max_l_min:g} L/min"
        special = {NC_HIGH_FLOW: f"nasal cannula above {flow}",
                   FLOW_LOW_NO_DEVICE: f"O2 flow up to {flow} without a recorded device",
                   FLOW_HIGH_NO_DEVICE: f"O2 flow above {flow} without a recorded device"}
        return special.get(detail) or term_reason("O2_DEVICE", labels[detail])
    if domain == "ICE":
        return ICE_REASON[detail]
    if domain == "CAPD":
        return CAPD_REASON[detail]
    item = next(i for i, name, _ in ICANS_TERM_ITEMS if name == domain)
    return term_reason(item, labels[detail])


def _pressor_reason(active: list[str]) -> str:
    classes = drug_classes()
    counted = [n for n in active if classes.get(n) != VASOPRESSIN]
    with_vasopressin = [n for n in active if classes.get(n) == VASOPRESSIN]
    if not counted:
        return "vasopressin alone"
    plural = "vasopressor" if len(counted) == 1 else "vasopressors"
    text = f"{len(counted)} {plural}: {' + '.join(counted)}"
    return text + (f", with {' + '.join(with_vasopressin)}" if with_vasopressin else "")
