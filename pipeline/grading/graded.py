"""The graded tables of a cohort under ``cohort.grades`` (docs/grading.md): what ``crs grade`` writes and
what ``crs predict`` computes the same way for new patients, so features are graded alike in both.

:func:`graded_tables` returns ``events`` (what labels come from), ``grades`` (the long timeline
featurize reads: CRS / ICANS grade in force, HYPOTENSION / HYPOXIA components graded from observations),
``timeline`` (the derived timeline with reasons) and ``daily_grades``; :func:`grading_report` the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def component_rows(timeline: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """HYPOTENSION / HYPOXIA rows for featurize: 0 from each patient's first assessment of that component
    (blood pressure; oxygen device or flow), then its grade at every CRS row of the derived timeline
    where it changes. A patient never assessed for a component has no row (featurize: NaN)."""
    crs = timeline[timeline["event"] == "CRS"]
    parts = []
    for key in SUPPORT_COMPONENTS:
        analytes, items = COMPONENT_INPUTS[key]
        assessed = _rows(tables, analytes, items)
        first = assessed.groupby("patient_id", sort=True)["hours_since_anchor"].min().reset_index()
        column = f"{key.lower()}_grade"
        rows = crs[["patient_id", "hours_since_anchor"]].assign(event=key, grade=crs[column].astype("float64"))
        since = rows["patient_id"].map(first.set_index("patient_id")["hours_since_anchor"]).astype("float64")
        rows = rows[(rows["hours_since_anchor"] >= since).to_numpy()]  # not before the first assessment
        series = pd.concat([first.assign(event=key, grade=0.0), rows], ignore_index=True)
        series = series.sort_values(["patient_id", "hours_since_anchor"], kind="stable")
        series = series.drop_duplicates(["patient_id", "hours_since_anchor"], keep="last")  # graded wins over 0
        changed = series["grade"].ne(series.groupby("patient_id")["grade"].shift())
        parts.append(series[changed.to_numpy()])
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

    ``strict`` (the ``crs grade`` stage): a derive / compare run without any raw observation is an error;
    ``crs predict`` scores such patients with grade 0 and unassessed components instead."""
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
    report = grading_report(config, given, timeline, events, assessed, strict=strict)
    return GradeResult(
        tables={"events": events, "grades": grades.sort_values(["patient_id", "hours_since_anchor", "event"],
                                                               kind="stable").reset_index(drop=True),
                "timeline": timeline, "daily_grades": daily_grades(syndromes[list(GRADE_COLUMNS)].astype({"grade": "int8"}))},
        report=report,
    )


def _empty_timeline() -> pd.DataFrame:
    columns = {"patient_id": "str", "hours_since_anchor": "float64", "event": "str", "grade": "int8",
               "domain": "str", "reason": "str", "hypotension_grade": "int8", "hypoxia_grade": "int8"}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def _max_grades(events: pd.DataFrame, event: str) -> pd.Series:
    rows = events[events["event"] == event]
    return rows.groupby("patient_id")["grade"].max()


def grading_report(config: Config, given: pd.DataFrame, timeline: pd.DataFrame, events: pd.DataFrame,
                   assessed: pd.DataFrame, *, strict: bool = True) -> dict:
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
    elif strict and config.cohort.grades == "compare":
        raise UserError("cohort.grades: compare needs CRS or ICANS rows in the events table to compare with")
    return report
