"""``crs predict``: score patients the model has never seen, at their latest landmark or a given hour.

Flow (one patient or a thousand, the same code): raw cohort tables (:mod:`pipeline.adapters`) -> ingest
rules (:mod:`pipeline.ingestion`: synonyms, unit conversion, range checks, quarantine) -> featurize
(:class:`features.LandmarkFeaturizer`; features at L see rows ``<= L`` only) -> the model layer's scorer
(:mod:`pipeline.model`) -> ``predictions.csv``, explanations and pages. The scoring itself is
:func:`pipeline.scoring.score_cohort` (pure; also behind the MLflow model); this module is the stage
shell: :func:`main` reads and writes, :class:`Scorer` is the Python API for one patient
(``score_patient``), warm latency well under 50 ms.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.covariates import model_covariates, source_columns
from pipeline.adapters.canonical import RawTable
from pipeline.adapters.dialect import read_options
from pipeline.adapters.frames import frames_to_raw, read_new_cohort, record_to_raw
from pipeline.cohort import PATIENTS
from pipeline.config import DEFAULT_PARAMS, Config, load_config
from pipeline.errors import UserError
from pipeline.explanation import explain_landmarks
from pipeline.io import atomic_dir, write_csv, write_json
from pipeline.lookup import id_texts
from pipeline.model import ScoringSetup
from pipeline.reporting import id_mapper, write_patient_reports
from pipeline.scoring import (
    PREDICTION_COLUMNS,
    PredictResult,
    feature_descriptions,
    run_warnings,
    score_cohort,
    score_in_chunks,
    top_drivers,
)
from pipeline.serving.registry import is_registry_uri as _is_registry_uri
from pipeline.serving.registry import load_setup

#: Written by ``crs predict`` into ``--out``.
PREDICTIONS_FILE = "predictions.csv"


@dataclass
class PatientRisk:
    patient_id: str
    landmark_hours: float
    probability: dict[str, float]
    band: dict[str, str]
    #: Per target: top drivers (feature, value, shap (log-odds), direction, analyte, unit, description).
    drivers: dict[str, pd.DataFrame]
    message: str
    predictions: pd.DataFrame


class Scorer:
    """Score and explain new patients from Python.

    >>> scorer = Scorer("models")              # or Scorer("models:/crs-severe-risk/latest")
    >>> risk = scorer.score_patient(measurements, {"patient_id": "P1", "age": 61, "product": "axi-cel"})
    >>> risk.probability["crs_severe"], risk.band["crs_severe"], risk.drivers["crs_severe"]

    ``measurements``: long table with ``time`` (hours since infusion, or ISO timestamps with
    ``anchor_time`` in ``patient``), ``analyte``, ``value``, ``unit`` as in the cohort contract
    (synonyms, other units and censored ``<1.5`` are handled by the ingest rules).
    """

    def __init__(self, model: str | Path | None = None, config: Config | None = None) -> None:
        if config is None:
            config = load_config(DEFAULT_PARAMS) if DEFAULT_PARAMS.exists() else Config()
        self.setup = load_setup(model or config.paths.models_dir, config)

    def score_tables(
        self, tables: Mapping[str, pd.DataFrame | None], at_hours: float | None = None, **kwargs: Any
    ) -> PredictResult:
        return score_cohort(frames_to_raw(tables), self.setup, at_hours, **kwargs)

    def score_patient(
        self,
        measurements: pd.DataFrame,
        patient: Mapping[str, Any] | pd.Series,
        at_hours: float | None = None,
        *,
        treatments: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        n_drivers: int | None = None,
    ) -> PatientRisk:
        patient = dict(patient)
        pid = str(patient.setdefault("patient_id", "patient"))
        # Only the covariates the model uses (and the anchor): every extra column costs ingest time.
        needed = {"patient_id", "anchor_time", *source_columns(self.setup.config.static_features)}
        patient = {k: v for k, v in patient.items() if k in needed}
        # Text fields (the common request) skip the one-row frame; record tables get `pid` as their id.
        tables: dict[str, pd.DataFrame | RawTable | None] = {
            "patients": record_to_raw(PATIENTS, patient) or pd.DataFrame([patient]),
            "measurements": measurements, "treatments": treatments, "events": events}
        result = score_cohort(frames_to_raw(tables, patient_id=pid), self.setup, at_hours, trajectory=False,
                              with_report=False)
        mine = id_texts(result.predictions["patient_id"]) == pid
        preds = result.predictions if mine.all() else result.predictions[mine]
        n = n_drivers or self.setup.config.report.top_drivers
        cfg = self.setup.config
        descriptions = feature_descriptions(tuple(self.setup.analytes), tuple(model_covariates(cfg.static_features)))
        drivers: dict[str, pd.DataFrame] = {}
        rows = np.flatnonzero(id_texts(result.landmarks["patient_id"]) == pid)
        for target, s in result.scores.items():
            model = self.setup.bundle.targets[target]
            if rows.size and not math.isnan(s.probability[rows[0]]) and s.shap is not None:
                X = result.matrices[target][rows[0]]
                drivers[target] = top_drivers(s.shap[rows[0]], X, model.specs, n, descriptions)
            else:
                drivers[target] = top_drivers(np.zeros(0), np.zeros(0), [], 0, descriptions)
        targets = preds["target"].tolist()  # columns as lists: a row as a Series cost ~0.1 ms
        return PatientRisk(
            patient_id=pid,
            landmark_hours=float(preds["landmark_hours"].iloc[0]),
            probability=dict(zip(targets, preds["probability"].to_numpy(dtype=float).tolist(), strict=True)),
            band=dict(zip(targets, preds["band"].tolist(), strict=True)),
            drivers=drivers,
            message=str(preds["message"].iloc[0]),
            predictions=preds.reset_index(drop=True),
        )


# --------------------------------------------------------------------------------------------
# crs predict
# --------------------------------------------------------------------------------------------


#: Marks a directory as written by ``crs predict`` (JSON: tool, version); see :func:`_prepare_out`.
OUTPUT_MARKER = ".crs-predict-output"
#: Everything ``crs predict`` writes into ``--out`` (``patients/`` holds HTML pages only).
_OUTPUT_FILES = frozenset({OUTPUT_MARKER, PREDICTIONS_FILE, "quarantine.csv", "ingest.json"})
_PAGES_DIR = "patients"


def _output_marker() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("crs-pipeline")
    except PackageNotFoundError:
        tool_version = "unknown"
    return json.dumps({"tool": "crs predict", "version": tool_version}) + "\n"


def _only_predict_files(out: Path) -> bool:
    """Whether ``out`` holds the marker and nothing but what predict writes (so replacing it loses
    nothing of the user's)."""
    if not (out / OUTPUT_MARKER).is_file():
        return False
    for entry in out.iterdir():
        if entry.is_symlink():
            return False
        if entry.name == _PAGES_DIR and entry.is_dir():
            if any(p.is_symlink() or not p.is_file() or p.suffix != ".html" for p in entry.iterdir()):
                return False
        elif entry.name not in _OUTPUT_FILES or not entry.is_file():
            return False
    return True


def _prepare_out(out: Path) -> None:
    # The output directory is replaced as a whole: never wipe a directory (or a file in it) crs predict
    # did not write. An empty directory is fine; a non-empty one must be a previous predict output.
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose a new --out")
    if any(out.iterdir()) and not _only_predict_files(out):
        raise UserError(f"{out}: not empty and not a crs predict output directory (only a directory crs predict "
                        f"wrote, holding nothing else, is replaced); choose a new or empty --out")


def _pipeline_reports(setup: ScoringSetup, config: Config) -> tuple[pd.DataFrame | None, dict | None]:
    """Cohort marker bands and validation metrics of the pipeline run that trained the model: only when
    the model is that run's ``paths.models_dir`` (a registry URI or another folder: "not available")."""
    if _is_registry_uri(setup.source):
        return None, None
    if Path(setup.bundle.directory).resolve() != Path(config.paths.models_dir).resolve():
        return None, None
    bands_path, metrics_path = Path(config.paths.cohort_bands), Path(config.paths.metrics)
    cohort_bands = pd.read_parquet(bands_path) if bands_path.exists() else None
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    return cohort_bands, metrics


def _explain_and_report(
    tmp: Path, config: Config, setup: ScoringSetup, result: PredictResult, pseudonymise: bool
) -> int:
    """Explanations (pipeline.explanation) and patient pages (pipeline.reporting) for the scored rows."""
    landmarks = result.landmarks
    ok = np.zeros(len(landmarks), dtype=bool)
    for s in result.scores.values():
        ok |= ~np.isnan(s.probability)
    explained = landmarks[ok].reset_index(drop=True)
    if not len(explained):
        return 0  # nobody scoreable: predictions.csv holds every patient's message
    explanations = explain_landmarks(setup.bundle, explained, config)
    # A target the patient is no longer at risk for is not shown as a risk.
    for target, frame in list(explanations.items()):
        s = result.scores.get(target)
        if s is None:
            continue
        withheld = landmarks.loc[~ok | np.isnan(s.probability), ["patient_id", "landmark_hours"]]
        if len(withheld):
            key = pd.MultiIndex.from_frame(withheld.astype({"patient_id": "str"}))
            mine = pd.MultiIndex.from_frame(frame[["patient_id", "landmark_hours"]].astype({"patient_id": "str"}))
            explanations[target] = frame[~mine.isin(key)].reset_index(drop=True)
    cohort_bands, metrics = _pipeline_reports(setup, config)
    pages = write_patient_reports(
        tmp / "patients",
        config=config,
        bundle=setup.bundle,
        explanations=explanations,
        landmarks=explained,
        measurements=result.ingest.tables["measurements"],
        treatments=result.ingest.tables["treatments"],
        cohort_bands=cohort_bands,
        metrics=metrics,
        messages=result.messages,
        pseudonymise=pseudonymise,
        patients=result.ingest.tables["patients"],
        grades=result.grades,
    )
    return len(pages)


#: Patients featurized and scored at a time by ``crs predict --no-pages`` (``--chunk-size``): peak memory
#: grows with it (about 1 GB above the ingested cohort at 50,000); the raw cohort is held whole (docs/predict.md).
DEFAULT_CHUNK_SIZE = 50_000


def _pseudonymised(predictions: pd.DataFrame, to_id: Any) -> pd.DataFrame:
    return predictions if to_id is None else predictions.assign(patient_id=predictions["patient_id"].map(to_id))


#: predictions.csv columns that are text (typed as such, formula cells are found without a per-cell check).
_TEXT_COLUMNS = ("patient_id", "target", "band", "message")


def _write_chunks(path: Path, chunks: Any, to_id: Any) -> tuple[list[Any], dict[str, int], PredictResult | None]:
    """Each chunk's predictions appended to ``path`` (inside the temporary output directory) as it is
    scored. Returns the chunks' covariate checks, the counts of the summary line, and the result when
    there was a single chunk (None otherwise: it is not kept)."""
    from pipeline.io import neutralise_formulas

    checks, counts, results = [], dict.fromkeys(("patients", "scored", "with_messages"), 0), []
    with path.open("w", newline="") as handle:
        pd.DataFrame(columns=PREDICTION_COLUMNS).to_csv(handle, index=False)
        for chunk in chunks:
            text = _pseudonymised(chunk.predictions, to_id).astype(dict.fromkeys(_TEXT_COLUMNS, "str"))
            neutralise_formulas(text).to_csv(handle, index=False, header=False)
            checks.append(chunk.covariates)
            counts = {key: counts[key] + n for key, n in _counts(chunk.predictions).items()}
            results = [chunk] if not results else [None]  # only a lone chunk is the whole result
    return checks, counts, results[0] if results else None


def _pseudonymised_quarantine(quarantine: pd.DataFrame, to_id: Any) -> pd.DataFrame:
    if to_id is None or "patient_id" not in quarantine.columns:
        return quarantine
    ids = quarantine["patient_id"]
    return quarantine.assign(patient_id=ids.where(ids.isna(), ids.astype(str).str.strip().map(to_id)))


def _summary(counts: dict[str, int], n_pages: int, out: Path, seconds: float, warnings: list[str]) -> None:
    print(f"predict: {counts['patients']} patients, {counts['scored']} scored, {counts['with_messages']} with "
          f"messages, {n_pages} pages -> {out}/ ({seconds:.1f} s)")
    for warning in warnings:
        print(f"predict: warning: {warning}")


def _counts(p: pd.DataFrame) -> dict[str, int]:
    return {"patients": p["patient_id"].nunique(), "scored": p.loc[p["probability"].notna(), "patient_id"].nunique(),
            "with_messages": int((p["message"] != "").groupby(p["patient_id"]).any().sum())}


def main(
    config: Config,
    cohort: Path,
    model: str | Path,
    out: Path,
    at_hours: float | None = None,
    *,
    reports: bool = True,
    pseudonymise: bool | None = None,
    chunk_size: int | None = None,
) -> PredictResult | None:
    """``crs predict``: all outputs appear in ``out`` at once, or none (file-level errors).

    Without pages, patients are featurized and scored ``chunk_size`` at a time (None: all at once) and
    ``predictions.csv`` grows chunk by chunk inside the temporary output directory (the same bytes as one
    chunk); the result is returned only when the cohort was one chunk. With pages, the whole cohort at
    once (the pages and their index need it)."""
    started = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    setup = load_setup(model, config)
    raw = read_new_cohort(cohort, **read_options(config))  # cohort.csv dialect, ingest limits
    pseudo = config.report.pseudonymise if pseudonymise is None else pseudonymise
    to_id = id_mapper(True) if pseudo else None  # every output, not only the pages
    if reports:
        result = score_cohort(raw, setup, at_hours, with_shap=False)  # the pages explain by themselves
        ingest, warnings, counts = result.ingest, result.warnings, _counts(result.predictions)
    else:
        ingest, chunks = score_in_chunks(raw, setup, at_hours, chunk_size or sys.maxsize,
                                         block_rows=config.ingest.chunk_rows)
    with atomic_dir(out) as tmp:
        (tmp / OUTPUT_MARKER).write_text(_output_marker())
        if reports:
            write_csv(_pseudonymised(result.predictions, to_id), tmp / PREDICTIONS_FILE)
        else:
            checks, counts, result = _write_chunks(tmp / PREDICTIONS_FILE, chunks, to_id)
            warnings = run_warnings(raw, setup, at_hours, checks)
        write_csv(_pseudonymised_quarantine(ingest.quarantine, to_id), tmp / "quarantine.csv")
        write_json({"cohort": str(cohort), "model": setup.source, **ingest.report}, tmp / "ingest.json")
        n_pages = _explain_and_report(tmp, config, setup, result, pseudo) if reports else 0
    _summary(counts, n_pages, out, time.perf_counter() - started, warnings)
    return result


__all__ = [
    "PatientRisk",
    "PredictResult",
    "Scorer",
    "load_setup",
    "main",
]
