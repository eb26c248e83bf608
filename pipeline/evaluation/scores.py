"""metrics.json: every metric of the model and its baselines per target and landmark, from the OOF table.

Repeats: every metric is computed within each CV repeat (each row predicted exactly once) and then
averaged over repeats. The AUROC CI is a patient-level percentile bootstrap: patients are resampled
with replacement (all their landmark rows with them); each replicate's AUROC is the mean over repeats.
The same replicates give the paired CI of model minus baseline AUROC, and the CIs of calibration slope,
intercept and net benefit (weighted fits, :func:`pipeline.metrics.bootstrap_calibration`).

Published scores are ranked by their raw value (``score__<name>``) in their published direction, not
by the per-fold recalibrated probability (a fold whose fitted slope is negative would reverse them);
a missing raw score is ranked at the median of the observed raw values of the target's rows (a
label-free constant). The recalibrated probability still gives Brier, calibration, net benefit and
the classification at the fold threshold.
Pure functions of frames and plain dicts; the schema is public (docs/training.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts
from pipeline import metrics as M
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.model.baselines import BASELINES, SCORE_BASELINES
from pipeline.model.guards import small_data_warning

ALL_LANDMARKS = "all"
MIN_EVENTS = 5  # fewer events (or non-events) than this at a landmark: reported as skipped
DIGITS = 4  # rounding in metrics.json: stable, readable diffs in `dvc metrics diff`
#: Key order of one scorer's entry in metrics.json.
SCORER_KEYS = ("auroc", "auroc_ci", "auprc", "brier", "calibration_slope", "calibration_intercept",
               "sensitivity", "specificity", "ppv", "npv", "threshold", "net_benefit")
#: Keys added after SCORER_KEYS (patient-bootstrap percentile CIs).
CI_KEYS = ("calibration_slope_ci", "calibration_intercept_ci", "net_benefit_ci")
#: Bootstrap replicates behind the calibration slope / intercept CIs: the first this many of the
#: ``n_bootstrap`` patient resamples (each needs a weighted logistic fit per repeat; AUROC and net-benefit
#: CIs use all of them).
CALIBRATION_BOOTSTRAP = 200


def rounded(value: float | None) -> float | None:
    """Round for metrics.json; NaN (undefined) becomes null."""
    return M.json_number(value, DIGITS)


def _nb_key(pt: float) -> str:
    return f"{pt:.2f}"


@dataclass(frozen=True)
class Scorer:
    """One scorer's columns in each repeat: probabilities ``p`` (Brier, calibration, net benefit,
    classification), what AUROC/AUPRC rank (``rank``: the probability, or a published score's raw
    value) and the fold thresholds ``thr``."""

    p: list[np.ndarray]
    rank: list[np.ndarray]
    thr: list[np.ndarray]


def _repeat_metrics(y: np.ndarray, p: np.ndarray, rank: np.ndarray, thr: np.ndarray, fold: np.ndarray
                    ) -> dict[str, float]:
    """Point metrics of one scorer within one CV repeat."""
    slope, intercept = M.calibration_slope_intercept(y, p)
    # Each row was judged by its own fold's threshold (at its landmark): report the mean over folds of
    # each fold's mean threshold (within one landmark, a fold has one threshold).
    fold_thresholds = pd.Series(thr).groupby(fold).mean().to_numpy(dtype=float)
    return {
        "auroc": M.auroc(y, rank),
        "auprc": M.auprc(y, rank),
        "brier": M.brier(y, p),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        **M.classification_at_threshold(y, p, thr),
        "threshold": float(np.nanmean(fold_thresholds)) if np.isfinite(fold_thresholds).any() else math.nan,
    }


def _ci(values: np.ndarray) -> list[float | None]:
    lo, hi = M.percentile_ci(values)
    return [rounded(lo), rounded(hi)]


def _bootstrap_entries(ys: list[np.ndarray], scorer: Scorer, boot: tuple[np.ndarray, np.ndarray] | None
                       ) -> tuple[dict[str, Any], np.ndarray | None]:
    """CI entries of one scorer and its AUROC per bootstrap replicate (mean over repeats).

    The same resampled patients serve every repeat and scorer (paired); calibration CIs use the first
    :data:`CALIBRATION_BOOTSTRAP` replicates (each is a weighted logistic fit per repeat).
    """
    empty = [None, None]
    if boot is None:
        return {"auroc_ci": empty, "calibration_slope_ci": empty, "calibration_intercept_ci": empty,
                "net_benefit_ci": {_nb_key(pt): empty for pt in M.NET_BENEFIT_THRESHOLDS}}, None
    codes, counts = boot
    aurocs = np.mean([M.grouped_auroc_matrix(y, r, codes, counts) for y, r in zip(ys, scorer.rank, strict=True)],
                     axis=0)
    nb = np.mean([M.bootstrap_net_benefit(y, p, codes, counts) for y, p in zip(ys, scorer.p, strict=True)], axis=0)
    fits = [M.bootstrap_calibration(y, p, codes, counts[:CALIBRATION_BOOTSTRAP])
            for y, p in zip(ys, scorer.p, strict=True)]
    slopes = np.mean([f[0] for f in fits], axis=0)
    intercepts = np.mean([f[1] for f in fits], axis=0)
    entries = {
        "auroc_ci": _ci(aurocs),
        "calibration_slope_ci": _ci(slopes),
        "calibration_intercept_ci": _ci(intercepts),
        "net_benefit_ci": {_nb_key(pt): _ci(nb[:, k]) for k, pt in enumerate(M.NET_BENEFIT_THRESHOLDS)},
    }
    return entries, aurocs


def _scorer_entry(ys: list[np.ndarray], scorer: Scorer, folds: list[np.ndarray],
                  boot: tuple[np.ndarray, np.ndarray] | None) -> tuple[dict[str, Any], float, np.ndarray | None]:
    """One scorer's metrics.json entry, its unrounded mean AUROC and its AUROC per bootstrap replicate."""
    per_repeat = [_repeat_metrics(y, p, r, thr, fold)
                  for y, p, r, thr, fold in zip(ys, scorer.p, scorer.rank, scorer.thr, folds, strict=True)]
    out: dict[str, Any] = {}
    for key in per_repeat[0]:
        values = np.array([r[key] for r in per_repeat], dtype=float)
        out[key] = rounded(float(np.nanmean(values))) if np.isfinite(values).any() else None
    nb = np.mean([M.net_benefit(y, p) for y, p in zip(ys, scorer.p, strict=True)], axis=0)
    out["net_benefit"] = {_nb_key(pt): rounded(v) for pt, v in zip(M.NET_BENEFIT_THRESHOLDS, nb, strict=True)}
    ci_entries, aurocs = _bootstrap_entries(ys, scorer, boot)
    out.update(ci_entries)
    mean_auroc = np.array([r["auroc"] for r in per_repeat], dtype=float)
    point = float(np.nanmean(mean_auroc)) if np.isfinite(mean_auroc).any() else math.nan
    return {k: out[k] for k in (*SCORER_KEYS, *CI_KEYS)}, point, aurocs


def score_metrics(
    y_by_repeat: list[np.ndarray],
    p_by_repeat: list[np.ndarray],
    thr_by_repeat: list[np.ndarray],
    fold_by_repeat: list[np.ndarray],
    boot: tuple[np.ndarray, np.ndarray] | None,
    rank_by_repeat: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Metrics of one scorer on one row set, averaged over repeats (see module docstring); AUROC and AUPRC
    rank ``rank_by_repeat`` when given (a published score's raw value), else the probabilities."""
    scorer = Scorer(p_by_repeat, rank_by_repeat if rank_by_repeat is not None else p_by_repeat, thr_by_repeat)
    return _scorer_entry(y_by_repeat, scorer, fold_by_repeat, boot)[0]


def _difference(estimate: float, model: np.ndarray | None, baseline: np.ndarray | None) -> dict[str, Any]:
    """Model minus baseline AUROC on the same rows: estimate and paired patient-bootstrap percentile CI."""
    ci = _ci(model - baseline) if model is not None and baseline is not None else [None, None]
    return {"estimate": rounded(estimate), "ci": ci}


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


def _scorer(by_repeat: list[pd.DataFrame], name: str, median: float | None) -> Scorer:
    """A scorer's columns; with ``median``, AUROC ranks the raw ``score__<name>`` (missing at ``median``)."""
    p = [d[contracts.prob_column(name)].to_numpy(dtype=float) for d in by_repeat]
    thr = [d[contracts.threshold_column(name)].to_numpy(dtype=float) for d in by_repeat]
    if median is None:
        return Scorer(p, p, thr)
    raw = [d[contracts.score_column(name)].to_numpy(dtype=float) for d in by_repeat]
    return Scorer(p, [np.where(np.isfinite(r), r, median) for r in raw], thr)


def score_medians(rows: pd.DataFrame) -> dict[str, float]:
    """Median of each published score's observed raw values over ``rows`` (one target, all landmarks):
    the label-free rank given to a missing raw score."""
    first = rows[rows["repeat"] == rows["repeat"].min()]
    out = {}
    for name in SCORE_BASELINES:
        col = contracts.score_column(name)
        values = first[col].to_numpy(dtype=float) if col in first.columns else np.empty(0)
        if np.isfinite(values).any():
            out[name] = float(np.nanmedian(values))
    return out


def evaluate_rows(
    rows: pd.DataFrame,
    baselines: dict[str, str | None],
    n_bootstrap: int,
    seed: int,
    source: str | Path = "out-of-fold predictions",
    medians: dict[str, float] | None = None,
) -> dict[str, Any]:
    """metrics.json entry for one target and landmark (or all landmarks pooled).

    ``baselines``: baseline name -> why it is unavailable (None or absent: available); ``source`` names
    the OOF file in errors; ``medians``: rank of a missing raw score per published score (default:
    :func:`score_medians` of ``rows``).
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
    medians = score_medians(rows) if medians is None else medians
    patients = first[contracts.PATIENT_ID].to_numpy()
    boot = M.patient_bootstrap_counts(patients, n_bootstrap, seed) if n_bootstrap > 0 else None
    ys = [d["label"].to_numpy(dtype=float) for d in by_repeat]
    folds = [d["fold"].to_numpy() for d in by_repeat]
    model, model_auroc, model_boot = _scorer_entry(ys, _scorer(by_repeat, contracts.MODEL, None), folds, boot)
    entry: dict[str, Any] = {"n": n, "events": events, "model": model, "baselines": {}}
    for name in BASELINES:
        reason = _unavailable(name, first, baselines)
        if reason is not None:
            entry["baselines"][name] = {"unavailable": reason}
            continue
        is_score = name in SCORE_BASELINES
        scorer = _scorer(by_repeat, name, medians.get(name, math.nan) if is_score else None)
        result, auroc, boot_aurocs = _scorer_entry(ys, scorer, folds, boot)
        if is_score:  # raw score missing: ranked at the median, recalibrated with the training-fold median
            result["missing_fraction"] = rounded(float(first[contracts.score_column(name)].isna().mean()))
        result["auroc_difference"] = _difference(model_auroc - auroc, model_boot, boot_aurocs)
        entry["baselines"][name] = result
    return entry


def baseline_reasons(metadata: dict[str, Any] | None, landmark: str | None = None) -> dict[str, str | None]:
    """Baseline name -> why it is unavailable (None: available), from a target's ``metadata.json``; at
    ``landmark`` (a landmark key) also where a fitted baseline had no inputs (``unavailable_at``)."""
    out = {}
    for name, info in (metadata or {}).get("baselines", {}).items():
        reason = None if info.get("available") else info.get("reason", "unavailable")
        out[name] = reason if reason is not None or landmark is None else info.get("unavailable_at", {}).get(landmark)
    return out


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
        medians = score_medians(sub)
        for k_index, (key, hours) in enumerate(keys):
            rows = sub if hours is None else sub[sub[contracts.LANDMARK_HOURS] == hours]
            if rows.empty:
                out[target][key] = {"skipped": "no rows at risk at this landmark", "n": 0, "events": 0}
                continue
            # Seed per (target, landmark): results do not depend on which other targets are evaluated.
            seed = cfg.seed * 1009 + t_index * 101 + k_index
            reasons = baseline_reasons(metadata, None if hours is None else key)
            out[target][key] = evaluate_rows(rows, reasons, cfg.n_bootstrap, seed, config.paths.oof, medians)
        if ALL_LANDMARKS in out[target] and "skipped" not in out[target][ALL_LANDMARKS]:
            # The small-data flag `crs train` recorded (text, or null): also on the model card.
            out[target][ALL_LANDMARKS]["small_data"] = small_data_warning(target, (metadata or {}).get("small_data"))
            loso = (metadata or {}).get("leave_one_site_out")
            if loso:  # internal-external validation (TRIPOD+AI): the procedure trained without each site
                out[target][ALL_LANDMARKS]["leave_one_site_out"] = loso["sites"]
    return out
