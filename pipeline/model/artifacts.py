"""The model artifact format: ``models/<target>/`` as plain files, read back into a scorer. No pickle.

Per target: ``booster_<k>.json`` (the K cross-fitted boosters, XGBoost's own JSON), ``calibrator.json``
(JSON numbers), ``features.json`` (feature order, dtypes, category lists) and ``metadata.json`` (which
boosters and calibrator serve which landmark, thresholds, counts, what the search chose, provenance);
``landmark_<L>/`` subfolders when trained per landmark. ``models/runs.json`` holds the MLflow run ids. docs/training.md has the schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.model.calibration import Calibrator
from pipeline.model.linear import LinearModel
from pipeline.model.scorer import LandmarkModel, ModelBundle, TargetModel
from pipeline.model.specs import FeatureSpec

METADATA_FILE = "metadata.json"
FEATURES_FILE = "features.json"
RUNS_FILE = "runs.json"


def json_bytes(obj: Any) -> bytes:
    """Indented JSON with numpy numbers as plain numbers (NaN as null), newline-terminated."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def booster_json(booster: Any) -> bytes:
    """XGBoost's own JSON model format; raw bytes avoid a temp file and are deterministic."""
    return bytes(booster.save_raw(raw_format="json"))


def landmark_model_files(model: LandmarkModel, subdir: str = "") -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files of one deployed unit (``booster_<k>.json`` per cross-fitted booster, ``calibrator.json``)
    and its ``metadata.json`` entry (file names, pooled and per-landmark thresholds)."""
    files = {f"{subdir}booster_{k}.json": booster_json(b) for k, b in enumerate(model.boosters)}
    entry: dict[str, Any] = {"boosters": list(files), "calibrator": f"{subdir}calibrator.json"}
    linear = {f"{subdir}linear_{k}.json": json_bytes(m.to_json()) for k, m in enumerate(model.linear)}
    entry["linear"], entry["linear_weight"] = list(linear), model.linear_weight
    files.update(linear)
    files[entry["calibrator"]] = json_bytes(model.calibrator.to_json())
    entry["threshold"] = model.threshold
    entry["thresholds"] = {repr(float(h)): t for h, t in sorted(model.thresholds.items())}
    return files, entry


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (run `crs train` first)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_feature_specs(directory: Path) -> list[FeatureSpec]:
    return [FeatureSpec.from_json(f) for f in read_json(directory / FEATURES_FILE)["features"]]


def _load_booster(path: Path) -> Any:
    import xgboost as xgb

    if not path.exists():
        raise UserError(f"{path}: model file not found (run `crs train` first)")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError:
        raise UserError(f"{path}: not a readable XGBoost model (rerun `crs train`)") from None
    booster.set_param({"nthread": 1})
    return booster


def _load_calibrator(path: Path) -> Calibrator:
    try:
        return Calibrator.from_json(read_json(path))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: calibrator is incomplete or malformed (rerun `crs train`)") from None


def _load_linear(path: Path) -> LinearModel:
    try:
        return LinearModel.from_json(read_json(path))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: linear model is incomplete or malformed (rerun `crs train`)") from None


def load_target_model(directory: Path, run_id: str | None = None) -> TargetModel:
    """One target's scorer from ``models/<target>/``; damaged files are one-line errors."""
    metadata = read_json(directory / METADATA_FILE)
    specs = read_feature_specs(directory)
    models: dict[str, LandmarkModel] = {}
    for key, entry in metadata.get("models", {}).items():
        if "boosters" not in entry:
            raise UserError(f"{directory / METADATA_FILE}: model format of an older version (rerun `crs train`)")
        boosters = [_load_booster(directory / name) for name in entry["boosters"]]
        calibrator = _load_calibrator(directory / entry["calibrator"])
        thresholds = {float(h): float(t) for h, t in (entry.get("thresholds") or {}).items() if t is not None}
        linear = [_load_linear(directory / name) for name in entry.get("linear", [])]
        models[key] = LandmarkModel(boosters, calibrator, entry.get("threshold"), thresholds, linear,
                                    float(entry.get("linear_weight", 0.0)))
    if not models:
        raise UserError(f"{directory / METADATA_FILE}: no trained model listed (target skipped in training?)")
    return TargetModel(metadata.get("target", directory.name), specs, metadata, models, run_id)


def trained_targets(models_dir: Path) -> list[str]:
    """Targets with a ``metadata.json`` in ``models_dir`` (trained or skipped), sorted."""
    return sorted(p.name for p in models_dir.iterdir() if (p / METADATA_FILE).exists())


def load_bundle(models_dir: str | Path, targets: list[str] | None = None) -> ModelBundle:
    """Load ``models_dir/<target>/`` for every trained target (or the ``targets`` given)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise UserError(f"{models_dir}: models directory not found (run `crs train` first)")
    runs_path = models_dir / RUNS_FILE
    runs = read_json(runs_path) if runs_path.exists() else {}
    bundle = ModelBundle(models_dir, runs=runs)
    for name in targets or trained_targets(models_dir):
        directory = models_dir / name
        if not read_json(directory / METADATA_FILE).get("models"):
            continue  # target skipped at training (reason in its metadata)
        bundle.targets[name] = load_target_model(directory, runs.get("targets", {}).get(name))
    if not bundle.targets:
        raise UserError(f"{models_dir}: no trained target models found")
    return bundle
