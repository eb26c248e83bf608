"""Scoring a cohort: raw tables in, one risk (or a reason why not) per patient and target out.

:mod:`.cohort` runs ingest rules, featurize at each patient's landmark and the model layer's scorer;
:mod:`.messages` words what was missing or rejected; :mod:`.drivers` lists a row's top SHAP drivers.
Used by ``crs predict`` and the MLflow pyfunc model alike.
"""

from pipeline.scoring.cohort import (
    PREDICTION_COLUMNS,
    PredictResult,
    choose_landmarks,
    run_warnings,
    score_cohort,
    score_in_chunks,
    score_ingested,
)
from pipeline.scoring.drivers import feature_descriptions, top_drivers

__all__ = [
    "PREDICTION_COLUMNS",
    "PredictResult",
    "choose_landmarks",
    "feature_descriptions",
    "run_warnings",
    "score_cohort",
    "score_in_chunks",
    "score_ingested",
    "top_drivers",
]
