"""``crs explain``: exact tree SHAP for every landmark row, global views, MLflow logging.

``run`` is pure (landmark table and model bundle in, frames out) and goes through
:mod:`pipeline.explanation`, the library ``crs report`` and ``crs predict`` share; ``main`` reads
``config.paths.landmarks`` and the models in ``config.paths.models_dir``, writes
``config.paths.shap_dir`` atomically (files listed in :mod:`pipeline.explanation`) and logs the
summary tables and plots to MLflow.
"""

from __future__ import annotations

import time

import pandas as pd

from pipeline import contracts, explanation
from pipeline.config import Config
from pipeline.io import atomic_dir, read_stage_parquet
from pipeline.model import ModelBundle, load_bundle


def run(config: Config, landmarks: pd.DataFrame, bundle: ModelBundle) -> dict[str, pd.DataFrame]:
    """Per target the SHAP frame (key: target) and its summary table (key: ``<target>_summary``)."""
    return explanation.explain_with_summaries(bundle, landmarks, config)


def read_landmarks(config: Config) -> pd.DataFrame:
    path = config.paths.landmarks
    frame = read_stage_parquet(path, "landmark features", "crs featurize")
    return contracts.check_frame(frame, contracts.LANDMARKS, path, "crs featurize")


def main(config: Config) -> None:
    started = time.perf_counter()
    landmarks = read_landmarks(config)
    bundle = load_bundle(config.paths.models_dir)
    outputs = run(config, landmarks, bundle)
    shap_seconds = time.perf_counter() - started
    targets = list(bundle.targets)
    with atomic_dir(config.paths.shap_dir) as tmp:
        explanation.write_outputs(tmp, outputs, landmarks, config, targets)
    plot_seconds = time.perf_counter() - started - shap_seconds
    for target in targets:
        top = ", ".join(outputs[explanation.summary_key(target)]["feature"].head(3))
        print(f"explain: {target}: {len(outputs[target])} rows; top features {top}")
    explanation.log_to_mlflow(config.paths.shap_dir, bundle, config)
    print(f"explain: SHAP {shap_seconds:.1f} s, files and plots {plot_seconds:.1f} s, "
          f"total {time.perf_counter() - started:.1f} s")
