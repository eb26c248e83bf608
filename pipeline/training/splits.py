"""Patient-grouped, stratified splits: outer cross-validation folds and the inner calibration hold-out."""

from __future__ import annotations

import numpy as np

from pipeline.config import TrainConfig
from pipeline.errors import UserError


def grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple]:
    """StratifiedGroupKFold splits (shuffled, ``seed``), with n_splits reduced to what the event count allows."""
    pos_groups = len(np.unique(groups[y == 1]))
    neg_groups = len(np.unique(groups[y == 0]))
    k = min(n_splits, pos_groups, neg_groups)
    if k < 2:
        return []
    fold_of_group, groups_inv = _stratified_group_folds(np.asarray(y), np.asarray(groups), k, seed)
    fold_of_row = fold_of_group[groups_inv]
    rows = np.arange(len(y))
    return [(rows[fold_of_row != i], rows[fold_of_row == i]) for i in range(k)]


def _stratified_group_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)`` assignment, fold per group
    (and each row's group), computed the same way with the same floating-point operations, so the folds are
    identical (tests/pipeline/test_splits_inner.py checks it against scikit-learn). scikit-learn evaluates
    the k candidate folds of each group one by one in Python (~0.1-0.2 s per call at 1,000 patients, and
    training calls it over a hundred times); here the k candidates are one array operation."""
    _, y_inv, y_cnt = np.unique(y, return_inverse=True, return_counts=True)
    _, groups_inv, groups_cnt = np.unique(groups, return_inverse=True, return_counts=True)
    counts = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(counts, (groups_inv, y_inv), 1)
    perm = np.arange(len(groups_cnt))
    np.random.RandomState(seed).shuffle(perm)
    counts = counts[perm]  # row j of counts is original group perm[j]
    order = np.argsort(-np.std(counts, axis=1), kind="stable")
    per_fold = np.zeros((k, len(y_cnt)))
    fold_of_shuffled = np.empty(len(perm), dtype=np.int64)
    diagonal = np.arange(k)
    for j in order:
        candidates = np.broadcast_to(per_fold, (k, *per_fold.shape)).copy()
        candidates[diagonal, diagonal] += counts[j]
        evaluation = np.mean(np.std(candidates / y_cnt.reshape(1, 1, -1), axis=1), axis=1)
        best = _best_fold(evaluation, per_fold.sum(axis=1))
        per_fold[best] += counts[j]
        fold_of_shuffled[j] = best
    fold_of_group = np.empty_like(fold_of_shuffled)
    fold_of_group[perm] = fold_of_shuffled
    return fold_of_group, groups_inv


def _best_fold(evaluation: np.ndarray, samples: np.ndarray) -> int:
    """scikit-learn's rule: the lowest evaluation; among (numerically) equal ones, the fewest samples."""
    best, min_eval, min_samples = 0, np.inf, np.inf
    for i, (value, n) in enumerate(zip(evaluation.tolist(), samples.tolist(), strict=True)):
        close = min_eval != np.inf and abs(value - min_eval) <= 1e-8 + 1e-5 * abs(min_eval)  # np.isclose
        if value < min_eval or (close and n < min_samples):
            best, min_eval, min_samples = i, value, n
    return best


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
