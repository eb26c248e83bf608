"""MLflow runs of a training: one parent run, one nested run per target, aggregates only (never rows)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.config import Config
from pipeline.model import FeatureSpec
from pipeline.training.final import TargetResult


def feature_summary(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    """Per-feature aggregates logged as the MLflow dataset (never raw patient rows)."""
    records = []
    for s in specs:
        col = X[s.name]
        rec: dict[str, Any] = {"feature": s.name, "dtype": s.dtype, "missing_fraction": float(col.isna().mean())}
        if s.dtype == "float64":
            vals = col.dropna().to_numpy(dtype=float)
            q = np.quantile(vals, [0.05, 0.5, 0.95]) if len(vals) else [np.nan] * 3
            rec.update({"mean": float(np.mean(vals)) if len(vals) else np.nan, "p05": q[0], "p50": q[1], "p95": q[2]})
            rec["n_categories"] = 0
        else:
            rec.update({"mean": np.nan, "p05": np.nan, "p50": np.nan, "p95": np.nan})
            rec["n_categories"] = len(s.categories)
        records.append(rec)
    return pd.DataFrame.from_records(records)


@contextlib.contextmanager
def log_training_runs(config: Config, results: list[TargetResult], provenance: dict[str, Any]
                      ) -> Iterator[dict[str, Any]]:
    """Log the parent and per-target runs and yield the run ids (``models/runs.json``) with the parent
    still open: the caller writes the models inside, so the run ends FINISHED only once they are in
    place, and FAILED on an exception. A killed train leaves it RUNNING under its ``crs.owner`` tag;
    the next train marks it FAILED (:func:`pipeline.tracking.fail_stale_runs`)."""
    import mlflow

    with tracking.quiet_mlflow():
        experiment_id = tracking.setup(config.train.experiment_name)
        for run_id in tracking.fail_stale_runs(experiment_id):
            print(f"train: MLflow run {run_id} of a killed stage marked FAILED")
        tags = {key: provenance[key] for key in ("code_sha256", "cohort_path", "data_sha256")} | {"stage": "train"}
        tags["git_commit"] = tracking.git_commit()  # MLflow only: model files stay identical across commits
        tags["analytes"] = ",".join(provenance.get("analytes", []))[:5000]  # the chosen feature set, by name
        tags |= tracking.owner_tags()
        parent = mlflow.start_run(run_name="train", tags=tags)
        # The whole list (the tag is cut at MLflow's 5,000 characters): what featurize chose, by name.
        mlflow.log_dict({"analytes": list(provenance.get("analytes", []))}, "featurize/analytes.json")
    status = "FAILED"
    try:
        with tracking.quiet_mlflow():
            runs = _log_runs(config, results, tags, parent.info.run_id, experiment_id)
        yield runs
        status = "FINISHED"
    finally:
        with tracking.quiet_mlflow():
            mlflow.end_run(status)


def _log_runs(config: Config, results: list[TargetResult], tags: dict[str, str], parent_id: str,
              experiment_id: str) -> dict[str, Any]:
    import mlflow

    params = tracking.flatten({
        "train": json.loads(config.train.model_dump_json()),
        "landmarks_hours": config.landmarks_hours,
        "featurize.horizon_hours": config.featurize.horizon_hours,
    })
    runs: dict[str, Any] = {"tracking_uri": tracking.tracking_uri(), "experiment_id": experiment_id,
                            "parent_run_id": parent_id, "targets": {}}
    mlflow.log_params(params)
    for res in results:
        with mlflow.start_run(run_name=res.target, nested=True, tags={**tags, "target": res.target}) as child:
            runs["targets"][res.target] = child.info.run_id
            _log_target(res, params)
    return runs


def _log_target(res: TargetResult, params: dict[str, str]) -> None:
    import mlflow

    target_def = res.metadata.get("target_definition", {})
    mlflow.log_params({**params, **tracking.flatten({"target": target_def})})
    if res.status == "skipped":
        mlflow.set_tag("skipped", res.reason or "")
        return
    m = res.metadata
    mlflow.log_metrics({"n_rows": m["n_rows"], "n_events": m["n_events"], "n_patients": m["n_patients"]})
    summary = feature_summary(res.X_all, res.specs)
    dataset = mlflow.data.from_pandas(
        summary, source=m["data_path"], name=f"landmarks-summary-{res.target}", digest=m["data_sha256"][:16]
    )
    mlflow.log_input(dataset, context="training")
    # The model files as artifacts (JSON); the deployable model is the pyfunc that `crs register` logs.
    for rel, content in res.files.items():
        mlflow.log_text(content.decode(), f"model_files/{rel}")
    chosen = {key: unit.get("chosen", {}) for key, unit in m["models"].items()}
    mlflow.log_dict(chosen, "search/chosen.json")
