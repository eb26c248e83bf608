"""The comparators every model is reported against, by name (the ``prob__<name>`` column groups).

Published and single-marker scores are landmark-table columns where a higher value means higher
risk (CLINICAL.md section 5); the L2 logistic regression uses every model feature.
"""

from __future__ import annotations

#: Published / single-marker baselines: name -> landmark column (higher = higher risk, CLINICAL.md s5).
SCORE_BASELINES: dict[str, str] = {
    "easix": "easix__latest",
    "m_easix": "m_easix__latest",
    "car_hematotox": "car_hematotox__baseline",
    "il6_latest": "il6__latest",
    "crp_latest": "crp__latest",
    "ferritin_latest": "ferritin__latest",
}
LOGISTIC_BASELINE = "logistic_regression"
BASELINES: tuple[str, ...] = (*SCORE_BASELINES, LOGISTIC_BASELINE)
