"""Log and register the scoring pipeline as the MLflow pyfunc model ``crs-severe-risk``.

Called by the ``crs register`` stage after training (:func:`register_trained_models`). The model is
``pipeline/serving/pyfunc.py`` logged *from code*; its artifacts are plain files:

* ``models/`` — ``<target>/booster.json``, ``calibrator.json``, ``features.json``, ``metadata.json`` and
  ``runs.json`` exactly as ``crs train`` wrote them;
* ``scoring_config.json`` — what turns raw records into the model's features and risk bands:
  ``landmarks_hours``, ``static_features``, ``featurize`` (analytes, baseline window, horizon),
  ``targets`` and the ``report`` band thresholds / top drivers;
* ``registry/analytes.csv``, ``registry/units.csv`` — the analyte registry (synonyms, unit conversions,
  plausible ranges) the model was registered with. Loading checks that the installed registry is
  identical, because ingest reads the installed one (a changed registry means changed ingest rules).

The model code imports this project (``pipeline``, ``features``), so it is served from an environment
where the project is installed (``mlflow models serve ... --env-manager local`` from this venv).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from features import feature_table
from pipeline import tracking
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.model import (
    SCORING_CONFIG_FILE,
    ScoringSetup,
    load_bundle,
    merge_scoring_config,
    model_analytes,
    scoring_config,
)
from pipeline.model.artifacts import FEATURES_FILE

MODEL_NAME = "crs-severe-risk"
ARTIFACT_NAME = "scoring_pipeline"
MODEL_CODE = Path(__file__).with_name("pyfunc.py")
REGISTRY_FILES = ("analytes.csv", "units.csv")


def _registry_dir() -> Any:
    return resources.files("pipeline.registry")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def setup_from_artifacts(artifacts: Mapping[str, str], base: Config | None = None) -> ScoringSetup:
    """A :class:`pipeline.model.ScoringSetup` from the pyfunc model's artifacts (JSON/CSV only)."""
    for name in REGISTRY_FILES:
        logged = Path(artifacts[f"registry_{Path(name).stem}"]).read_bytes()
        installed = _registry_dir().joinpath(name).read_bytes()
        if _sha256(logged) != _sha256(installed):
            raise UserError(
                f"{MODEL_NAME}: the installed analyte registry ({name}) differs from the one the model was "
                "registered with; ingest rules would differ. Install the matching pipeline version or retrain"
            )
    stored = json.loads(Path(artifacts["scoring_config"]).read_text())
    config = merge_scoring_config(base or Config(), stored)
    return ScoringSetup(load_bundle(artifacts["models"]), config, MODEL_NAME)


def load_registered_setup(uri: str, config: Config) -> ScoringSetup:
    """Scoring setup of a logged / registered model (``models:/crs-severe-risk/latest``, ``runs:/...``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tracking.quiet_mlflow():
        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            loaded = mlflow.pyfunc.load_model(uri)
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{uri}: cannot load the MLflow model ({first})") from None
    python_model = loaded.unwrap_python_model()
    setup = getattr(python_model, "setup", None)
    if setup is None:
        raise UserError(f"{uri}: not a {MODEL_NAME} model")
    stored = scoring_config(setup.config)
    return ScoringSetup(setup.bundle, merge_scoring_config(config, stored), uri)


# --------------------------------------------------------------------------- signature and example


def _signature(config: Config):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    # Values may arrive as numbers or as text (censored "<1.5", timestamps): ingest parses either.
    columns = [ColSpec("string", "patient_id")]
    optional = ["time", "analyte", "value", "unit", "drug", "dose", "dose_unit", "event", "grade", "anchor_time",
                *config.static_features]
    columns += [ColSpec(AnyType(), name, required=False) for name in dict.fromkeys(optional)]
    outputs = Schema([
        ColSpec("string", "patient_id"),
        ColSpec("string", "target"),
        ColSpec("double", "landmark_hours", required=False),
        ColSpec("double", "probability", required=False),
        ColSpec("string", "band"),
        ColSpec("string", "message"),
    ])
    params = ParamSchema([ParamSpec("at_hours", "double", None)])
    return ModelSignature(inputs=Schema(columns), outputs=outputs, params=params)


def input_example(config: Config, features: list[dict[str, Any]]) -> pd.DataFrame:
    """One synthetic patient (no real data): IL-6 and CRP before and after infusion, covariates set to
    the first trained category or a neutral number."""
    covariates: dict[str, Any] = {}
    by_name = {f["name"]: f for f in features}
    for name in config.static_features:
        spec = by_name.get(name, {})
        covariates[name] = (spec.get("categories") or [None])[0] if spec.get("dtype") == "category" else "1"
    rows = [
        ("-24", "IL6", "4.2", "pg/mL"), ("-24", "CRP", "<3", "mg/L"),
        ("20", "IL-6", "85", "pg/mL"), ("20", "CRP", "4.1", "mg/dL"),
    ]
    frame = pd.DataFrame(rows, columns=["time", "analyte", "value", "unit"])
    frame.insert(0, "patient_id", "EXAMPLE-1")
    for name, value in covariates.items():
        frame[name] = value
    return frame.astype(object)


# --------------------------------------------------------------------------- logging


def log_and_register(
    config: Config, models_dir: str | Path, run_id: str | None = None, register: bool = True
) -> dict[str, Any]:
    """Log the pyfunc model into ``run_id`` (or a new run) and register it as ``crs-severe-risk``.

    Returns ``{"model_uri", "run_id", "version"}``. MLflow errors become one-line :class:`UserError`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    models_dir = Path(models_dir)
    first_target = next((p for p in sorted(models_dir.iterdir()) if (p / FEATURES_FILE).exists()), None)
    if first_target is None:
        raise UserError(f"{models_dir}: no trained target to register")
    features = json.loads((first_target / FEATURES_FILE).read_text())["features"]
    with tempfile.TemporaryDirectory(prefix="crs-register-") as tmp:
        settings = Path(tmp) / SCORING_CONFIG_FILE
        settings.write_text(json.dumps(scoring_config(config), indent=2) + "\n")
        registry = Path(tmp) / "registry"
        registry.mkdir()
        for name in REGISTRY_FILES:
            (registry / name).write_bytes(_registry_dir().joinpath(name).read_bytes())
        artifacts = {
            "models": str(models_dir.resolve()),
            "scoring_config": str(settings),
            **{f"registry_{Path(n).stem}": str(registry / n) for n in REGISTRY_FILES},
        }
        try:
            with tracking.quiet_mlflow():
                tracking.setup(config.train.experiment_name)
                with mlflow.start_run(run_id=run_id, run_name=None if run_id else "register"):
                    info = mlflow.pyfunc.log_model(
                        name=ARTIFACT_NAME,
                        python_model=str(MODEL_CODE),
                        artifacts=artifacts,
                        signature=_signature(config),
                        input_example=input_example(config, features),
                        # The project itself is the dependency; pins live in requirements.lock.
                        pip_requirements=["mlflow", "pandas", "pyarrow", "numpy", "xgboost", "scikit-learn"],
                        registered_model_name=MODEL_NAME if register else None,
                        await_registration_for=0,
                    )
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"registering {MODEL_NAME} in {tracking.tracking_uri()} failed: {first}") from None
    version = getattr(info, "registered_model_version", None)
    return {"model_uri": info.model_uri, "run_id": info.run_id, "version": version}


def unscoreable_features(config: Config, models_dir: str | Path) -> list[str]:
    """Model features that featurize does not produce under ``config`` (e.g. a model trained on a
    hand-made landmark table): such a model cannot score raw records, so it is not registered."""
    produced = set(feature_table(model_analytes(load_bundle(models_dir), config), config.static_features, units={})["name"])
    missing: set[str] = set()
    for path in Path(models_dir).glob(f"*/{FEATURES_FILE}"):
        missing |= {f["name"] for f in json.loads(path.read_text())["features"]} - produced
    return sorted(missing)


def register_trained_models(config: Config, models_dir: str | Path, runs: Mapping[str, Any]) -> dict[str, Any]:
    """Log the pyfunc model into the training parent run and register it; returns what happened.

    ``{"registered": bool, "reason" (when not), "model_name", "model_uri", "run_id", "version"}``.
    """
    models_dir = Path(models_dir)
    if not any(models_dir.glob(f"*/{FEATURES_FILE}")):
        return {"registered": False, "model_name": MODEL_NAME, "reason": "no trained target"}
    missing = unscoreable_features(config, models_dir)
    if missing:
        reason = f"featurize does not produce model features {', '.join(missing[:5])} with these params"
        return {"registered": False, "model_name": MODEL_NAME, "reason": reason}
    result = log_and_register(config, models_dir, run_id=runs.get("parent_run_id"))
    return {"registered": True, "model_name": MODEL_NAME, **result}
