"""Per target: rows at risk and their folds, the out-of-fold table, and the final models' files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline.config import Config, TrainConfig, landmark_key
from pipeline.metrics import auroc, brier, calibration_slope_intercept, json_number, threshold_for_specificity
from pipeline.model import FeatureSpec, LandmarkModel, apply_feature_specs
from pipeline.model.artifacts import FEATURES_FILE, METADATA_FILE, json_bytes, landmark_model_files
from pipeline.training.baselines import baseline_availability, unavailable_by_landmark
from pipeline.training.booster import xgb_params
from pipeline.training.crossfit import Procedure, fit_procedure
from pipeline.training.cv import EXPLAIN_BASE
from pipeline.training.data import FoldData
from pipeline.training.splits import landmark_groups, outer_splits


@dataclass
class TargetResult:
    target: str
    status: str  # "trained" or "skipped"
    reason: str | None
    oof: pd.DataFrame | None
    files: dict[str, bytes]  # relative path inside models/<target>/ -> content
    metadata: dict[str, Any]
    specs: list[FeatureSpec]
    X_all: pd.DataFrame | None
    final_models: dict[str, LandmarkModel]
    #: The first CV repeat's fold models explaining their test rows (:func:`assemble_oof_explanations`).
    oof_explanations: pd.DataFrame | None = None


@dataclass
class PreparedTarget:
    target: str
    data: FoldData
    splits: list[tuple[int, int, np.ndarray, np.ndarray]]
    counts: dict[str, int]
    #: Leave-one-site-out: (site, training rows, that site's rows); empty without 3 sites.
    site_splits: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)


def _skipped(target: str, reason: str, meta: dict[str, Any], specs: list[FeatureSpec]) -> TargetResult:
    return TargetResult(target, "skipped", reason, None, {}, {**meta, "skipped": reason}, specs, None, {})


def prepare_target(
    df: pd.DataFrame, target: str, cfg: TrainConfig, specs: list[FeatureSpec], base_meta: dict[str, Any]
) -> PreparedTarget | TargetResult:
    """Rows at risk for ``target`` and their outer folds, or a skipped result with the reason."""
    label_col = C.label_column(target)
    if label_col not in df.columns:
        return _skipped(target, f"column '{label_col}' not in landmarks.parquet", base_meta, specs)
    rows = df[df[label_col].notna()].reset_index(drop=True)  # NaN label = not at risk at that landmark
    y = rows[label_col].to_numpy(dtype=float).astype(int)
    groups = rows[C.PATIENT_ID].astype(str).to_numpy()
    landmarks = rows[C.LANDMARK_HOURS].to_numpy(dtype=float)
    counts = {"n_rows": len(y), "n_events": int(y.sum()), "n_patients": int(len(np.unique(groups)))}
    pos_patients = len(np.unique(groups[y == 1]))
    neg_patients = len(np.unique(groups[y == 0]))
    if min(pos_patients, neg_patients) < 2:
        reason = (
            f"{pos_patients} patients with and {neg_patients} without an event: "
            "too few for grouped cross-validation"
        )
        return _skipped(target, reason, {**base_meta, **counts}, specs)
    X = apply_feature_specs(rows, specs)
    data = FoldData(X, y, groups, landmarks, specs, baseline_availability(X))
    counts["small_data"] = small_data(y, groups, landmarks, len(specs), cfg.min_events)
    sites = rows[C.SITE_GROUP].astype("object").to_numpy() if C.SITE_GROUP in rows.columns else None
    return PreparedTarget(target, data, outer_splits(y, groups, cfg), counts, site_folds(sites, cfg))


def site_folds(sites: np.ndarray | None, cfg: TrainConfig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One split per site (train on every other site's rows, score this site's) when the cohort names
    at least 3 sites and ``site_validation`` is auto; rows without a site are only ever trained on."""
    if sites is None or cfg.site_validation == "off":
        return []
    known = pd.notna(sites)
    names = sorted({str(s) for s in sites[known]})
    if len(names) < 3:
        return []
    text = np.where(known, sites.astype(str), "")
    return [(name, np.flatnonzero(text != name), np.flatnonzero(text == name)) for name in names]


def site_summary(prep: PreparedTarget, parts: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Per held-out site: the procedure trained on the other sites, scored on this one (all landmarks)."""
    out: dict[str, dict[str, Any]] = {}
    column = C.prob_column(C.MODEL)
    for site, part in parts.items():
        rows = part["row"].to_numpy()
        y, p = prep.data.y[rows].astype(float), part[column].to_numpy(dtype=float)
        both = 0 < y.sum() < len(y)
        slope, intercept = calibration_slope_intercept(y, p) if both else (np.nan, np.nan)
        out[site] = {"n": int(len(y)), "n_patients": int(len(np.unique(prep.data.groups[rows]))),
                     "n_event_patients": int(len(np.unique(prep.data.groups[rows][y == 1]))),
                     "auroc": json_number(auroc(y, p)) if both else None, "brier": json_number(brier(y, p)),
                     "calibration_slope": json_number(slope), "calibration_intercept": json_number(intercept)}
    return out


def small_data(y: np.ndarray, groups: np.ndarray, landmarks: np.ndarray, n_features: int, min_events: int
               ) -> dict[str, Any] | None:
    """The small-data flag: patients with the event overall and per landmark against ``min_events``,
    with events per candidate feature for context; None when every count reaches the minimum."""
    event_patients = int(len(np.unique(groups[y == 1])))
    per_landmark = {landmark_key(float(h)): int(y[landmarks == h].sum()) for h in np.unique(landmarks)}
    below = {k: v for k, v in per_landmark.items() if v < min_events}
    if event_patients >= min_events and not below:
        return None
    return {"min_events": min_events, "patients_with_event": event_patients, "events_by_landmark": per_landmark,
            "landmarks_below": sorted(below), "events_per_feature": round(event_patients / max(n_features, 1), 3)}


def fit_final(data: FoldData, mask: np.ndarray, cfg: TrainConfig) -> Procedure:
    """The deployed unit: the same procedure as in every outer fold, on all rows of the unit."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return fit_procedure(data.X[mask], data.y[mask], data.groups[mask], data.landmarks[mask], cfg, data.specs,
                             cfg.seed)


def _explanation_columns(columns: pd.Index) -> list[str]:
    return [c for c in columns if c == EXPLAIN_BASE or c.startswith(C.SHAP_PREFIX)]


def assemble_oof_explanations(prep: PreparedTarget, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The first repeat's fold models explaining their own test rows (schema of ``reports/shap/<target>
    .parquet``, plus the fold's ``threshold``): base value + contributions = ``margin``, which the fold's
    calibrator turned into ``probability``, the out-of-fold risk a training-cohort page shows."""
    first = pd.concat([p for p in parts if (p["repeat"] == 0).all()], ignore_index=True)
    r = first["row"].to_numpy()
    shap = first[[C.shap_column(s.name) for s in prep.data.specs]]
    out = pd.DataFrame({
        C.PATIENT_ID: pd.array(prep.data.groups[r], dtype="string"),
        C.LANDMARK_HOURS: prep.data.landmarks[r].astype(float),
        "base_value": first[EXPLAIN_BASE].to_numpy(dtype=float),
        "margin": first[EXPLAIN_BASE].to_numpy(dtype=float) + shap.to_numpy(dtype=float).sum(axis=1),
        "probability": first[C.prob_column(C.MODEL)].to_numpy(dtype=float),
        "threshold": first[C.threshold_column(C.MODEL)].to_numpy(dtype=float),
    })
    out = pd.concat([out, shap.reset_index(drop=True)], axis=1)
    return out.sort_values([C.PATIENT_ID, C.LANDMARK_HOURS], kind="mergesort").reset_index(drop=True)


def assemble_oof(prep: PreparedTarget, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Fold parts -> the out-of-fold table (docs/CONTRACTS.md), sorted by repeat, patient, landmark."""
    data = prep.data
    oof_idx = pd.concat(parts, ignore_index=True)
    oof_idx = oof_idx.drop(columns=_explanation_columns(oof_idx.columns))
    r = oof_idx.pop("row").to_numpy()
    ids = pd.DataFrame({
        C.PATIENT_ID: pd.array(data.groups[r], dtype="string"),
        C.LANDMARK_HOURS: data.landmarks[r],
        "target": pd.array([prep.target] * len(r), dtype="string"),
    })
    oof = pd.concat(
        [ids, oof_idx[["repeat", "fold"]].astype("int64"), pd.DataFrame({"label": data.y[r].astype("float64")}),
         oof_idx.drop(columns=["repeat", "fold"])],
        axis=1,
    )
    return oof.sort_values(["repeat", C.PATIENT_ID, C.LANDMARK_HOURS], kind="mergesort").reset_index(drop=True)


def _final_units(prep: PreparedTarget, finals: dict[str, Procedure], cfg: TrainConfig
                 ) -> tuple[dict[str, bytes], dict[str, Any], dict[str, LandmarkModel]]:
    """Files, metadata entries and models per unit ("all" or a landmark)."""
    files: dict[str, bytes] = {}
    units: dict[str, Any] = {}
    models: dict[str, LandmarkModel] = {}
    for lm, mask in landmark_groups(prep.data.landmarks, cfg.per_landmark):
        key = "all" if lm is None else landmark_key(lm)
        procedure = finals[key]
        unit_files, entry = landmark_model_files(procedure.model, "" if lm is None else f"landmark_{key}/")
        files.update(unit_files)
        models[key] = procedure.model
        units[key] = {**entry, "n_rows": int(mask.sum()), "n_events": int(prep.data.y[mask].sum()),
                      "chosen": procedure.chosen}
    return files, units, models


def cross_validation_summary(oof: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per landmark, the deployed procedure's out-of-fold AUROC, Brier and calibration (means over the
    CV repeats): stored with the model so ``crs validate`` shows a new cohort's figures next to them."""
    column = C.prob_column(C.MODEL)
    out: dict[str, dict[str, Any]] = {}
    for hours, rows in oof.groupby(C.LANDMARK_HOURS, sort=True):
        figures = []
        for _, rep in rows.groupby("repeat", sort=True):
            y, p = rep["label"].to_numpy(dtype=float), rep[column].to_numpy(dtype=float)
            slope, intercept = calibration_slope_intercept(y, p)
            figures.append((auroc(y, p), brier(y, p), slope, intercept))
        first = rows[rows["repeat"] == rows["repeat"].min()]
        mean = pd.DataFrame(figures, dtype=float).mean().to_numpy() if figures else np.full(4, np.nan)  # skips NaN
        out[landmark_key(float(hours))] = {
            "n": int(len(first)), "n_events": int(first["label"].sum()),
            **{name: json_number(v) for name, v in zip(
                ("auroc", "brier", "calibration_slope", "calibration_intercept"), mean, strict=True)}}
    return out


def _metadata(prep: PreparedTarget, units: dict[str, Any], config: Config, base_meta: dict[str, Any],
              oof: pd.DataFrame) -> dict:
    cfg, data = config.train, prep.data
    return {
        **base_meta,
        "cross_validation": cross_validation_summary(oof),
        "target_definition": config.targets[prep.target].model_dump(),
        **prep.counts,
        "landmarks_hours": [float(h) for h in np.unique(data.landmarks)],
        "horizon_hours": config.featurize.horizon_hours,
        "per_landmark": cfg.per_landmark,
        "models": units,
        "threshold_rule": f"highest calibrated probability with sensitivity >= {cfg.sensitivity_target:g} on the "
        "cross-fitted held-out predictions, per landmark with enough events, else pooled (flag if >= threshold)",
        "calibration": f"{cfg.calibration}: fitted on each booster's scores of the inner fold it never trained on",
        "baselines": _baseline_metadata(data),
        # n_jobs is left out: an execution setting that does not change any output byte.
        "params": json.loads(cfg.model_dump_json(exclude={"n_jobs"})),
        "xgboost_params": _readable_params(cfg, data.specs),
    }


def _baseline_metadata(data: FoldData) -> dict[str, dict[str, Any]]:
    """Per baseline: available or not (with the reason), and the landmarks where a fitted one has no
    inputs (``unavailable_at``: landmark key -> reason; evaluation reports it unavailable there)."""
    by_landmark = unavailable_by_landmark(data.X, data.landmarks, data.available)
    out: dict[str, dict[str, Any]] = {}
    for name, reason in data.available.items():
        out[name] = {"available": True} if reason is None else {"available": False, "reason": reason}
        if name in by_landmark:
            out[name]["unavailable_at"] = by_landmark[name]
    return out


def _readable_params(cfg: TrainConfig, specs: list[FeatureSpec]) -> dict[str, Any]:
    """The configured XGBoost params for metadata, monotone constraints by feature name (the boosters get
    them by position); the search's choice per unit is under ``models.<unit>.chosen``."""
    params = {k: v for k, v in xgb_params(cfg, specs, cfg.seed).items() if k != "verbosity"}
    if "monotone_constraints" in params:
        numeric = {s.name for s in specs if s.dtype == "float64"}
        params["monotone_constraints"] = {k: int(v) for k, v in cfg.monotone_constraints.items() if k in numeric and v}
    return params


def _cutoffs(rows: pd.DataFrame, low_below: float, specificity: float) -> dict[str, float | None]:
    high = threshold_for_specificity(rows["label"].to_numpy(dtype=float),
                                     rows[C.prob_column(C.MODEL)].to_numpy(dtype=float), specificity)
    if np.isfinite(low_below) and np.isfinite(high):
        high = max(high, low_below)  # a rule-in point below the alert threshold: no intermediate band
    # Full precision (not json_number's rounding): "low" must match the alert rule to the last digit.
    return {name: float(v) if np.isfinite(v) else None for name, v in (("low_below", low_below), ("high_from", high))}


def band_cutoffs(oof: pd.DataFrame, models: dict[str, LandmarkModel], cfg: TrainConfig) -> dict[str, Any]:
    """Risk-band cut-offs from validated operating points, per landmark and pooled: "low" below the
    deployed alert threshold (sensitivity ``sensitivity_target`` on held-out scores), "high" from the
    out-of-fold probability with specificity ``band_high_specificity`` (all CV repeats)."""
    rows = oof[oof[C.prob_column(C.MODEL)].notna()]
    by_landmark = {}
    for hours, at in rows.groupby(C.LANDMARK_HOURS, sort=True):
        model = models.get(landmark_key(float(hours))) or models.get("all")
        low = float(model.threshold_at(np.array([float(hours)]))[0]) if model is not None else np.nan
        by_landmark[landmark_key(float(hours))] = _cutoffs(at, low, cfg.band_high_specificity)
    pooled_model = models.get("all")
    pooled_low = np.nan if pooled_model is None or pooled_model.threshold is None else float(pooled_model.threshold)
    return {
        "rule": f"low: below the alert threshold (sensitivity >= {cfg.sensitivity_target:g} on held-out scores); "
                f"high: from the out-of-fold probability with specificity {cfg.band_high_specificity:g}; "
                "intermediate in between (per landmark; pooled for other hours)",
        "by_landmark": by_landmark, "pooled": _cutoffs(rows, pooled_low, cfg.band_high_specificity)}


def finish_target(
    prep: PreparedTarget,
    parts: list[pd.DataFrame],
    finals: dict[str, Procedure],
    config: Config,
    base_meta: dict[str, Any],
    site_parts: dict[str, pd.DataFrame] | None = None,
) -> TargetResult:
    """Assemble out-of-fold predictions and the deployed models' files (and leave-one-site-out figures)."""
    oof = assemble_oof(prep, parts)
    explanations = assemble_oof_explanations(prep, parts)
    files, units, models = _final_units(prep, finals, config.train)
    files[FEATURES_FILE] = json_bytes({"features": [s.to_json() for s in prep.data.specs]})
    metadata = _metadata(prep, units, config, base_meta, oof)
    metadata["bands"] = band_cutoffs(oof, models, config.train)
    if site_parts:
        metadata["leave_one_site_out"] = {
            "procedure": "the training procedure without the search (train.* booster params, rounds by early stopping), refitted on all other "
                         "sites; figures pooled over landmarks", "sites": site_summary(prep, site_parts)}
    files[METADATA_FILE] = json_bytes(metadata)
    return TargetResult(prep.target, "trained", None, oof, files, metadata, prep.data.specs, prep.data.X, models,
                        explanations)


def empty_oof() -> pd.DataFrame:
    return pd.DataFrame({
        C.PATIENT_ID: pd.array([], dtype="string"),
        C.LANDMARK_HOURS: np.array([], dtype=float),
        "target": pd.array([], dtype="string"),
        "repeat": np.array([], dtype="int64"),
        "fold": np.array([], dtype="int64"),
        "label": np.array([], dtype=float),
    })
