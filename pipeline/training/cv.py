"""One outer cross-validation fold (model and baselines on the same rows), and running fold tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline import contracts as C
from pipeline.config import TrainConfig
from pipeline.model import LOGISTIC_BASELINE, SCORE_BASELINES
from pipeline.training.baselines import fit_logistic_fold, score_baseline_fold
from pipeline.training.booster import predict_booster
from pipeline.training.calibrated import fit_calibrated_model
from pipeline.training.data import FoldData
from pipeline.training.splits import landmark_groups


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
                       seed: int) -> None:
    """Model: one per landmark unit (or one for all), fitted on training-fold rows only."""
    X, y, groups = data.X, data.y, data.groups
    for _, mask in landmark_groups(data.landmarks, cfg.per_landmark):
        tr_u, te_u = tr[mask[tr]], te[mask[te]]
        if len(te_u) == 0 or len(tr_u) == 0:
            continue
        where = mask[te]
        if len(np.unique(y[tr_u])) < 2:
            part.loc[where, C.prob_column(C.MODEL)] = float(np.mean(y[tr_u]))
            continue
        fitted = fit_calibrated_model(X.iloc[tr_u], y[tr_u], groups[tr_u], cfg, data.specs, seed)
        raw = predict_booster(fitted.booster, X.iloc[te_u], cfg.n_threads)
        part.loc[where, C.raw_column(C.MODEL)] = raw
        part.loc[where, C.prob_column(C.MODEL)] = fitted.calibrator.predict(raw)
        part.loc[where, C.threshold_column(C.MODEL)] = fitted.threshold


def _score_baselines(part: pd.DataFrame, data: FoldData, cfg: TrainConfig, tr: np.ndarray, te: np.ndarray) -> None:
    for name, col in SCORE_BASELINES.items():
        if data.available[name] is not None:
            continue
        s = data.X[col].to_numpy(dtype=float)
        prob, thr = score_baseline_fold(s[tr], data.y[tr], s[te], cfg.sensitivity_target)
        part[C.score_column(name)] = s[te]
        part[C.prob_column(name)] = prob
        part[C.threshold_column(name)] = thr


def run_fold(data: FoldData, cfg: TrainConfig, repeat: int, fold: int, tr: np.ndarray, te: np.ndarray) -> pd.DataFrame:
    """Fit model and baselines on the training rows ``tr``; predict the test rows ``te`` only."""
    from threadpoolctl import threadpool_limits

    part = _empty_part(te, repeat, fold)
    fold_seed = cfg.seed + 1000 * repeat + fold
    # One BLAS thread: small matrices, and spinning BLAS/OpenMP threads thrash a loaded 2-core machine.
    with threadpool_limits(limits=1):
        _model_predictions(part, data, cfg, tr, te, fold_seed)
        _score_baselines(part, data, cfg, tr, te)
        prob, thr = fit_logistic_fold(data.X.iloc[tr], data.y[tr], data.groups[tr], data.X.iloc[te], cfg,
                                      data.specs, fold_seed)
    part[C.prob_column(LOGISTIC_BASELINE)] = prob
    part[C.threshold_column(LOGISTIC_BASELINE)] = thr
    return part


def run_tasks(tasks: list[tuple], cfg: TrainConfig) -> list[Any]:
    """Run ``(function, *args)`` tasks, in worker processes when ``n_jobs > 1``; results keep task order.

    Processes (not threads): each task is seeded on its own, so results do not depend on scheduling.
    """
    if cfg.n_jobs <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, *args in tasks]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(cfg.n_jobs, len(tasks)), backend="loky")(delayed(fn)(*args) for fn, *args in tasks)
