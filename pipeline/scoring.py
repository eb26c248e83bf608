"""Load trained models from ``models/`` and score landmark rows: calibrated risk and exact SHAP.

One place that turns a landmark feature frame into numbers a clinician sees, used by ``crs explain``,
``crs report``, ``crs predict`` and the MLflow pyfunc model, so all of them agree to the last digit.
Artifacts are read from their own formats: the booster from XGBoost JSON, the calibrator from JSON
numbers, the feature list (order, dtypes, category lists) from ``features.json``. No pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.train import Calibrator, FeatureSpec, apply_feature_specs

BAND_LOW, BAND_INTERMEDIATE, BAND_HIGH = "low", "intermediate", "high"


@dataclass
class LandmarkModel:
    """One booster + calibrator (for all landmarks, or for one when trained ``per_landmark``)."""

    booster: Any  # xgboost.Booster
    calibrator: Calibrator
    threshold: float | None


@dataclass
class Scores:
    probability: np.ndarray  # calibrated
    margin: np.ndarray  # booster log-odds before calibration
    base_value: np.ndarray  # SHAP expected value (log-odds), per row
    shap: np.ndarray | None  # (rows, features) log-odds contributions


@dataclass
class TargetModel:
    target: str
    specs: list[FeatureSpec]
    metadata: dict
    #: "all" or a landmark key ("48") -> model
    models: dict[str, LandmarkModel]
    run_id: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def matrix(self, landmarks: pd.DataFrame) -> pd.DataFrame:
        """The model matrix: fixed column order and dtypes; absent features are missing (NaN)."""
        return apply_feature_specs(landmarks, self.specs)

    def _groups(self, landmarks: pd.DataFrame) -> list[tuple[LandmarkModel, np.ndarray]]:
        if "all" in self.models:
            return [(self.models["all"], np.arange(len(landmarks)))]
        hours = landmarks["landmark_hours"].to_numpy(dtype=float)
        out = []
        for key, model in self.models.items():
            rows = np.flatnonzero(np.isclose(hours, float(key)))
            if rows.size:
                out.append((model, rows))
        covered = np.zeros(len(landmarks), dtype=bool)
        for _, rows in out:
            covered[rows] = True
        if not covered.all():
            missing = sorted({f"{h:g}" for h in hours[~covered]})
            raise UserError(
                f"{self.target}: model was trained per landmark; no model for landmark hours {', '.join(missing)}"
            )
        return out

    def _dmatrix(self, X: pd.DataFrame):
        import xgboost as xgb

        return xgb.DMatrix(X, enable_categorical=True, nthread=1)

    def score(self, landmarks: pd.DataFrame, with_shap: bool = True) -> Scores:
        """Calibrated probability, log-odds margin and (optionally) exact SHAP in one pass.

        Builds the model matrix and one DMatrix per model once (the per-patient hot path).
        """
        X = self.matrix(landmarks)
        n = len(X)
        scores = Scores(
            probability=np.full(n, np.nan),
            margin=np.full(n, np.nan),
            base_value=np.full(n, np.nan),
            shap=np.zeros((n, len(self.specs))) if with_shap else None,
        )
        for model, rows in self._groups(landmarks):
            dmatrix = self._dmatrix(X.iloc[rows] if len(rows) != n else X)
            margin = model.booster.predict(dmatrix, output_margin=True)
            scores.margin[rows] = margin
            scores.probability[rows] = model.calibrator.predict(1.0 / (1.0 + np.exp(-margin)))
            if with_shap:
                contribs = model.booster.predict(dmatrix, pred_contribs=True)
                scores.shap[rows] = contribs[:, :-1]
                scores.base_value[rows] = contribs[:, -1]
        return scores

    def margin(self, landmarks: pd.DataFrame) -> np.ndarray:
        """Raw booster output in log-odds (before calibration)."""
        return self.score(landmarks, with_shap=False).margin

    def predict(self, landmarks: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the target within the horizon, per landmark row."""
        return self.score(landmarks, with_shap=False).probability

    def shap(self, landmarks: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Exact tree SHAP values in log-odds (XGBoost ``pred_contribs``) and the base value per row.

        Rows align with ``landmarks``; columns are the model's features. For each row
        ``base + values.sum()`` equals :meth:`margin` (up to float32 rounding).
        """
        scores = self.score(landmarks)
        return pd.DataFrame(scores.shap, columns=self.feature_names, index=landmarks.index), scores.base_value


@dataclass
class ModelBundle:
    """Every target's model from a ``models/`` directory, plus MLflow run ids when known."""

    directory: Path
    targets: dict[str, TargetModel] = field(default_factory=dict)
    runs: dict = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (run `crs train` first)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _calibrator(data: dict) -> Calibrator:
    method = data.get("method", "identity")
    if method == "isotonic":
        return Calibrator("isotonic", list(map(float, data["x"])), list(map(float, data["y"])))
    if method == "sigmoid":
        return Calibrator("sigmoid", a=float(data["a"]), b=float(data["b"]))
    return Calibrator("identity")


def load_target_model(directory: Path, run_id: str | None = None) -> TargetModel:
    import xgboost as xgb

    metadata = _read_json(directory / "metadata.json")
    features = _read_json(directory / "features.json")
    specs = [
        FeatureSpec(f["name"], f["dtype"], tuple(f.get("categories", ()))) for f in features["features"]
    ]
    models: dict[str, LandmarkModel] = {}
    for key, entry in metadata.get("models", {}).items():
        booster = xgb.Booster()
        booster_path = directory / entry["booster"]
        if not booster_path.exists():
            raise UserError(f"{booster_path}: model file not found (run `crs train` first)")
        booster.load_model(str(booster_path))
        booster.set_param({"nthread": 1})
        models[key] = LandmarkModel(booster, _calibrator(_read_json(directory / entry["calibrator"])),
                                    entry.get("threshold"))
    if not models:
        raise UserError(f"{directory / 'metadata.json'}: no trained model listed (target skipped in training?)")
    return TargetModel(metadata.get("target", directory.name), specs, metadata, models, run_id)


def load_bundle(models_dir: str | Path, targets: list[str] | None = None) -> ModelBundle:
    """Load ``models_dir/<target>/`` for every trained target (or the ``targets`` given)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise UserError(f"{models_dir}: models directory not found (run `crs train` first)")
    runs = _read_json(models_dir / "runs.json") if (models_dir / "runs.json").exists() else {}
    names = targets or sorted(p.name for p in models_dir.iterdir() if (p / "metadata.json").exists())
    bundle = ModelBundle(models_dir, runs=runs)
    for name in names:
        directory = models_dir / name
        metadata = _read_json(directory / "metadata.json")
        if not metadata.get("models"):
            continue  # target skipped at training (reason in its metadata)
        bundle.targets[name] = load_target_model(directory, runs.get("targets", {}).get(name))
    if not bundle.targets:
        raise UserError(f"{models_dir}: no trained target models found")
    return bundle


def risk_band(probability: np.ndarray, low_below: float, high_from: float) -> np.ndarray:
    """low (< low_below), intermediate, or high (>= high_from); missing probability -> ''."""
    p = np.asarray(probability, dtype=float)
    band = np.where(p >= high_from, BAND_HIGH, np.where(p < low_below, BAND_LOW, BAND_INTERMEDIATE))
    return np.where(np.isnan(p), "", band).astype(object)
