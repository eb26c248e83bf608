"""``crs register``: log the scoring pipeline as the MLflow pyfunc model ``crs-severe-risk`` and register it.

Runs after ``crs train`` as its own DVC stage (training never touches the registry). Reads
``paths.models_dir`` and its ``runs.json`` (the model is logged into the training parent run), writes
``paths.registration`` (model name, URI, version, or why nothing was registered). The work is in
:mod:`pipeline.serving.registry`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.io import sha256_file, write_json
from pipeline.model.artifacts import MANIFEST_FILE, METADATA_FILE
from pipeline.model.guards import small_data_warning
from pipeline.serving.registry import MODEL_NAME, register_trained_models


def small_data_reasons(models_dir: Path) -> list[str]:
    """The small-data warnings ``crs train`` recorded in the targets' metadata (none: deployable)."""
    reasons = []
    for path in sorted(Path(models_dir).glob(f"*/{METADATA_FILE}")):
        try:
            metadata = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # registration's own artifact checks report damaged files
        warning = small_data_warning(path.parent.name, metadata.get("small_data"))
        if warning:
            reasons.append(warning)
    return reasons


def run(config: Config, models_dir: Path, runs: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Register the models in ``models_dir``; returns the registration record. A target flagged
    small-data blocks registration unless ``force`` (then the record keeps the warnings)."""
    reasons = small_data_reasons(models_dir)
    if reasons and not force:
        return {"registered": False, "model_name": MODEL_NAME,
                "reason": f"{'; '.join(reasons)} (register anyway with `crs register --force`)"}
    record = register_trained_models(config, models_dir, runs)
    return {**record, "small_data": reasons} if reasons else record


def registered_marker(record: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    """The registration without what changes on every run (version, run id): which model files, under
    which name, registered or not. Deterministic, so DVC's lock stays as committed after a rerun."""
    return {"model_name": record["model_name"], "registered": bool(record["registered"]),
            "models_manifest_sha256": sha256_file(models_dir / MANIFEST_FILE)}


def _read_runs(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); rerun `crs train`") from None


def main(config: Config, force: bool = False) -> None:
    started = time.perf_counter()
    models_dir = Path(config.paths.models_dir)
    if not models_dir.is_dir():
        raise UserError(f"{models_dir}: models directory not found (run `crs train` first)")
    record = run(config, models_dir, _read_runs(config.paths.runs), force)
    write_json(record, config.paths.registration)
    write_json(registered_marker(record, models_dir), config.paths.registered)
    seconds = time.perf_counter() - started
    if record["registered"]:
        print(f"register: {record['model_name']} version {record['version']} "
              f"(models:/{record['model_name']}/{record['version']}, {seconds:.1f} s)")
    else:
        print(f"register: {record['model_name']} not registered ({record['reason']})")
