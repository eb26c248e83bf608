"""ASTCT CRS (docs/grading.md "CRS"): fever or its waiver, then the worse of hypotension and hypoxia.

``add_crs_entries`` puts the rows CRS reads into the stream (with their expiry points);
``evaluate_crs`` grades every grid point. Details say which evidence set the grade (see
``timeline.reason``): waiver drug label, SBP/MAP bits, active vasopressor bits, device term or flow case.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.registry import drug_classes, observation_terms

from . import stream as s
from .inputs import Inputs, Rows
from .rules import DOMAIN, NASAL_CANNULA, VASOPRESSIN, VASOPRESSOR, WAIVER_CLASSES, GradingRules

#: Hypoxia details that are not a device term: nasal cannula above the low-flow limit, flow only.
NC_HIGH_FLOW, FLOW_LOW_NO_DEVICE, FLOW_HIGH_NO_DEVICE = -1, -2, -3


def term_grades(item: str) -> dict[str, int]:
    return dict(_term_grades(item))


@functools.cache
def _term_grades(item: str) -> dict[str, int]:
    """The registry's terms of ``item`` and their grades (the registry is read once per process)."""
    terms = observation_terms()
    rows = terms[terms["item"] == item]
    return dict(zip(rows["term"], rows["grade"], strict=True))


def observed_terms(data: Inputs, item: str) -> tuple[Rows, np.ndarray]:
    """The rows of one term item and their grades; a term outside the registry is an error (ingest
    quarantines those; grading never guesses one)."""
    rows = data.observed(item)
    grades_of = _term_grades(item)  # once per distinct word (as Series.map): a missing term is NaN
    table = np.array([grades_of.get(w, np.nan) if isinstance(w, str) else np.nan for w in data.words], dtype=np.float64)
    grades = table[rows["term"]] if len(table) else np.zeros(0)
    if np.isnan(grades).any():
        raise ValueError(f"grading: {int(np.isnan(grades).sum())} {item} row(s) carry a term not in observations.csv")
    return rows, grades


def add_crs_entries(parts: s.Parts, data: Inputs, rules: GradingRules) -> None:
    m = data.measurements
    code, time, value = m["code"], m["time"], m["value"]
    fever = data.measured("TEMP") & (value >= rules.fever_celsius)
    parts.add(code[fever], time[fever], s.FEVER)
    parts.expiry(code[fever], time[fever] + rules.fever_window_hours)
    parts.expiry(code[fever], time[fever] + rules.fever_waiver_hours)
    for analyte_code, kind, below in (("SBP", s.SBP, rules.sbp_below_mmhg), ("MAP", s.MAP, rules.map_below_mmhg)):
        rows = data.measured(analyte_code)
        parts.add(code[rows], time[rows], kind, tie=-value[rows], value=value[rows])  # lowest last
        low = rows & (value < below)
        parts.expiry(code[low], time[low] + rules.vital_hold_hours)
    flow = data.measured("O2_FLOW")
    parts.add(code[flow], time[flow], s.FLOW, tie=value[flow], value=value[flow])
    some = flow & (value > 0)
    parts.expiry(code[some], time[some] + rules.vital_hold_hours)

    rows, grades = observed_terms(data, "O2_DEVICE")
    dcode, dtime = rows["code"], rows["time"]
    parts.add(dcode, dtime, s.DEVICE, tie=grades, value=grades, label=parts.label_codes(data.words)[rows["term"]])
    parts.expiry(dcode[grades > 0], dtime[grades > 0] + rules.device_hold_hours)
    _add_treatments(parts, data, rules, first_fever=_first_fever(code[fever], time[fever], len(data.ids)))


def _first_fever(code: np.ndarray, time: np.ndarray, n_patients: int) -> np.ndarray:
    first = np.full(n_patients, np.inf)
    np.minimum.at(first, code, time)
    return first


def _add_treatments(parts: s.Parts, data: Inputs, rules: GradingRules, first_fever: np.ndarray) -> None:
    t = data.treatments
    drug_class = _drug_classes(t["drug"])
    code, time, end = t["code"], t["time"], t["end"]
    pressor = (drug_class == VASOPRESSOR) | (drug_class == VASOPRESSIN)
    # A row without an end is one administration, active for vasopressor_row_hours.
    stop = np.where(np.isnan(end), time + rules.vasopressor_row_hours, end)[pressor]
    parts.add(code[pressor], time[pressor], s.VASO, end=stop, label=parts.label_codes(t["drug"][pressor]))
    parts.expiry(code[pressor], stop)
    # Only a dose at or after the patient's first fever waives the fever rule: prophylaxis waives nothing.
    waiver = np.isin(drug_class, WAIVER_CLASSES) & (time >= first_fever[code])
    parts.add(code[waiver], time[waiver], s.DOSE, label=parts.label_codes(t["drug"][waiver]))


#: Up to this many treatment rows (one new patient's), classes are looked up per row: no pandas call.
_FEW_ROWS = 64


def _drug_classes(drugs: np.ndarray) -> np.ndarray:
    """Class per drug (NaN for a drug the registry does not class), as ``Series.map`` of the table gives."""
    classes = drug_classes()
    if len(drugs) <= _FEW_ROWS:
        return np.array([classes.get(d, np.nan) for d in drugs] or [], dtype=object)
    return pd.Series(drugs, dtype=object).map(classes).to_numpy(dtype=object)


@dataclass(frozen=True)
class CrsGrades:
    grade: np.ndarray  # int8 per grid point
    domain: np.ndarray  # int8 domain code (rules.DOMAINS)
    detail: np.ndarray  # int64: what within the domain set it
    hypotension: np.ndarray
    hypoxia: np.ndarray
    pressor_names: list[str]  # bit i of a vasopressors detail is pressor_names[i]


def evaluate_crs(st: s.Stream, rules: GradingRules) -> CrsGrades:
    fever = st.latest_kind(s.FEVER, rules.fever_window_hours) >= 0
    recent = st.latest_kind(s.FEVER, rules.fever_waiver_hours) >= 0
    dose = st.latest_kind(s.DOSE)
    waived = ~fever & recent & (dose >= 0)
    hyp, hyp_domain, hyp_detail, names = _hypotension(st, rules)
    hypox, hypox_detail = _hypoxia(st, rules)

    worst = np.maximum(hyp, hypox)
    grade = np.where(fever | waived, np.maximum(worst, 1), 0).astype(np.int8)
    from_hyp = worst >= 2
    domain = np.select([grade == 0, worst <= 1, hyp >= hypox], [DOMAIN[""], DOMAIN["fever"], hyp_domain],
                       DOMAIN["hypoxia"]).astype(np.int8)
    detail = np.select([grade == 0, worst <= 1, from_hyp & (hyp >= hypox)],
                       [0, np.where(fever, -1, st.take(st.label, dose, -1)), hyp_detail], hypox_detail)
    return CrsGrades(grade, domain, detail.astype(np.int64), hyp.astype(np.int8), hypox.astype(np.int8), names)


def _hypotension(st: s.Stream, rules: GradingRules) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Grade 2 for SBP/MAP below threshold without vasopressors; 3 for one vasopressor (with or
    without vasopressin) or vasopressin alone; 4 for two or more distinct non-vasopressin vasopressors."""
    sbp = st.take(st.value, st.latest_kind(s.SBP, rules.vital_hold_hours), np.inf) < rules.sbp_below_mmhg
    mapl = st.take(st.value, st.latest_kind(s.MAP, rules.vital_hold_hours), np.inf) < rules.map_below_mmhg
    vaso = st.kind == s.VASO
    names = sorted({st.labels[i] for i in np.unique(st.label[vaso])})
    counted = np.zeros(len(st.grid), dtype=np.int64)
    vasopressin = np.zeros(len(st.grid), dtype=bool)
    bits = np.zeros(len(st.grid), dtype=np.int64)
    classes = drug_classes()
    for bit, name in enumerate(names):  # a loop over the few vasopressor drugs, not over patients
        mask = vaso & (st.label == st.labels.index(name))
        active = _active(st, mask)
        bits |= active.astype(np.int64) << bit
        if classes.get(name) == VASOPRESSIN:
            vasopressin |= active
        else:
            counted += active
    hyp = np.select([counted >= 2, (counted == 1) | vasopressin, sbp | mapl], [4, 3, 2], 0)
    domain = np.where(hyp >= 3, DOMAIN["vasopressors"], DOMAIN["hypotension"])
    detail = np.where(hyp >= 3, bits, sbp.astype(np.int64) | (mapl.astype(np.int64) << 1))
    return hyp, domain, detail, names


def _active(st: s.Stream, mask: np.ndarray) -> np.ndarray:
    """Is one drug active at each grid point: some row started at or before t and stops after t.
    Rows may overlap, so the latest start carries the running maximum stop of the patient's rows."""
    rows = np.flatnonzero(mask)
    stops = pd.Series(st.end[rows]).groupby(st.code[rows]).cummax().to_numpy()
    running = np.full(len(mask), -np.inf)
    running[rows] = stops
    j = st.latest(mask)
    return st.take(running, j, -np.inf) > st.gtime


def _hypoxia(st: s.Stream, rules: GradingRules) -> tuple[np.ndarray, np.ndarray]:
    device = st.latest_kind(s.DEVICE, rules.device_hold_hours)
    flow = st.take(st.value, st.latest_kind(s.FLOW, rules.vital_hold_hours), 0.0)
    grade = st.take(st.value, device, 0.0)
    term = st.take(st.label, device, -1)
    high = flow > rules.low_flow_max_l_min
    nasal = (device >= 0) & (term == (st.labels.index(NASAL_CANNULA) if NASAL_CANNULA in st.labels else -9))
    none = device < 0
    grade = np.select([nasal & high, none & high, none & (flow > 0)], [3, 3, 2], grade)
    detail = np.select([nasal & high, none & high, none & (flow > 0)],
                       [NC_HIGH_FLOW, FLOW_HIGH_NO_DEVICE, FLOW_LOW_NO_DEVICE], term)
    return grade.astype(np.int64), detail
