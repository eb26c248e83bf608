"""``reports/model_card.html``: TRIPOD+AI items (docs/clinical.md#reporting-checklist-tripodai); no patient ids appear in it.

The two PNG figures per target (from ``crs evaluate``) are embedded as base64, so the card is one
self-contained file.
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.definitions import analyte_feature_name
from pipeline import metrics as M
from pipeline.config import Config, landmark_key
from pipeline.contracts import LANDMARK_HOURS, MODEL, PATIENT_ID, prob_column
from pipeline.io import atomic_path
from pipeline.model import ModelBundle, model_analytes
from pipeline.model.guards import small_data_warning
from pipeline.reporting import clinical_text as ct
from pipeline.reporting.model_info import is_simulated_cohort, model_identity, target_label
from pipeline.reporting.pages import environment
from pipeline.reporting.sections import DISCLAIMER, DISCLAIMER_LEAD

MIN_SITE_EVENTS = 5  # a site with fewer events (or non-events) gets no AUROC in the model card
MODEL_ROW = "XGBoost model (this card)"


def _png_data_uri(png: bytes | None) -> str | None:
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def read_figures(figures_dir: Path, targets: list[str]) -> dict[str, bytes]:
    """The calibration figure (PNG bytes) of each target that has one in ``figures_dir``."""
    return {t: (Path(figures_dir) / f"{t}.png").read_bytes() for t in targets if (Path(figures_dir) / f"{t}.png").exists()}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _auroc_ci(m: Mapping[str, Any]) -> str:
    return f"{_fmt(m['auroc'])} ({_fmt(m['auroc_ci'][0])}–{_fmt(m['auroc_ci'][1])})"


def with_held_out_sites(rows: list[dict[str, Any]], loso: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each site row plus the leave-one-site-out figures ``crs train`` stored (AUROC and
    calibration-in-the-large of the procedure trained on the other sites); "n/a" without them."""
    sites = (loso or {}).get("sites", {})
    for row in rows:
        held = sites.get(row["site"], {})
        row["held_out_auroc"] = _fmt(held.get("auroc")) if held.get("auroc") is not None else "n/a"
        citl = held.get("calibration_intercept")
        row["held_out_citl"] = _fmt(citl) if citl is not None else "n/a"
    return rows


def site_variation(oof: pd.DataFrame | None, patients: pd.DataFrame | None, target: str) -> list[dict[str, Any]]:
    """AUROC per site (mean over CV repeats, all landmarks pooled); sites with < 5 events flagged."""
    if oof is None or patients is None or "site" not in patients.columns:
        return []
    sub = oof[oof["target"] == target]
    if sub.empty:
        return []
    site = patients.set_index(patients[PATIENT_ID].astype(str))["site"].astype("string")
    sub = sub.assign(site=sub[PATIENT_ID].astype(str).map(site).fillna("unknown").to_numpy())
    first = sub["repeat"].min()
    out = []
    for name, g in sub.groupby("site", observed=True):
        g0 = g[g["repeat"] == first]
        events, n = int(g0["label"].sum()), len(g0)
        row = {"site": str(name), "patients": int(g0[PATIENT_ID].nunique()), "rows": n, "events": events}
        if events < MIN_SITE_EVENTS or n - events < MIN_SITE_EVENTS:
            row["auroc"] = f"too few events (< {MIN_SITE_EVENTS})" if events < MIN_SITE_EVENTS else "too few non-events"
        else:
            aucs = [M.auroc(r["label"].to_numpy(dtype=float), r[prob_column(MODEL)].to_numpy(dtype=float))
                    for _, r in g.groupby("repeat")]
            row["auroc"] = _fmt(float(np.nanmean(aucs)))
        out.append(row)
    return out


def missingness_table(landmarks: pd.DataFrame, analytes: list[str]) -> list[dict[str, Any]]:
    """Share of landmark rows without any measurement / without a baseline, per analyte and landmark."""
    rows = []
    hours = sorted(landmarks[LANDMARK_HOURS].unique())
    for code in analytes:
        count, has_base = analyte_feature_name(code, "count"), analyte_feature_name(code, "has_baseline")
        if count not in landmarks:
            continue
        row = {"analyte": ct.display_name(code)}
        for h in hours:
            at = landmarks[landmarks[LANDMARK_HOURS] == h]
            row[f"none_{h:g}"] = f"{(at[count] == 0).mean() * 100:.0f}%"
        row["no_baseline"] = f"{(landmarks[has_base] == 0).mean() * 100:.0f}%" if has_base in landmarks else "–"
        rows.append(row)
    return rows


def performance_rows(by_landmark: Mapping[str, Any], keys: list[str]) -> list[dict[str, Any]]:
    """Discrimination and calibration of the model per landmark (and pooled) from metrics.json."""
    perf = []
    for k in keys:
        e = by_landmark.get(k, {})
        m = e.get("model")
        prev = (e.get("events", 0) / e["n"]) if e.get("n") else None
        perf.append({
            "landmark": "all (pooled)" if k == "all" else f"{k} h", "n": e.get("n", 0), "events": e.get("events", 0),
            "prevalence": f"{prev * 100:.1f}%" if prev is not None else "–",
            "skipped": e.get("skipped"),
            "auroc": _fmt(m["auroc"]) if m else "–",
            "ci": f"{_fmt(m['auroc_ci'][0])}–{_fmt(m['auroc_ci'][1])}" if m else "",
            "auprc": _fmt(m["auprc"]) if m else "–", "brier": _fmt(m["brier"], 3) if m else "–",
            "slope": _fmt(m["calibration_slope"]) if m else "–",
            "intercept": _fmt(m["calibration_intercept"]) if m else "–",
            "sensitivity": _fmt(m["sensitivity"]) if m else "–", "specificity": _fmt(m["specificity"]) if m else "–",
        })
    return perf


def baseline_rows(by_landmark: Mapping[str, Any], keys: list[str]) -> list[dict[str, Any]]:
    """AUROC (CI) of the model (first row) and each published score per landmark."""
    cells: dict[str, dict[str, str]] = {}
    for k in keys:
        e = by_landmark.get(k, {})
        for name, b in (e.get("baselines") or {}).items():
            cells.setdefault(name, {})[k] = f"unavailable: {b['unavailable']}" if "unavailable" in b else _auroc_ci(b)
        if e.get("model"):
            cells.setdefault(MODEL_ROW, {})[k] = _auroc_ci(e["model"])
    model_row = cells.pop(MODEL_ROW, None)
    rows = [{"name": MODEL_ROW, "cells": [model_row.get(k, "–") for k in keys], "model": True}] if model_row else []
    return rows + [{"name": n, "cells": [c.get(k, "–") for k in keys], "model": False} for n, c in cells.items()]


def net_benefit_rows(pooled: Mapping[str, Any]) -> list[dict[str, str]]:
    """Net benefit of the model against treat-all at each decision threshold (pooled landmarks)."""
    if "model" not in pooled or not pooled.get("n"):
        return []
    prev = pooled["events"] / pooled["n"]
    return [{"pt": f"{pt:.2f}", "model": _fmt(pooled["model"]["net_benefit"].get(f"{pt:.2f}"), 3),
             "all": _fmt(prev - (1 - prev) * pt / (1 - pt), 3)} for pt in M.NET_BENEFIT_THRESHOLDS]


def top_features(summary: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The ten features with the largest mean |SHAP| (from ``crs explain``'s summary table)."""
    if summary is None:
        return []
    return [{"feature": r.feature, "label": ct.group_label(ct.feature_group(r.feature)), "unit": r.unit,
             "description": r.description, "mean_abs_shap": f"{r.mean_abs_shap:.3f}"}
            for r in summary.head(10).itertuples()]


_CALIBRATION_TEXT = {
    "sigmoid": "Platt scaling with landmark-specific intercepts",
    "isotonic": "isotonic regression (one map per landmark where each has enough events)",
    "identity": "none (too few events for inner folds: one uncalibrated booster)",
}


def _chosen_text(chosen: Mapping[str, Any]) -> str:
    """What the inner-fold search and blend choice picked for one deployed unit, in words."""
    if "rounds" not in chosen:
        return str(chosen.get("note", "no search recorded"))
    return (f"{chosen['rounds']} boosting rounds, depth {chosen['max_depth']}, learning rate {_fmt(chosen['eta'], 3)}, "
            f"min child weight {_fmt(chosen['min_child_weight'], 1)}, column sampling {_fmt(chosen['colsample_bytree'])}, "
            f"feature set '{chosen['feature_set']}'; simple-summaries weight {chosen['simple_weight']:g}, "
            f"L2 logistic weight {chosen['linear_weight']:g}")


def procedure_summary(model: Any, oof: pd.DataFrame | None) -> dict[str, Any]:
    """How the target's deployed model was built and validated, from its metadata and fitted units."""
    meta, params = model.metadata, model.metadata.get("params", {})
    repeats = (int(oof.loc[oof["target"] == model.target, "repeat"].nunique())
               if oof is not None and "target" in oof.columns else params.get("n_repeats"))
    units = [{"unit": "all landmarks" if key == "all" else f"{key} h",
              "calibration": _CALIBRATION_TEXT.get(unit.calibrator.method, unit.calibrator.method),
              "n_boosters": len(unit.boosters),
              "chosen": _chosen_text((meta.get("models", {}).get(key) or {}).get("chosen", {}))}
             for key, unit in model.models.items()]
    return {"n_repeats": repeats, "n_splits": params.get("n_splits"), "inner_folds": params.get("inner_folds"),
            "tune": params.get("tune"), "n_trials": params.get("n_trials"), "units": units,
            "monotone_constraints": (meta.get("xgboost_params") or {}).get("monotone_constraints") or "none"}


def target_card(config: Config, bundle: ModelBundle, target: str, metrics: Mapping[str, Any], keys: list[str],
                oof: pd.DataFrame | None, patients: pd.DataFrame | None, summary: pd.DataFrame | None,
                figure: bytes | None) -> dict[str, Any]:
    """The model card's section for one target."""
    model = bundle.targets[target]
    meta = model.metadata
    tdef = meta.get("target_definition", {})
    by_landmark = metrics.get(target, {})
    return {
        "name": target, "label": target_label(config, target), "event": tdef.get("event"),
        "min_grade": tdef.get("min_grade"), "horizon_hours": meta.get("horizon_hours"),
        "identity": model_identity(bundle, target),
        "n_rows": meta.get("n_rows"), "n_events": meta.get("n_events"), "n_patients": meta.get("n_patients"),
        "threshold": _fmt((meta.get("models", {}).get("all") or {}).get("threshold"), 3),
        "threshold_rule": meta.get("threshold_rule", ""), "calibration": meta.get("calibration", ""),
        "params": meta.get("params", {}), "procedure": procedure_summary(model, oof),
        "perf": performance_rows(by_landmark, keys), "landmark_keys": keys,
        "baselines": baseline_rows(by_landmark, keys), "net_benefit": net_benefit_rows(by_landmark.get("all", {})),
        "figure": _png_data_uri(figure),
        "sites": with_held_out_sites(site_variation(oof, patients, target), meta.get("leave_one_site_out")),
        "top": top_features(summary), "n_features": len(model.feature_names),
    }


def model_card_context(
    *, config: Config, bundle: ModelBundle, metrics: dict | None, landmarks: pd.DataFrame,
    patients: pd.DataFrame | None, oof: pd.DataFrame | None, summaries: Mapping[str, pd.DataFrame] | None = None,
    figures: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Everything the model card template renders. ``figures``: per target its PNG (:func:`read_figures`)."""
    figures = figures or {}
    keys = [landmark_key(h) for h in config.landmarks_hours] + ["all"]
    targets = [target_card(config, bundle, t, metrics or {}, keys, oof, patients,
                           summaries.get(t) if summaries else None, figures.get(t)) for t in bundle.targets]
    first = next(iter(bundle.targets.values())).metadata
    cohort_path = str(first.get("cohort_path", config.cohort.path))
    return {
        "targets": targets, "config": config, "hours": [f"{h:g}" for h in sorted(landmarks[LANDMARK_HOURS].unique())],
        "missing": missingness_table(landmarks, model_analytes(bundle, config)), "disclaimer": DISCLAIMER, "disclaimer_lead": DISCLAIMER_LEAD,
        "n_patients": int(landmarks[PATIENT_ID].nunique()),
        "has_site": patients is not None and "site" in patients.columns,
        "simulated": is_simulated_cohort(cohort_path), "cohort_path": cohort_path, "grading_scale": config.cohort.grading_scale,
        "static_features": config.static_features, "analytes": [ct.display_name(a) for a in model_analytes(bundle, config)],
        "generated": generated_date(),
        "small_data": [w for t, m in bundle.targets.items() if (w := small_data_warning(t, m.metadata.get("small_data")))],
    }


def generated_date() -> str | None:
    """The card's date only under ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention): a wall-clock
    date would change the card, and so ``dvc.lock``, on every day the unchanged pipeline is rerun."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch.isdigit():
        return None
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))


def render_model_card(**context_args: Any) -> str:
    """The model card's HTML (arguments of :func:`model_card_context`). Pure."""
    return environment().get_template("model_card.html.j2").render(**model_card_context(**context_args))


def write_model_card(path: Path, **context_args: Any) -> Path:
    """Render the model card to ``path`` atomically (arguments of :func:`model_card_context`)."""
    html_text = render_model_card(**context_args)
    with atomic_path(path) as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return Path(path)
