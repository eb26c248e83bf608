"""How the cohort is encoded before the cut, checked by hand (issue 16: mutants that survived).

Censoring codes, analyte name matching, unsorted input, treatment classes, the spec's normalisation and
the slope window's edges. Each test builds its one or two patients inline (no shared fixture), so a
mutation run's per-test selection always runs the test that checks the mutated line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.definitions import analyte_feature_name
from features.landmarks import LandmarkSpec, Target, landmark_matrix
from tests.features.test_features_values import events, measurements, treatments

L = 24.0
SPEC = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6", "CRP"), targets=(Target("crs_severe", "CRS", 3),),
                    horizon_hours=48.0, baseline_window_hours=168.0, baseline_fallback_hours=0.0)


def patients(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": pd.array(list(ids), dtype="str")})


def frame(measurement_rows, ids=("A",), treatment_rows=None, spec=SPEC, table=None) -> pd.DataFrame:
    tables = {"measurements": measurements(measurement_rows) if table is None else table,
              "patients": patients(*ids), "events": events([])}
    if treatment_rows is not None:
        tables["treatments"] = treatments(treatment_rows)
    return landmark_matrix(tables, spec).set_index("patient_id")


def il6(name: str) -> str:
    return analyte_feature_name("IL6", name)


def crp(name: str) -> str:
    return analyte_feature_name("CRP", name)


def test_censored_results_are_counted_by_direction_at_or_before_L():
    rows = [("A", -10.0, "IL6", 5.0, "none"), ("A", 6.0, "IL6", 1.5, "left"), ("A", 12.0, "IL6", 1.5, "left"),
            ("A", 18.0, "IL6", 5000.0, "right"), ("A", L + 1.0, "IL6", 1.5, "left")]
    got = frame(rows).loc["A"]
    assert (got[il6("n_below_limit")], got[il6("n_above_limit")], got[il6("count")]) == (2.0, 1.0, 4.0)


def test_without_a_censoring_column_nothing_is_censored():
    table = measurements([("A", -10.0, "IL6", 5.0), ("A", 6.0, "IL6", 1.5)]).drop(columns="censoring")
    got = frame(None, table=table).loc["A"]
    assert (got[il6("n_below_limit")], got[il6("n_above_limit")], got[il6("latest")]) == (0.0, 0.0, 1.5)


def test_analyte_names_match_after_trim_and_case_and_unknown_or_missing_names_are_ignored():
    table = measurements([("A", 6.0, " il6 ", 10.0), ("A", 8.0, "crp", 3.0), ("A", 9.0, "FOO", 999.0),
                          ("A", 10.0, "IL6", 20.0)])
    table.loc[3, "analyte"] = None  # a missing name belongs to no analyte
    got = frame(None, table=table).loc["A"]
    assert (got[il6("count")], got[il6("latest")]) == (1.0, 10.0)
    assert (got[crp("count")], got[crp("latest")], got[crp("max")]) == (1.0, 3.0, 3.0)


def test_unsorted_rows_give_the_features_of_sorted_rows():
    rows = [("A", -5.0, "IL6", 4.0), ("A", 6.0, "IL6", 8.0), ("A", 12.0, "IL6", 32.0),
            ("B", -3.0, "IL6", 2.0), ("B", 20.0, "IL6", 6.0)]
    expected = frame(rows, ids=("A", "B"))
    # Patients out of order with hours rising across the boundary, and hours falling within a patient.
    shuffled = [rows[3], rows[4], rows[0], rows[1], rows[2]]
    reversed_hours = rows[::-1]
    for order in (shuffled, reversed_hours):
        pd.testing.assert_frame_equal(frame(order, ids=("A", "B")), expected)
    assert expected.loc["A", il6("latest")] == 32.0 and expected.loc["B", il6("latest")] == 6.0


@pytest.mark.parametrize("order", [[2, 1, 0, 3, 4], [0, 3, 1, 4, 2]])
def test_rows_of_one_patient_need_not_be_together_or_in_time_order(order):
    # Falling hours within one patient; or A, B, A, B, A with hours rising throughout (rows interleaved).
    rows = [("A", -5.0, "IL6", 4.0), ("A", 6.0, "IL6", 32.0), ("A", 12.0, "IL6", 8.0), ("B", 3.0, "IL6", 2.0),
            ("B", 7.0, "IL6", 3.0)]
    got = frame([rows[i] for i in order], ids=("A", "B"))
    assert got.loc["A", [il6("latest"), il6("max"), il6("baseline")]].tolist() == [8.0, 32.0, 4.0]
    assert got.loc["A", il6("slope_24h")] == pytest.approx(-1 / 3, abs=1e-12)  # log2 5 -> 3 over 6 to 12 h


def test_true_baseline_is_the_last_value_before_the_anchor():
    got = frame([("A", -20.0, "IL6", 3.0), ("A", -5.0, "IL6", 7.0), ("A", 12.0, "IL6", 20.0)]).loc["A"]
    assert got[il6("baseline")] == 7.0


def test_slope_window_includes_its_lower_edge_and_skips_non_positive_values():
    # log2 values 1, 3, 4 at x = -24, -12, 0 (hours - L): slope = 36 / 288 = 0.125 doublings per hour.
    rows = [("A", -10.0, "IL6", 100.0), ("A", L - 24.0, "IL6", 2.0), ("A", 6.0, "IL6", 0.0),
            ("A", 12.0, "IL6", 8.0), ("A", L, "IL6", 16.0)]
    got = frame(rows).loc["A"]
    assert got[il6("slope_24h")] == pytest.approx(0.125, abs=1e-12)
    assert got[il6("doubling_time_24h")] == pytest.approx(8.0, abs=1e-9)


def test_treatment_classes_by_name_known_patient_and_time():
    rows = [("A", -10.0, "IL6", 5.0), ("B", -10.0, "IL6", 5.0)]
    given = [("A", 10.0, " Actemra "), ("A", 20.0, "tocilizumab"), ("A", L + 1.0, "tocilizumab"),
             ("A", 5.0, "dexamethasone"), ("B", 3.0, "aspirin"), ("B", np.nan, "tocilizumab"),
             ("Z", 2.0, "tocilizumab")]
    got = frame(rows, ids=("A", "B"), treatment_rows=given)
    assert got.loc["A", ["tocilizumab__given", "tocilizumab__hours_since", "steroids__given",
                         "steroids__hours_since"]].tolist() == [1.0, 4.0, 1.0, 19.0]
    assert got.loc["B", ["tocilizumab__given", "steroids__given"]].tolist() == [0.0, 0.0]
    assert np.isnan(got.loc["B", "tocilizumab__hours_since"])
    none_given = frame(rows, ids=("A", "B"), treatment_rows=[])
    assert none_given[["tocilizumab__given", "steroids__given"]].to_numpy().sum() == 0.0


def test_spec_is_normalised():
    spec = LandmarkSpec(landmarks_hours=[48, 24], analytes=[" il6 ", "IL6", "crp"], static_features=["age"],
                        targets=[Target("t", "CRS", 3)])
    assert spec.landmarks_hours == (24.0, 48.0)
    assert spec.analytes == ("IL6", "CRP")
    assert spec.static_features == ("age",) and spec.targets == (Target("t", "CRS", 3),)


@pytest.mark.parametrize("landmarks", [(), (24.0, 24.0), (24, 24.0, 48)])
def test_spec_refuses_empty_or_repeated_landmarks(landmarks):
    with pytest.raises(ValueError, match="^landmarks_hours must be non-empty and distinct$"):
        LandmarkSpec(landmarks_hours=landmarks)
