"""Per target: rows at risk and their folds, the out-of-fold table, and the final models' files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline import metrics
from pipeline.config import Config, TrainConfig, landmark_key
from pipeline.model import FeatureSpec, apply_feature_specs, fit_calibrator
from pipeline.model.artifacts import FEATURES_FILE, METADATA_FILE, booster_from_json, booster_json, json_bytes
from pipeline.training.baselines import baseline_availability
from pipeline.training.booster import fit_booster, xgb_params
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
    final_boosters: dict[str, Any]


@dataclass
class PreparedTarget:
    target: str
    data: FoldData
    splits: list[tuple[int, int, np.ndarray, np.ndarray]]
    counts: dict[str, int]


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
    return PreparedTarget(target, data, outer_splits(y, groups, cfg), counts)


def fit_final_booster(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec]) -> bytes:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return booster_json(fit_booster(X, y, cfg, specs, cfg.seed))


def assemble_oof(prep: PreparedTarget, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Fold parts -> the out-of-fold table (docs/CONTRACTS.md), sorted by repeat, patient, landmark."""
    data = prep.data
    oof_idx = pd.concat(parts, ignore_index=True)
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


def _final_units(prep: PreparedTarget, oof: pd.DataFrame, final_jsons: dict[str, bytes], cfg: TrainConfig
                 ) -> tuple[dict[str, bytes], dict[str, Any], dict[str, Any]]:
    """Files, metadata entries and loaded (booster, calibrator) per model unit ("all" or a landmark)."""
    files: dict[str, bytes] = {}
    units: dict[str, Any] = {}
    boosters: dict[str, Any] = {}
    raw_col = C.raw_column(C.MODEL)
    for lm, mask in landmark_groups(prep.data.landmarks, cfg.per_landmark):
        key = "all" if lm is None else landmark_key(lm)
        subdir = "" if lm is None else f"landmark_{key}/"
        # Calibrator for the final booster: pooled out-of-fold raw scores of every repeat (each row
        # appears n_repeats times with equal weight); the test folds never saw their own labels.
        pooled = oof if lm is None else oof[oof[C.LANDMARK_HOURS] == lm]
        pooled = pooled[pooled[raw_col].notna()]
        raw, labels = pooled[raw_col].to_numpy(), pooled["label"].to_numpy()
        calibrator = fit_calibrator(raw, labels, cfg.calibration)
        threshold = metrics.threshold_for_sensitivity(labels, calibrator.predict(raw), cfg.sensitivity_target)
        files[f"{subdir}booster.json"] = final_jsons[key]
        files[f"{subdir}calibrator.json"] = json_bytes(calibrator.to_json())
        boosters[key] = (booster_from_json(final_jsons[key]), calibrator)
        units[key] = {
            "booster": f"{subdir}booster.json",
            "calibrator": f"{subdir}calibrator.json",
            "threshold": threshold,
            "n_rows": int(mask.sum()),
            "n_events": int(prep.data.y[mask].sum()),
        }
    return files, units, boosters


def _metadata(prep: PreparedTarget, units: dict[str, Any], config: Config, base_meta: dict[str, Any]) -> dict:
    cfg, data = config.train, prep.data
    return {
        **base_meta,
        "target_definition": config.targets[prep.target].model_dump(),
        **prep.counts,
        "landmarks_hours": [float(h) for h in np.unique(data.landmarks)],
        "horizon_hours": config.featurize.horizon_hours,
        "per_landmark": cfg.per_landmark,
        "models": units,
        "threshold_rule": f"highest calibrated probability with sensitivity >= {cfg.sensitivity_target:g} "
        "on pooled out-of-fold predictions (flag if probability >= threshold)",
        "calibration": f"{cfg.calibration}, fitted on pooled out-of-fold raw booster scores",
        "baselines": {
            name: ({"available": True} if reason is None else {"available": False, "reason": reason})
            for name, reason in data.available.items()
        },
        # n_jobs is left out: an execution setting that does not change any output byte.
        "params": json.loads(cfg.model_dump_json(exclude={"n_jobs"})),
        "xgboost_params": {k: v for k, v in xgb_params(cfg, data.specs, cfg.seed).items() if k != "verbosity"},
    }


def finish_target(
    prep: PreparedTarget,
    parts: list[pd.DataFrame],
    final_jsons: dict[str, bytes],
    config: Config,
    base_meta: dict[str, Any],
) -> TargetResult:
    """Assemble out-of-fold predictions; calibrate final boosters on pooled OOF scores; build files."""
    oof = assemble_oof(prep, parts)
    files, units, boosters = _final_units(prep, oof, final_jsons, config.train)
    files[FEATURES_FILE] = json_bytes({"features": [s.to_json() for s in prep.data.specs]})
    metadata = _metadata(prep, units, config, base_meta)
    files[METADATA_FILE] = json_bytes(metadata)
    return TargetResult(prep.target, "trained", None, oof, files, metadata, prep.data.specs, prep.data.X, boosters)


def empty_oof() -> pd.DataFrame:
    return pd.DataFrame({
        C.PATIENT_ID: pd.array([], dtype="string"),
        C.LANDMARK_HOURS: np.array([], dtype=float),
        "target": pd.array([], dtype="string"),
        "repeat": np.array([], dtype="int64"),
        "fold": np.array([], dtype="int64"),
        "label": np.array([], dtype=float),
    })
