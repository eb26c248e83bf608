"""The graded tables of a cohort under ``cohort.grades`` (docs/grading.md): what ``crs grade`` writes and
what ``crs predict`` computes the same way for new patients, so features are graded alike in both.

:func:`graded_tables` returns ``events`` (what labels come from), ``grades`` (the long timeline
featurize reads: CRS / ICANS grade in force, HYPOTENSION / HYPOXIA components graded from observations),
``timeline`` (the derived timeline with reasons) and ``daily_grades``; :func:`grading_report` the counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.landmarks import GRADE_COLUMNS, SUPPORT_COMPONENTS, grades_from_events
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.grading import GradingRules, daily_grades, grade_timeline, onset_events, regrade_legacy
from pipeline.grading.agreement import agreement_report

#: Measurement analytes the grading engine reads (docs/grading.md).
GRADING_ANALYTES = ("TEMP", "SBP", "MAP", "O2_FLOW")
SYNDROMES = ("CRS", "ICANS")
EVENT_COLUMNS = ["patient_id", "event", "grade", "hours_since_anchor"]


@dataclass
class GradeResult:
    tables: dict[str, pd.DataFrame]
    report: dict = field(default_factory=dict)


#: What assesses each CRS component: measurement analytes and observation items (docs/grading.md).
COMPONENT_INPUTS = {"HYPOTENSION": (("SBP", "MAP"), ()), "HYPOXIA": (("O2_FLOW",), ("O2_DEVICE",))}


def _in(column: pd.Series, values: tuple[str, ...]) -> np.ndarray:
    """Whether each cell's text is one of ``values`` (one test per distinct text; missing: False)."""
    codes, uniques = pd.factorize(column)
    table = np.array([str(u) in values for u in uniques] + [False], dtype=bool)
    return table[codes]


def _row_arrays(tables: dict[str, pd.DataFrame], analytes: tuple[str, ...], items: tuple[str, ...] | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(patient_id as text, hours_since_anchor) arrays of measurements of ``analytes`` and observations
    of ``items`` (``None``: every observation)."""
    ids, hours = [np.zeros(0, dtype=object)], [np.zeros(0)]
    measurements = tables.get("measurements")
    if measurements is not None and len(measurements) and analytes:
        keep = _in(measurements["analyte"], analytes)
        ids.append(_text(measurements["patient_id"])[keep])
        hours.append(measurements["hours_since_anchor"].to_numpy(dtype=np.float64)[keep])
    observations = tables.get("observations")
    if observations is not None and len(observations) and (items is None or items):
        keep = slice(None) if items is None else _in(observations["item"], items)
        ids.append(_text(observations["patient_id"])[keep])
        hours.append(observations["hours_since_anchor"].to_numpy(dtype=np.float64)[keep])
    return np.concatenate(ids), np.concatenate(hours)


def _text(column: pd.Series) -> np.ndarray:
    """A patient id column as an object array of str (``astype("str")``, as the frames did)."""
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("str")
    return column.to_numpy(dtype=object)


def _rows(tables: dict[str, pd.DataFrame], analytes: tuple[str, ...], items: tuple[str, ...] | None) -> pd.DataFrame:
    """(patient_id, hours_since_anchor) of measurements of ``analytes`` and observations of ``items``
    (``None``: every observation)."""
    ids, hours = _row_arrays(tables, analytes, items)
    return pd.DataFrame({"patient_id": pd.array(ids, dtype="str"), "hours_since_anchor": hours})


def grading_inputs(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """(patient_id, hours_since_anchor) of every row the engine grades from: the patients' assessments."""
    return _rows(tables, GRADING_ANALYTES, None)


def _empty_events() -> pd.DataFrame:
    return _EMPTY_EVENTS().copy(deep=False)  # a new frame each time (copy-on-write: the template stays empty)


@functools.cache
def _EMPTY_EVENTS() -> pd.DataFrame:  # noqa: N802
    return pd.DataFrame({"patient_id": pd.Series(dtype="str"), "event": pd.Series(dtype="str"),
                         "grade": pd.Series(dtype="int8"), "hours_since_anchor": pd.Series(dtype="float64")})


def given_events(config: Config, events: pd.DataFrame | None) -> pd.DataFrame:
    """The cohort's events on the ASTCT scale; a legacy grade without an ASTCT equivalent is an error."""
    if events is None or not len(events):
        return _empty_events()
    scale = config.cohort.grading_scale
    astct, refusals = regrade_legacy(events[EVENT_COLUMNS], scale)
    if len(refusals):
        kinds = ", ".join(f"{e} grade {int(g)}: {n}" for (e, g), n in
                          refusals.groupby(["event", "legacy_grade"]).size().items())
        raise UserError(
            f"events: {len(refusals)} {scale} grade(s) have no ASTCT equivalent without the underlying "
            f"observations ({kinds}); set cohort.grades: derive to grade from raw observations "
            f"(docs/grading.md), or cohort.grading_scale: ASTCT if they are ASTCT grades")
    return astct.astype({"patient_id": "str", "event": "str", "hours_since_anchor": "float64"})


def _first_assessed(tables: dict[str, pd.DataFrame], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per patient (ids sorted), the first hour the component ``key`` was assessed (blood pressure;
    oxygen): a group-by minimum in arrays (NaN hours skipped; NaN when a patient has only those)."""
    analytes, items = COMPONENT_INPUTS[key]
    ids, hours = _row_arrays(tables, analytes, items)
    codes, uniques = pd.factorize(ids, sort=True)
    first = np.full(len(uniques), np.nan)
    np.fmin.at(first, codes, hours)
    return np.asarray(uniques, dtype=object), first


def component_rows(timeline: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """HYPOTENSION / HYPOXIA rows for featurize: 0 from each patient's first assessment of that component
    (blood pressure; oxygen device or flow), then its grade at every CRS row of the derived timeline
    where it changes. A patient never assessed for a component has no row (featurize: NaN).

    Array code, not group-bys: ``crs predict`` runs it for a single patient on the bedside hot path."""
    crs = timeline[(timeline["event"] == "CRS").to_numpy()]
    crs_pid = crs["patient_id"].astype("str").to_numpy(dtype=object)
    crs_hours = crs["hours_since_anchor"].to_numpy(dtype=np.float64)
    parts = []
    for key in SUPPORT_COMPONENTS:
        first_ids, first = _first_assessed(tables, key)
        at = pd.Index(first_ids, dtype=object).get_indexer(crs_pid) if len(crs_pid) else np.zeros(0, dtype=np.intp)
        since = np.append(first, np.nan)[at]  # -1 (never assessed): NaN
        after = crs_hours >= since  # NaN (never assessed): False
        pid = np.concatenate([first_ids, crs_pid[after]])
        hours = np.concatenate([first, crs_hours[after]])
        grade = np.concatenate([np.zeros(len(first)), crs[f"{key.lower()}_grade"].to_numpy(dtype=np.float64)[after]])
        # The start rows come first at equal (patient, hour): the graded row, last, wins over the 0.
        order = np.lexsort((np.r_[np.zeros(len(first)), np.ones(after.sum())], hours, pid.astype(str)))
        pid, hours, grade = pid[order], hours[order], grade[order]
        last_at_hour = np.ones(len(pid), dtype=bool)
        last_at_hour[:-1] = (pid[1:] != pid[:-1]) | (hours[1:] != hours[:-1])
        pid, hours, grade = pid[last_at_hour], hours[last_at_hour], grade[last_at_hour]
        changed = np.ones(len(pid), dtype=bool)
        changed[1:] = (pid[1:] != pid[:-1]) | (grade[1:] != grade[:-1])
        parts.append((pid[changed], hours[changed], np.full(int(changed.sum()), key, dtype=object), grade[changed]))
    pid, hours, event, grade = (np.concatenate(columns) for columns in zip(*parts, strict=True))
    return pd.DataFrame({"patient_id": pd.array(pid, dtype="str"), "hours_since_anchor": hours,
                         "event": pd.array(event, dtype="str"), "grade": grade})


def derived_events(timeline: pd.DataFrame, given: pd.DataFrame) -> pd.DataFrame:
    """Onsets graded from observations plus the cohort's DEATH rows (death ends every time at risk)."""
    deaths = given[given["event"] == "DEATH"] if len(given) else _empty_events()
    events = pd.concat([onset_events(timeline)[EVENT_COLUMNS], deaths[EVENT_COLUMNS]], ignore_index=True)
    return events.sort_values(["patient_id", "hours_since_anchor", "event"], kind="stable").reset_index(drop=True)


#: What a clinician reads as the source of a recorded (given) grade.
GIVEN_REASON = "recorded in the events table"


def _syndrome_rows(timeline: pd.DataFrame) -> pd.DataFrame:
    """CRS / ICANS rows of the derived timeline with what set each grade (``reason``)."""
    rows = timeline.loc[timeline["event"].isin(SYNDROMES), [*GRADE_COLUMNS, "reason"]]
    return rows.assign(reason=rows["reason"].astype("str"))


def graded_tables(config: Config, tables: dict[str, pd.DataFrame], rules: GradingRules | None = None,
                  *, strict: bool = True) -> GradeResult:
    """Grade ``tables`` (ingest contract) under ``config.cohort.grades``. Pure: nothing is read or written.

    ``strict`` (the ``crs grade`` stage): a derive / compare run without any raw observation is an error,
    and the report and daily grades are computed. ``crs predict`` (``strict=False``) gets only the events
    and grades that scoring reads, and scores patients without observations with grade 0 and unassessed
    components."""
    mode = config.cohort.grades
    assessed = grading_inputs(tables) if strict else None  # scoring needs only whether there is any
    if strict and mode != "given" and assessed.empty:
        raise UserError(f"cohort.grades: {mode} needs raw observations (vitals {', '.join(GRADING_ANALYTES)} "
                        "in measurements, or an observations table); this cohort has none (docs/grading.md)")
    given = given_events(config, tables.get("events"))
    rules = rules or GradingRules(**config.grading.model_dump())
    has_assessment = not assessed.empty if assessed is not None else len(_row_arrays(tables, GRADING_ANALYTES, None)[0]) > 0
    timeline = grade_timeline(tables, rules) if has_assessment else _empty_timeline()
    if mode == "derive":
        events, syndromes = derived_events(timeline, given), _syndrome_rows(timeline)
    elif strict or len(given):
        events, syndromes = given, grades_from_events(given).assign(reason=GIVEN_REASON)
    else:  # no recorded grade: no syndrome row (scoring reads only the grades built below)
        events, syndromes = given, None
    grades = _sorted_grades([part for part in (syndromes, component_rows(timeline, tables)) if part is not None])
    if not strict:
        return GradeResult(tables={"events": events, "grades": grades, "timeline": timeline})
    daily = daily_grades(syndromes[list(GRADE_COLUMNS)].astype({"grade": "int8"}))
    return GradeResult(tables={"events": events, "grades": grades, "timeline": timeline, "daily_grades": daily},
                       report=grading_report(config, given, timeline, events, assessed))


def _texts(column: pd.Series) -> np.ndarray:
    """A column as ``astype("str")`` gives it, as an object array (missing: NaN)."""
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("str")
    return column.to_numpy(dtype=object, na_value=np.nan)


def _sort_codes(texts: np.ndarray) -> np.ndarray:
    """Sort keys of texts as ``sort_values`` orders them: code-point order, missing last."""
    codes, uniques = pd.factorize(texts, sort=True)
    return np.where(codes < 0, len(uniques), codes)


def _sorted_grades(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of ``parts`` (GRADE_COLUMNS, and ``reason`` or none: "") typed and sorted by patient,
    hour and event (stable): array code, since it runs once per scored request."""
    n = [len(p) for p in parts]
    pid = np.concatenate([np.zeros(0, dtype=object), *(_texts(p["patient_id"]) for p in parts)])
    event = np.concatenate([np.zeros(0, dtype=object), *(_texts(p["event"]) for p in parts)])
    grade = np.concatenate([np.zeros(0), *(p["grade"].to_numpy(dtype=np.float64) for p in parts)])
    hours = np.concatenate([np.zeros(0), *(p["hours_since_anchor"].to_numpy(dtype=np.float64) for p in parts)])
    reason = np.concatenate([np.zeros(0, dtype=object), *(
        _texts(p["reason"]) if "reason" in p.columns else np.full(k, "", dtype=object) for p, k in zip(parts, n, strict=True)
    )])
    order = np.lexsort((_sort_codes(event), hours, _sort_codes(pid)))  # stable, as sort_values(kind="stable")
    return pd.DataFrame({"patient_id": pd.array(pid[order], dtype="str"), "hours_since_anchor": hours[order],
                         "event": pd.array(event[order], dtype="str"), "grade": grade[order],
                         "reason": pd.array(reason[order], dtype="str")})


def _empty_timeline() -> pd.DataFrame:
    columns = {"patient_id": "str", "hours_since_anchor": "float64", "event": "str", "grade": "int8",
               "domain": "str", "reason": "str", "hypotension_grade": "int8", "hypoxia_grade": "int8"}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _max_grades(events: pd.DataFrame, event: str) -> pd.Series:
    rows = events[events["event"] == event]
    return rows.groupby("patient_id")["grade"].max()


def grading_report(config: Config, given: pd.DataFrame, timeline: pd.DataFrame, events: pd.DataFrame,
                   assessed: pd.DataFrame) -> dict:
    """``reports/grading.json``: counts and agreement only (it is kept in git: no id, time or value)."""
    patients = sorted(set(assessed["patient_id"]) | set(given["patient_id"]) | set(events["patient_id"]))
    report: dict = {
        "mode": config.cohort.grades,
        "grading_scale": config.cohort.grading_scale,
        "patients_assessed": int(assessed["patient_id"].nunique()),
        "patients_by_max_grade": {
            event: {str(g): int(n) for g, n in
                    _max_grades(events, event).reindex(patients, fill_value=0).value_counts().sort_index().items()}
            for event in SYNDROMES
        },
        "timeline_rows_by_domain": {str(k): int(v) for k, v in
                                    timeline.loc[timeline["grade"] > 0, "domain"].value_counts().sort_index().items()},
    }
    derived = onset_events(timeline) if len(timeline) else _empty_events()
    has_given = given["event"].isin(SYNDROMES).any()
    if len(timeline) and has_given:
        report["agreement"] = agreement_report(given, derived, patients)
    elif config.cohort.grades == "compare":
        raise UserError("cohort.grades: compare needs CRS or ICANS rows in the events table to compare with")
    return report
