"""Patient pages and the index: render every section of every page, write the folder atomically.

Pages need no server and no network: CSS is inline and every chart is inline SVG
(:mod:`pipeline.reporting.charts`). The index lists patients sorted by current risk (the highest
calibrated risk over targets at their latest landmark).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.contracts import LANDMARK_HOURS, MODEL, PATIENT_ID, prob_column
from pipeline.io import atomic_dir
from pipeline.model import ModelBundle, risk_band
from pipeline.reporting import clinical_text as ct
from pipeline.reporting.charts import format_risk
from pipeline.reporting.ids import page_filename, page_href, page_path
from pipeline.reporting.patient_data import PatientView, ReportData, row_band_cutoffs
from pipeline.reporting.sections import (
    DISCLAIMER,
    DISCLAIMER_LEAD,
    NEUTRAL_COLOUR,
    SIMULATED_BANNER,
    page_context,
)

OUT_OF_FOLD_NOTE = (
    "Training-cohort report: each risk shown is the cross-validated (out-of-fold) estimate of the first CV "
    "repeat, from the fold model that never saw this patient; its drivers and alert threshold are that "
    "model's too, so the page explains the number it shows. No risk is shown after the event was recorded."
)
#: Older training outputs without the fold models' explanations: the risk is out-of-fold, the drivers not.
OUT_OF_FOLD_RISK_ONLY_NOTE = (
    "Training-cohort report: each risk shown is the cross-validated (out-of-fold) estimate from models that "
    "never saw this patient, averaged over CV repeats; no risk is shown after the event was recorded. The "
    "drivers explain the deployed model's score for this patient, who was part of its training data."
)


def environment():
    """The Jinja environment of the report templates (autoescaped; ``risk`` and ``num`` filters)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.reporting", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["risk"] = format_risk
    env.filters["num"] = ct.format_number
    return env


def out_of_fold_risks(explanations: dict[str, pd.DataFrame], oof: pd.DataFrame, config: Config) -> dict[str, pd.DataFrame]:
    """Replace each row's probability (and band) by its out-of-fold probability, mean over repeats.

    Rows without an out-of-fold prediction (not at risk at that landmark) get no probability.
    """
    out = {}
    for target, frame in explanations.items():
        rows = oof[oof["target"] == target]
        mean = rows.groupby([PATIENT_ID, LANDMARK_HOURS])[prob_column(MODEL)].mean()
        keys = pd.MultiIndex.from_arrays(
            [frame[PATIENT_ID].astype(str).to_numpy(), frame[LANDMARK_HOURS].to_numpy(dtype=float)]
        )
        mean.index = pd.MultiIndex.from_arrays(
            [mean.index.get_level_values(0).astype(str), mean.index.get_level_values(1).astype(float)]
        )
        probability = mean.reindex(keys).to_numpy(dtype=float)
        band = risk_band(probability, config.report.band_low_below, config.report.band_high_from)  # older outputs
        out[target] = frame.assign(probability=probability, band=band)
    return out


def out_of_fold_explanations(explanations: dict[str, pd.DataFrame], oof_explanations: dict[str, pd.DataFrame],
                             config: Config, bundle: ModelBundle) -> dict[str, pd.DataFrame]:
    """Each landmark row's risk, band, threshold and contributions from the fold model that scored it out of
    fold (``paths.oof_explanations``, first CV repeat). Rows it never scored (not at risk) get none."""
    out = {}
    for target, frame in explanations.items():
        oof = oof_explanations[target]
        index = pd.MultiIndex.from_arrays([oof[PATIENT_ID].astype(str).to_numpy(),
                                           oof[LANDMARK_HOURS].to_numpy(dtype=float)])
        keys = pd.MultiIndex.from_arrays([frame[PATIENT_ID].astype(str).to_numpy(),
                                          frame[LANDMARK_HOURS].to_numpy(dtype=float)])
        values = [c for c in oof.columns if c not in (PATIENT_ID, LANDMARK_HOURS)]
        aligned = oof[values].set_axis(index).reindex(keys).reset_index(drop=True)
        head = frame[[PATIENT_ID, LANDMARK_HOURS]].reset_index(drop=True)
        merged = pd.concat([head, aligned], axis=1)
        band = risk_band(merged["probability"].to_numpy(dtype=float), *row_band_cutoffs(bundle, config, target, merged))
        out[target] = merged.assign(band=pd.array(band, dtype="string"))
    return out


def index_row(data: ReportData, view: PatientView, page: dict[str, dict[str, Any]], filename: str) -> dict[str, Any]:
    """The patient's row of the index: risk per target, top driver, notes; ``current`` sorts the index."""
    drivers = {d["target"]: d["drivers"] for d in page["drivers"]["targets"]}
    cells = [{"label": c["label"], "probability": c["probability"], "band": c["band"], "band_colour": c["band_colour"],
              "driver": drivers[c["target"]][0]["sentence"] if drivers.get(c["target"]) else ""}
             for c in page["risk"]["cards"]]
    if not view.scored:
        cells = [{"label": data.labels[t], "probability": math.nan, "band": "not scored",
                  "band_colour": NEUTRAL_COLOUR, "driver": ""} for t in data.targets]
    finite = [c["probability"] for c in cells if np.isfinite(c["probability"])]
    return {"patient": view.display, "href": page_href(filename), "latest": view.latest if view.scored else None,
            "current": max([-1.0, *finite]), "cells": cells, "notes": page["header"]["notes"]}


def render_pages(data: ReportData) -> tuple[str, list[tuple[str, str]]]:
    """(index HTML, [(file name, page HTML)]) for every patient. Pure."""
    env = environment()
    page_tpl, index_tpl = env.get_template("patient.html.j2"), env.get_template("index.html.j2")
    pages: list[tuple[str, str]] = []
    rows = []
    seen = {"index.html"}
    for pid in data.patients():
        view = PatientView.build(data, pid)
        page = page_context(data, view)
        filename = page_filename(view.display)
        if filename.lower() in seen:  # distinct ids never share a name (ids.page_filename); a clash is a bug
            raise RuntimeError("two patients were given the same page file name")
        seen.add(filename.lower())
        pages.append((filename, page_tpl.render(**page)))
        rows.append(index_row(data, view, page, filename))
    rows.sort(key=lambda r: (-r["current"], r["patient"]))
    rcfg = data.config.report
    index = index_tpl.render(rows=rows, risk_note=data.risk_note, targets=[data.labels[t] for t in data.targets],
                             disclaimer=DISCLAIMER, disclaimer_lead=DISCLAIMER_LEAD, low_below=rcfg.band_low_below,
                             high_from=rcfg.band_high_from, validated_bands=rcfg.bands == "validated",
                             pseudonymised=data.pseudonymise,
                             n_notes=sum(1 for r in rows if r["notes"]),
                             simulated=SIMULATED_BANNER if data.simulated else None)
    return index, pages


def write_pages(out_dir: Path, index: str, pages: list[tuple[str, str]]) -> list[Path]:
    """Write ``index.html`` and every page into ``out_dir``, replacing it as a whole; final paths, index first."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "index.html").write_text(index, encoding="utf-8")
        for filename, page in pages:
            page_path(tmp, filename).write_text(page, encoding="utf-8")  # raises if a name left the folder
    return [out_dir / "index.html", *(out_dir / name for name, _ in pages)]


def write_patient_reports(
    out_dir: Path,
    *,
    config: Config,
    bundle: ModelBundle,
    explanations: dict[str, pd.DataFrame],
    landmarks: pd.DataFrame,
    measurements: pd.DataFrame,
    treatments: pd.DataFrame,
    cohort_bands: pd.DataFrame | None,
    metrics: dict | None,
    messages: dict[str, list[str]] | None = None,
    pseudonymise: bool = False,
    risk_note: str | None = None,
    patients: pd.DataFrame | None = None,
    grades: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``<patient>.html`` per patient and ``index.html`` into ``out_dir`` (atomically, as a whole).

    ``explanations``: per target the SHAP frame of :func:`pipeline.explanation.explain_landmarks`.
    ``messages``: per raw patient id, data-quality notes shown prominently on the page and the index.
    Patients with only messages (not scoreable) still get a page that says why. Returns the final
    paths (index first).
    """
    started = time.perf_counter()
    data = ReportData.build(
        config=config, bundle=bundle, explanations=explanations, landmarks=landmarks, measurements=measurements,
        treatments=treatments, cohort_bands=cohort_bands, metrics=metrics, messages=messages,
        pseudonymise=pseudonymise, risk_note=risk_note, patients=patients, grades=grades,
    )
    index, pages = render_pages(data)
    paths = write_pages(out_dir, index, pages)
    print(f"report: {len(pages)} patient pages in {time.perf_counter() - started:.1f} s -> {out_dir}")
    return paths
