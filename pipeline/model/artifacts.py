"""The model artifact format: ``models/<target>/`` as plain files, read back into a scorer. No pickle.

Per target: ``booster_<k>.json`` (the K cross-fitted boosters, XGBoost's own JSON; ``simple_<k>.json`` and
``linear_<k>.json`` for the blended parts when the procedure chose them), ``calibrator.json``
(JSON numbers), ``features.json`` (feature order, dtypes, category lists) and ``metadata.json`` (which
boosters and calibrator serve which landmark, thresholds, counts, what the search chose, provenance);
``landmark_<L>/`` subfolders when trained per landmark. ``models/runs.json`` holds the MLflow run ids. docs/training.md has the schema.

Artifacts are not trusted blindly (issue 12). Each ``metadata.json`` names its target and records the
sha256 of every file of the target (``sha256``: relative name -> hex digest); ``models/manifest.json``
records the sha256 of each target's ``metadata.json``. Loading checks both, reads each file once and
verifies the bytes it parses, accepts only plain model file names that stay inside the target directory,
and refuses calibrators that can leave [0, 1]. Model directories written before digests are refused
(retrain). This catches swapped, edited, missing or mixed-up files; it is not a signature: someone who can
rewrite every file can rewrite the digests too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
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
MANIFEST_FILE = "manifest.json"
#: Key of ``metadata.json`` holding the digests of the target's files.
DIGESTS_KEY = "sha256"
#: The only file names metadata may reference: no directories beyond one ``landmark_<L>/`` level, no "..".
MODEL_FILE_NAME = re.compile(
    r"(?:landmark_[0-9]{1,6}(?:\.[0-9]{1,6})?/)?(?:(?:booster|simple|linear)_[0-9]{1,3}|calibrator)\.json"
)
#: Target directory names listed in the manifest (one path component, no leading dot).
TARGET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_RETRAIN = "rerun `crs train`"


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
    simple = {f"{subdir}simple_{k}.json": booster_json(b) for k, b in enumerate(model.simple)}
    entry["simple"], entry["simple_weight"] = list(simple), model.simple_weight
    files.update(simple)
    linear = {f"{subdir}linear_{k}.json": json_bytes(m.to_json()) for k, m in enumerate(model.linear)}
    entry["linear"], entry["linear_weight"] = list(linear), model.linear_weight
    files.update(linear)
    files[entry["calibrator"]] = json_bytes(model.calibrator.to_json())
    entry["threshold"] = model.threshold
    entry["thresholds"] = {repr(float(h)): t for h, t in sorted(model.thresholds.items())}
    return files, entry


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_target_files(target: str, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """``files`` of one target (relative name -> bytes, ``metadata.json`` included) with the target name
    and the sha256 of every other file written into its metadata: what :func:`load_bundle` checks."""
    metadata = json.loads(files[METADATA_FILE])
    metadata["target"] = target
    metadata[DIGESTS_KEY] = {name: sha256_hex(data) for name, data in sorted(files.items()) if name != METADATA_FILE}
    return {**files, METADATA_FILE: json_bytes(metadata)}


def manifest_bytes(metadata_files: Mapping[str, bytes]) -> bytes:
    """``models/manifest.json``: the sha256 of each target's (sealed) ``metadata.json`` bytes."""
    return json_bytes({"format": 1, "metadata_sha256": {t: sha256_hex(b) for t, b in sorted(metadata_files.items())}})


def seal_models_dir(models_dir: str | Path) -> None:
    """Seal a hand-built model directory in place (every file under each target), as ``crs train`` does.

    For tests and tools that assemble models themselves; running it on a directory you did not build
    would bless whatever it holds.
    """
    models_dir = Path(models_dir)
    sealed: dict[str, bytes] = {}
    for directory in sorted(p for p in models_dir.iterdir() if (p / METADATA_FILE).is_file()):
        files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        files = seal_target_files(directory.name, files)
        (directory / METADATA_FILE).write_bytes(files[METADATA_FILE])
        sealed[directory.name] = files[METADATA_FILE]
    (models_dir / MANIFEST_FILE).write_bytes(manifest_bytes(sealed))


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{path}: not valid JSON{where}") from None


def read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (run `crs train` first)") from None
    return _parse_json(data, path)


def read_manifest(models_dir: Path) -> dict[str, str]:
    """``models/manifest.json``: target name -> sha256 of its ``metadata.json``. A directory without it
    predates artifact digests (or lost it) and is refused: its files cannot be checked."""
    path = models_dir / MANIFEST_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; model directories without sha256 digests (written before this "
                        f"version, or modified) are refused; {_RETRAIN}")
    manifest = read_json(path)
    sealed = manifest.get("metadata_sha256") if isinstance(manifest, dict) else None
    if not isinstance(sealed, dict) or not all(
        isinstance(t, str) and TARGET_NAME.fullmatch(t) and ".." not in t and isinstance(d, str)
        for t, d in sealed.items()
    ):
        raise UserError(f"{path}: metadata_sha256 is missing or malformed; {_RETRAIN}")
    return sealed


def _inside(directory: Path, name: str, key: str) -> Path:
    """``directory / name`` if ``name`` is a plain model file name that stays inside ``directory``."""
    if not isinstance(name, str) or not MODEL_FILE_NAME.fullmatch(name):
        raise UserError(f"{directory / METADATA_FILE}: {key} is not a plain model file name "
                        "(booster_<k>.json, simple_<k>.json, linear_<k>.json, calibrator.json, optionally in landmark_<L>/)")
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):  # a symlinked landmark_<L>/ pointing out
        raise UserError(f"{path}: resolves outside the model directory {directory}; {_RETRAIN}")
    return path


def _read_verified(path: Path, name: str, digests: Mapping[str, Any]) -> bytes:
    """The bytes of ``path`` once, checked against the digest recorded for ``name``: what is parsed is
    exactly what was verified."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (listed in metadata.json; {_RETRAIN})") from None
    except OSError:
        raise UserError(f"{path}: model file cannot be read") from None
    if name not in digests:
        raise UserError(f"{path}: no sha256 recorded in metadata.json; {_RETRAIN}")
    if sha256_hex(data) != digests[name]:
        raise UserError(f"{path}: sha256 does not match metadata.json; the model directory was modified after training")
    return data


def read_target_metadata(directory: Path, metadata_sha256: str) -> dict[str, Any]:
    """A target's ``metadata.json``, checked against the manifest digest, its bound target name and the
    presence of file digests."""
    path = directory / METADATA_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (listed in {MANIFEST_FILE}; {_RETRAIN})") from None
    if sha256_hex(data) != metadata_sha256:
        raise UserError(f"{path}: sha256 does not match {MANIFEST_FILE}; the model directory was modified after training")
    metadata = _parse_json(data, path)
    if not isinstance(metadata, dict) or not isinstance(metadata.get(DIGESTS_KEY), dict):
        raise UserError(f"{path}: no sha256 digests (written before this version); {_RETRAIN}")
    if metadata.get("target") != directory.name:
        raise UserError(f"{path}: written for another target than {directory.name}; the model directory was rearranged")
    return metadata


def _load_booster(path: Path, data: bytes) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError:
        raise UserError(f"{path}: not a readable XGBoost model ({_RETRAIN})") from None
    booster.set_param({"nthread": 1})
    return booster


def _load_calibrator(path: Path, data: bytes) -> Calibrator:
    try:
        calibrator = Calibrator.from_json(_parse_json(data, path))
        problem = calibrator.range_problem()
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: calibrator is incomplete or malformed ({_RETRAIN})") from None
    if problem:
        raise UserError(f"{path}: calibrator can give probabilities outside [0, 1] ({problem}); {_RETRAIN}")
    return calibrator


def _load_linear(path: Path, data: bytes) -> LinearModel:
    try:
        return LinearModel.from_json(_parse_json(data, path))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: linear model is incomplete or malformed ({_RETRAIN})") from None


def _landmark_model(directory: Path, key: str, entry: Any, digests: Mapping[str, Any]) -> LandmarkModel:
    """One deployed unit of ``metadata.json`` ``models.<key>``, every file verified before parsing."""
    if not isinstance(entry, dict) or "boosters" not in entry or not isinstance(entry["boosters"], list):
        raise UserError(f"{directory / METADATA_FILE}: model format of an older version ({_RETRAIN})")

    def verified(name: Any, field: str) -> tuple[Path, bytes]:
        path = _inside(directory, name, f"models.{key}.{field}")
        return path, _read_verified(path, name, digests)

    boosters = [_load_booster(*verified(n, "boosters")) for n in entry["boosters"]]
    calibrator = _load_calibrator(*verified(entry.get("calibrator"), "calibrator"))
    linear = [_load_linear(*verified(n, "linear")) for n in entry.get("linear") or []]
    simple = [_load_booster(*verified(n, "simple")) for n in entry.get("simple") or []]
    thresholds = {float(h): float(t) for h, t in (entry.get("thresholds") or {}).items() if t is not None}
    weights = {key: _blend_weight(directory, key, entry, parts) for key, parts in
               (("linear_weight", linear), ("simple_weight", simple))}
    return LandmarkModel(boosters, calibrator, entry.get("threshold"), thresholds, linear,
                         weights["linear_weight"], simple, weights["simple_weight"])


def _blend_weight(directory: Path, key: str, entry: dict[str, Any], parts: list[Any]) -> float:
    """``entry[key]`` (0 when absent: older models) as a number in [0, 1] that is above 0 exactly when
    the blended part has files: anything else would score a model that was never trained."""
    weight = entry.get(key, 0.0)
    ok = isinstance(weight, int | float) and not isinstance(weight, bool) and 0 <= weight <= 1
    if not ok or (weight > 0) != bool(parts):
        raise UserError(f"{directory / METADATA_FILE}: {key} is not a weight in [0, 1] that matches its "
                        f"{len(parts)} model files ({_RETRAIN})")
    return float(weight)


def _target_model(directory: Path, metadata: dict[str, Any], run_id: str | None) -> TargetModel:
    digests = metadata[DIGESTS_KEY]
    features_path = directory / FEATURES_FILE
    features = _parse_json(_read_verified(features_path, FEATURES_FILE, digests), features_path)
    try:
        specs = [FeatureSpec.from_json(f) for f in features["features"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{features_path}: feature list is incomplete or malformed ({_RETRAIN})") from None
    models = {key: _landmark_model(directory, key, entry, digests) for key, entry in metadata.get("models", {}).items()}
    if not models:
        raise UserError(f"{directory / METADATA_FILE}: no trained model listed (target skipped in training?)")
    return TargetModel(directory.name, specs, metadata, models, run_id)


def load_target_model(directory: Path, run_id: str | None = None) -> TargetModel:
    """One target's scorer from ``models/<target>/`` (checked against ``models/manifest.json``); damaged,
    swapped or unsealed files are one-line errors."""
    directory = Path(directory)
    sealed = read_manifest(directory.parent)
    if directory.name not in sealed:
        raise UserError(f"{directory.parent / MANIFEST_FILE}: does not list target {directory.name}; {_RETRAIN}")
    return _target_model(directory, read_target_metadata(directory, sealed[directory.name]), run_id)


def trained_targets(models_dir: Path) -> list[str]:
    """Targets with a ``metadata.json`` in ``models_dir`` (trained or skipped), sorted."""
    return sorted(p.name for p in models_dir.iterdir() if (p / METADATA_FILE).exists())


def load_bundle(models_dir: str | Path, targets: list[str] | None = None) -> ModelBundle:
    """Load ``models_dir/<target>/`` for every target of ``models/manifest.json`` (or the ``targets``
    given), each file verified against its recorded sha256 before it is parsed."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise UserError(f"{models_dir}: models directory not found (run `crs train` first)")
    sealed = read_manifest(models_dir)
    runs_path = models_dir / RUNS_FILE
    runs = read_json(runs_path) if runs_path.exists() else {}
    bundle = ModelBundle(models_dir, runs=runs)
    for name in targets or sorted(sealed):
        if name not in sealed:
            raise UserError(f"{models_dir / MANIFEST_FILE}: does not list target {name}; {_RETRAIN}")
        directory = models_dir / name
        if not directory.resolve().is_relative_to(models_dir.resolve()):
            raise UserError(f"{directory}: resolves outside the models directory {models_dir}")
        metadata = read_target_metadata(directory, sealed[name])
        if not metadata.get("models"):
            continue  # target skipped at training (reason in its metadata)
        bundle.targets[name] = _target_model(directory, metadata, runs.get("targets", {}).get(name))
    if not bundle.targets:
        raise UserError(f"{models_dir}: no trained target models found")
    return bundle
