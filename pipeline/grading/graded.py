"""The graded tables of a cohort under ``cohort.grades`` (docs/grading.md): what ``crs grade`` writes and
what ``crs predict`` computes the same way for new patients, so features are graded alike in both.

:func:`graded_tables` returns ``events`` (what labels come from), ``grades`` (the long timeline
featurize reads: CRS / ICANS grade in force, HYPOTENSION / HYPOXIA components graded from observations),
``timeline`` (the derived timeline with reasons) and ``daily_grades``; :func:`grading_report` the counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.landmarks import GRADE_COLUMNS, SUPPORT_COMPONENTS, grades_from_events
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.grading import GradingRules, daily_grades, onset_events, regrade_legacy
from pipeline.grading.agreement import agreement_report
from pipeline.grading.timeline import COLUMNS as TIMELINE_COLUMNS
from pipeline.grading.timeline import timeline_columns, timeline_frame
from pipeline.lookup import id_texts, positions

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


class _Assessments:
    """Patient id and hour of the measurement and observation rows, and their analyte / item codes, each
    read once per grading: the "any assessment" check and every component select rows from them (one
    new patient's scoring read them three times over, at ~0.1 ms a read)."""

    def __init__(self, tables: dict[str, pd.DataFrame]) -> None:
        self._frames = {name: frame for name in ("measurements", "observations")
                        if (frame := tables.get(name)) is not None and len(frame)}
        self._cache: dict[tuple[str, str], Any] = {}

    def _once(self, name: str, what: str, compute: Any) -> Any:
        if (name, what) not in self._cache:
            self._cache[name, what] = compute(self._frames[name])
        return self._cache[name, what]

    def _keep(self, name: str, values: tuple[str, ...]) -> np.ndarray:
        """Whether each row's analyte (measurements) or item (observations) is one of ``values``: one
        test per distinct text; missing: False."""
        codes, uniques = self._once(name, "codes", lambda f: pd.factorize(f["analyte" if name == "measurements"
                                                                           else "item"]))
        return np.array([str(u) in values for u in uniques] + [False], dtype=bool)[codes]

    def _wanted(self, analytes: tuple[str, ...], items: tuple[str, ...] | None) -> list[tuple[str, Any]]:
        """(table, rows kept) of measurements of ``analytes`` and observations of ``items`` (``None``: all)."""
        out: list[tuple[str, Any]] = []
        if "measurements" in self._frames and analytes:
            out.append(("measurements", self._keep("measurements", analytes)))
        if "observations" in self._frames and (items is None or items):
            out.append(("observations", slice(None) if items is None else self._keep("observations", items)))
        return out

    def any(self, analytes: tuple[str, ...], items: tuple[str, ...] | None) -> bool:
        """Whether :meth:`rows` would give any row."""
        return any(isinstance(keep, slice) or bool(keep.any()) for _, keep in self._wanted(analytes, items))

    def rows(self, analytes: tuple[str, ...], items: tuple[str, ...] | None) -> tuple[np.ndarray, np.ndarray]:
        """(patient_id as text, hours_since_anchor) arrays of the rows :meth:`_wanted` keeps."""
        ids, hours = [np.zeros(0, dtype=object)], [np.zeros(0)]
        for name, keep in self._wanted(analytes, items):
            ids.append(self._once(name, "ids", lambda f: id_texts(f["patient_id"]))[keep])
            hours.append(self._once(name, "hours", lambda f: f["hours_since_anchor"].to_numpy(dtype=np.float64))[keep])
        return np.concatenate(ids), np.concatenate(hours)


def grading_inputs(tables: dict[str, pd.DataFrame], assessments: _Assessments | None = None) -> pd.DataFrame:
    """(patient_id, hours_since_anchor) of every row the engine grades from: the patients' assessments."""
    ids, hours = (assessments or _Assessments(tables)).rows(GRADING_ANALYTES, None)
    return pd.DataFrame({"patient_id": pd.array(ids, dtype="str"), "hours_since_anchor": hours})


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


def _first_assessed(assessments: _Assessments, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per patient (ids sorted), the first hour the component ``key`` was assessed (blood pressure;
    oxygen): a group-by minimum in arrays (NaN hours skipped; NaN when a patient has only those)."""
    analytes, items = COMPONENT_INPUTS[key]
    ids, hours = assessments.rows(analytes, items)
    codes, uniques = pd.factorize(ids, sort=True)
    first = np.full(len(uniques), np.nan)
    np.fmin.at(first, codes, hours)
    return np.asarray(uniques, dtype=object), first


def component_rows(timeline: dict[str, np.ndarray], assessments: _Assessments) -> dict[str, np.ndarray]:
    """HYPOTENSION / HYPOXIA rows for featurize: 0 from each patient's first assessment of that component
    (blood pressure; oxygen device or flow), then its grade at every CRS row of the derived timeline
    where it changes. A patient never assessed for a component has no row (featurize: NaN).

    ``timeline``: :func:`timeline_columns`. Array code, not group-bys or frames: ``crs predict`` runs it
    for a single patient on the bedside hot path."""
    is_crs = timeline["event"] == "CRS"
    crs_pid, crs_hours = timeline["patient_id"][is_crs], timeline["hours_since_anchor"][is_crs]
    parts = []
    for key in SUPPORT_COMPONENTS:
        first_ids, first = _first_assessed(assessments, key)
        at = positions(first_ids, crs_pid)
        since = np.append(first, np.nan)[at]  # -1 (never assessed): NaN
        after = crs_hours >= since  # NaN (never assessed): False
        pid = np.concatenate([first_ids, crs_pid[after]])
        hours = np.concatenate([first, crs_hours[after]])
        grade = np.concatenate([np.zeros(len(first)), timeline[f"{key.lower()}_grade"][is_crs][after].astype(np.float64)])
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
    return {"patient_id": pid, "hours_since_anchor": hours, "event": event, "grade": grade}


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
    assessments = _Assessments(tables)
    assessed = grading_inputs(tables, assessments) if strict else None  # scoring: only whether there is any
    if strict and mode != "given" and assessed.empty:
        raise UserError(f"cohort.grades: {mode} needs raw observations (vitals {', '.join(GRADING_ANALYTES)} "
                        "in measurements, or an observations table); this cohort has none (docs/grading.md)")
    given = given_events(config, tables.get("events"))
    rules = rules or GradingRules(**config.grading.model_dump())
    has_assessment = not assessed.empty if assessed is not None else assessments.any(GRADING_ANALYTES, None)
    columns = timeline_columns(tables, rules) if has_assessment else _empty_timeline()
    # Scoring reads the timeline's arrays only (building its frame cost ~0.5 ms of a bedside request).
    timeline = timeline_frame(columns) if strict or mode == "derive" else None
    if mode == "derive":
        events, syndromes = derived_events(timeline, given), _syndrome_rows(timeline)
    elif strict or len(given):
        events, syndromes = given, grades_from_events(given).assign(reason=GIVEN_REASON)
    else:  # no recorded grade: no syndrome row (scoring reads only the grades built below)
        events, syndromes = given, None
    grades = _sorted_grades([part for part in (syndromes, component_rows(columns, assessments)) if part is not None])
    if not strict:
        return GradeResult(tables={"events": events, "grades": grades})
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


def _part_texts(part: pd.DataFrame | dict[str, np.ndarray], name: str) -> np.ndarray:
    """A text column of a frame (as ``astype("str")`` gives it) or of arrays (already text)."""
    return _texts(part[name]) if isinstance(part, pd.DataFrame) else part[name]


def _part_numbers(part: pd.DataFrame | dict[str, np.ndarray], name: str) -> np.ndarray:
    column = part[name]
    return column.to_numpy(dtype=np.float64) if isinstance(column, pd.Series) else column.astype(np.float64)


def _sorted_grades(parts: list[pd.DataFrame | dict[str, np.ndarray]]) -> pd.DataFrame:
    """The rows of ``parts`` (frames or arrays of GRADE_COLUMNS, and ``reason`` or none: "") typed and
    sorted by patient, hour and event (stable): array code, since it runs once per scored request."""
    pid = np.concatenate([np.zeros(0, dtype=object), *(_part_texts(p, "patient_id") for p in parts)])
    event = np.concatenate([np.zeros(0, dtype=object), *(_part_texts(p, "event") for p in parts)])
    grade = np.concatenate([np.zeros(0), *(_part_numbers(p, "grade") for p in parts)])
    hours = np.concatenate([np.zeros(0), *(_part_numbers(p, "hours_since_anchor") for p in parts)])
    reason = np.concatenate([np.zeros(0, dtype=object), *(
        _part_texts(p, "reason") if "reason" in p else np.full(len(p["event"]), "", dtype=object) for p in parts
    )])
    order = np.lexsort((_sort_codes(event), hours, _sort_codes(pid)))  # stable, as sort_values(kind="stable")
    return pd.DataFrame({"patient_id": pd.array(pid[order], dtype="str"), "hours_since_anchor": hours[order],
                         "event": pd.array(event[order], dtype="str"), "grade": grade[order],
                         "reason": pd.array(reason[order], dtype="str")})


def _empty_timeline() -> dict[str, np.ndarray]:
    """:func:`timeline_columns` of a cohort without any assessment."""
    texts = ("patient_id", "event", "domain", "reason")
    grades = ("grade", "hypotension_grade", "hypoxia_grade")
    return {name: np.zeros(0, dtype=object if name in texts else np.int8 if name in grades else np.float64)
            for name in TIMELINE_COLUMNS}


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
