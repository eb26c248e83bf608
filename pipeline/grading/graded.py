"""The graded tables of a cohort under ``cohort.grades`` (docs/grading.md): what ``crs grade`` writes and
what ``crs predict`` computes the same way for new patients, so features are graded alike in both.

:func:`graded_tables` returns ``events`` (what labels come from), ``grades`` (the long timeline
featurize reads: CRS / ICANS grade in force, HYPOTENSION / HYPOXIA components graded from observations),
``timeline`` (the derived timeline with reasons) and ``daily_grades``; :func:`grading_report` the counts.
"""

from __future__ import annotations

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


def _rows(tables: dict[str, pd.DataFrame], analytes: tuple[str, ...], items: tuple[str, ...] | None) -> pd.DataFrame:
    """(patient_id, hours_since_anchor) of measurements of ``analytes`` and observations of ``items``
    (``None``: every observation)."""
    parts = []
    measurements = tables.get("measurements")
    if measurements is not None and len(measurements) and analytes:
        keep = measurements["analyte"].astype("str").isin(analytes).to_numpy()
        parts.append(measurements.loc[keep, ["patient_id", "hours_since_anchor"]])
    observations = tables.get("observations")
    if observations is not None and len(observations) and (items is None or items):
        keep = slice(None) if items is None else observations["item"].astype("str").isin(items).to_numpy()
        parts.append(observations.loc[keep, ["patient_id", "hours_since_anchor"]])
    if not parts:
        return pd.DataFrame({"patient_id": pd.Series(dtype="str"), "hours_since_anchor": pd.Series(dtype="float64")})
    return pd.concat(parts, ignore_index=True).astype({"patient_id": "str", "hours_since_anchor": "float64"})


def grading_inputs(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """(patient_id, hours_since_anchor) of every row the engine grades from: the patients' assessments."""
    return _rows(tables, GRADING_ANALYTES, None)


def _empty_events() -> pd.DataFrame:
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


def _first_assessed(tables: dict[str, pd.DataFrame], key: str) -> pd.Series:
    """Per patient, the first hour the component ``key`` was assessed (blood pressure; oxygen)."""
    analytes, items = COMPONENT_INPUTS[key]
    assessed = _rows(tables, analytes, items)
    return assessed.groupby("patient_id", sort=True)["hours_since_anchor"].min()


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
        first = _first_assessed(tables, key)
        since = first.reindex(crs_pid).to_numpy(dtype=np.float64)
        after = crs_hours >= since  # NaN (never assessed): False
        pid = np.concatenate([first.index.to_numpy(dtype=object), crs_pid[after]])
        hours = np.concatenate([first.to_numpy(dtype=np.float64), crs_hours[after]])
        grade = np.concatenate([np.zeros(len(first)), crs[f"{key.lower()}_grade"].to_numpy(dtype=np.float64)[after]])
        # The start rows come first at equal (patient, hour): the graded row, last, wins over the 0.
        order = np.lexsort((np.r_[np.zeros(len(first)), np.ones(after.sum())], hours, pid.astype(str)))
        pid, hours, grade = pid[order], hours[order], grade[order]
        last_at_hour = np.ones(len(pid), dtype=bool)
        last_at_hour[:-1] = (pid[1:] != pid[:-1]) | (hours[1:] != hours[:-1])
        pid, hours, grade = pid[last_at_hour], hours[last_at_hour], grade[last_at_hour]
        changed = np.ones(len(pid), dtype=bool)
        changed[1:] = (pid[1:] != pid[:-1]) | (grade[1:] != grade[:-1])
        parts.append(pd.DataFrame({"patient_id": pid[changed], "hours_since_anchor": hours[changed],
                                   "event": key, "grade": grade[changed]}))
    return pd.concat(parts, ignore_index=True)[list(GRADE_COLUMNS)]


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
    assessed = grading_inputs(tables)
    if strict and mode != "given" and assessed.empty:
        raise UserError(f"cohort.grades: {mode} needs raw observations (vitals {', '.join(GRADING_ANALYTES)} "
                        "in measurements, or an observations table); this cohort has none (docs/grading.md)")
    given = given_events(config, tables.get("events"))
    rules = rules or GradingRules(**config.grading.model_dump())
    timeline = grade_timeline(tables, rules) if not assessed.empty else _empty_timeline()
    if mode == "derive":
        events, syndromes = derived_events(timeline, given), _syndrome_rows(timeline)
    else:
        events, syndromes = given, grades_from_events(given).assign(reason=GIVEN_REASON)
    grades = pd.concat([syndromes, component_rows(timeline, tables).assign(reason="")], ignore_index=True)
    grades = grades.astype({"patient_id": "str", "event": "str", "grade": "float64", "hours_since_anchor": "float64"})
    grades = grades.sort_values(["patient_id", "hours_since_anchor", "event"], kind="stable").reset_index(drop=True)
    if not strict:
        return GradeResult(tables={"events": events, "grades": grades, "timeline": timeline})
    daily = daily_grades(syndromes[list(GRADE_COLUMNS)].astype({"grade": "int8"}))
    return GradeResult(tables={"events": events, "grades": grades, "timeline": timeline, "daily_grades": daily},
                       report=grading_report(config, given, timeline, events, assessed))


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
