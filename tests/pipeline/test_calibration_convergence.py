"""fit_logistic (calibration intercept and slope, recalibration) converges where plain Newton diverges:
risks far from the outcome rate, as in an external cohort (issue 15's bug; part of `make mutation`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from pipeline.model.calibration import expit, fit_logistic, logit


def _far_cohort(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-5.5, 1.2, 300))  # predicted about 0.5 %
    y = (rng.random(300) < 0.15).astype(float)  # observed about 15 %
    return y, p


@pytest.mark.parametrize("seed", [3, 4])
def test_intercept_with_offset_matches_the_score_equation(seed: int) -> None:
    y, p = _far_cohort(seed)
    oracle = brentq(lambda a: float(np.sum(y - expit(logit(p) + a))), -20, 20, xtol=1e-13)
    assert fit_logistic(None, y, logit(p))[0] == pytest.approx(oracle, abs=1e-8)


def test_intercept_and_slope_match_the_score_equations() -> None:
    y, p = _far_cohort(5)
    lp = logit(p)
    a, b = fit_logistic(lp, y, np.zeros_like(lp))
    residual = y - expit(a + b * lp)
    # At the maximum both score equations are zero: sum(residual) = 0 and sum(residual * lp) = 0.
    assert abs(residual.sum()) < 1e-8 and abs((residual * lp).sum()) < 1e-7
    assert abs(b) < 0.5  # outcomes drawn independently of p: no slope to speak of
