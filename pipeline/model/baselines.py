"""The comparators every model is reported against, by name (the ``prob__<name>`` column groups).

Published and single-marker scores are landmark-table columns where a higher value means higher
risk (docs/clinical.md#published-scores), ranked by their raw value; the refitted models (L2 logistic regression
on every model feature, the Teachey 2016-style three-cytokine logistic model, the simple-summaries
gradient-boosting reference) are fitted inside each outer training fold.
"""

from __future__ import annotations

#: Published / single-marker baselines: name -> landmark column (higher = higher risk, docs/clinical.md#published-scores).
SCORE_BASELINES: dict[str, str] = {
    "easix": "easix__latest",
    "m_easix": "m_easix__latest",
    "car_hematotox": "car_hematotox__baseline",
    "il6_latest": "il6__latest",
    "crp_latest": "crp__latest",
    "ferritin_latest": "ferritin__latest",
    # Hay et al. 2017: fever >= 38.9 C and MCP-1 >= 1343.5 pg/mL within 36 h (0/1 flag).
    "hay_2017": "hay_2017__flag",
}
LOGISTIC_BASELINE = "logistic_regression"
#: Teachey et al. 2016-style: L2 logistic regression on log sgp130, log IFN-g, log IL-1RA (refitted per fold).
TEACHEY_BASELINE = "teachey_2016"
TEACHEY_COLUMNS: tuple[str, ...] = ("sgp130__latest", "ifng__latest", "il1ra__latest")
#: XGBoost depth 2 on the simple summaries (contracts.simple_summary_columns), no tuning or calibration.
SIMPLE_SUMMARIES_BASELINE = "simple_summaries"
#: Baselines fitted inside each outer training fold (probability from the fitted model, no raw score).
MODEL_BASELINES: tuple[str, ...] = (LOGISTIC_BASELINE, TEACHEY_BASELINE, SIMPLE_SUMMARIES_BASELINE)
BASELINES: tuple[str, ...] = (*SCORE_BASELINES, *MODEL_BASELINES)
