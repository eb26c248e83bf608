"""Patient-grouped, stratified splits: outer cross-validation folds and the inner calibration hold-out."""

from __future__ import annotations

import warnings

import numpy as np

from pipeline.config import TrainConfig
from pipeline.errors import UserError


def grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple]:
    """StratifiedGroupKFold splits, with n_splits reduced to what the event count allows."""
    from sklearn.model_selection import StratifiedGroupKFold

    pos_groups = len(np.unique(groups[y == 1]))
    neg_groups = len(np.unique(groups[y == 0]))
    k = min(n_splits, pos_groups, neg_groups)
    if k < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" chatter
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))


def inner_holdout(
    y: np.ndarray, groups: np.ndarray, cfg: TrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Grouped, stratified split of a *training fold* into a fitting part and a calibration part
    (``calibration_fraction`` of its patients); None when there are too few events to split."""
    n_parts = max(2, round(1 / cfg.calibration_fraction))
    splits = grouped_splits(y, groups, n_parts, seed)
    return splits[0] if splits else None


def n_repeats(cfg: TrainConfig, n_patients: int) -> int:
    """The configured outer repeats, or for ``auto`` 2 below ``repeat_twice_below_patients`` patients, else 1."""
    if cfg.n_repeats != "auto":
        return int(cfg.n_repeats)
    return 2 if n_patients < cfg.repeat_twice_below_patients else 1


def outer_splits(y: np.ndarray, groups: np.ndarray, cfg: TrainConfig) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(repeat, fold, train rows, test rows): a new shuffle seed per repeat, grouped by patient."""
    out = []
    for repeat in range(n_repeats(cfg, len(np.unique(groups)))):
        splits = grouped_splits(y, groups, cfg.n_splits, cfg.seed + 1000 * repeat)
        if not splits:
            raise UserError("too few events or non-events for cross-validation")
        out.extend((repeat, fold, tr, te) for fold, (tr, te) in enumerate(splits))
    return out


def landmark_groups(landmarks: np.ndarray, per_landmark: bool) -> list[tuple[float | None, np.ndarray]]:
    """(landmark or None, row mask) units that get their own model."""
    if not per_landmark:
        return [(None, np.ones(len(landmarks), dtype=bool))]
    return [(float(h), landmarks == h) for h in np.unique(landmarks)]
