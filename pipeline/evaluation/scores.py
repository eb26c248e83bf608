"""metrics.json: every metric of the model and its baselines per target and landmark, from the OOF table.

Repeats: every metric is computed within each CV repeat (each row predicted exactly once) and then
averaged over repeats. The AUROC CI is a patient-level percentile bootstrap: patients are resampled
with replacement (all their landmark rows with them); each replicate's AUROC is the mean over repeats.
Pure functions of frames and plain dicts; the schema is public (docs/training.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts
from pipeline import metrics as M
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.model import BASELINES, SCORE_BASELINES

ALL_LANDMARKS = "all"
MIN_EVENTS = 5  # fewer events (or non-events) than this at a landmark: reported as skipped
DIGITS = 4  # rounding in metrics.json: stable, readable diffs in `dvc metrics diff`
#: Key order of one scorer's entry in metrics.json.
SCORER_KEYS = ("auroc", "auroc_ci", "auprc", "brier", "calibration_slope", "calibration_intercept",
               "sensitivity", "specificity", "ppv", "npv", "threshold", "net_benefit")


def rounded(value: float | None) -> float | None:
    """Round for metrics.json; NaN (undefined) becomes null."""
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), DIGITS)


def _nb_key(pt: float) -> str:
    return f"{pt:.2f}"


def _repeat_metrics(y: np.ndarray, p: np.ndarray, thr: np.ndarray, fold: np.ndarray) -> dict[str, float]:
    """Point metrics of one scorer within one CV repeat."""
    slope, intercept = M.calibration_slope_intercept(y, p)
    # One threshold per training fold: report their mean (each row was judged by its own fold's).
    fold_thresholds = pd.Series(thr).groupby(fold).first().to_numpy(dtype=float)
    return {
        "auroc": M.auroc(y, p),
        "auprc": M.auprc(y, p),
        "brier": M.brier(y, p),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        **M.classification_at_threshold(y, p, thr),
        "threshold": float(np.nanmean(fold_thresholds)) if np.isfinite(fold_thresholds).any() else math.nan,
    }


def score_metrics(
    y_by_repeat: list[np.ndarray],
    p_by_repeat: list[np.ndarray],
    thr_by_repeat: list[np.ndarray],
    fold_by_repeat: list[np.ndarray],
    boot: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """Metrics of one scorer on one row set, averaged over repeats (see module docstring)."""
    per_repeat: list[dict[str, float]] = []
    nb_rows = []
    boot_aurocs = []
    for y, p, thr, fold in zip(y_by_repeat, p_by_repeat, thr_by_repeat, fold_by_repeat, strict=True):
        per_repeat.append(_repeat_metrics(y, p, thr, fold))
        nb_rows.append(M.net_benefit(y, p))
        if boot is not None:  # same resampled patients for every repeat and scorer (paired)
            boot_aurocs.append(M.grouped_auroc_matrix(y, p, *boot))
    out: dict[str, Any] = {}
    for key in per_repeat[0]:
        values = np.array([r[key] for r in per_repeat], dtype=float)
        out[key] = rounded(float(np.nanmean(values))) if np.isfinite(values).any() else None
    ci = M.percentile_ci(np.mean(boot_aurocs, axis=0)) if boot_aurocs else (math.nan, math.nan)
    out["auroc_ci"] = [rounded(ci[0]), rounded(ci[1])]
    nb = np.mean(nb_rows, axis=0)
    out["net_benefit"] = {_nb_key(pt): rounded(v) for pt, v in zip(M.NET_BENEFIT_THRESHOLDS, nb, strict=True)}
    return {k: out[k] for k in SCORER_KEYS}


def _unavailable(name: str, first: pd.DataFrame, reasons: dict[str, str | None]) -> str | None:
    """Why baseline ``name`` is not reported on these rows (None: it is)."""
    reason = reasons.get(name)
    if reason is None and contracts.prob_column(name) not in first.columns:
        reason = "not scored by crs train"
    if reason is None and name in SCORE_BASELINES and first[contracts.score_column(name)].isna().all():
        reason = f"no '{SCORE_BASELINES[name]}' values at this landmark"
    return reason


def _paired_repeats(rows: pd.DataFrame, source: str | Path) -> list[pd.DataFrame]:
    """Rows of each CV repeat, in the same (patient, landmark) order (train sorts them identically)."""
    by_repeat = [rows[rows["repeat"] == r].reset_index(drop=True) for r in sorted(rows["repeat"].unique())]
    for other in by_repeat[1:]:
        if not other[contracts.PATIENT_ID].equals(by_repeat[0][contracts.PATIENT_ID]):
            raise UserError(f"{source}: repeats do not cover the same rows; rerun `crs train`")
    return by_repeat


def evaluate_rows(
    rows: pd.DataFrame,
    baselines: dict[str, str | None],
    n_bootstrap: int,
    seed: int,
    source: str | Path = "out-of-fold predictions",
) -> dict[str, Any]:
    """metrics.json entry for one target and landmark (or all landmarks pooled).

    ``baselines``: baseline name -> why it is unavailable (None or absent: available); ``source`` names
    the OOF file in errors.
    """
    first = rows[rows["repeat"] == rows["repeat"].min()]
    n, events = len(first), int(first["label"].sum())
    if events < MIN_EVENTS or n - events < MIN_EVENTS:
        return {
            "skipped": f"{events} events and {n - events} non-events; need at least {MIN_EVENTS} of each",
            "n": n,
            "events": events,
        }
    by_repeat = _paired_repeats(rows, source)
    first = by_repeat[0]
    patients = first[contracts.PATIENT_ID].to_numpy()
    boot = M.patient_bootstrap_counts(patients, n_bootstrap, seed) if n_bootstrap > 0 else None
    ys = [d["label"].to_numpy(dtype=float) for d in by_repeat]
    folds = [d["fold"].to_numpy() for d in by_repeat]

    def scorer(name: str) -> dict[str, Any]:
        ps = [d[contracts.prob_column(name)].to_numpy(dtype=float) for d in by_repeat]
        thrs = [d[contracts.threshold_column(name)].to_numpy(dtype=float) for d in by_repeat]
        return score_metrics(ys, ps, thrs, folds, boot)

    entry: dict[str, Any] = {"n": n, "events": events, "model": scorer(contracts.MODEL), "baselines": {}}
    for name in BASELINES:
        reason = _unavailable(name, first, baselines)
        if reason is not None:
            entry["baselines"][name] = {"unavailable": reason}
            continue
        result = scorer(name)
        if name in SCORE_BASELINES:
            # Missing scores were imputed with the training-fold median; say how many.
            result["missing_fraction"] = rounded(float(first[contracts.score_column(name)].isna().mean()))
        entry["baselines"][name] = result
    return entry


def baseline_reasons(metadata: dict[str, Any] | None) -> dict[str, str | None]:
    """Baseline name -> why it is unavailable (None: available), from a target's ``metadata.json``."""
    return {
        name: (None if info.get("available") else info.get("reason", "unavailable"))
        for name, info in (metadata or {}).get("baselines", {}).items()
    }


def target_skip_reason(metadata: dict[str, Any] | None) -> str:
    """Why a target has no out-of-fold rows, from its ``metadata.json`` (None: no metadata file)."""
    if metadata is not None and "skipped" in metadata:
        return f"not trained: {metadata['skipped']}"
    return "no out-of-fold predictions for this target (rerun `crs train`)"


def compute_metrics(
    oof: pd.DataFrame, config: Config, metadata_by_target: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The whole metrics.json: target -> landmark key (and "all") -> entry."""
    cfg = config.train
    out: dict[str, Any] = {}
    keys = [(landmark_key(h), h) for h in config.landmarks_hours] + [(ALL_LANDMARKS, None)]
    for t_index, target in enumerate(config.targets):
        sub = oof[oof["target"] == target]
        metadata = metadata_by_target.get(target)
        out[target] = {}
        if sub.empty:
            reason = target_skip_reason(metadata)
            out[target] = {key: {"skipped": reason, "n": 0, "events": 0} for key, _ in keys}
            continue
        reasons = baseline_reasons(metadata)
        for k_index, (key, hours) in enumerate(keys):
            rows = sub if hours is None else sub[sub[contracts.LANDMARK_HOURS] == hours]
            if rows.empty:
                out[target][key] = {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}
                continue
            # Seed per (target, landmark): results do not depend on which other targets are evaluated.
            seed = cfg.seed * 1009 + t_index * 101 + k_index
            out[target][key] = evaluate_rows(rows, reasons, cfg.n_bootstrap, seed, config.paths.oof)
    return out
