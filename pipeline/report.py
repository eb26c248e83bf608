"""``crs report``: one self-contained HTML page per patient, an index, the model card, cohort bands.

``run`` is pure (frames in, HTML and the cohort band table out) and goes through
:mod:`pipeline.reporting`, the library ``crs predict`` shares; ``main`` reads every input through
``config.paths`` and writes atomically:

* ``paths.patients_dir`` (``reports/patients/``): ``<patient>.html`` per patient and ``index.html``
  (patients sorted by current risk: the highest calibrated risk over targets at their latest landmark);
* ``paths.cohort_bands`` (``reports/cohort_bands.parquet``): per target, marker, 12 h time bin and
  group (event / no event) the quartiles of the marker, drawn behind a patient's values;
* ``paths.model_card`` (``reports/model_card.html``): TRIPOD+AI items (docs/clinical.md#reporting-checklist-tripodai).

With pseudonymisation on, every patient id in file names and text is replaced by an HMAC-SHA-256
keyed by a secret (``$CRS_PSEUDONYM_KEY`` or ``$CRS_PSEUDONYM_KEY_FILE``; ``crs keygen`` makes one), so
pages can be shared without the raw ids. Page file names are safe whatever the ids
(:func:`pipeline.reporting.page_filename`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import contracts, reporting
from pipeline.config import Config
from pipeline.explanation import explain_landmarks
from pipeline.io import atomic_path, read_stage_parquet, write_parquet
from pipeline.model import ModelBundle, load_bundle
from pipeline.reporting import ReportData


@dataclass
class ReportInputs:
    """What ``crs report`` reads: earlier stages' outputs (optional ones may be missing)."""

    bundle: ModelBundle
    landmarks: pd.DataFrame
    measurements: pd.DataFrame
    treatments: pd.DataFrame
    patients: pd.DataFrame | None = None
    #: ``crs grade``'s grade timeline (grade in force and its reason); pages show the grade at L.
    grades: pd.DataFrame | None = None
    metrics: dict | None = None
    oof: pd.DataFrame | None = None
    #: Per target, the fold models' explanations of the rows they scored (``paths.oof_explanations``).
    oof_explanations: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: SHAP frames of ``crs explain`` per target; computed here when any target's frame is missing.
    explanations: dict[str, pd.DataFrame] = field(default_factory=dict)
    summaries: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Report:
    """What ``crs report`` writes."""

    cohort_bands: pd.DataFrame
    index: str
    pages: list[tuple[str, str]]
    model_card: str


def run(config: Config, inputs: ReportInputs, pseudonymise: bool = False) -> Report:
    """Pages, index, model card and cohort bands for ``inputs``. Pure.

    With out-of-fold predictions (the training cohort), each page shows the cross-validated risk, not
    the deployed model's in-sample score for a patient it was trained on.
    """
    bundle, landmarks = inputs.bundle, inputs.landmarks
    explanations = inputs.explanations
    if any(t not in explanations for t in bundle.targets):
        explanations = explain_landmarks(bundle, landmarks, config)
    risk_note = None
    if inputs.oof is not None and all(t in inputs.oof_explanations for t in explanations):
        explanations = reporting.out_of_fold_explanations(explanations, inputs.oof_explanations, config, bundle)
        risk_note = reporting.OUT_OF_FOLD_NOTE
    elif inputs.oof is not None:
        explanations = reporting.out_of_fold_risks(explanations, inputs.oof, config)
        risk_note = reporting.OUT_OF_FOLD_RISK_ONLY_NOTE
    bands = reporting.cohort_bands_for(inputs.measurements, landmarks, config.report.markers, list(bundle.targets))
    data = ReportData.build(
        config=config, bundle=bundle, explanations=explanations, landmarks=landmarks,
        measurements=inputs.measurements, treatments=inputs.treatments, cohort_bands=bands,
        metrics=inputs.metrics, messages=reporting.data_quality_messages(landmarks, config),
        pseudonymise=pseudonymise, risk_note=risk_note, patients=inputs.patients, grades=inputs.grades,
    )
    index, pages = reporting.render_pages(data)
    card = reporting.render_model_card(config=config, bundle=bundle, metrics=inputs.metrics, landmarks=landmarks,
                                       patients=inputs.patients, oof=inputs.oof, summaries=inputs.summaries,
                                       figures=inputs.figures)
    return Report(bands, index, pages, card)


def read_explanations(config: Config, targets: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """SHAP frames and summary tables that ``crs explain`` wrote (targets without files are left out)."""
    shap_dir = Path(config.paths.shap_dir)
    frames, summaries = {}, {}
    for t in targets:
        path = shap_dir / f"{t}.parquet"
        if path.exists():
            frame = read_stage_parquet(path, "explanations", "crs explain")
            frames[t] = contracts.check_frame(frame, contracts.EXPLANATIONS, path, "crs explain")
        summary = shap_dir / f"{t}_summary.csv"
        if summary.exists():
            summaries[t] = pd.read_csv(summary, keep_default_na=False)
    return frames, summaries


def read_oof_explanations(config: Config, targets: list[str]) -> dict[str, pd.DataFrame]:
    """The fold models' explanations ``crs train`` wrote (targets without a file are left out)."""
    out = {}
    for t in targets:
        path = Path(config.paths.oof_explanations) / f"{t}.parquet"
        if path.exists():
            frame = read_stage_parquet(path, "out-of-fold explanations", "crs train")
            out[t] = contracts.check_frame(frame, contracts.EXPLANATIONS, path, "crs train")
    return out


def read_inputs(config: Config) -> ReportInputs:
    paths = config.paths
    landmarks = read_stage_parquet(paths.landmarks, "landmark features", "crs featurize")
    interim = Path(paths.interim_dir)
    measurements = read_stage_parquet(interim / "measurements.parquet", "ingested measurements", "crs ingest")
    bundle = load_bundle(paths.models_dir)
    oof = None
    if Path(paths.oof).exists():
        oof = contracts.check_frame(read_stage_parquet(paths.oof, "out-of-fold predictions", "crs train"),
                                    contracts.OOF, paths.oof, "crs train")
    explanations, summaries = read_explanations(config, list(bundle.targets))
    oof_explanations = read_oof_explanations(config, list(bundle.targets)) if oof is not None else {}
    return ReportInputs(
        bundle=bundle,
        landmarks=contracts.check_frame(landmarks, contracts.LANDMARKS, paths.landmarks, "crs featurize"),
        measurements=contracts.check_frame(measurements, contracts.MEASUREMENTS, interim / "measurements.parquet",
                                           "crs ingest"),
        treatments=read_stage_parquet(interim / "treatments.parquet", "ingested treatments", "crs ingest"),
        patients=read_stage_parquet(interim / "patients.parquet", "ingested patients", "crs ingest"),
        grades=_read_grades(Path(paths.graded_dir) / "grades.parquet"),
        metrics=json.loads(Path(paths.metrics).read_text()) if Path(paths.metrics).exists() else None,
        oof=oof, oof_explanations=oof_explanations, explanations=explanations, summaries=summaries,
        figures=reporting.read_figures(paths.figures_dir, list(bundle.targets)),
    )


def _read_grades(path: Path) -> pd.DataFrame | None:
    """The grade timeline, when ``crs grade`` wrote one with reasons (pages then show the grade at L)."""
    if not path.exists():
        return None
    grades = read_stage_parquet(path, "grade timeline", "crs grade")
    return grades if "reason" in grades.columns else None


def main(config: Config, pseudonymise: bool | None = None) -> None:
    started = time.perf_counter()
    pseudonymise = config.report.pseudonymise if pseudonymise is None else pseudonymise
    reporting.id_mapper(pseudonymise)  # fail fast on a missing or weak key, before any work
    report = run(config, read_inputs(config), pseudonymise)
    paths = config.paths
    write_parquet(report.cohort_bands, paths.cohort_bands)
    pages = reporting.write_pages(paths.patients_dir, report.index, report.pages)
    with atomic_path(paths.model_card) as tmp:
        tmp.write_text(report.model_card, encoding="utf-8")
    print(f"report: {len(pages) - 1} patients{' (pseudonymised)' if pseudonymise else ''}, index "
          f"{pages[0]}, model card {paths.model_card}, cohort bands {paths.cohort_bands}; "
          f"total {time.perf_counter() - started:.1f} s")
