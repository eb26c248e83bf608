"""The model layer: what training, explain, report, predict and the MLflow model share.

Feature specs (:mod:`.specs`), the calibrator (:mod:`.calibration`), the scorer (:mod:`.scorer`), the
JSON artifact format (:mod:`.artifacts`), the baseline names (:mod:`.baselines`) and the scoring setup
(:mod:`.setup`). It imports none of its users (training, evaluation, explain, report, predict,
serving) and nothing from MLflow.
"""

from pipeline.model.artifacts import load_bundle, load_target_model
from pipeline.model.baselines import BASELINES, LOGISTIC_BASELINE, SCORE_BASELINES
from pipeline.model.calibration import Calibrator, expit, fit_calibrator, fit_logistic, logit
from pipeline.model.scorer import (
    BAND_HIGH,
    BAND_INTERMEDIATE,
    BAND_LOW,
    LandmarkModel,
    ModelBundle,
    Scores,
    TargetModel,
    is_missing_value,
    risk_band,
)
from pipeline.model.setup import (
    SCORING_CONFIG_FILE,
    ScoringSetup,
    merge_scoring_config,
    model_analytes,
    scoring_config,
)
from pipeline.model.specs import FeatureSpec, apply_feature_specs, build_feature_specs

__all__ = [
    "BAND_HIGH",
    "BAND_INTERMEDIATE",
    "BAND_LOW",
    "BASELINES",
    "LOGISTIC_BASELINE",
    "SCORE_BASELINES",
    "SCORING_CONFIG_FILE",
    "Calibrator",
    "FeatureSpec",
    "LandmarkModel",
    "ModelBundle",
    "Scores",
    "ScoringSetup",
    "TargetModel",
    "apply_feature_specs",
    "build_feature_specs",
    "expit",
    "fit_calibrator",
    "fit_logistic",
    "is_missing_value",
    "load_bundle",
    "load_target_model",
    "logit",
    "merge_scoring_config",
    "model_analytes",
    "risk_band",
    "scoring_config",
]
