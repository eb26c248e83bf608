"""ASTCT ICANS (docs/grading.md "ICANS"): the worst domain, each observation held until the next of
its item or its hold. Children (``Inputs.child``) with a CAPD score in force use it instead of ICE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import stream as s
from .crs import observed_terms
from .inputs import Inputs
from .rules import CAPD_MIN_SEVERE, DOMAIN, ICANS_TERM_ITEMS, ICE_GRADE, GradingRules


def _scores(data: Inputs, item: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = data.observed(item)
    return rows["code"], rows["time"], rows["score"]


def ice_grade(score: np.ndarray) -> np.ndarray:
    """ICE 0-10 -> grade; NaN (not assessable) scores nothing."""
    index = np.clip(np.nan_to_num(np.floor(score), nan=10.0), 0, 10).astype(np.int64)
    return ICE_GRADE[index]


def capd_grade(score: np.ndarray) -> np.ndarray:
    return np.select([score >= CAPD_MIN_SEVERE, score >= 1], [3, 1], 0).astype(np.int8)


def add_icans_entries(parts: s.Parts, data: Inputs, rules: GradingRules) -> None:
    code, time, score = _scores(data, "ICE_SCORE")
    # Lower score is worse: at equal times the worst score is last; "not assessable" (NaN) goes first.
    parts.add(code, time, s.ICE, tie=np.nan_to_num(-score, nan=-np.inf), value=score)
    graded = ice_grade(score) > 0
    parts.expiry(code[graded], time[graded] + rules.ice_hold_hours)

    code, time, score = _scores(data, "CAPD_SCORE")
    child = data.child[code]  # adults' CAPD rows are not read (ICE is the adult instrument)
    code, time, score = code[child], time[child], score[child]
    parts.add(code, time, s.CAPD, tie=np.nan_to_num(score, nan=-np.inf), value=score)
    # Every CAPD score's end matters, a normal one's too: it may unmask an ICE score still in force.
    in_force = ~np.isnan(score)
    parts.expiry(code[in_force], time[in_force] + rules.ice_hold_hours)

    for offset, (item, _, hold) in enumerate(ICANS_TERM_ITEMS):
        rows, grades = observed_terms(data, item)
        code, time = rows["code"], rows["time"]
        parts.add(code, time, s.TERM_KIND0 + offset, tie=grades, value=grades,
                  label=parts.label_codes(data.words)[rows["term"]])
        parts.expiry(code[grades > 0], time[grades > 0] + getattr(rules, hold))


@dataclass(frozen=True)
class IcansGrades:
    grade: np.ndarray  # int8 per grid point
    domain: np.ndarray  # int8 domain code
    detail: np.ndarray  # int64: the grade (ICE, CAPD) or the term's label


def evaluate_icans(st: s.Stream, rules: GradingRules) -> IcansGrades:
    n = len(st.grid)
    grade = np.zeros(n, dtype=np.int8)
    domain = np.full(n, DOMAIN[""], dtype=np.int8)
    detail = np.zeros(n, dtype=np.int64)

    def worse(candidate: np.ndarray, name: np.ndarray | int, what: np.ndarray) -> None:
        # Strictly worse only: at a tie the domain met first (ICANS_TERM_ITEMS order) is named.
        hit = candidate > grade
        grade[hit] = candidate[hit]
        domain[hit] = name[hit] if isinstance(name, np.ndarray) else name
        detail[hit] = what[hit]

    for offset, (_, name, hold) in enumerate(ICANS_TERM_ITEMS):
        j = st.latest_kind(s.TERM_KIND0 + offset, getattr(rules, hold))
        worse(st.take(st.value, j, 0.0).astype(np.int8), DOMAIN[name], st.take(st.label, j, -1))
    ice = ice_grade(st.take(st.value, st.latest_kind(s.ICE, rules.ice_hold_hours), np.nan))
    capd_score = st.take(st.value, st.latest_kind(s.CAPD, rules.ice_hold_hours), np.nan)
    capd = ~np.isnan(capd_score)  # a CAPD score in force replaces ICE (a child's not-assessable does not)
    cognition = np.where(capd, capd_grade(capd_score), ice).astype(np.int8)
    worse(cognition, np.where(capd, DOMAIN["CAPD"], DOMAIN["ICE"]).astype(np.int8), cognition.astype(np.int64))
    return IcansGrades(grade, domain, detail)
