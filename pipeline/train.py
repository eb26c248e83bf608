"""``crs train``: patient-grouped repeated cross-validation, calibration and final XGBoost models.

For each target (rows with a non-NaN ``label__<target>``):

* outer loop: ``n_repeats`` x ``n_splits`` StratifiedGroupKFold grouped by patient (new shuffle seed per
  repeat), so a patient's landmark rows are never split across train and test;
* inside each outer *training* fold only: the training procedure (:mod:`pipeline.training.crossfit`):
  K cross-fitted boosters on inner patient folds, a nested hyperparameter search on those folds, the
  calibrator (landmark-aware) and per-landmark thresholds fitted on each booster's held-out scores. The
  test fold is only ever predicted, by the averaged boosters and the calibrator, as a new patient is;
* baselines are scored on exactly the same rows and folds (raw scores recalibrated by a one-variable
  logistic model fitted on the training fold; an L2 logistic regression with imputation, scaling and
  one-hot encoding fitted on the training fold);
* final model: the same procedure on all rows, so the deployed model is built exactly as every model
  whose out-of-fold performance is reported.

Outputs: ``paths.oof``, ``paths.models_dir/<target>/`` (booster_<k>.json, simple_<k>.json and linear_<k>.json when blended, calibrator.json, features.json,
metadata.json; JSON only, no pickle) and ``paths.models_dir/runs.json`` (MLflow run ids). Registering
the MLflow model is the next stage, ``crs register``. The work is in :mod:`pipeline.training`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import contracts as C
from pipeline import tracking
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_stage_parquet_with_attrs, sha256_file, write_json, write_parquet
from pipeline.model import FeatureSpec, build_feature_specs
from pipeline.model.artifacts import (
    MANIFEST_FILE,
    METADATA_FILE,
    json_bytes,
    manifest_bytes,
    seal_target_files,
)
from pipeline.model.guards import small_data_warning
from pipeline.training.booster import check_monotone_constraints
from pipeline.training.cv import run_fold, run_site_fold, run_tasks
from pipeline.training.final import (
    PreparedTarget,
    TargetResult,
    empty_oof,
    finish_target,
    fit_final,
    prepare_target,
)
from pipeline.training.splits import landmark_groups
from pipeline.training.tracking_log import log_training_runs


@dataclass
class TrainOutput:
    oof: pd.DataFrame
    results: list[TargetResult]
    n_tasks: int


def trained_analytes(attrs: dict, config: Config) -> list[str]:
    """The analytes featurize built the table from (recorded in its parquet metadata, ``attrs``), else the
    params' explicit list: stored with the model so scoring rebuilds exactly these features."""
    recorded = attrs.get("analytes")
    if recorded is not None:
        return [str(a) for a in recorded]
    if isinstance(config.featurize.analytes, str):
        raise UserError(f"{config.paths.landmarks}: no analyte list recorded (written by an older featurize); "
                        "rerun `crs featurize`")
    return list(config.featurize.analytes)


def feature_specs(landmarks: pd.DataFrame, config: Config, source: str | Path) -> list[FeatureSpec]:
    features = C.feature_columns(landmarks.columns)
    if not features:
        raise UserError(f"{source}: no feature columns")
    specs = build_feature_specs(landmarks, features)
    check_monotone_constraints(config.train.monotone_constraints, specs)
    return specs


def _tasks(prepared: dict[str, PreparedTarget | TargetResult], config: Config, specs: list[FeatureSpec]
           ) -> tuple[list[tuple], list[tuple[str, str, Any]]]:
    """One task list over every target, outer fold and final fit, so all workers stay busy."""
    tasks: list[tuple] = []
    keys: list[tuple[str, str, Any]] = []
    ready = {t: prep for t, prep in prepared.items() if isinstance(prep, PreparedTarget)}
    # The final fits (tuned on every patient) are the longest tasks: queued first, so two workers do not
    # end with one of them alone on a final fit. Each task is seeded on its own: order changes no result.
    for t, prep in ready.items():
        for lm, mask in landmark_groups(prep.data.landmarks, config.train.per_landmark):
            key = "all" if lm is None else landmark_key(lm)
            tasks.append((fit_final, prep.data, mask, config.train))
            keys.append((t, "final", key))
    for t, prep in ready.items():
        for repeat, fold, tr, te in prep.splits:
            tasks.append((run_fold, prep.data, config.train, repeat, fold, tr, te))
            keys.append((t, "fold", (repeat, fold)))
        # No search, for run time: the configured params (the search's first candidate), with the rounds
        # still chosen by early stopping on the inner folds as in the deployed procedure.
        site_cfg = config.train.model_copy(update={"n_trials": 1})
        for index, (site, tr, te) in enumerate(prep.site_splits):
            tasks.append((run_site_fold, prep.data, site_cfg, index, tr, te))
            keys.append((t, "site", site))
    return tasks, keys


def run(config: Config, landmarks: pd.DataFrame, provenance: dict[str, Any], source: str | Path = "landmarks",
        progress: Callable[[int, int], None] | None = None) -> TrainOutput:
    """Cross-validate and fit every target on the landmark table (pure: nothing read or written;
    ``progress(done, total)`` hears of each finished fit)."""
    specs = feature_specs(landmarks, config, source)
    prepared = {t: prepare_target(landmarks, t, config.train, specs, {"target": t, **provenance}) for t in config.targets}
    tasks, keys = _tasks(prepared, config, specs)
    outputs = run_tasks(tasks, config.train, progress)
    results: list[TargetResult] = []
    for t, prep in prepared.items():
        if isinstance(prep, TargetResult):
            results.append(prep)
            continue
        parts = [o for (tt, kind, _), o in zip(keys, outputs, strict=True) if tt == t and kind == "fold"]
        finals = {k: o for (tt, kind, k), o in zip(keys, outputs, strict=True) if tt == t and kind == "final"}
        sites = {k: o for (tt, kind, k), o in zip(keys, outputs, strict=True) if tt == t and kind == "site"}
        results.append(finish_target(prep, parts, finals, config, {"target": t, **provenance}, sites))
    oofs = [r.oof for r in results if r.oof is not None]
    return TrainOutput(pd.concat(oofs, ignore_index=True) if oofs else empty_oof(), results, len(tasks))


def write_models(results: list[TargetResult], models_dir: Path) -> None:
    """Every target's files into ``models_dir`` at once (atomic): a skipped target keeps its metadata.

    Each metadata.json records the sha256 of its target's files and ``manifest.json`` those of the
    metadata files, so loading refuses swapped or edited artifacts (:mod:`pipeline.model.artifacts`).
    """
    sealed: dict[str, bytes] = {}
    with atomic_dir(models_dir) as tmp:
        for res in results:
            target_dir = tmp / res.target
            target_dir.mkdir(parents=True)
            files = seal_target_files(res.target, res.files or {METADATA_FILE: json_bytes(res.metadata)})
            sealed[res.target] = files[METADATA_FILE]
            for rel, content in files.items():
                path = target_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes(sealed))


def _summary(result: TargetResult) -> str:
    if result.status == "skipped":
        return f"train: {result.target}: skipped ({result.reason})"
    m = result.metadata
    line = f"train: {result.target}: {m['n_rows']} rows, {m['n_events']} events, {m['n_patients']} patients"
    warning = small_data_warning(result.target, m.get("small_data"))
    return f"{line}\ntrain: warning: {warning}" if warning else line


def _progress_printer(started: float, every_seconds: float = 5.0) -> Callable[[int, int], None]:
    """Console progress of the fits: a line at most every ``every_seconds`` (each fit takes a few seconds
    on the default cohort, so the console never stays silent for long), and one for the last fit."""
    last = [started]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] >= every_seconds:
            print(f"train: {done}/{total} fits done ({now - started:.0f} s)", flush=True)
            last[0] = now
    return report


def main(config: Config) -> None:
    started = time.perf_counter()
    paths = config.paths
    landmarks, attrs = read_stage_parquet_with_attrs(paths.landmarks, "landmark table", "crs featurize")
    C.check_frame(landmarks, C.LANDMARKS, paths.landmarks, "crs featurize")
    provenance = {
        "analytes": trained_analytes(attrs, config),
        "covariate_reference": attrs.get("covariate_reference"),
        "training_summary": attrs.get("training_summary"),
        "data_path": str(paths.landmarks),
        "data_sha256": sha256_file(paths.landmarks),
        "cohort_path": str(config.cohort.path),
        "code_sha256": tracking.code_digest(),
    }
    output = run(config, landmarks, provenance, paths.landmarks, _progress_printer(started))
    for result in output.results:
        print(_summary(result))
    print(f"train: cross-validation and final fits took {time.perf_counter() - started:.1f} s "
          f"({output.n_tasks} tasks, n_jobs={config.train.n_jobs})")
    # The MLflow run stays open until the outputs are in place: it ends FINISHED only with them.
    with log_training_runs(config, output.results, provenance) as runs:
        write_parquet(output.oof, paths.oof)
        with atomic_dir(paths.oof_explanations) as tmp:
            for result in output.results:
                if result.oof_explanations is not None:
                    write_parquet(result.oof_explanations, tmp / f"{result.target}.parquet")
        # models/ and runs.json appear in one swap: a kill never leaves models without their run ids.
        with atomic_dir(paths.models_dir) as tmp:
            staging = tmp / ".staging"  # write_models replaces its directory as a whole; a hidden name
            write_models(output.results, staging)  # cannot clash with a target's
            for entry in staging.iterdir():
                entry.rename(tmp / entry.name)
            staging.rmdir()
            write_json(runs, tmp / paths.runs.relative_to(paths.models_dir))
    print(f"train: total {time.perf_counter() - started:.1f} s (MLflow: {tracking.tracking_uri()})")
