"""The calibration map and its fit, against hand values and scikit-learn (issue 16).

Every expected number here is either written out by hand or computed by another library; nothing is
compared with the code under test itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline.model.calibration import (
    Calibrator,
    _enough,
    _isotonic_knots,
    _platt_targets,
    expit,
    fit_calibrator,
    fit_logistic,
    logit,
)


def _expit(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sklearn_soft_fit(x: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Unpenalised logistic fit to soft targets t: each row once as an event (weight t), once not (1 - t)."""
    design = np.concatenate([x, x]).reshape(-1, 1)
    labels = np.concatenate([np.ones_like(targets), np.zeros_like(targets)])
    weights = np.concatenate([targets, 1 - targets])
    model = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(design, labels, sample_weight=weights)
    return float(model.intercept_[0]), float(model.coef_[0, 0])


# --------------------------------------------------------------------------- logit, expit, Newton fit


def test_logit_and_expit_clip_at_their_documented_bounds():
    assert logit(np.array([0.0]))[0] == pytest.approx(_logit(1e-6), rel=1e-12)
    assert logit(np.array([1.0]))[0] == pytest.approx(_logit(1 - 1e-6), rel=1e-12)
    assert logit(np.array([0.25]))[0] == pytest.approx(math.log(1 / 3), rel=1e-12)
    assert expit(np.array([1000.0]))[0] == pytest.approx(_expit(30), rel=1e-15)
    assert expit(np.array([-1000.0]))[0] == pytest.approx(_expit(-30), rel=1e-12)
    assert expit(np.array([0.7]))[0] == pytest.approx(_expit(0.7), rel=1e-15)


def test_fit_logistic_matches_unpenalised_sklearn():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = (rng.random(200) < _expit_array(0.4 + 1.3 * x)).astype(float)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x.reshape(-1, 1), y)
    intercept, slope = fit_logistic(x, y, np.zeros_like(x))
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-6)
    assert slope == pytest.approx(ref.coef_[0, 0], abs=1e-6)


def _expit_array(eta: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-eta))


def test_intercept_only_fit_is_the_logit_of_the_event_rate():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=float)  # rate 1/4
    (intercept,) = fit_logistic(None, y, np.zeros(8))
    assert intercept == pytest.approx(math.log(1 / 3), abs=1e-9)


def test_intercept_with_an_offset_solves_the_score_equation():
    # With offset o, the intercept b solves sum(y - expit(o + b)) = 0 (first-order condition).
    offset = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5])
    y = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    (b,) = fit_logistic(None, y, offset)
    assert sum(yi - _expit(oi + b) for yi, oi in zip(y, offset, strict=True)) == pytest.approx(0.0, abs=1e-9)
    assert b != pytest.approx(fit_logistic(None, y, np.zeros(6))[0], abs=1e-3)  # the offset matters


def test_newton_stops_early_but_only_once_converged():
    y = np.array([1, 0, 0, 1, 0], dtype=float)
    one_step = fit_logistic(None, y, np.zeros(5), n_iter=1)[0]
    assert one_step == pytest.approx(-0.4, abs=1e-9)  # from 0: grad = 2 - 2.5, hess = 5/4 (+1e-10 ridge)
    assert fit_logistic(None, y, np.zeros(5))[0] == pytest.approx(math.log(2 / 3), abs=1e-10)


# --------------------------------------------------------------------------- the map


def test_sigmoid_map_with_landmark_offsets_by_hand():
    cal = Calibrator("sigmoid", a=2.0, b=-1.0, landmark_offsets={24.0: 0.5, 72.0: -0.5})
    raw = np.array([0.2, 0.6])
    z = [_logit(0.2), _logit(0.6)]
    # No landmark: no offset; before the first / after the last: flat; between: linear in hours.
    for hours, offset in [(None, 0.0), (0.0, 0.5), (24.0, 0.5), (48.0, 0.0), (60.0, -0.25), (100.0, -0.5)]:
        got = cal.predict(raw, hours)
        assert got == pytest.approx([_expit(2 * zi - 1 + offset) for zi in z], rel=1e-12), hours
    per_row = cal.predict(raw, np.array([24.0, 72.0]))
    assert per_row == pytest.approx([_expit(2 * z[0] - 0.5), _expit(2 * z[1] - 1.5)], rel=1e-12)


def test_sigmoid_without_offsets_ignores_the_landmark():
    cal = Calibrator("sigmoid", a=0.5, b=0.25)
    assert cal.predict(np.array([0.3]), 48.0)[0] == pytest.approx(_expit(0.5 * _logit(0.3) + 0.25), rel=1e-12)


def test_isotonic_single_map_interpolates_and_is_flat_beyond_its_knots():
    cal = Calibrator("isotonic", x=[0.2, 0.4, 0.8], y=[0.1, 0.3, 0.5])
    got = cal.predict(np.array([0.0, 0.2, 0.3, 0.6, 0.8, 1.0]), 48.0)
    assert got == pytest.approx([0.1, 0.1, 0.2, 0.4, 0.5, 0.5], abs=1e-12)
    assert Calibrator("isotonic").predict(np.array([0.37]))[0] == 0.37  # no knots: unchanged


def test_isotonic_by_landmark_uses_the_nearest_trained_landmark_at_or_below():
    cal = Calibrator("isotonic", x=[0.0, 1.0], y=[0.5, 0.5],
                     by_landmark={24.0: ([0.0, 1.0], [0.1, 0.2]), 72.0: ([0.0, 1.0], [0.3, 0.4])})
    raw = np.full(6, 0.5)
    got = cal.predict(raw, np.array([0.0, 24.0, 47.0, 71.9, 72.0, 200.0]))
    # 0 h lies below the grid: the first map; 71.9 h still uses 24 h (no look-ahead to 72 h).
    assert got == pytest.approx([0.15, 0.15, 0.15, 0.15, 0.35, 0.35], abs=1e-12)
    assert cal.predict(np.array([0.5]))[0] == pytest.approx(0.5)  # no landmark: the pooled map


def test_identity_returns_the_raw_scores():
    raw = np.array([0.0, 0.3, 1.0])
    assert np.array_equal(Calibrator("identity").predict(raw, 24.0), raw)


@pytest.mark.parametrize("cal", [
    Calibrator("identity"),
    Calibrator("sigmoid", a=1.5, b=-0.25, landmark_offsets={0.0: 0.1, 48.0: -0.2}),
    Calibrator("isotonic", x=[0.1, 0.9], y=[0.05, 0.6], by_landmark={24.0: ([0.1, 0.9], [0.02, 0.7]),
                                                                     48.0: ([0.2, 0.8], [0.1, 0.5])}),
])
def test_json_round_trip_keeps_the_map(cal):
    back = Calibrator.from_json(cal.to_json())
    assert back == cal
    raw = np.linspace(0, 1, 11)
    for hours in (None, 0.0, 30.0, 48.0):
        assert np.array_equal(back.predict(raw, hours), cal.predict(raw, hours))


def test_json_is_plain_and_names_its_formula():
    data = Calibrator("sigmoid", a=2.0, b=0.5, landmark_offsets={24.0: 0.25}).to_json()
    assert data == {"method": "sigmoid", "a": 2.0, "b": 0.5, "landmark_offsets": {"24.0": 0.25},
                    "formula": "1/(1+exp(-(a*logit(p)+b+offset(landmark))))"}
    assert Calibrator("isotonic", x=[0.0], y=[0.5]).to_json() == {"method": "isotonic", "x": [0.0], "y": [0.5]}
    assert Calibrator("identity").to_json() == {"method": "identity"}
    assert Calibrator.from_json({}) == Calibrator("identity")


@pytest.mark.parametrize("data, error", [
    ({"method": "platt"}, ValueError),
    ({"method": "sigmoid", "b": 0.0}, KeyError),
    ({"method": "isotonic", "x": [0.1]}, KeyError),
    ({"method": "sigmoid", "a": "x", "b": 0.0}, ValueError),
])
def test_malformed_json_is_refused(data, error):
    with pytest.raises(error):
        Calibrator.from_json(data)


@pytest.mark.parametrize("cal, reason", [
    (Calibrator("isotonic", x=[0.1, 0.5], y=[0.2]), "isotonic knots x and y differ in length"),
    (Calibrator("isotonic", x=[0.5, 0.1], y=[0.2, 0.3]), "isotonic knots x are not finite and increasing"),
    (Calibrator("isotonic", x=[0.1, math.nan], y=[0.2, 0.3]), "isotonic knots x are not finite and increasing"),
    (Calibrator("isotonic", x=[0.1, 0.5], y=[0.2, 5.0]), "isotonic levels y outside [0, 1]"),
    (Calibrator("isotonic", x=[0.1, 0.5], y=[-0.1, 0.3]), "isotonic levels y outside [0, 1]"),
    (Calibrator("isotonic", x=[0.1, 0.5], y=[0.2, 0.3], by_landmark={24.0: ([0.1, 0.5], [0.2, 1.5])}),
     "isotonic levels y outside [0, 1]"),
    (Calibrator("sigmoid", a=math.inf), "a parameter is not a finite number"),
    (Calibrator("sigmoid", b=math.nan), "a parameter is not a finite number"),
    (Calibrator("sigmoid", landmark_offsets={24.0: math.nan}), "a parameter is not a finite number"),
    (Calibrator("sigmoid", landmark_offsets={math.inf: 0.1}), "a parameter is not a finite number"),
])
def test_range_problem_names_each_damage(cal, reason):
    assert cal.range_problem() == reason


@pytest.mark.parametrize("cal", [
    Calibrator("identity"),
    Calibrator("sigmoid", a=3.0, b=-2.0, landmark_offsets={24.0: 1.0}),
    Calibrator("isotonic", x=[0.0, 1.0], y=[0.0, 1.0], by_landmark={24.0: ([0.0, 1.0], [0.0, 1.0])}),
    Calibrator("isotonic", x=[0.3, 0.3], y=[0.2, 0.4]),  # a vertical step is still a map into [0, 1]
])
def test_range_problem_accepts_sound_maps(cal):
    assert cal.range_problem() is None


# --------------------------------------------------------------------------- the fit


def test_platt_targets_and_enough_by_hand():
    y = np.array([1, 1, 0, 0, 0], dtype=float)
    assert _platt_targets(y) == pytest.approx([3 / 4, 3 / 4, 1 / 5, 1 / 5, 1 / 5], abs=1e-15)
    assert _enough(y, 2) and not _enough(y, 3)  # 2 events, 3 non-events
    assert _enough(1 - y, 2) and not _enough(1 - y, 3)


def test_isotonic_knots_by_hand():
    raw = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 1, 0, 1, 1, 1], dtype=float)
    knots_x, knots_y = _isotonic_knots(raw, y)
    # PAV blocks: {0.1} 0/1, {0.2, 0.3} 1/2, {0.4..0.6} 3/3; add-one: 1/3, 2/4, 4/5.
    cal = Calibrator("isotonic", knots_x, knots_y)
    assert cal.predict(raw) == pytest.approx([1 / 3, 1 / 2, 1 / 2, 4 / 5, 4 / 5, 4 / 5], abs=1e-12)
    _, flat = _isotonic_knots(raw[:3], np.array([1.0, 1.0, 1.0]))  # one block: (3 + 1) / (3 + 2)
    assert flat == pytest.approx([4 / 5] * len(flat), abs=1e-12)


def test_one_class_gives_the_identity():
    assert fit_calibrator(np.array([0.1, 0.2, 0.3]), np.zeros(3), "sigmoid") == Calibrator("identity")
    assert fit_calibrator(np.array([0.1, 0.2, 0.3]), np.ones(3), "isotonic") == Calibrator("identity")


def _scores(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = np.clip(rng.beta(2, 5, n), 0.01, 0.99)
    y = (rng.random(n) < _expit_array(1.8 * np.log(raw / (1 - raw)) + shift)).astype(float)
    return raw, y


def test_sigmoid_fit_is_platt_on_smoothed_targets_like_sklearn():
    raw, y = _scores(400, 1)
    cal = fit_calibrator(raw, y, "sigmoid")
    b, a = _sklearn_soft_fit(np.log(raw / (1 - raw)), _platt_targets(y))
    assert (cal.method, cal.a, cal.b, cal.landmark_offsets) == ("sigmoid", pytest.approx(a, abs=1e-5),
                                                               pytest.approx(b, abs=1e-5), {})


def test_landmark_offsets_move_only_the_intercept():
    raw0, y0 = _scores(300, 2, shift=-1.0)
    raw1, y1 = _scores(300, 3, shift=+1.0)
    raw, y = np.concatenate([raw0, raw1]), np.concatenate([y0, y1])
    hours = np.repeat([24.0, 72.0], 300)
    cal = fit_calibrator(raw, y, "sigmoid", landmarks=hours, min_landmark_events=10)
    b, a = _sklearn_soft_fit(np.log(raw / (1 - raw)), _platt_targets(y))
    assert (cal.a, cal.b) == (pytest.approx(a, abs=1e-5), pytest.approx(b, abs=1e-5))
    assert set(cal.landmark_offsets) == {24.0, 72.0}
    assert cal.landmark_offsets[24.0] < 0 < cal.landmark_offsets[72.0]
    # Each offset solves its landmark's score equation with the slope held fixed.
    for h in (24.0, 72.0):
        rows = hours == h
        eta = cal.a * logit(raw[rows]) + cal.b + cal.landmark_offsets[h]
        assert np.sum(_platt_targets(y[rows]) - _expit_array(eta)) == pytest.approx(0.0, abs=1e-7)


def test_a_landmark_with_too_few_events_is_pinned_at_zero():
    raw, y = _scores(400, 4)
    hours = np.repeat([24.0, 48.0], 200)
    y[hours == 48.0] = 0.0
    y[np.flatnonzero(hours == 48.0)[:3]] = 1.0  # 3 events < 10
    cal = fit_calibrator(raw, y, "sigmoid", landmarks=hours, min_landmark_events=10)
    assert cal.landmark_offsets[48.0] == 0.0 and cal.landmark_offsets[24.0] != 0.0
    few = fit_calibrator(raw, y, "sigmoid", landmarks=hours, min_landmark_events=1000)
    assert few.landmark_offsets == {}


def test_a_reversed_signal_keeps_slope_one():
    raw, y = _scores(300, 5)
    cal = fit_calibrator(1 - raw, y, "sigmoid")  # higher raw, fewer events: fitted slope < 0
    assert cal.a == 1.0
    (b,) = fit_logistic(None, _platt_targets(y), logit(1 - raw))
    assert cal.b == pytest.approx(b, abs=1e-12)
    assert np.all(np.diff(cal.predict(np.linspace(0.01, 0.99, 50))) > 0)  # ranking never reversed


def test_auto_chooses_isotonic_only_when_every_landmark_is_rich():
    raw, y = _scores(2000, 6, shift=1.5)
    hours = np.repeat([24.0, 48.0], 1000)
    events = [min(int(y[hours == h].sum()), int((1 - y[hours == h]).sum())) for h in (24.0, 48.0)]
    lowest = min(events)
    rich = fit_calibrator(raw, y, "auto", landmarks=hours, isotonic_min_events=lowest)
    poor = fit_calibrator(raw, y, "auto", landmarks=hours, isotonic_min_events=lowest + 1)
    assert (rich.method, poor.method) == ("isotonic", "sigmoid")
    assert set(rich.by_landmark) == {24.0, 48.0}
    pooled = fit_calibrator(raw, y, "auto", isotonic_min_events=lowest)
    assert pooled.method == "isotonic" and pooled.by_landmark == {}


def test_isotonic_maps_per_landmark_only_when_every_landmark_has_enough_events():
    raw, y = _scores(600, 7, shift=1.0)
    hours = np.repeat([24.0, 48.0], 300)
    per_landmark = fit_calibrator(raw, y, "isotonic", landmarks=hours, min_landmark_events=5)
    knots = _isotonic_knots(raw[hours == 48.0], y[hours == 48.0])
    assert per_landmark.by_landmark[48.0] == knots
    assert (per_landmark.x, per_landmark.y) == tuple(_isotonic_knots(raw, y))
    assert fit_calibrator(raw, y, "isotonic", landmarks=hours, min_landmark_events=10_000).by_landmark == {}
    one = fit_calibrator(raw, y, "isotonic", landmarks=np.full(600, 24.0), min_landmark_events=5)
    assert one.by_landmark == {}  # a single landmark needs no separate map
