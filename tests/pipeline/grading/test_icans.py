"""ASTCT ICANS (docs/clinical.md section 3; docs/grading.md "ICANS"): the worst domain, one named,
hand-checkable patient per table cell and boundary, children with CAPD."""

from __future__ import annotations

import pytest

from pipeline.grading import GradingRules, grade_timeline

from .cohort import build, grade_at, reason_at, state_at


@pytest.mark.parametrize(("score", "grade"), [(10, 0), (9, 1), (7, 1), (6, 2), (3, 2), (2, 3), (0, 3)],
                         ids=lambda v: str(v))
def test_ice_score_thresholds(score, grade):
    assert grade_at(build(("ICE_SCORE", 1, score)), "ICANS", 1) == grade


def test_ice_reasons_name_the_band():
    assert reason_at(build(("ICE_SCORE", 1, 2)), "ICANS", 1) == "ICE score 0-2"
    assert reason_at(build(("ICE_SCORE", 1, 5)), "ICANS", 1) == "ICE score 3-6"
    assert reason_at(build(("ICE_SCORE", 1, 8)), "ICANS", 1) == "ICE score 7-9"


def test_ice_held_24_hours_then_drops():
    tables = build(("ICE_SCORE", 1, 5))
    timeline = grade_timeline(tables, GradingRules())
    assert timeline["hours_since_anchor"].tolist() == [1.0, 25.0] and timeline["grade"].tolist() == [2, 0]


def test_next_ice_score_replaces_the_previous_one():
    tables = build(("ICE_SCORE", 0, 2), ("ICE_SCORE", 12, 10))
    assert grade_at(tables, "ICANS", 11) == 3 and grade_at(tables, "ICANS", 12) == 0


def test_ice_not_assessable_scores_nothing():
    assert grade_timeline(build(("ICE_SCORE", 1, None)), GradingRules()).empty
    # ...and, as the next ICE observation, it ends the previous score's hold.
    assert grade_at(build(("ICE_SCORE", 0, 2), ("ICE_SCORE", 6, None)), "ICANS", 6) == 0


@pytest.mark.parametrize(("term", "grade", "reason"), [
    ("awake", 0, ""), ("wakes_spontaneously", 1, "wakes spontaneously"), ("wakes_to_voice", 2, "wakes to voice"),
    ("wakes_to_touch", 3, "wakes only to touch"), ("unarousable", 4, "unarousable"),
])
def test_depressed_level_of_consciousness(term, grade, reason):
    tables = build(("CONSCIOUSNESS", 1, term))
    assert grade_at(tables, "ICANS", 1) == grade and reason_at(tables, "ICANS", 1) == reason


def test_seizure_resolving_rapidly_is_grade_3():
    tables = build(("SEIZURE", 1, "rapidly_resolving"))
    assert grade_at(tables, "ICANS", 1) == 3 and reason_at(tables, "ICANS", 1) == "seizure resolving rapidly"


def test_prolonged_seizure_is_grade_4():
    assert grade_at(build(("SEIZURE", 1, "prolonged")), "ICANS", 1) == 4


def test_deep_focal_motor_weakness_is_grade_4_held_72_hours():
    tables = build(("MOTOR_WEAKNESS", 1, "deep_focal"))
    assert grade_at(tables, "ICANS", 1) == 4 and reason_at(tables, "ICANS", 1) == "deep focal motor weakness"
    assert grade_at(tables, "ICANS", 72.99) == 4 and grade_at(tables, "ICANS", 73) == 0


def test_focal_oedema_is_grade_3():
    tables = build(("CEREBRAL_EDEMA", 1, "focal"))
    assert grade_at(tables, "ICANS", 1) == 3 and reason_at(tables, "ICANS", 1) == "focal cerebral oedema"


def test_diffuse_oedema_is_grade_4():
    assert grade_at(build(("CEREBRAL_EDEMA", 1, "diffuse")), "ICANS", 1) == 4


def test_seizure_held_24_hours_oedema_72():
    tables = build(("SEIZURE", 0, "prolonged"), ("CEREBRAL_EDEMA", 0, "focal"))
    assert grade_at(tables, "ICANS", 23.9) == 4 and grade_at(tables, "ICANS", 24) == 3
    assert grade_at(tables, "ICANS", 72) == 0


def test_worst_domain_wins():
    tables = build(("ICE_SCORE", 1, 5), ("CONSCIOUSNESS", 1, "wakes_to_touch"))
    row = state_at(grade_timeline(tables, GradingRules()), "ICANS", 1)
    assert (row["grade"], row["domain"]) == (3, "consciousness")


def test_icans_without_crs_has_zero_crs_columns():
    timeline = grade_timeline(build(("CONSCIOUSNESS", 1, "unarousable")), GradingRules())
    assert timeline["event"].tolist() == ["ICANS", "ICANS"]
    assert (timeline["hypotension_grade"] == 0).all() and (timeline["hypoxia_grade"] == 0).all()


# --- children: CAPD instead of ICE ---------------------------------------------------------------

@pytest.mark.parametrize(("capd", "grade"), [(0, 0), (1, 1), (8, 1), (9, 3), (20, 3)])
def test_child_capd_score(capd, grade):
    assert grade_at(build(("CAPD_SCORE", 1, capd), age=6), "ICANS", 1) == grade


def test_child_capd_replaces_ice_when_given():
    tables = build(("ICE_SCORE", 1, 2), ("CAPD_SCORE", 1, 4), age=10)
    row = state_at(grade_timeline(tables, GradingRules()), "ICANS", 1)
    assert (row["grade"], row["domain"], row["reason"]) == (1, "CAPD", "CAPD score 1-8")


def test_child_without_capd_uses_ice():
    assert grade_at(build(("ICE_SCORE", 1, 2), age=10), "ICANS", 1) == 3


def test_age_12_is_a_child_older_is_not():
    assert grade_at(build(("CAPD_SCORE", 1, 12), age=12), "ICANS", 1) == 3
    assert grade_at(build(("CAPD_SCORE", 1, 12), age=12.5), "ICANS", 1) == 0


def test_adult_or_unknown_age_capd_is_not_read():
    assert grade_at(build(("CAPD_SCORE", 1, 15), age=40), "ICANS", 1) == 0
    assert grade_at(build(("CAPD_SCORE", 1, 15), age=None), "ICANS", 1) == 0


def test_unknown_term_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="SEIZURE"):
        grade_timeline(build(("SEIZURE", 1, "funny turn")), GradingRules())
