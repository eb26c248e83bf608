"""``crs validate COHORT --model MODEL --out DIR``: how well a trained model does on a labelled cohort
it never saw, which inputs have drifted, and (``--recalibrate``) a locally recalibrated model.

``run`` is pure (a scoring setup and raw tables in, the ``validation.json`` dict out); ``main`` reads the
cohort and the model, and writes ``DIR/validation.json``, ``DIR/validation.html`` and, with
``--recalibrate``, ``DIR/model/`` (the model with the update in each target's metadata, resealed) all
at once (atomic). Schema of ``validation.json``: README, "External validation".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.adapters.dialect import read_options
from pipeline.adapters.frames import read_new_cohort
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.grading.graded import graded_tables
from pipeline.ingestion import ingest_tables
from pipeline.io import atomic_dir, write_json
from pipeline.model import ScoringSetup
from pipeline.model.artifacts import METADATA_FILE, seal_models_dir
from pipeline.scoring.covariates import check_covariates
from pipeline.serving.registry import MODEL_NAME, load_setup, log_and_register
from pipeline.validation.drift import drift_report, unit_factors_from_registry
from pipeline.validation.external import score_labelled, validation_figures
from pipeline.validation.html import render_validation_html
from pipeline.validation.recalibration import recalibrate

VALIDATION_FILE = "validation.json"
HTML_FILE = "validation.html"
MODEL_DIR = "model"
#: Written first into ``--out``: only a directory holding it (or an empty one) is ever replaced.
OUTPUT_MARKER = ".crs-validate-output"


@dataclass
class ValidationOutput:
    validation: dict[str, Any]
    #: One row per (target, labelled landmark row): probability, threshold, label (never written).
    scored: pd.DataFrame


def cohort_fingerprint(cohort: Path) -> str:
    """sha256 over the cohort files' names and bytes (lineage of a recalibrated model; no content kept)."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(cohort).rglob("*") if p.is_file()) if Path(cohort).is_dir() else [Path(cohort)]
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _training_summary(setup: ScoringSetup) -> dict[str, Any] | None:
    for model in setup.bundle.targets.values():
        if model.metadata.get("training_summary"):
            return model.metadata["training_summary"]
    return None


def run(setup: ScoringSetup, raw: dict[str, RawTable], cohort: dict[str, Any], *, with_recalibration: bool = False,
        with_slope: bool = False, n_bootstrap: int = 500, seed: int = 0) -> ValidationOutput:
    """Ingest and featurize the cohort with the model's settings, score every labelled landmark row,
    and compute the figures, the drift report and (optionally) the recalibration."""
    result = ingest_tables(dict(raw))
    covariates = check_covariates(result.tables["patients"], setup)
    tables = {**result.tables, "patients": covariates.patients}
    graded = graded_tables(setup.config, tables).tables  # labels and grade features as at training
    tables.update(events=graded["events"], grades=graded["grades"])
    featurizer = setup.featurizer(setup.trained_landmarks)
    frame = featurizer.fit(tables).transform(tables)
    setup.check_features(frame)
    scored = score_labelled(frame, setup)
    if scored.empty:
        raise UserError(f"{cohort.get('path', 'cohort')}: no labelled landmark rows (events table empty, or every "
                        "patient had the event before the first landmark): nothing to validate")
    summary = _training_summary(setup)
    drift = (drift_report(summary, frame, tables["measurements"], unit_factors_from_registry())
             if summary else None)
    warnings = covariates.run_warnings()
    if summary is None:
        warnings.append("the model stores no training summary (trained by an older version): no drift report")
    validation = {
        "model": {"source": setup.source, "targets": list(setup.targets),
                  "landmarks_hours": list(setup.trained_landmarks)},
        "cohort": {**cohort, "n_patients": int(len(tables["patients"])),
                   "n_quarantined_rows": int(len(result.quarantine))},
        "targets": validation_figures(scored, setup, n_bootstrap, seed),
        "recalibration": recalibrate(scored, with_slope) if with_recalibration else None,
        "drift": drift,
        "warnings": warnings,
    }
    return ValidationOutput(validation, scored)


def write_recalibrated_model(source: Path, destination: Path, recalibration: dict[str, Any],
                             lineage: dict[str, Any]) -> None:
    """Copy ``source`` (a models directory) with each target's update and lineage in its metadata,
    resealed (the loader checks the new digests; boosters and calibrators are byte-identical)."""
    shutil.copytree(source, destination)
    for target, update in recalibration.items():
        path = destination / target / METADATA_FILE
        if "intercept" not in update or not path.is_file():
            continue
        metadata = json.loads(path.read_text())
        metadata["recalibration"] = {"intercept": update["intercept"], "slope": update["slope"], **lineage}
        path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    seal_models_dir(destination)


def _prepare_out(out: Path) -> None:
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose a new --out")
    if any(out.iterdir()) and not (out / OUTPUT_MARKER).is_file():
        raise UserError(f"{out}: not empty and not a crs validate output directory; choose a new or empty --out")


def main(config: Config, cohort: Path, model: str | Path, out: Path, *, with_recalibration: bool = False,
         with_slope: bool = False, register: bool = False) -> ValidationOutput:
    started = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    setup = load_setup(model, config)
    raw = read_new_cohort(cohort, **read_options(config))
    fingerprint = cohort_fingerprint(cohort)
    output = run(setup, raw, {"path": str(cohort), "fingerprint": fingerprint},
                 with_recalibration=with_recalibration, with_slope=with_slope, seed=config.train.seed)
    with atomic_dir(out) as tmp:
        (tmp / OUTPUT_MARKER).write_text("crs validate\n")
        write_json(output.validation, tmp / VALIDATION_FILE)
        (tmp / HTML_FILE).write_text(render_validation_html(output.validation), encoding="utf-8")
        if with_recalibration and setup.bundle.directory is not None:
            lineage = {"parent_model": setup.source, "cohort_fingerprint": fingerprint}
            write_recalibrated_model(Path(setup.bundle.directory), tmp / MODEL_DIR, output.validation["recalibration"],
                                     lineage)
    if register and (out / MODEL_DIR).is_dir():
        registered = register_recalibrated(config, out / MODEL_DIR, {"parent_model": setup.source,
                                                                    "cohort_fingerprint": fingerprint})
        print(f"validate: registered {registered['model_uri']} (version {registered['version']})")
    _print_summary(output.validation, out, time.perf_counter() - started)
    return output


def register_recalibrated(config: Config, models_dir: Path, lineage: dict[str, str]) -> dict[str, Any]:
    """Log and register ``models_dir`` as a new version of the registered model, with its lineage as
    version tags (``parent_model``, ``cohort_fingerprint``, ``recalibrated``)."""
    import mlflow

    registered = log_and_register(config, models_dir, register=True)
    client = mlflow.MlflowClient()
    for key, value in {**lineage, "recalibrated": "true"}.items():
        client.set_model_version_tag(MODEL_NAME, str(registered["version"]), key, str(value)[:5000])
    return registered


def _print_summary(validation: dict[str, Any], out: Path, seconds: float) -> None:
    for target, entry in validation["targets"].items():
        parts = [f"{k} h AUROC {v['auroc'] if v['auroc'] is not None else 'n/a'}"
                 for k, v in entry["landmarks"].items()]
        print(f"validate: {target}: {', '.join(parts)}")
    for line in (validation.get("drift") or {}).get("summary", [])[:10]:
        print(f"validate: drift: {line}")
    for warning in validation["warnings"]:
        print(f"validate: warning: {warning}")
    print(f"validate: -> {out}/ ({seconds:.1f} s)")
