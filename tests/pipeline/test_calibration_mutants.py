"""Calibration cases for the mutants of pipeline/model/calibration.py that survived `make mutation` (issue 16).

Every expected number is written out by hand, follows from symmetry, or comes from scikit-learn; nothing
is compared with the code under test itself. Data are built inside each test (mutmut's per-test selection).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.model.calibration import Calibrator, _platt_targets, expit, fit_calibrator, fit_logistic, logit
from tests.pipeline.test_calibration import _sklearn_soft_fit


def _expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def counting_solve(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Patch np.linalg.solve to count its calls (and raise LinAlgError on call ``fail_on_call``)."""
    calls: list[int] = []
    real = np.linalg.solve

    def solve(a, b):
        calls.append(1)
        if len(calls) == fail_on_call:
            raise np.linalg.LinAlgError("Singular matrix")
        return real(a, b)

    monkeypatch.setattr(np.linalg, "solve", solve)
    return calls


# --------------------------------------------------------------------------- logit and expit


def test_float32_scores_are_transformed_in_float64():
    # XGBoost predicts float32; the transforms must not lose the float64 digits of those values.
    p = np.array([0.3, 0.9], dtype=np.float32)
    got = logit(p)
    assert got.dtype == np.float64
    assert got.tolist() == pytest.approx([math.log(float(v) / (1 - float(v))) for v in p], rel=1e-15, abs=0)
    eta = np.array([0.7, -2.5], dtype=np.float32)
    got = expit(eta)
    assert got.dtype == np.float64
    assert got.tolist() == pytest.approx([_expit(float(v)) for v in eta], rel=1e-15, abs=0)


def test_expit_saturates_exactly_at_plus_and_minus_30():
    got = expit(np.array([-1000.0, -30.0, 30.0, 1000.0]))
    low, high = _expit(-30.0), _expit(30.0)  # 9.4e-14 and 1 - 9.4e-14: never exactly 0 or 1
    assert got.tolist() == pytest.approx([low, low, high, high], rel=1e-14, abs=0)
    assert 0.0 < got[0] and got[-1] < 1.0


# --------------------------------------------------------------------------- the Newton fit


def test_separable_data_diverge_along_the_separation_for_100_steps(monkeypatch):
    # x = -2, -1 are non-events, 1, 2 events: no finite maximum; by symmetry the intercept stays 0 while
    # the slope grows. The ridge keeps each Newton step defined as the Hessian vanishes.
    calls = counting_solve(monkeypatch)
    intercept, slope = fit_logistic(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0.0, 0.0, 1.0, 1.0]), np.zeros(4))
    assert abs(intercept) < 1e-3 and slope > 20
    assert len(calls) == 100  # never converges: stops after the default n_iter = 100 steps


def test_a_singular_hessian_stops_the_fit_with_the_estimate_so_far(monkeypatch):
    counting_solve(monkeypatch, fail_on_call=2)
    y = np.array([1, 0, 0, 1, 0], dtype=float)
    (intercept,) = fit_logistic(None, y, np.zeros(5))
    assert intercept == pytest.approx(-0.4, abs=1e-9)  # the first step: grad 2 - 2.5 over hess 5/4


# --------------------------------------------------------------------------- the map and its checks


def test_per_landmark_isotonic_keeps_float64_for_float32_scores():
    cal = Calibrator("isotonic", x=[0.0, 1.0], y=[0.5, 0.5], by_landmark={24.0: ([0.0, 1.0], [0.1, 0.2])})
    raw = np.array([0.3], dtype=np.float32)
    got = cal.predict(raw, 24.0)
    assert got.dtype == np.float64
    assert got[0] == pytest.approx(0.1 + 0.1 * float(raw[0]), rel=1e-15, abs=0)


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="^unknown calibration method 'platt'$"):
        Calibrator.from_json({"method": "platt", "a": 1.0, "b": 0.0})


def test_a_missing_parameter_is_not_a_finite_number():
    assert Calibrator("sigmoid", a=None).range_problem() == "a parameter is not a finite number"


def test_a_per_landmark_map_without_knots_is_not_accepted():
    # The parameters pass (nothing to check in an empty map), but the map cannot be evaluated at 24 h.
    cal = Calibrator("isotonic", x=[0.0, 1.0], y=[0.2, 0.6], by_landmark={24.0: ([], [])})
    with pytest.raises(ValueError):  # the model loader reports it as a malformed calibrator
        cal.range_problem()


def test_finite_but_absurd_knots_that_leave_0_1_are_refused():
    # A damaged first knot at -1.3e308 passes the parameter checks; interpolating across it overshoots 1.
    cal = Calibrator("isotonic", x=[-1.3e308, 0.5], y=[0.3, 1.0])
    assert cal.predict(np.array([0.0]))[0] > 1.0
    assert cal.range_problem() == "its output on a grid of scores is outside [0, 1]"


# --------------------------------------------------------------------------- the fit


def test_identical_scores_keep_slope_one():
    # A booster that gives every held-out row 0.5 has no ranking signal: the fitted slope is 0, so the
    # slope is set to 1 and only the intercept is fitted (mean Platt target 1/2: intercept 0).
    raw = np.full(20, 0.5)
    y = np.repeat([1.0, 0.0], 10)
    cal = fit_calibrator(raw, y, "sigmoid")
    assert cal.a == 1.0 and cal.b == pytest.approx(0.0, abs=1e-12)
    assert cal.predict(np.array([0.8]))[0] == pytest.approx(0.8, rel=1e-12)


def test_a_fitted_slope_below_one_is_kept():
    # Overconfident scores (raw logit twice the true one): Platt's slope is about 1/2, and kept.
    rng = np.random.default_rng(11)
    z_true = rng.normal(-0.5, 1.0, 400)
    raw = 1 / (1 + np.exp(-2 * z_true))
    y = (rng.random(400) < 1 / (1 + np.exp(-z_true))).astype(float)
    cal = fit_calibrator(raw, y, "sigmoid")
    b, a = _sklearn_soft_fit(np.log(raw / (1 - raw)), _platt_targets(y))
    assert 0 < a < 0.8
    assert (cal.a, cal.b) == (pytest.approx(a, abs=1e-5), pytest.approx(b, abs=1e-5))


def test_a_single_landmark_gets_no_landmark_offset():
    rng = np.random.default_rng(12)
    raw = rng.uniform(0.05, 0.95, 200)
    y = (rng.random(200) < raw).astype(float)
    cal = fit_calibrator(raw, y, "sigmoid", landmarks=np.full(200, 24.0), min_landmark_events=10)
    assert cal.method == "sigmoid" and cal.landmark_offsets == {}


def test_ten_events_and_non_events_are_enough_for_a_landmark_offset_by_default():
    # 24 h: 10 events, 15 non-events (enough); 48 h: 9 events (too few: pinned at 0).
    raw = np.tile(np.linspace(0.1, 0.9, 25), 2)
    y = np.zeros(50)
    y[[0, 3, 5, 8, 11, 14, 17, 20, 22, 24]] = 1.0
    y[[25 + i for i in (2, 5, 8, 11, 14, 17, 20, 23, 24)]] = 1.0
    hours = np.repeat([24.0, 48.0], 25)
    cal = fit_calibrator(raw, y, "sigmoid", landmarks=hours)
    assert set(cal.landmark_offsets) == {24.0, 48.0} and cal.landmark_offsets[48.0] == 0.0
    # 24 h's offset solves its score equation with slope and intercept held fixed.
    rows = hours == 24.0
    eta = cal.a * np.log(raw[rows] / (1 - raw[rows])) + cal.b + cal.landmark_offsets[24.0]
    assert np.sum(_platt_targets(y[rows]) - 1 / (1 + np.exp(-eta))) == pytest.approx(0.0, abs=1e-8)
    assert abs(cal.landmark_offsets[24.0]) > 0.01


def test_auto_needs_200_events_and_200_non_events_by_default():
    raw = np.linspace(0.01, 0.99, 400)
    y = np.zeros(400)
    y[1::2] = 1.0  # 200 events, 200 non-events
    assert fit_calibrator(raw, y, "auto").method == "isotonic"
    y[1] = 0.0  # 199 events
    assert fit_calibrator(raw, y, "auto").method == "sigmoid"


def test_isotonic_blocks_of_float32_scores_are_not_merged_by_float32_rounding():
    # Two isotonic blocks with event rates 1969/5908 and 1970/5911 (they differ by 2.9e-8, below float32
    # resolution). Events first inside each block, so each block pools into one level. Add-one smoothing
    # gives exactly (1969 + 1) / (5908 + 2) = 1/3 and (1970 + 1) / (5911 + 2) = 1/3; merged into one
    # block they would be (3939 + 1) / (11819 + 2) = 0.333305.
    y = np.concatenate([np.ones(1969), np.zeros(5908 - 1969), np.ones(1970), np.zeros(5911 - 1970)])
    raw = ((np.arange(len(y)) + 1) / 2**14).astype(np.float32)  # exact in float32, increasing
    cal = fit_calibrator(raw, y, "isotonic")
    assert cal.y == pytest.approx([1 / 3] * len(cal.y), rel=1e-12, abs=0)

