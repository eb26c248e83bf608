"""The ``crs-severe-risk`` MLflow pyfunc model, logged as a *model from code* (no pickled objects).

MLflow copies this file into the model and runs it at load time; :func:`mlflow.models.set_model` names
the model object. ``load_context`` reads only JSON / CSV artifacts (XGBoost boosters, calibrators,
feature lists, the scoring settings) and checks that the installed analyte registry is the one the
model was registered with. ``predict`` runs the same code as ``crs predict``: ingest rules
(:mod:`pipeline.ingest`), featurize (:class:`features.LandmarkFeaturizer`) and scoring
(:mod:`pipeline.scoring` numbers, via :func:`pipeline.predict.score_cohort`).

Input: the combined long table of :func:`pipeline.predict.combined_to_raw` (measurement rows
``patient_id, time, analyte, value, unit``; optional treatment rows ``drug, dose, dose_unit`` and event
rows ``event, grade``; patient covariates such as ``anchor_time``, ``age``, ``product`` repeated on each
row). Optional param ``at_hours``. Output: one row per patient and target with ``patient_id, target,
landmark_hours, probability, band, message`` (probability empty when not scored; the message says why).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class CrsSevereRiskModel(mlflow.pyfunc.PythonModel):
    """Calibrated risk of grade >= 3 CRS / ICANS per patient from raw long-format records."""

    def load_context(self, context: Any) -> None:
        from pipeline.registry_model import setup_from_artifacts

        self.setup = setup_from_artifacts(context.artifacts)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate by them
        from pipeline.predict import combined_to_raw, score_cohort

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        at_hours = (params or {}).get("at_hours")
        raw = combined_to_raw(model_input)
        result = score_cohort(raw, self.setup, None if at_hours is None else float(at_hours),
                              trajectory=False, with_shap=False, with_report=False)
        return result.predictions


mlflow.models.set_model(CrsSevereRiskModel())
