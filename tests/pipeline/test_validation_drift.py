"""Drift between a training cohort's stored summary and a new cohort (pipeline.validation.drift).

Small hand-built frames whose numbers can be checked by hand: PSI of identical and of known-shifted
distributions, the chi-square test, unit-shift suspicion from the registry's factors, missingness and
sampling-density shifts, and that the stored summary keeps no patient id and no measured value.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.validation.drift import (
    MIN_PATIENTS_FOR_QUANTILES,
    chi_square_test,
    drift_report,
    feature_summary,
    psi,
    unit_factors_from_registry,
)

LANDMARK_HOURS = 24.0
#: window -168 h .. 24 h = 8 days per patient
WINDOW_DAYS = (LANDMARK_HOURS + 168.0) / 24.0


def landmarks(values: list[float] | np.ndarray, prefix: str = "P", **extra: list) -> pd.DataFrame:
    """One landmark row per patient (24 h) with feature ``x`` and any extra feature columns."""
    ids = [f"{prefix}{i:03d}" for i in range(len(values))]
    return pd.DataFrame({"patient_id": ids, "landmark_hours": LANDMARK_HOURS, "x": values, **extra})


def measurements(ids: list[str], analytes: dict[str, float], per_patient: int = 2) -> pd.DataFrame:
    """``per_patient`` values of each analyte per patient inside the window, at the analyte's typical value
    times a small per-patient spread (0.9 .. 1.1)."""
    n = len(ids)
    spread = np.linspace(0.9, 1.1, n)
    frames = [pd.DataFrame({
        "patient_id": np.repeat(ids, per_patient),
        "hours_since_anchor": np.tile(np.linspace(-48.0, 20.0, per_patient), n),
        "analyte": code, "value": np.repeat(typical * spread, per_patient), "censoring": 0,
    }) for code, typical in analytes.items()]
    return pd.concat(frames, ignore_index=True)


def report(train_lm: pd.DataFrame, train_m: pd.DataFrame, new_lm: pd.DataFrame, new_m: pd.DataFrame,
           features: list[str] | None = None) -> dict:
    summary = feature_summary(train_lm, features or ["x"], train_m)
    return drift_report(summary, new_lm, new_m, unit_factors_from_registry())


def by_name(items: list[dict], key: str, name: str) -> dict:
    return next(item for item in items if item[key] == name)


# ----------------------------------------------------------------------------- PSI and chi-square


def test_psi_function_by_hand():
    assert psi([0.5, 0.5], [50, 50]) == 0.0
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5)
    assert psi([0.5, 0.5], [80, 20]) == pytest.approx(0.3 * math.log(1.6) + 0.3 * math.log(2.5))
    # an empty bin counts as a share of 1e-4
    assert psi([0.5, 0.5], [100, 0]) == pytest.approx((1 - 0.5) * math.log(2) + (1e-4 - 0.5) * math.log(2e-4))


def test_identical_cohorts_have_zero_psi_and_a_chi_square_p_of_one():
    values = [float(v) for v in range(1, 21)] + [np.nan] * 5
    lm = landmarks(values, product=["axi", "tisa"] * 12 + ["axi"])
    meas = measurements(list(lm["patient_id"]), {"CRP": 20.0})
    out = report(lm, meas, lm, meas, ["x", "product"])
    for item in out["features"]:
        assert item["psi"] == pytest.approx(0.0, abs=1e-12)  # stored shares have 6 significant digits
        assert item["level"] == "none"
        assert item["p_value"] == pytest.approx(1.0)
    assert out["summary"] == []


def test_decile_bins_and_a_known_shift():
    train = landmarks([float(v) for v in range(1, 21)])
    summary = feature_summary(train, ["x"], measurements(list(train["patient_id"]), {"CRP": 20.0}))
    x = summary["features"]["x"]
    # deciles of 1..20 (linear interpolation): 1 + 19 q
    assert x["edges"] == pytest.approx([2.9, 4.8, 6.7, 8.6, 10.5, 12.4, 14.3, 16.2, 18.1])
    assert x["bin_shares"] == pytest.approx([0.1] * 10)
    assert x["missing_fraction"] == 0.0 and x["median"] == 10.5
    # new cohort: 4, 4, 2, 2, 2, 2, 1, 1, 1, 1 values in the ten bins (shares .2 .2 .1 .1 .1 .1 .05 x4)
    new = landmarks([1.0] * 4 + [4.0] * 4 + [6, 6, 8, 8, 10, 10, 12, 12] + [14, 16, 18, 20], prefix="N")
    out = drift_report(summary, new, measurements(list(new["patient_id"]), {"CRP": 20.0}), {})
    item = out["features"][0]
    # two bins at 0.2 vs 0.1: 2 x 0.1 ln 2; four at 0.05 vs 0.1: 4 x (-0.05) ln 0.5; equals 0.4 ln 2
    assert item["psi"] == pytest.approx(0.4 * math.log(2), rel=1e-5)
    assert item["level"] == "major"
    assert [b["share_new"] for b in item["bins"]] == pytest.approx([.2, .2, .1, .1, .1, .1, .05, .05, .05, .05, 0])
    assert any(line.startswith("Feature x: major shift, PSI 0.28") for line in out["summary"])


def test_chi_square_p_high_for_a_sample_like_training_and_tiny_for_a_shifted_one():
    rng = np.random.default_rng(7)
    train = landmarks(rng.normal(0.0, 1.0, 400))
    meas = measurements(list(train["patient_id"]), {"CRP": 20.0})
    summary = feature_summary(train, ["x"], meas)
    alike = landmarks(rng.normal(0.0, 1.0, 300), prefix="A")
    shifted = landmarks(rng.normal(1.0, 1.0, 300), prefix="S")
    p_alike = drift_report(summary, alike, meas, {})["features"][0]
    p_shifted = drift_report(summary, shifted, meas, {})["features"][0]
    assert p_alike["p_value"] > 0.2 and p_alike["level"] == "none"
    assert p_shifted["p_value"] < 1e-10 and p_shifted["level"] == "major"
    assert p_alike["dof"] == 9  # ten decile bins; the missing bin is empty in both cohorts and left out


def test_chi_square_test_is_scipys_chisquare():
    expected, counts = np.array([0.2, 0.3, 0.5, 0.0]), np.array([30.0, 20.0, 50.0, 0.0])
    statistic, p_value, dof = chi_square_test(expected, counts)
    reference = stats.chisquare([30, 20, 50], [20, 30, 50])  # the bin empty in both is left out
    assert (statistic, p_value, dof) == (pytest.approx(reference.statistic), pytest.approx(reference.pvalue), 2)
    assert statistic == pytest.approx(10 ** 2 / 20 + 10 ** 2 / 30)


def test_chi_square_counts_one_row_per_patient():
    """Two landmark rows per patient: the test sees counts scaled to the number of patients."""
    train = landmarks(np.arange(40.0))
    summary = feature_summary(train, ["x"], measurements(list(train["patient_id"]), {"CRP": 1.0}))
    twice = pd.concat([train.assign(landmark_hours=24.0), train.assign(landmark_hours=48.0)])
    summary["landmarks_hours"] = [24.0, 48.0]
    shifted = twice.assign(x=twice["x"] + 8.0)
    no_measurements = pd.DataFrame(columns=["patient_id", "hours_since_anchor", "analyte", "value"])
    item = drift_report(summary, shifted, no_measurements, {})["features"][0]
    expected = np.append(np.asarray(summary["features"]["x"]["bin_shares"]), 0.0)
    counts = np.array([b["share_new"] for b in item["bins"]]) * 40  # 80 rows of 40 patients
    assert item["chi2"] == pytest.approx(chi_square_test(expected, counts)[0], rel=1e-4)


def test_categorical_unseen_value_and_product_mix():
    train = landmarks(np.arange(20.0), product=["axi"] * 10 + ["tisa"] * 10)
    meas = measurements(list(train["patient_id"]), {"CRP": 20.0})
    summary = feature_summary(train, ["x", "product"], meas)
    assert summary["features"]["product"] == {"kind": "categorical", "categories": {"axi": 0.5, "tisa": 0.5},
                                              "missing_fraction": 0.0}
    new = landmarks(np.arange(20.0), prefix="N", product=["axi"] * 16 + ["Kymriah"] * 2 + [None] * 2)
    out = drift_report(summary, new, meas, {})
    item = by_name(out["features"], "feature", "product")
    shares = {b["bin"]: b["share_new"] for b in item["bins"]}
    assert shares == {"axi": 0.8, "tisa": 0.0, "(not seen in training)": 0.1, "(missing)": 0.1}
    assert item["level"] == "major"
    assert any(line.startswith("Feature product: major shift") and "10% of values not seen in training" in line
               for line in out["summary"])
    assert "Kymriah" not in json.dumps(out)  # category values the training cohort never had are not echoed


def test_feature_absent_from_the_new_cohort():
    train = landmarks(np.arange(20.0))
    meas = measurements(list(train["patient_id"]), {"CRP": 20.0})
    new = landmarks(np.arange(20.0), prefix="N").drop(columns="x")
    out = report(train, meas, new, meas)
    assert out["features"][0]["absent"] and out["features"][0]["missing_fraction_new"] == 1.0
    assert "Feature x is absent from the new cohort (scored as missing)." in out["summary"]


# ----------------------------------------------------------------------------- analytes


def test_unit_factors_come_from_the_registry():
    factors = unit_factors_from_registry()
    assert factors["CRP"] == [10.0]
    assert factors["IL6"] == [1000.0]
    assert "TEMP" not in factors  # Fahrenheit has an offset; the Celsius spellings have scale 1
    assert all(not math.isclose(f, 1.0) for fs in factors.values() for f in fs)


def test_crp_divided_by_ten_is_a_unit_shift_suspicion_naming_mg_dl():
    train = landmarks(np.arange(30.0))
    ids = list(train["patient_id"])
    train_m = measurements(ids, {"CRP": 40.0, "IL6": 12.0, "FERRITIN": 600.0})
    new_m = measurements(ids, {"CRP": 4.0, "IL6": 12.0, "FERRITIN": 900.0})  # ferritin x1.5: no unit factor
    out = report(train, train_m, train, new_m)
    crp = by_name(out["unit_shifts"], "analyte", "CRP")
    assert crp["suspected"] and crp["ratio_new_to_training"] == pytest.approx(0.1)
    assert crp["message"] == "CRP values about 10x lower than in training: reported in mg/dL but labelled mg/L?"
    assert crp["message"] in out["summary"]
    assert out["unit_shifts"][0]["analyte"] == "CRP"  # suspected first
    assert not by_name(out["unit_shifts"], "analyte", "IL6")["suspected"]
    assert not by_name(out["unit_shifts"], "analyte", "FERRITIN")["suspected"]


def test_values_labelled_in_a_unit_they_are_not_in_are_named_both_ways():
    train = landmarks(np.arange(30.0))
    ids = list(train["patient_id"])
    out = report(train, measurements(ids, {"IL6": 12.0}), train, measurements(ids, {"IL6": 12000.0}))
    il6 = by_name(out["unit_shifts"], "analyte", "IL6")
    assert il6["suspected"] and il6["factor"] == 1000.0
    assert il6["message"] == "IL6 values about 1000x higher than in training: reported in pg/mL but labelled ng/mL?"


def test_missing_analyte_is_a_missingness_shift():
    train = landmarks(np.arange(30.0))
    ids = list(train["patient_id"])
    half = ids[:15]
    new_m = pd.concat([measurements(ids, {"CRP": 20.0}), measurements(half, {"FERRITIN": 500.0})])
    out = report(train, measurements(ids, {"CRP": 20.0, "IL6": 10.0, "FERRITIN": 500.0}), train, new_m)
    il6 = by_name(out["missingness"], "analyte", "IL6")
    assert (il6["share_training"], il6["share_new"], il6["flagged"]) == (1.0, 0.0, True)
    ferritin = by_name(out["missingness"], "analyte", "FERRITIN")
    assert (ferritin["share_new"], ferritin["difference"], ferritin["flagged"]) == (0.5, -0.5, True)
    assert not by_name(out["missingness"], "analyte", "CRP")["flagged"]
    assert "IL6 measured in 0% of patients (100% in training)." in out["summary"]
    assert [m["analyte"] for m in out["missingness"]] == ["IL6", "FERRITIN", "CRP"]


def test_sampling_density_doubles():
    train = landmarks(np.arange(30.0))
    ids = list(train["patient_id"])
    train_m = measurements(ids, {"CRP": 20.0, "IL6": 10.0}, per_patient=2)
    new_m = measurements(ids, {"CRP": 20.0, "IL6": 10.0}, per_patient=4)
    out = report(train, train_m, train, new_m)
    density = out["sampling_density"]
    assert density["overall"]["per_patient_day_training"] == pytest.approx(4 / WINDOW_DAYS, rel=1e-5)
    assert density["overall"]["ratio"] == 2.0 and density["overall"]["flagged"]
    assert {d["analyte"]: d["ratio"] for d in density["analytes"]} == {"CRP": 2.0, "IL6": 2.0}
    # measurements outside the window (-168 h .. last landmark) do not count
    late = new_m.assign(hours_since_anchor=new_m["hours_since_anchor"] + 200.0)
    assert report(train, train_m, train, pd.concat([train_m, late]))["sampling_density"]["overall"]["ratio"] == 1.0


# ----------------------------------------------------------------------------- what the summary keeps


def test_summary_holds_no_patient_id_and_no_measured_value():
    ids = ["ZEBRA-7731", "QUOKKA-0042", "NARWHAL-9"]
    lm = pd.DataFrame({"patient_id": ids, "landmark_hours": LANDMARK_HOURS, "x": [123.4567, 98.7654, 55.5511],
                       "site": ["Uppsala", "Uppsala", "Lund"]})
    values = [377.123, 41.9187, 2222.81, 613.377, 7.77123, 91.0909]
    meas = pd.DataFrame({"patient_id": [i for i in ids for _ in range(2)], "hours_since_anchor": [-24.0, 12.0] * 3,
                         "analyte": ["CRP", "IL6"] * 3, "value": values, "censoring": 0})
    summary = feature_summary(lm, ["x", "site"], meas)
    text = json.dumps(summary, allow_nan=False)
    for forbidden in ids + [str(v) for v in values + list(lm["x"])]:
        assert forbidden not in text
    for v in values + list(lm["x"]):  # not even rounded
        assert f"{v:.4g}" not in text and f"{v:.3g}" not in text
    # below the small-cell threshold, quantile statistics are withheld; shares and fractions stay
    assert len(ids) < MIN_PATIENTS_FOR_QUANTILES
    assert summary["features"]["x"]["edges"] == [] and summary["features"]["x"]["median"] is None
    assert summary["analytes"]["CRP"]["median_value"] is None
    assert summary["analytes"]["CRP"]["share_with_value"] == 1.0
    assert (summary["n_patients"], summary["n_rows"]) == (3, 3)


def test_summary_and_report_are_json_and_small():
    rng = np.random.default_rng(1)
    n = 500
    lm = landmarks(rng.lognormal(2, 1, n), **{f"f{k}": rng.normal(size=n) for k in range(50)})
    meas = measurements(list(lm["patient_id"]), {"CRP": 20.0, "IL6": 8.0, "FERRITIN": 400.0})
    summary = feature_summary(lm, [c for c in lm.columns if c not in ("patient_id", "landmark_hours")], meas)
    assert len(json.dumps(summary, allow_nan=False)) < 30_000
    json.dumps(drift_report(summary, lm, meas, unit_factors_from_registry()), allow_nan=False)


def test_censored_fraction_reads_ingest_words_and_codes_alike():
    """`crs validate` passes ingest's censoring words (none/left/right), featurize the 0/1/2 codes: both
    give the same censored fraction (the words, parsed as numbers, used to count as never censored)."""
    lm = landmarks(np.arange(20.0))
    m = measurements(list(lm["patient_id"]), {"IL6": 10.0}, per_patient=4)  # 80 rows
    codes = np.tile([0, 1, 2, 0], 20)
    words = pd.Series(np.array(["none", "left", "right", "none"], dtype=object)[np.tile([0, 1, 2, 3], 20)])
    from_codes = feature_summary(lm, ["x"], m.assign(censoring=codes))
    from_words = feature_summary(lm, ["x"], m.assign(censoring=words))
    assert json.dumps(from_codes, sort_keys=True) == json.dumps(from_words, sort_keys=True)
    assert '"censored_fraction": 0.5' in json.dumps(from_words)
