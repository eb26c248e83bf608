"""The segment-bound summaries of :class:`features.landmarks.AnalyteAtLandmark` (issue 14) against the
row-mask algorithms they replaced, bit for bit, on simulated series cut at several landmarks.

The reference functions below are the previous implementations, kept here verbatim in substance: each
selects rows with a mask and takes the first / last row of each patient's selection. The fast path
reads per-patient row ranges instead (rows are sorted by patient, then hours). Series include ties in
time, rows exactly at the anchor and at the window edges, pre-anchor-only and post-anchor-only patients,
patients without rows, censored rows and results known after their sample (``known``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.landmarks import (
    CENSORED_ABOVE,
    CENSORED_BELOW,
    AnalyteAtLandmark,
    SortedRows,
    Timeline,
    _first_flags,
    _last_flags,
    _scatter,
    cut_at_landmark,
)

N_PATIENTS = 60
WINDOW, FALLBACK = 168.0, 24.0


def _segment_max(n: int, patient: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(patient) == 0:
        return np.full(n, np.nan)
    starts = np.flatnonzero(_first_flags(patient))
    return _scatter(n, patient[starts], np.maximum.reduceat(values, starts))


def _pick(s: SortedRows, n: int, rows: np.ndarray, last: bool) -> np.ndarray:
    p = s.patient[rows]
    pick = rows[_last_flags(p) if last else _first_flags(p)]
    return _scatter(n, s.patient[pick], s.value[pick])


def _sum(patient: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(patient, weights=weights, minlength=n).astype(np.float64, copy=False)


def _log2_slope(s: SortedRows, n: int, landmark: float, window: float) -> np.ndarray:
    rows = np.flatnonzero((s.hours >= landmark - window) & (s.value > 0))
    p = s.patient[rows]
    x = s.hours[rows] - landmark
    y = np.log2(s.value[rows])
    n_pts = np.bincount(p, minlength=n).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_x = _sum(p, x, n) / n_pts
        mean_y = _sum(p, y, n) / n_pts
        dx = x - mean_x[p]
        sxx = _sum(p, dx * dx, n)
        sxy = _sum(p, dx * (y - mean_y[p]), n)
        ok = (_segment_max(n, p, x) + _segment_max(n, p, -x)) > 0
        return np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)


def reference(s: SortedRows, n: int, landmark: float) -> dict[str, np.ndarray]:
    """The summaries as the row-mask code computed them."""
    post = np.flatnonzero(s.hours > 0.0)
    last_post = post[_last_flags(s.patient[post])]
    out = {
        "count": np.bincount(s.patient, minlength=n).astype(np.float64),
        "latest": _scatter(n, s.patient[last_post], s.value[last_post]),
        "latest_hours": _scatter(n, s.patient[last_post], s.hours[last_post]),
        "first": _pick(s, n, np.flatnonzero(_first_flags(s.patient)), last=False),
        "maximum": _segment_max(n, s.patient, s.value),
        # An independent reference: pandas' group minimum, NaN for patients without rows.
        "minimum": pd.Series(s.value).groupby(s.patient).min().reindex(range(n)).to_numpy(dtype=np.float64),
        "true_baseline": _pick(s, n, np.flatnonzero((s.hours >= -WINDOW) & (s.hours <= 0.0)), last=True),
        "fallback_baseline": _pick(s, n, np.flatnonzero((s.hours > 0.0) & (s.hours <= FALLBACK)), last=False),
    }
    for name, direction in (("n_below_limit", CENSORED_BELOW), ("n_above_limit", CENSORED_ABOVE)):
        weights = (s.censoring == direction).astype(np.float64)
        out[name] = np.bincount(s.patient, weights=weights, minlength=n).astype(np.float64)
    for window in (24.0, 48.0):
        out[f"slope_{window:g}"] = _log2_slope(s, n, landmark, window)
    return out


def simulated(seed: int, with_known: bool) -> Timeline:
    """One analyte for ``N_PATIENTS`` patients, sorted by (patient, hours), times on a coarse grid (ties)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 12, N_PATIENTS)
    counts[:3] = 0  # patients without rows
    patient = np.repeat(np.arange(N_PATIENTS), counts)
    grid = np.array([-200.0, -168.0, -30.0, -1.0, 0.0, 0.5, 6.0, 24.0, 24.0, 30.0, 47.0, 48.0, 72.0, 100.0])
    hours = rng.choice(grid, len(patient))
    hours[patient == 3] = -5.0  # pre-anchor only
    hours[patient == 4] = 12.0  # post-anchor only, ties
    order = np.lexsort((hours, patient))
    patient, hours = patient[order], hours[order]
    value = np.round(rng.lognormal(2.0, 1.5, len(patient)), 1)
    value[rng.random(len(patient)) < 0.1] = 0.0  # no log: left out of slopes
    censoring = rng.choice(np.array([CENSORED_BELOW, 0, 0, 0, CENSORED_ABOVE], dtype=np.int8), len(patient))
    known = hours + rng.choice([0.0, 0.0, 30.0], len(patient)) if with_known else None
    series = SortedRows(patient, hours, value, censoring, known)
    ids = np.array([f"P{i:03d}" for i in range(N_PATIENTS)], dtype=object)
    return Timeline(patient_ids=ids, analytes={"IL6": series}, treatments={})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_known", [False, True])
@pytest.mark.parametrize("landmark", [-1.0, 0.0, 24.0, 48.0, 72.0])
def test_segment_summaries_equal_row_mask_reference(seed: int, with_known: bool, landmark: float) -> None:
    cut = cut_at_landmark(simulated(seed, with_known), landmark)
    series = cut.analytes["IL6"]
    fast = AnalyteAtLandmark(series, landmark, N_PATIENTS, WINDOW, FALLBACK)
    expected = reference(series, N_PATIENTS, landmark)
    for name, want in expected.items():
        got = fast.log2_slope(float(name[6:])) if name.startswith("slope_") else getattr(fast, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name, strict=True)


def test_empty_series() -> None:
    fast = AnalyteAtLandmark(SortedRows.empty(), 24.0, 4, WINDOW, FALLBACK)
    want = reference(SortedRows.empty(), 4, 24.0)
    for name in ("count", "latest", "first", "maximum", "minimum", "true_baseline", "fallback_baseline", "n_below_limit"):
        np.testing.assert_array_equal(getattr(fast, name), want[name], err_msg=name, strict=True)


@pytest.mark.parametrize("with_known", [False, True])
def test_cut_of_a_later_cut_equals_the_direct_cut(with_known: bool) -> None:
    """The landmark matrix cuts the last landmark from the timeline and each earlier one from the later cut."""
    timeline = simulated(7, with_known)
    timeline = Timeline(timeline.patient_ids, timeline.analytes, timeline.treatments,
                        score_baseline_end=np.where(np.arange(N_PATIENTS) % 2 == 0, -48.0, np.nan))
    later = cut_at_landmark(timeline, 72.0)
    for landmark in (48.0, 24.0, 0.0, -1.0):
        direct, nested = cut_at_landmark(timeline, landmark), cut_at_landmark(later, landmark)
        assert direct.landmark_hours == nested.landmark_hours and direct.n_patients == nested.n_patients
        np.testing.assert_array_equal(direct.score_baseline_end, nested.score_baseline_end, strict=True)
        for a, b in zip(direct.analytes["IL6"].__dict__.values(), nested.analytes["IL6"].__dict__.values(), strict=True):
            np.testing.assert_array_equal(a, b, strict=True)
        later = nested
    with pytest.raises(ValueError, match="already cut"):
        cut_at_landmark(later, 24.0)
