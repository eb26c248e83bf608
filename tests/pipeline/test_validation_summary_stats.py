"""The fast drift-summary kernels (pipeline.validation.summary_stats) against the plain numpy / pandas
calls they replace: equal bit for bit, on hand-built tables with censoring words (ingest stores "<5" as
value 5 and the word ``left``, ">1000" as 1000 and ``right``), missing units, missing analytes and ids,
analytes with no usable value, patients outside the landmark table.

The reference functions below are the summary's code before the kernels (pandas masks and group-bys,
``np.quantile`` / ``np.median`` / ``np.searchsorted``), kept here verbatim as the definition.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.contracts import HOURS_SINCE_ANCHOR, LANDMARK_HOURS, PATIENT_ID
from pipeline.validation import drift, summary_stats
from pipeline.validation.summary_stats import (
    bin_counts,
    group_medians,
    lookup_codes,
    order_statistics,
    string_codes,
)

LEVELS = np.arange(1, 10) / 10


# ----------------------------------------------------------------------------- reference (old code)


def reference_numeric_summary(values: np.ndarray, patient_codes: np.ndarray) -> dict:
    present = ~np.isnan(values)
    n_patients = int(np.count_nonzero(np.bincount(patient_codes[present]))) if present.any() else 0
    edges: list[float] = []
    median = None
    if n_patients >= drift.MIN_PATIENTS_FOR_QUANTILES:
        quantiles = np.quantile(values[present], LEVELS)
        edges = sorted({drift._round(q) for q in quantiles})
        median = drift._round(np.median(values[present]))
    kept = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), kept, side="left"),
                         minlength=len(edges) + 1).astype(float)
    return {"kind": "numeric", "edges": edges,
            "bin_shares": [drift._round(c / counts.sum()) for c in counts] if counts.sum() else [],
            "missing_fraction": drift._round(1 - present.mean()) if len(values) else None, "median": median}


def reference_analyte_stats(measurements: pd.DataFrame, patients: np.ndarray, window_hours: tuple[float, float]
                            ) -> tuple[pd.DataFrame, float | None]:
    lo, hi = window_hours
    ids = measurements[PATIENT_ID].astype(str)
    hours = measurements[HOURS_SINCE_ANCHOR].astype(float)
    value = pd.to_numeric(measurements["value"], errors="coerce").astype(float)
    keep = ids.isin(patients) & hours.between(lo, hi) & np.isfinite(value)
    rows = pd.DataFrame({"patient": ids[keep], "analyte": measurements["analyte"][keep].astype(str),
                         "value": value[keep]})
    if "censoring" in measurements:
        rows["censored"] = drift._censored(measurements["censoring"][keep])
    patient_days = len(patients) * (hi - lo) / 24.0
    grouped = rows.groupby("analyte", sort=True)
    out = pd.DataFrame({"n_patients": grouped["patient"].nunique(), "median_value": grouped["value"].median(),
                        "n_measurements": grouped.size()})
    out["share_with_value"] = out["n_patients"] / len(patients) if len(patients) else np.nan
    out["per_patient_day"] = out["n_measurements"] / patient_days if patient_days > 0 else np.nan
    out["censored_fraction"] = grouped["censored"].mean() if "censored" in rows else np.nan
    out.loc[out["n_patients"] < drift.MIN_PATIENTS_FOR_QUANTILES, "median_value"] = np.nan
    overall = len(rows) / patient_days if patient_days > 0 else None
    return out, overall


def reference_feature_summary(landmarks: pd.DataFrame, columns: list[str], measurements: pd.DataFrame) -> dict:
    """feature_summary with the reference parts (the assembly is drift's own, unchanged)."""
    saved = drift._numeric_summary, drift._analyte_stats
    # the old path: every column through _numeric (non-finite -> NaN) first
    drift._numeric_summary = lambda values, codes, *_: reference_numeric_summary(drift._numeric(pd.Series(values)), codes)
    drift._analyte_stats = reference_analyte_stats
    try:
        return drift.feature_summary(landmarks, columns, measurements)
    finally:
        drift._numeric_summary, drift._analyte_stats = saved


def same(a: object, b: object) -> bool:
    """Equal values, and equal JSON text (tells -0.0 from 0.0 and 1.0 from 1)."""
    return a == b and json.dumps(a) == json.dumps(b)


# ----------------------------------------------------------------------------- kernels


def samples(rng: np.random.Generator) -> list[np.ndarray]:
    arrays = [rng.normal(size=n) for n in (*range(1, 40), 101, 1000, 4097)]
    arrays += [rng.integers(0, k, size=n).astype(float) for k in (1, 2, 5) for n in (1, 7, 10, 500)]
    arrays += [np.array([-0.0, 0.0, -0.0, -0.0]), np.array([-0.0, -0.0]), np.array([1e300, -1e300, 3.0]),
               rng.lognormal(3, 2, 999) * rng.choice([-1, 1], 999)]
    return arrays


def test_order_statistics_equal_numpy_quantile_and_median():
    for values in samples(np.random.default_rng(0)):
        quantiles, median, _, _ = order_statistics(values.copy(), LEVELS)
        # Bit for bit but for the sign of a zero (always +0.0 here: + 0.0 turns -0.0 into +0.0).
        assert quantiles.tobytes() == (np.quantile(values, LEVELS) + 0.0).tobytes()
        assert np.float64(median).tobytes() == (np.median(values) + 0.0).tobytes()


def test_order_statistics_of_tied_signed_zeros_are_positive_zeros():
    """Which of 0.0 and -0.0 lands at a position is arbitrary; the stored summary must not depend on it."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        values = rng.choice([-0.0, 0.0, -1.0, 1.0, 2.5], size=int(rng.integers(17, 60)))
        quantiles, median, _, _ = order_statistics(values.copy(), LEVELS)
        np.testing.assert_array_equal(quantiles, np.quantile(values, LEVELS))  # equal as numbers
        assert median == np.median(values)
        assert not np.signbit(quantiles[quantiles == 0]).any() and not (median == 0 and np.signbit(median))


def test_bin_counts_equal_searchsorted_bincount():
    rng = np.random.default_rng(1)
    for values in samples(rng):
        quantiles, _, part, kth = order_statistics(values.copy(), LEVELS)
        for edges in (sorted({drift._round(q) for q in quantiles}), sorted(set(values[:3].tolist())),
                      [float(values.min()) - 1, float(values.max()) + 1], [float(np.median(values))], []):
            expected = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), values, side="left"),
                                   minlength=len(edges) + 1).astype(float)
            assert np.array_equal(bin_counts(part, kth, edges), expected)


def test_group_medians_equal_pandas_groupby_median():
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 6, 3001)
    values = np.round(rng.lognormal(2, 1, 3001), 1)  # ties
    values[codes == 4] = -0.0
    counts = np.bincount(codes, minlength=7)  # code 6: no rows
    wanted = np.array([True, True, False, True, True, True, True])
    expected = pd.Series(values).groupby(codes).median().reindex(range(7)).to_numpy(copy=True)
    expected[~wanted] = np.nan
    ignored = np.append(codes, [-1, -1])  # rows outside every group
    with_ignored = np.append(values, [1e9, -1e9])
    for masked_groups, block_rows in ((0, 1 << 20), (16, 1 << 20), (16, 1), (16, 7), (16, 1000)):
        # after one sort of the codes, and gathered block by block (blocks of 1 row to all rows)
        got = group_medians(with_ignored, ignored, counts, wanted, masked_groups, block_rows)
        assert got.tobytes() == expected.tobytes()


def test_grouped_in_blocks_is_the_masked_rows_in_order():
    """Each group's values in input order, as ``values[codes == k]``: 0.0 and -0.0 keep their places."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 5, 5000)
    values = rng.choice(np.array([0.0, -0.0, 1.5, -2.0]), 5000)
    counts = np.bincount(codes[codes >= 0], minlength=6)
    expected = np.concatenate([values[codes == k] for k in range(6)])
    for block_rows in (1, 3, 4096, 1 << 20):
        assert summary_stats._grouped_in_blocks(values, codes, counts, block_rows).tobytes() == expected.tobytes()
    with pytest.raises(ValueError, match="do not match"):
        summary_stats._grouped_in_blocks(values, codes, counts + 1, 4096)


def test_codes_of_text_columns_with_missing_values():
    series = pd.Series(["b", None, "a", "b", "a", None], dtype="str")
    codes, names = string_codes(series)
    assert names == ["b", "a"] and codes.tolist() == [0, -1, 1, 0, 1, -1]
    ids = pd.Series(["P2", "P2", "X", None, "P1", "P1", "P2"], dtype="str")
    assert lookup_codes(ids, np.array(["P1", "P2"], dtype=object)).tolist() == [1, 1, -1, -1, 0, 0, 1]
    assert lookup_codes(pd.Series([7, 7, 3]), np.array(["3", "7"], dtype=object)).tolist() == [1, 1, 0]
    assert len(lookup_codes(pd.Series([], dtype="str"), np.array(["P1"], dtype=object))) == 0
    categorical = ids.astype("category")
    assert lookup_codes(categorical, np.array(["P1", "P2"], dtype=object)).tolist() == [1, 1, -1, -1, 0, 0, 1]
    assert lookup_codes(categorical, np.array(["P1", np.nan], dtype=object)).tolist() == [-1, -1, -1, 1, 0, 0, -1]
    codes, names = string_codes(pd.Series(pd.Categorical(["b", None, "a"], categories=["z", "a", "b"])))
    assert [names[c] if c >= 0 else None for c in codes] == ["b", None, "a"]


# ----------------------------------------------------------------------------- whole summary


def cohort(n: int = 40, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Landmark rows (two landmarks, one patient with one) and measurements covering the awkward cases."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    lm = pd.DataFrame({
        PATIENT_ID: np.repeat(ids, 2)[:-1], LANDMARK_HOURS: np.tile([0.0, 24.0], n)[:-1],
        "x": rng.normal(size=2 * n - 1), "ties": rng.integers(0, 3, 2 * n - 1).astype(float),
        "sparse": np.where(np.arange(2 * n - 1) < 5, 1.5, np.nan), "empty": np.nan,
        "product": rng.choice(["axi-cel", "tisa-cel", None], 2 * n - 1),
    })
    lm.loc[3, "x"] = np.inf  # non-finite: missing
    rows = 30 * n
    patient = np.sort(rng.integers(0, n + 5, rows))  # ids P040.. are not in the landmark table
    meas = pd.DataFrame({
        PATIENT_ID: pd.array([f"P{i:03d}" for i in patient], dtype="str"),
        HOURS_SINCE_ANCHOR: rng.uniform(-200, 60, rows).round(1),
        "analyte": pd.array(rng.choice(["IL6", "CRP", "FERRITIN", "RARE", "NOVALUE", "LATE"], rows), dtype="str"),
        "value": rng.lognormal(2, 1, rows).round(2),
        "unit": pd.array(rng.choice(["pg/mL", None], rows), dtype="str"),  # missing units
        "censoring": pd.array(rng.choice(["none", "left", "right", "none"], rows), dtype="str"),
    })
    meas.loc[meas["analyte"] == "NOVALUE", "value"] = np.nan  # an analyte with no usable value
    meas.loc[meas["analyte"] == "LATE", HOURS_SINCE_ANCHOR] = 500.0  # only outside the window
    rare = np.flatnonzero(meas["analyte"] == "RARE")
    meas.loc[rare[5:], "analyte"] = "IL6"  # RARE: too few patients for a median
    meas.loc[rng.choice(rows, 20, replace=False), "analyte"] = None
    meas.loc[rng.choice(rows, 10, replace=False), "value"] = np.inf
    meas.loc[rng.choice(rows, 10, replace=False), PATIENT_ID] = None
    meas.loc[rng.choice(rows, 30, replace=False), "censoring"] = pd.Series([" LEFT", "2", "0", None, "Right "] * 6).to_numpy()
    return lm, meas


COLUMNS = ["x", "ties", "sparse", "empty", "product"]


@pytest.mark.parametrize("censoring", ["words", "codes", "object", "categorical", "absent"])
def test_feature_summary_equals_reference(censoring: str):
    lm, meas = cohort()
    if censoring == "codes":
        words = meas["censoring"].str.strip().str.lower()
        meas = meas.assign(censoring=np.select([words == "left", words == "right"], [1, 2], 0).astype(np.int8))
    elif censoring == "object":
        meas = meas.astype({"censoring": object, "analyte": object, PATIENT_ID: object})
    elif censoring == "categorical":  # text read as pandas categoricals (Arrow dictionaries)
        meas = meas.astype({"censoring": "category", "analyte": "category", PATIENT_ID: "category"})
    elif censoring == "absent":
        meas = meas.drop(columns="censoring")
    got = drift.feature_summary(lm, COLUMNS, meas)
    assert same(got, reference_feature_summary(lm, COLUMNS, meas))
    assert "LATE" not in got["analytes"] and "NOVALUE" not in got["analytes"]
    assert got["analytes"]["RARE"]["median_value"] is None
    if censoring != "absent":
        assert got["analytes"]["IL6"]["censored_fraction"] > 0


def test_analyte_stats_equal_reference_frames_and_edge_cases():
    lm, meas = cohort(n=12, seed=4)
    patients = pd.unique(lm[PATIENT_ID].astype(str))
    categorical = meas.astype({"analyte": "category", PATIENT_ID: "category"})
    for frame, universe in [(meas, patients), (meas.iloc[:0], patients), (meas, patients[:0]),
                            (meas, np.append(patients, np.nan).astype(object)),  # a missing id in drift_report
                            (categorical, np.append(patients, np.nan).astype(object))]:
        got, overall = drift._analyte_stats(frame, universe, (-168.0, 24.0))
        expected, expected_overall = reference_analyte_stats(frame, universe, (-168.0, 24.0))
        pd.testing.assert_frame_equal(got, expected, check_exact=True, check_index_type=False)
        assert overall == expected_overall


def test_drift_report_unchanged_against_reference_summary():
    lm, meas = cohort()
    summary = drift.feature_summary(lm, COLUMNS, meas)
    new_lm, new_meas = cohort(seed=9)
    factors = drift.unit_factors_from_registry()
    got = drift.drift_report(summary, new_lm, new_meas, factors)
    saved = drift._analyte_stats
    drift._analyte_stats = reference_analyte_stats
    try:
        expected = drift.drift_report(summary, new_lm, new_meas, factors)
    finally:
        drift._analyte_stats = saved
    assert same(got, expected)
