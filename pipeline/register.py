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
from pipeline.io import write_json
from pipeline.serving.registry import register_trained_models


def run(config: Config, models_dir: Path, runs: dict[str, Any]) -> dict[str, Any]:
    """Register the models in ``models_dir``; returns the registration record."""
    return register_trained_models(config, models_dir, runs)


def _read_runs(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); rerun `crs train`") from None


def main(config: Config) -> None:
    started = time.perf_counter()
    models_dir = Path(config.paths.models_dir)
    if not models_dir.is_dir():
        raise UserError(f"{models_dir}: models directory not found (run `crs train` first)")
    record = run(config, models_dir, _read_runs(config.paths.runs))
    write_json(record, config.paths.registration)
    seconds = time.perf_counter() - started
    if record["registered"]:
        print(f"register: {record['model_name']} version {record['version']} "
              f"(models:/{record['model_name']}/{record['version']}, {seconds:.1f} s)")
    else:
        print(f"register: {record['model_name']} not registered ({record['reason']})")
