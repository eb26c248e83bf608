"""ASTCT CRS (docs/clinical.md section 2; docs/grading.md "CRS"): one named, hand-checkable patient per
table row and boundary. Every patient has a fever at hour 0 unless the test is about fever."""

from __future__ import annotations

import pytest

from pipeline.grading import GradingRules, grade_timeline

from .cohort import build, grade_at, reason_at, state_at

FEVER = ("TEMP", 0, 38.5)


# --- fever (grade 1) -------------------------------------------------------------------------------

def test_grade_1_fever_of_exactly_38_0():
    assert grade_at(build(("TEMP", 0, 38.0)), "CRS", 0) == 1
    assert reason_at(build(("TEMP", 0, 38.0)), "CRS", 0) == "temperature >= 38.0 C in the last 24 h"


def test_no_crs_at_37_9_even_with_hypotension_and_hypoxia():
    tables = build(("TEMP", 0, 37.9), ("SBP", 0, 80), ("O2_DEVICE", 0, "non_rebreather"))
    assert grade_timeline(tables, GradingRules()).query("event == 'CRS'").empty


def test_fever_counts_for_24_hours_then_grade_drops_to_0_exactly_at_24():
    tables = build(("TEMP", 0, 38.2), ("TEMP", 10, 37.0))
    assert grade_at(tables, "CRS", 23.99) == 1
    timeline = grade_timeline(tables, GradingRules())
    assert timeline["hours_since_anchor"].tolist() == [0.0, 24.0]
    assert timeline["grade"].tolist() == [1, 0] and timeline["domain"].tolist() == ["fever", ""]


def test_a_later_fever_extends_the_window():
    tables = build(("TEMP", 0, 38.2), ("TEMP", 20, 38.1))
    assert grade_at(tables, "CRS", 30) == 1 and grade_at(tables, "CRS", 44) == 0


def test_other_analytes_are_ignored():
    assert grade_timeline(build(("HR", 0, 150), ("TEMP", 0, 37.0)), GradingRules()).empty


# --- hypotension (grade 2) and vasopressors (grades 3, 4) ------------------------------------------

@pytest.mark.parametrize(("analyte", "value", "grade"), [
    ("SBP", 89.9, 2), ("SBP", 90, 1), ("MAP", 64, 2), ("MAP", 65, 1),
], ids=["sbp_89.9_is_2", "sbp_90_is_1", "map_64_is_2", "map_65_is_1"])
def test_grade_2_hypotension_without_vasopressors(analyte, value, grade):
    assert grade_at(build(FEVER, (analyte, 1, value)), "CRS", 1) == grade


def test_hypotension_reason_names_the_category_not_the_value():
    tables = build(FEVER, ("SBP", 1, 84))
    assert reason_at(tables, "CRS", 1) == "SBP < 90 mmHg without vasopressors"
    assert "84" not in " ".join(grade_timeline(tables, GradingRules())["reason"])


def test_latest_blood_pressure_counts_a_normal_reading_ends_hypotension():
    tables = build(FEVER, ("SBP", 1, 80), ("SBP", 3, 110))
    assert grade_at(tables, "CRS", 2) == 2 and grade_at(tables, "CRS", 3) == 1


def test_hypotension_holds_8_hours_then_drops():
    tables = build(FEVER, ("SBP", 1, 80))
    assert grade_at(tables, "CRS", 8.99) == 2 and grade_at(tables, "CRS", 9) == 1


def test_grade_3_one_vasopressor():
    tables = build(FEVER, ("norepinephrine", 1))
    assert grade_at(tables, "CRS", 1) == 3
    assert reason_at(tables, "CRS", 1) == "1 vasopressor: norepinephrine"


def test_grade_3_vasopressin_alone():
    tables = build(FEVER, ("vasopressin", 1))
    assert grade_at(tables, "CRS", 1) == 3 and reason_at(tables, "CRS", 1) == "vasopressin alone"


def test_grade_3_vasopressin_plus_norepinephrine_vasopressin_does_not_count():
    tables = build(FEVER, ("vasopressin", 1), ("norepinephrine", 1))
    assert grade_at(tables, "CRS", 1) == 3
    assert reason_at(tables, "CRS", 1) == "1 vasopressor: norepinephrine, with vasopressin"


def test_grade_4_norepinephrine_plus_phenylephrine():
    tables = build(FEVER, ("norepinephrine", 1), ("phenylephrine", 2))
    assert grade_at(tables, "CRS", 1) == 3 and grade_at(tables, "CRS", 2) == 4
    assert reason_at(tables, "CRS", 2) == "2 vasopressors: norepinephrine + phenylephrine"


def test_two_rows_of_one_vasopressor_are_one_vasopressor():
    assert grade_at(build(FEVER, ("norepinephrine", 1), ("norepinephrine", 2)), "CRS", 2) == 3


def test_vasopressor_row_without_end_is_active_6_hours():
    tables = build(FEVER, ("norepinephrine", 1))
    assert grade_at(tables, "CRS", 6.99) == 3 and grade_at(tables, "CRS", 7) == 1


def test_vasopressor_course_with_end_is_active_until_its_end():
    tables = build(FEVER, ("TEMP", 20, 38.3), ("norepinephrine", 1, 30), ("epinephrine", 10, 12))
    assert grade_at(tables, "CRS", 11) == 4
    assert grade_at(tables, "CRS", 12) == 3  # epinephrine stopped
    assert grade_at(tables, "CRS", 29.9) == 3 and grade_at(tables, "CRS", 30) == 1


def test_vasopressors_without_fever_are_not_crs():
    assert grade_timeline(build(("norepinephrine", 1), ("phenylephrine", 1)), GradingRules()).empty


def test_hypotension_grade_column_reports_the_domain():
    timeline = grade_timeline(build(FEVER, ("SBP", 1, 80), ("O2_DEVICE", 1, "nasal_cannula")), GradingRules())
    row = timeline[timeline["hours_since_anchor"] == 1].iloc[0]
    assert (row["grade"], row["hypotension_grade"], row["hypoxia_grade"]) == (2, 2, 2)


# --- hypoxia --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "grade"), [
    ("room_air", 1), ("nasal_cannula", 2), ("blow_by", 2), ("high_flow_nasal_cannula", 3), ("face_mask", 3),
    ("non_rebreather", 3), ("venturi", 3), ("cpap", 4), ("bipap", 4), ("mechanical_ventilation", 4),
])
def test_oxygen_device_sets_the_hypoxia_grade(device, grade):
    tables = build(FEVER, ("O2_DEVICE", 1, device))
    assert grade_at(tables, "CRS", 1) == grade
    if grade > 1:
        assert reason_at(tables, "CRS", 1) == f"O2 device: {device}"


def test_nasal_cannula_at_exactly_6_l_min_is_low_flow_grade_2():
    assert grade_at(build(FEVER, ("O2_DEVICE", 1, "nasal_cannula"), ("O2_FLOW", 1, 6.0)), "CRS", 1) == 2


def test_nasal_cannula_at_6_5_l_min_is_high_flow_grade_3():
    tables = build(FEVER, ("O2_DEVICE", 1, "nasal_cannula"), ("O2_FLOW", 1, 6.5))
    assert grade_at(tables, "CRS", 1) == 3 and reason_at(tables, "CRS", 1) == "nasal cannula above 6 L/min"


def test_flow_above_6_is_held_8_hours_on_a_nasal_cannula():
    tables = build(FEVER, ("O2_DEVICE", 1, "nasal_cannula"), ("O2_FLOW", 2, 10))
    assert grade_at(tables, "CRS", 9.9) == 3 and grade_at(tables, "CRS", 10) == 2


@pytest.mark.parametrize(("flow", "grade"), [(4, 2), (6, 2), (8, 3)])
def test_oxygen_flow_without_a_device(flow, grade):
    assert grade_at(build(FEVER, ("O2_FLOW", 1, flow)), "CRS", 1) == grade


def test_device_is_held_24_hours_then_drops():
    tables = build(FEVER, ("TEMP", 20, 38.4), ("O2_DEVICE", 1, "face_mask"))
    assert grade_at(tables, "CRS", 24.99) == 3 and grade_at(tables, "CRS", 25) == 1


def test_next_device_replaces_the_previous_one():
    tables = build(FEVER, ("O2_DEVICE", 1, "bipap"), ("O2_DEVICE", 5, "room_air"))
    assert grade_at(tables, "CRS", 4) == 4 and grade_at(tables, "CRS", 5) == 1


def test_grade_is_the_worse_of_hypotension_and_hypoxia():
    tables = build(FEVER, ("SBP", 1, 80), ("O2_DEVICE", 1, "non_rebreather"))
    row = state_at(grade_timeline(tables, GradingRules()), "CRS", 1)
    assert (row["grade"], row["domain"], row["hypotension_grade"], row["hypoxia_grade"]) == (3, "hypoxia", 2, 3)


# --- the fever rule after anti-cytokine therapy, steroids or antipyretics ---------------------------

@pytest.mark.parametrize("drug", ["tocilizumab", "dexamethasone", "acetaminophen"])
def test_fever_not_required_after_therapy_given_after_the_first_fever(drug):
    tables = build(FEVER, (drug, 10), ("O2_DEVICE", 30, "nasal_cannula"))
    assert grade_at(tables, "CRS", 24) == 1  # fever window over, rule waived: still CRS
    assert grade_at(tables, "CRS", 30) == 2


def test_waiver_reason_names_the_drug():
    timeline = grade_timeline(build(FEVER, ("tocilizumab", 10)), GradingRules())
    # Grade 1 throughout (fever, then the waiver) until 168 h after the last fever: no change at 24 h.
    assert timeline["hours_since_anchor"].tolist() == [0.0, 168.0]
    assert timeline["reason"].tolist()[0] == "temperature >= 38.0 C in the last 24 h"
    tables = build(FEVER, ("tocilizumab", 10), ("TEMP", 30, 36.5), ("O2_DEVICE", 40, "nasal_cannula"),
                   ("O2_DEVICE", 41, "room_air"))
    assert reason_at(tables, "CRS", 41) == "fever rule waived after tocilizumab"


def test_dose_at_the_moment_of_the_first_fever_waives():
    assert grade_at(build(FEVER, ("tocilizumab", 0), ("SBP", 30, 80)), "CRS", 30) == 2


def test_prophylactic_steroid_before_any_fever_waives_nothing():
    tables = build(("dexamethasone", -2), FEVER, ("O2_DEVICE", 30, "nasal_cannula"))
    assert grade_at(tables, "CRS", 10) == 1 and grade_at(tables, "CRS", 30) == 0


def test_therapy_without_any_fever_waives_nothing():
    assert grade_timeline(build(("tocilizumab", 1), ("O2_DEVICE", 2, "bipap")), GradingRules()).empty


def test_waiver_lapses_168_hours_after_the_last_fever():
    tables = build(FEVER, ("TEMP", 50, 38.1), ("tocilizumab", 10))
    assert grade_at(tables, "CRS", 217.9) == 1 and grade_at(tables, "CRS", 218) == 0


def test_fever_rule_follows_rules_thresholds():
    rules = GradingRules(fever_celsius=38.3)
    assert grade_at(build(("TEMP", 0, 38.2)), "CRS", 0, rules=rules) == 0
    assert grade_at(build(("TEMP", 0, 38.3)), "CRS", 0, rules=rules) == 1


def test_vasopressor_course_without_a_finite_end_stays_active():
    tables = build(FEVER, ("TEMP", 20, 38.3), ("norepinephrine", 1, float("inf")))
    assert grade_at(tables, "CRS", 40) == 3
