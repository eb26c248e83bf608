"""Legacy grading scales (docs/grading.md "Legacy scales"): 0 and 5 map, every other grade is refused per
row with a reason, DEATH passes through, ASTCT is the identity."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.grading import regrade_legacy
from pipeline.grading.legacy import SCALE_NAMES, legacy_grades

EVENTS = pd.DataFrame({
    "patient_id": ["A", "A", "A", "B", "B", "C"],
    "event": ["CRS", "CRS", "ICANS", "CRS", "DEATH", "ICANS"],
    "grade": [0, 2, 3, 5, 5, 0],
    "hours_since_anchor": [1.0, 20.0, 50.0, 30.0, 90.0, 4.0],
}, index=[10, 11, 12, 13, 14, 15])


def test_astct_is_the_identity():
    events, refusals = regrade_legacy(EVENTS, "ASTCT")
    pd.testing.assert_frame_equal(events, EVENTS)
    assert refusals.empty and list(refusals.columns) == ["scale", "event", "legacy_grade", "reason"]


def test_lee_2014_grade_2_is_refused_per_row_with_the_reason():
    events, refusals = regrade_legacy(EVENTS, "Lee2014")
    assert refusals.index.tolist() == [11, 12]
    assert refusals.loc[11, "reason"] == ("Lee 2014 grade 2 -> ASTCT needs the underlying observations "
                                          "(set cohort.grades: derive)")
    assert refusals.loc[12, ["scale", "event", "legacy_grade"]].tolist() == ["Lee2014", "ICANS", 3]


def test_grades_0_and_5_map_and_death_passes_through():
    events, _ = regrade_legacy(EVENTS, "Penn")
    assert events.index.tolist() == [10, 13, 14, 15]
    assert events[["event", "grade"]].values.tolist() == [["CRS", 0], ["CRS", 5], ["DEATH", 5], ["ICANS", 0]]


@pytest.mark.parametrize("scale", sorted(SCALE_NAMES))
def test_every_scale_and_event_maps_exactly_0_and_5(scale):
    table = legacy_grades()
    for event in ("CRS", "ICANS"):
        rows = table[(table["scale"] == scale) & (table["event"] == event)]
        assert sorted(zip(rows["legacy_grade"], rows["astct_grade"], strict=True)) == [(0, 0), (5, 5)]
    _, refusals = regrade_legacy(EVENTS, scale)
    assert refusals.index.tolist() == [11, 12]


def test_a_grade_that_is_not_a_whole_number_is_refused():
    _, refusals = regrade_legacy(EVENTS.assign(grade=[0, 2.5, 0, 5, 5, float("nan")]), "CTCAE")
    assert refusals.index.tolist() == [11, 15]


def test_unknown_scale_is_an_error():
    with pytest.raises(ValueError, match="unknown grading scale"):
        regrade_legacy(EVENTS, "Lee2019")


def test_only_death_rows_pass_through_untouched():
    deaths = EVENTS[EVENTS["event"] == "DEATH"]
    events, refusals = regrade_legacy(deaths, "CARTOX")
    pd.testing.assert_frame_equal(events, deaths)
    assert refusals.empty
