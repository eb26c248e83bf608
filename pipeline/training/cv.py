"""One outer cross-validation fold (model and baselines on the same rows), and running fold tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline.config import TrainConfig
from pipeline.model import expit
from pipeline.model.specs import matrix_values
from pipeline.training.baselines import fold_baselines
from pipeline.training.crossfit import fit_procedure
from pipeline.training.data import FoldData
from pipeline.training.splits import landmark_groups

#: Column of a fold part holding the explained rows' base value (with the ``shap__*`` columns).
EXPLAIN_BASE = "base_value"


def _empty_part(te: np.ndarray, repeat: int, fold: int) -> pd.DataFrame:
    return pd.DataFrame({
        "row": te,
        "repeat": repeat,
        "fold": fold,
        C.raw_column(C.MODEL): np.nan,
        C.prob_column(C.MODEL): np.nan,
        C.threshold_column(C.MODEL): np.nan,
    })


def _model_predictions(part: pd.DataFrame, data: FoldData, cfg: TrainConfig, tr: np.ndarray, te: np.ndarray,
                       seed: int, explained: np.ndarray | None = None) -> None:
    """Model: the training procedure on the training rows (one unit per landmark, or one for all), then
    the fitted unit scores the test rows exactly as the deployed model scores new patients. Given
    ``explained`` (test rows x features + bias, NaN), also fills in that fold model's exact contributions:
    a training-cohort page explains the out-of-fold risk it shows with the model that produced it."""
    X, y = data.X, data.y
    for _, mask in landmark_groups(data.landmarks, cfg.per_landmark):
        tr_u, te_u = tr[mask[tr]], te[mask[te]]
        if len(te_u) == 0 or len(tr_u) == 0:
            continue
        where = mask[te]
        if len(np.unique(y[tr_u])) < 2:
            part.loc[where, C.prob_column(C.MODEL)] = float(np.mean(y[tr_u]))
            continue
        model = fit_procedure(X.iloc[tr_u], y[tr_u], data.groups[tr_u], data.landmarks[tr_u], cfg, data.specs, seed).model
        hours = data.landmarks[te_u]
        X_te = matrix_values(X.iloc[te_u])
        margin = model.margin(X_te)
        if explained is not None:
            explained[where] = model.contributions(X_te)
        part.loc[where, C.raw_column(C.MODEL)] = expit(margin)
        part.loc[where, C.prob_column(C.MODEL)] = model.probability(margin, hours)
        part.loc[where, C.threshold_column(C.MODEL)] = model.threshold_at(hours)


def run_fold(data: FoldData, cfg: TrainConfig, repeat: int, fold: int, tr: np.ndarray, te: np.ndarray) -> pd.DataFrame:
    """Fit model and baselines on the training rows ``tr``; predict the test rows ``te`` only. The first
    repeat also explains its test rows (what training-cohort pages show)."""
    from threadpoolctl import threadpool_limits

    part = _empty_part(te, repeat, fold)
    fold_seed = cfg.seed + 1000 * repeat + fold
    # One BLAS thread: small matrices, and spinning BLAS/OpenMP threads thrash a loaded 2-core machine.
    with threadpool_limits(limits=1):
        explained = np.full((len(te), len(data.specs) + 1), np.nan) if repeat == 0 else None
        _model_predictions(part, data, cfg, tr, te, fold_seed, explained)
        baselines = fold_baselines(data, cfg, tr, te, fold_seed)
    if explained is None:
        return pd.concat([part, baselines], axis=1)
    names = [C.shap_column(s.name) for s in data.specs] + [EXPLAIN_BASE]
    return pd.concat([part, baselines, pd.DataFrame(explained, columns=names, index=part.index)], axis=1)


def run_site_fold(data: FoldData, cfg: TrainConfig, site_index: int, tr: np.ndarray, te: np.ndarray) -> pd.DataFrame:
    """Leave-one-site-out: the model procedure (no baselines) on every other site, scoring this site."""
    from threadpoolctl import threadpool_limits

    part = _empty_part(te, -1, site_index)
    with threadpool_limits(limits=1):
        _model_predictions(part, data, cfg, tr, te, cfg.seed + 7919 * (site_index + 1))
    return part


def run_tasks(tasks: list[tuple], cfg: TrainConfig, progress: Callable[[int, int], None] | None = None
              ) -> list[Any]:
    """Run ``(function, *args)`` tasks, in worker processes when ``n_jobs > 1``; results keep task order.

    Processes (not threads): each task is seeded on its own, so results do not depend on scheduling.
    ``progress(done, total)`` is called as results arrive (in task order), for the console.
    """
    if cfg.n_jobs <= 1 or len(tasks) <= 1:
        results = (fn(*args) for fn, *args in tasks)
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=min(cfg.n_jobs, len(tasks)), backend="loky", return_as="generator")
        results = parallel(delayed(fn)(*args) for fn, *args in tasks)
    out = []
    for result in results:
        out.append(result)
        if progress is not None:
            progress(len(out), len(tasks))
    return out
