"""Hand-checked cases for the mutants of features/landmarks.py that survived `make mutation` (issue 16).

Each test builds its one to three patients inline (no shared fixture), so the mutation run's per-test
selection runs it for the function it checks. Every expected number is written out by hand.
"""

from __future__ import annotations

import re
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from features.definitions import DERIVED_ANALYTES, analyte_feature_name
from features.errors import FeatureError
from features.landmarks import (
    AnalyteAtLandmark,
    LandmarkContext,
    LandmarkSpec,
    SortedRows,
    StaticEncoding,
    Target,
    _first_flags,
    _last_flags,
    analyte_codes,
    censoring_codes,
    cut_at_landmark,
    encode_cohort,
    features_at_landmark,
    landmark_matrix,
    patient_index,
)
from tests.features.test_features_values import events, measurements, treatments

L = 24.0
CRS3 = Target("crs_severe", "CRS", 3)
SPEC = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6",), targets=(CRS3,), horizon_hours=48.0,
                    baseline_window_hours=168.0, baseline_fallback_hours=0.0)


def patients(*ids: str, **columns) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": pd.array(list(ids), dtype="str"), **columns})


def matrix(measurement_rows, ids=("A",), spec=SPEC, event_rows=None, treatment_rows=None, **tables) -> pd.DataFrame:
    if "measurements" not in tables:
        tables["measurements"] = measurements(measurement_rows)
    tables.setdefault("patients", patients(*ids))
    tables.setdefault("events", events(event_rows or []))
    if treatment_rows is not None:
        tables["treatments"] = treatments(treatment_rows)
    return landmark_matrix(tables, spec)


def il6(name: str) -> str:
    return analyte_feature_name("IL6", name)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --------------------------------------------------------------------------- errors name the table and column


def test_missing_columns_are_named_with_their_table():
    ok = measurements([("A", 1.0, "IL6", 2.0)])
    with pytest.raises(FeatureError, match=exactly("measurements: missing column(s) 'analyte', 'value'")):
        matrix(None, measurements=ok.drop(columns=["analyte", "value"]))
    with pytest.raises(FeatureError, match=exactly("patients: missing column(s) 'patient_id'")):
        matrix(None, measurements=ok, patients=pd.DataFrame({"id": ["A"]}))
    bad_treatments = treatments([("A", 1.0, "tocilizumab")]).drop(columns=["hours_since_anchor", "drug"])
    with pytest.raises(FeatureError, match=exactly("treatments: missing column(s) 'hours_since_anchor', 'drug'")):
        matrix(None, measurements=ok, treatments=bad_treatments)
    bad_events = events([("A", "CRS", 3, 30.0)]).drop(columns=["grade"])
    with pytest.raises(FeatureError, match=exactly("events: missing column(s) 'grade'")):
        matrix(None, measurements=ok, events=bad_events)
    with pytest.raises(FeatureError, match=exactly("featurize: table 'patients' is required")):
        landmark_matrix({"measurements": ok}, SPEC)


def test_a_missing_static_column_lists_the_columns_there_are():
    spec = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6",), static_features=("weight",))
    table = patients("A", age=[60.0])
    message = "static_features: column 'weight' is not in the patients table (columns: patient_id, age)"
    with pytest.raises(FeatureError, match=exactly(message)):
        matrix([("A", 1.0, "IL6", 2.0)], spec=spec, patients=table)


def test_missing_and_duplicate_patient_ids_are_named():
    with pytest.raises(FeatureError, match=exactly("patients: 'patient_id' has missing values")):
        patient_index(pd.DataFrame({"patient_id": pd.array(["A", None], dtype="str")}))
    with pytest.raises(FeatureError, match=exactly("patients: duplicate patient_id 'A'")):
        patient_index(patients("A", "B", "A", "B"))  # the first repeated id, not the second


# --------------------------------------------------------------------------- the encoded layout


def test_empty_rows_have_the_documented_layout():
    empty = SortedRows.empty()
    arrays = (empty.patient, empty.hours, empty.value, empty.censoring)
    assert [(len(a), a.dtype) for a in arrays] == [(0, np.int64), (0, np.float64), (0, np.float64), (0, np.int8)]


def test_encoded_rows_have_the_documented_layout():
    table = measurements([("A", -5.0, "IL6", 1.5, "left"), ("A", 3.0, "IL6", 9.0, "none"),
                          ("B", 2.0, "IL6", 5000.0, "right")])
    given = treatments([("A", 4.0, "tocilizumab"), ("B", 1.0, "dexamethasone"), ("B", 6.0, "Actemra")])
    timeline = encode_cohort(table, np.array(["A", "B"], dtype=object), given, ["IL6"])
    rows = timeline.analytes["IL6"]
    assert rows.censoring.dtype == np.int8 and rows.censoring.tolist() == [-1, 0, 1]
    toci = timeline.treatments["tocilizumab"]
    assert (toci.patient.tolist(), toci.hours.tolist()) == ([0, 1], [4.0, 6.0])
    assert toci.value.dtype == np.float64 and np.isnan(toci.value).all()  # a dose has no value
    assert toci.censoring.dtype == np.int8 and toci.censoring.tolist() == [0, 0]
    assert censoring_codes(table).dtype == np.int8
    no_column = censoring_codes(table.drop(columns="censoring"))
    assert no_column.dtype == np.int8 and no_column.tolist() == [0, 0, 0]


def test_analyte_codes_of_unknown_and_missing_names():
    names = pd.Series([" il6", "foo", None, "None"], dtype="str")
    # A missing name matches nothing, not even a code spelled like Python's None; unknown names are -1.
    assert analyte_codes(names, ["IL6", "NONE"]).tolist() == [0, -1, -1, 1]


def test_ids_and_names_that_are_not_strings_are_matched_as_text():
    table = measurements([("1", 2.0, "IL6", 4.0), ("1", 6.0, "IL6", 8.0), ("2", 3.0, "IL6", 16.0)])
    table = table.assign(patient_id=[1, 1, 2], analyte=table["analyte"].astype("category"))
    got = matrix(None, ids=("1", "2"), measurements=table).set_index("patient_id")
    assert got[il6("latest")].to_dict() == {"1": 8.0, "2": 16.0}
    assert got[il6("count")].to_dict() == {"1": 2.0, "2": 1.0}


def test_a_cohort_without_patients_gives_an_empty_matrix():
    got = matrix([("A", 1.0, "IL6", 2.0)], ids=())
    assert len(got) == 0
    assert {"patient_id", "landmark_hours", il6("latest"), "label__crs_severe"} <= set(got.columns)


def test_many_interleaved_analytes_in_sorted_input():
    # Two patients, IL6 and CRP measured every hour 1..12 h, rows sorted by (patient, hours) as ingest
    # writes them: 48 rows, enough for an unstable sort to reorder rows of one analyte.
    rows = []
    for pid, scale in (("A", 1.0), ("B", 10.0)):
        for h in range(1, 13):
            rows += [(pid, float(h), "IL6", scale * h), (pid, float(h), "CRP", scale * (100 - h))]
    spec = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6", "CRP"))
    got = matrix(rows, ids=("A", "B"), spec=spec).set_index("patient_id")
    crp = [analyte_feature_name("CRP", s) for s in ("first", "latest", "max")]
    assert got.loc["A", [il6("first"), il6("latest"), il6("max"), il6("hours_since_latest")]].tolist() == [1, 12, 12, 12]
    assert got.loc["B", [il6("first"), il6("latest"), il6("max"), il6("hours_since_latest")]].tolist() == [10, 120, 120, 12]
    assert got.loc["A", crp].tolist() == [99.0, 88.0, 99.0] and got.loc["B", crp].tolist() == [990.0, 880.0, 990.0]


def test_a_single_treatment_row_is_used():
    got = matrix([("A", 1.0, "IL6", 2.0)], treatment_rows=[("A", 20.0, "tocilizumab")]).iloc[0]
    assert (got["tocilizumab__given"], got["tocilizumab__hours_since"]) == (1.0, 4.0)


# --------------------------------------------------------------------------- per-patient runs


def test_first_and_last_flags_mark_each_patients_run():
    assert _first_flags(np.array([0, 0, 1, 1, 1])).tolist() == [True, False, True, False, False]
    assert _last_flags(np.array([0, 0, 0, 1, 1])).tolist() == [False, False, True, False, True]
    assert _first_flags(np.array([3])).tolist() == [True] and _last_flags(np.array([3])).tolist() == [True]


def test_first_values_of_later_patients_with_several_rows():
    rows = [("A", -3.0, "IL6", 2.0), ("B", -6.0, "IL6", 5.0), ("B", 2.0, "IL6", 7.0), ("B", 9.0, "IL6", 11.0),
            ("C", 1.0, "IL6", 13.0), ("C", 4.0, "IL6", 3.0), ("C", 8.0, "IL6", 17.0)]
    got = matrix(rows, ids=("A", "B", "C")).set_index("patient_id")
    assert got[il6("first")].to_dict() == {"A": 2.0, "B": 5.0, "C": 13.0}
    assert got[il6("max")].to_dict() == {"A": 2.0, "B": 11.0, "C": 17.0}


def test_fever_is_timed_from_the_first_post_anchor_temperature_of_at_least_38():
    # A: 38.0 exactly at the anchor counts (>= 38.0 C, hours >= 0): 24 h before L.
    # B: a fever before the anchor does not count; 37.0 at 2 h is no fever; the first is at 10 h.
    # C: no temperature of 38.0 or more after the anchor.
    rows = [("A", -5.0, "TEMP", 39.0), ("A", 0.0, "TEMP", 38.0), ("A", 6.0, "TEMP", 39.5),
            ("B", -5.0, "TEMP", 39.0), ("B", 2.0, "TEMP", 37.0), ("B", 10.0, "TEMP", 38.5), ("B", 20.0, "TEMP", 39.0),
            ("C", -2.0, "TEMP", 39.0), ("C", 3.0, "TEMP", 37.9)]
    # Spec analytes IL6 only: TEMP is the last analyte the encoding adds, so its rows sit in the last slice.
    got = matrix(rows, ids=("A", "B", "C")).set_index("patient_id")
    assert got["fever__hours_since_first"].to_dict() == pytest.approx({"A": 24.0, "B": 14.0, "C": np.nan}, nan_ok=True)
    assert got["temp__max"].to_dict() == {"A": 39.5, "B": 39.0, "C": 37.9}


# --------------------------------------------------------------------------- summaries


def test_auc_is_zero_with_a_baseline_and_no_later_value():
    got = matrix([("A", -5.0, "IL6", 4.0), ("B", 30.0, "IL6", 8.0)], ids=("A", "B")).set_index("patient_id")
    assert got.loc["A", il6("auc_log2_fold_change")] == 0.0  # the curve stays at 0 from 0 h to L
    assert np.isnan(got.loc["B", il6("auc_log2_fold_change")])  # no baseline at all


def test_slope_of_values_below_one_over_one_hour():
    # log2 0.5 = -1 at 23 h and log2 1 = 0 at 24 h: one doubling per hour, though sxx is only 1/2.
    got = matrix([("A", 23.0, "IL6", 0.5), ("A", L, "IL6", 1.0)]).iloc[0]
    assert got[il6("slope_24h")] == 1.0 and got[il6("doubling_time_24h")] == 1.0


def test_slope_is_the_exact_least_squares_slope_to_1e_13():
    # 40 samples 0.3 h apart up to L = 72 h, values around 1000-40000: the centred sums must give the
    # least-squares slope of these float inputs as computed exactly in rationals.
    L72 = 72.0
    hours = L72 - 0.3 * np.arange(40)[::-1]
    values = 1000.0 * 1.1 ** np.arange(40) * (1 + 0.3 * np.sin(np.arange(40)))
    spec = LandmarkSpec(landmarks_hours=(L72,), analytes=("IL6",))
    got = matrix([("A", h, "IL6", v) for h, v in zip(hours, values, strict=True)], spec=spec).iloc[0]
    x = [Fraction(v) for v in hours - L72]
    y = [Fraction(v) for v in np.log2(values)]
    mx, my = sum(x) / 40, sum(y) / 40
    exact = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)
    assert got[il6("slope_24h")] == pytest.approx(float(exact), rel=1e-13, abs=0)


def test_every_feature_is_a_float_array():
    table = measurements([("A", 10.0, "IL6", 2.0), ("A", 20.0, "IL6", 8.0), ("B", 12.0, "IL6", 3.0)])
    spec = LandmarkSpec(landmarks_hours=(L,), analytes=("IL6", "CRP"))
    timeline = encode_cohort(table, np.array(["A", "B"], dtype=object), None, (*spec.analytes, *DERIVED_ANALYTES))
    feats = features_at_landmark(cut_at_landmark(timeline, L), spec)
    assert {name: v.dtype for name, v in feats.items() if v.dtype != np.float64} == {}
    assert feats[il6("slope_24h")][0] == pytest.approx(0.2) and np.isnan(feats[il6("slope_24h")][1])  # B: one point
    assert np.isnan(feats[analyte_feature_name("CRP", "max")]).all()  # CRP: no rows at all


def test_default_fallback_window_is_the_specs_24_hours():
    table = measurements([("A", 24.0, "IL6", 6.0), ("B", 24.5, "IL6", 7.0)])
    cut = cut_at_landmark(encode_cohort(table, np.array(["A", "B"], dtype=object), None, ["IL6"]), 48.0)
    assert LandmarkSpec().baseline_fallback_hours == 24.0
    by_context = LandmarkContext(cut, 168.0)["IL6"].fallback_baseline
    by_analyte = AnalyteAtLandmark(cut.analytes["IL6"], 48.0, 2, 168.0).fallback_baseline
    for got in (by_context, by_analyte):
        assert got[0] == 6.0 and np.isnan(got[1])  # 24.5 h is past the 24 h fallback window


def test_featurizing_gaps_and_unknown_patients_raises_no_numpy_warning():
    # B has no measurement at all (0/0 in the slope's means), Z is not in the patients table.
    rows = [("A", 2.0, "IL6", 4.0), ("A", 6.0, "IL6", 8.0), ("Z", 3.0, "IL6", 5.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = matrix(rows, ids=("A", "B"), event_rows=[("Z", "CRS", 4, 30.0)],
                     treatment_rows=[("Z", 3.0, "tocilizumab")]).set_index("patient_id")
    assert got.loc["A", il6("slope_24h")] == 0.25 and np.isnan(got.loc["B", il6("slope_24h")])


# --------------------------------------------------------------------------- labels and output columns


def test_an_event_without_a_name_is_no_onset():
    event_rows = [("A", None, 4, 10.0), ("B", "CRS", 3, 30.0)]
    got = matrix([("A", 1.0, "IL6", 2.0)], ids=("A", "B"), event_rows=event_rows).set_index("patient_id")
    assert got.loc["A", "label__crs_severe"] == 0.0 and np.isnan(got.loc["A", "onset_hours__crs_severe"])
    assert got.loc["B", "label__crs_severe"] == 1.0 and got.loc["B", "onset_hours__crs_severe"] == 30.0


def test_a_death_recorded_with_grade_0_still_ends_the_time_at_risk():
    event_rows = [("A", "DEATH", 0, 10.0), ("A", "CRS", 4, 30.0)]
    got = matrix([("A", 1.0, "IL6", 2.0)], event_rows=event_rows).iloc[0]
    assert np.isnan(got["label__crs_severe"]) and got["onset_hours__crs_severe"] == 30.0


def test_patient_id_column_keeps_the_ingest_string_dtype():
    got = matrix([("A", 1.0, "IL6", 2.0)], ids=("A", "B"))
    assert got["patient_id"].dtype == patients("A")["patient_id"].dtype
    assert got["patient_id"].tolist() == ["A", "B"]


def test_numeric_static_columns_are_float64():
    spec = LandmarkSpec(landmarks_hours=(0.0, L), analytes=("IL6",), static_features=("age", "stage"))
    table = patients("A", "B", age=[60, 45], stage=pd.array([2, None], dtype="Int64"))
    got = matrix([("A", 1.0, "IL6", 2.0)], ids=("A", "B"), spec=spec, patients=table)
    assert (got["age"].dtype, got["stage"].dtype) == (np.float64, np.float64)
    assert got["age"].tolist() == [60.0, 60.0, 45.0, 45.0]
    assert got["stage"].tolist()[:2] == [2.0, 2.0] and got["stage"].isna().tolist()[2:] == [True, True]
    # An encoding fixed at fit: a word in a numeric column at predict time becomes missing, not an error.
    fixed = StaticEncoding({"age": None})
    later = patients("A", "B", age=pd.array(["61", "unknown"], dtype="str"))
    got = landmark_matrix({"measurements": measurements([("A", 1.0, "IL6", 2.0)]), "patients": later}, spec, fixed)
    assert got["age"].dtype == np.float64 and got["age"].tolist()[:2] == [61.0, 61.0]
    assert got["age"].isna().tolist() == [False, False, True, True]
