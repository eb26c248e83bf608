"""Whether (and how much) to blend the boosters with a linear model, chosen on the inner folds.

K L2 logistic models (:mod:`pipeline.model.linear`) are cross-fitted on the same inner folds as the
boosters, on the numeric features of the simple-summaries set (latest, first, max, log2(latest/first)
per analyte, numeric covariates, the landmark). The weight ``w`` of their log-odds in
``(1 - w) * trees + w * linear`` is the value of ``train.linear_weights`` with the lowest mean held-out
log-loss; 0 (trees only) is always a candidate, so the blend is used only where it predicts held-out
patients better. The outer test folds never inform the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline import contracts as C
from pipeline.config import TrainConfig
from pipeline.model import FeatureSpec, expit
from pipeline.model.linear import LinearModel, fit_linear
from pipeline.training.inner import InnerFolds


@dataclass
class Blend:
    weight: float
    held_out_margin: np.ndarray
    models: list[LinearModel] = field(default_factory=list)


def linear_columns(specs: list[FeatureSpec]) -> list[int]:
    """Positions of the numeric simple-summaries features in the model matrix."""
    simple = set(C.simple_summary_columns([s.name for s in specs]))
    return [j for j, s in enumerate(specs) if s.dtype == "float64" and s.name in simple]


def _log_loss(y: np.ndarray, margin: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, expit(margin), labels=[0, 1]))


def choose_blend(folds: InnerFolds, tree_margin: np.ndarray, specs: list[FeatureSpec], cfg: TrainConfig,
                 seed: int) -> Blend:
    """The weight with the lowest held-out log-loss, its held-out blended log-odds and the K linear models."""
    columns = linear_columns(specs)
    weights = sorted({0.0, *cfg.linear_weights})
    if len(weights) == 1 or not columns:
        return Blend(0.0, tree_margin)
    X, y = folds.values, folds.y
    models, linear_margin = [], np.full(len(y), np.nan)
    for tr, te in folds.splits:
        model = fit_linear(X[tr], y[tr], columns, cfg.linear_C, seed)
        linear_margin[te] = model.logit(X[te])
        models.append(model)
    losses = {w: _log_loss(y, (1 - w) * tree_margin + w * linear_margin) for w in weights}
    best = min(weights, key=lambda w: (losses[w], w))
    if best == 0.0:
        return Blend(0.0, tree_margin)
    return Blend(best, (1 - best) * tree_margin + best * linear_margin, models)
