"""The timeline's shape and order, grade drops, grade 5 attribution, onset events, daily grades, and
no look-ahead (a hypothesis property)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.grading import GradingRules, daily_grades, grade_timeline, onset_events

from .cohort import build, grade_at, merge
from .reference import reference_timeline

COLUMNS = ["patient_id", "hours_since_anchor", "event", "grade", "domain", "reason", "hypotension_grade",
           "hypoxia_grade"]
FEVER = ("TEMP", 0, 38.5)


def test_columns_dtypes_and_order():
    tables = merge(build(FEVER, ("ICE_SCORE", 0, 5), pid="B"), build(("SEIZURE", 2, "prolonged"), pid="A"))
    timeline = grade_timeline(tables, GradingRules())
    assert list(timeline.columns) == COLUMNS
    assert timeline["grade"].dtype == np.int8 and timeline["hours_since_anchor"].dtype == np.float64
    assert timeline[["patient_id", "hours_since_anchor", "event"]].values.tolist() == [
        ["A", 2.0, "ICANS"], ["A", 26.0, "ICANS"],
        ["B", 0.0, "CRS"], ["B", 0.0, "ICANS"], ["B", 24.0, "CRS"], ["B", 24.0, "ICANS"]]


def test_only_patients_table_gives_an_empty_timeline():
    timeline = grade_timeline({"patients": pd.DataFrame({"patient_id": ["P1"]})}, GradingRules())
    assert list(timeline.columns) == COLUMNS and timeline.empty
    assert onset_events(timeline).empty and daily_grades(timeline).empty


def test_no_leading_zero_rows_and_drops_back_to_zero_are_rows():
    timeline = grade_timeline(build(("TEMP", 5, 37.0), FEVER), GradingRules())
    assert timeline["grade"].tolist() == [1, 0] and timeline["reason"].iloc[1].startswith("no temperature")


def test_unchanged_grade_makes_no_row():
    timeline = grade_timeline(build(FEVER, ("TEMP", 4, 38.9), ("O2_DEVICE", 6, "room_air")), GradingRules())
    assert timeline["hours_since_anchor"].tolist() == [0.0, 28.0]


def test_patients_are_graded_independently_all_at_once():
    a = build(FEVER, ("SBP", 1, 70), ("norepinephrine", 2), ("ICE_SCORE", 3, 1), pid="A")
    b = build(("ICE_SCORE", 0, 9), ("TEMP", 1, 39), ("O2_DEVICE", 2, "cpap"), pid="B", age=7)
    together = grade_timeline(merge(a, b), GradingRules())
    apart = pd.concat([grade_timeline(a, GradingRules()), grade_timeline(b, GradingRules())], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart)


# --- grade 5 -------------------------------------------------------------------------------------

def test_death_while_crs_grade_4_is_crs_grade_5():
    tables = build(FEVER, ("O2_DEVICE", 2, "mechanical_ventilation"), ("CONSCIOUSNESS", 2, "unarousable"),
                   ("DEATH", 10))
    timeline = grade_timeline(tables, GradingRules())
    last = timeline.iloc[-1]
    assert (last["event"], last["grade"], last["domain"], last["reason"]) == ("CRS", 5, "death",
                                                                             "death while CRS grade 4")
    assert grade_at(timeline, "ICANS", 10) == 4  # the same death is not also ICANS's
    assert timeline["hours_since_anchor"].max() == 10  # nothing is graded after death


def test_death_while_icans_grade_4_and_crs_below_4_is_icans_grade_5():
    tables = build(FEVER, ("O2_DEVICE", 2, "face_mask"), ("CEREBRAL_EDEMA", 3, "diffuse"), ("DEATH", 10))
    timeline = grade_timeline(tables, GradingRules())
    assert grade_at(timeline, "CRS", 10) == 3 and grade_at(timeline, "ICANS", 10) == 5


def test_death_below_grade_4_is_not_attributed():
    timeline = grade_timeline(build(FEVER, ("SBP", 1, 80), ("DEATH", 3)), GradingRules())
    assert timeline["grade"].max() == 2


def test_death_after_the_grade_4_lapsed_is_not_attributed():
    timeline = grade_timeline(build(FEVER, ("O2_DEVICE", 1, "bipap"), ("DEATH", 30)), GradingRules())
    assert timeline["grade"].tolist() == [1, 4, 0]


# --- onset events and daily grades on a hand-built timeline -----------------------------------------

def _timeline(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["patient_id", "hours_since_anchor", "event", "grade"])
    return frame.assign(grade=frame["grade"].astype(np.int8), domain="", reason="", hypotension_grade=0,
                        hypoxia_grade=0)


HAND = _timeline([
    ("A", 5.0, "CRS", 1), ("A", 30.0, "CRS", 3), ("A", 40.0, "CRS", 0), ("A", 50.0, "CRS", 2),
    ("A", 60.0, "ICANS", 2), ("A", 84.0, "ICANS", 0),
    ("B", -3.0, "ICANS", 1), ("B", 2.0, "ICANS", 0),
])


def test_onset_events_first_time_at_each_grade():
    events = onset_events(HAND)
    assert events.values.tolist() == [
        ["A", "CRS", 1, 5.0], ["A", "CRS", 2, 30.0], ["A", "CRS", 3, 30.0], ["A", "ICANS", 1, 60.0],
        ["A", "ICANS", 2, 60.0], ["B", "ICANS", 1, -3.0]]
    assert list(events.columns) == ["patient_id", "event", "grade", "hours_since_anchor"]


def test_daily_grades_maximum_over_each_day():
    daily = daily_grades(HAND)
    assert daily.values.tolist() == [
        ["A", 0, 1, 0],  # CRS 1 from hour 5
        ["A", 1, 3, 0],  # CRS 3 from 30 to 40, then 0, then 2 from 50
        ["A", 2, 2, 2],  # CRS 2 held; ICANS 2 from 60
        ["A", 3, 2, 2],  # ICANS 2 until 84 = day 3's hour 12; the last row's day ends the patient
        ["B", -1, 0, 1], ["B", 0, 0, 1],  # a pre-anchor day; ICANS 1 until hour 2
    ]


def test_daily_grade_ending_at_midnight_does_not_touch_the_next_day():
    daily = daily_grades(_timeline([("A", 10.0, "CRS", 2), ("A", 48.0, "CRS", 0)]))
    assert daily["crs_grade"].tolist() == [2, 2, 0]


# --- no look-ahead -------------------------------------------------------------------------------

TERMS = {"O2_DEVICE": ["room_air", "nasal_cannula", "face_mask", "bipap"],
         "CONSCIOUSNESS": ["awake", "wakes_to_voice", "unarousable"], "SEIZURE": ["none", "prolonged"],
         "CEREBRAL_EDEMA": ["none", "focal", "diffuse"], "MOTOR_WEAKNESS": ["none", "deep_focal"]}
HOURS = st.integers(-8, 120).map(lambda q: q / 2)  # half-hours: ties and exact expiries happen often
FACT = st.one_of(
    st.tuples(st.sampled_from(["TEMP"]), HOURS, st.sampled_from([37.0, 38.0, 39.0])),
    st.tuples(st.sampled_from(["SBP"]), HOURS, st.sampled_from([80.0, 120.0])),
    st.tuples(st.sampled_from(["MAP"]), HOURS, st.sampled_from([60.0, 80.0])),
    st.tuples(st.just("O2_FLOW"), HOURS, st.sampled_from([2.0, 6.0, 10.0])),
    st.tuples(st.sampled_from(list(TERMS)), HOURS).flatmap(
        lambda f: st.tuples(st.just(f[0]), st.just(f[1]), st.sampled_from(TERMS[f[0]]))),
    st.tuples(st.just("ICE_SCORE"), HOURS, st.sampled_from([None, 0, 5, 8, 10])),
    st.tuples(st.just("CAPD_SCORE"), HOURS, st.sampled_from([0, 4, 12])),
    st.tuples(st.sampled_from(["norepinephrine", "vasopressin", "phenylephrine", "tocilizumab",
                               "dexamethasone"]), HOURS),
    st.tuples(st.just("norepinephrine"), HOURS, HOURS),
    st.tuples(st.just("DEATH"), HOURS),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(FACT, max_size=12), after=st.lists(FACT, max_size=8), cut=HOURS,
       age=st.sampled_from([8.0, 40.0]))
def test_rows_after_t_never_change_the_timeline_at_or_before_t(before, after, cut, age):
    """Rows timed after T (added, or replacing others) leave every timeline row at or before T as is."""
    early = [f for f in before if f[1] <= cut]
    later = [f for f in after if f[1] > cut]
    base = grade_timeline(build(*early, age=age), GradingRules())
    more = grade_timeline(build(*early, *later, age=age), GradingRules())
    for timeline in (base, more):
        assert timeline["hours_since_anchor"].is_monotonic_increasing
    upto = lambda t: t[t["hours_since_anchor"] <= cut].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(upto(base), upto(more))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=st.lists(FACT, max_size=14), age=st.sampled_from([8.0, 40.0]))
@example(
    facts=[("ICE_SCORE", 0.5, 0), ("CAPD_SCORE", 0.0, 0)],  # a child's normal CAPD ends, unmasking ICE 0
    age=8.0,
).via('discovered failure')
def test_engine_matches_a_literal_reading_of_the_rules(facts, age):
    """The vectorised engine equals a slow loop over the rules (tests/pipeline/grading/reference.py) at
    every change: same times, events and grades."""
    timeline = grade_timeline(build(*facts, age=age), GradingRules())
    got = list(zip(timeline["hours_since_anchor"], timeline["event"], timeline["grade"].astype(int), strict=True))
    assert got == reference_timeline(facts, age <= 12, GradingRules())
