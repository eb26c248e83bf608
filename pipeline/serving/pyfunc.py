"""The ``crs-severe-risk`` MLflow pyfunc model, logged as a *model from code* (no pickled objects).

MLflow copies this file into the model and runs it at load time; :func:`mlflow.models.set_model` names
the model object. ``load_context`` reads only JSON / CSV artifacts (XGBoost boosters, calibrators,
feature lists, the scoring settings) and checks that the installed analyte registry is the one the
model was registered with. ``predict`` runs the same code as ``crs predict``: the combined-table adapter
(:func:`pipeline.adapters.frames.combined_to_raw`), ingest rules, featurize and the model layer's
scorer, via :func:`pipeline.scoring.score_cohort`.

Input: the combined long table (measurement rows ``patient_id, time, analyte, value, unit``; optional
treatment rows ``drug, dose, dose_unit`` and event rows ``event, grade``; patient covariates such as
``anchor_time``, ``age``, ``product`` repeated on each row). Optional param ``at_hours``. Output: one row
per patient and target with ``patient_id, target, landmark_hours, probability, band, message``
(probability empty when not scored; the message says why).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from pipeline.adapters.frames import combined_to_raw
from pipeline.scoring import score_cohort
from pipeline.serving.registry import setup_from_artifacts


class CrsSevereRiskModel(mlflow.pyfunc.PythonModel):
    """Calibrated risk of grade >= 3 CRS / ICANS per patient from raw long-format records."""

    def load_context(self, context: Any) -> None:
        self.setup = setup_from_artifacts(context.artifacts)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate by them
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        at_hours = (params or {}).get("at_hours")
        raw = combined_to_raw(model_input)
        result = score_cohort(raw, self.setup, None if at_hours is None else float(at_hours),
                              trajectory=False, with_shap=False, with_report=False)
        return result.predictions


mlflow.models.set_model(CrsSevereRiskModel())
