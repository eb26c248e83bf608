"""Whether (and how much) to blend the boosters with simpler models, chosen on the inner folds.

First the simple-summaries boosters (:func:`choose_simple_blend`): K boosters with the fixed, untuned
parameters of the simple-summaries reference (depth 2; learning rate x rounds 0.2 x 100 for its
0.1 x 200), cross-fitted on the same inner folds with every column outside that set missing (the
pipeline's ``max_bin``). Their log-odds enter ``(1 - s) * trees + s * simple`` at the
``train.simple_weights`` value with the lowest mean held-out log-loss (0 always a candidate). Few events
and hundreds of kinetic features make the tuned boosters' scores noisy; averaging in a low-variance
model on a handful of summaries steadies them (docs/training.md: small-cohort measurements).

Then the linear model: K L2 logistic models (:mod:`pipeline.model.linear`) are cross-fitted on the same inner folds as the
boosters, on the numeric features of the simple-summaries set (latest, first, max, log2(latest/first)
per analyte, numeric covariates, the landmark). The weight ``w`` of their log-odds in
``(1 - w) * trees + w * linear`` is the value of ``train.linear_weights`` with the lowest mean held-out
log-loss; 0 (trees only) is always a candidate, so the blend is used only where it predicts held-out
patients better. The outer test folds never inform the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import contracts as C
from pipeline.config import TrainConfig
from pipeline.model import FeatureSpec, expit
from pipeline.model.linear import LinearModel, fit_linear
from pipeline.training.baselines import SIMPLE_SUMMARIES_PARAMS
from pipeline.training.booster import xgb_params
from pipeline.training.inner import InnerFolds, fit_fixed
from pipeline.training.search import feature_sets


@dataclass
class Blend:
    weight: float
    held_out_margin: np.ndarray
    models: list[LinearModel] = field(default_factory=list)


#: Learning rate and rounds of the simple-summaries boosters (the reference: 0.1 and 200).
SIMPLE_BLEND_ETA, SIMPLE_BLEND_ROUNDS = 0.2, 100


@dataclass
class SimpleBlend:
    weight: float
    held_out_margin: np.ndarray
    boosters: list[Any] = field(default_factory=list)


def choose_simple_blend(folds: InnerFolds, tree_margin: np.ndarray, feature_set: str, specs: list[FeatureSpec],
                        cfg: TrainConfig, seed: int) -> SimpleBlend:
    """The simple-boosters weight with the lowest held-out log-loss, the blended held-out log-odds and the
    K simple boosters (none when the weight is 0, the trees already use only the simple set, or the
    cohort has no such set)."""
    sets = feature_sets(specs)
    weights = sorted({0.0, *cfg.simple_weights})
    if len(weights) == 1 or feature_set == "simple" or "simple" not in sets:
        return SimpleBlend(0.0, tree_margin)
    # The reference's depth-2 trees with its shrinkage x rounds (0.2 x 100 for 0.1 x 200: the same AUROCs
    # on the measured cohorts in half the time) and the pipeline's max_bin (half again). Not stopped early:
    # on the held-out log-loss that stops after 10-50 rounds, shrinks the scores towards the base rate
    # and, measured, blends in less.
    params = {**SIMPLE_SUMMARIES_PARAMS, "eta": SIMPLE_BLEND_ETA, "max_bin": cfg.max_bin, "seed": seed,
              "nthread": cfg.n_threads}
    constraints = xgb_params(cfg, specs, seed).get("monotone_constraints")
    if constraints:  # the user's monotone constraints bind every booster of the model (same column layout)
        params["monotone_constraints"] = constraints
    simple = fit_fixed(folds, params, SIMPLE_BLEND_ROUNDS, ("simple", sets["simple"]))
    losses = {w: _log_loss(folds.y, (1 - w) * tree_margin + w * simple.held_out_margin) for w in weights}
    best = min(weights, key=lambda w: (losses[w], w))
    if best == 0.0:
        return SimpleBlend(0.0, tree_margin)
    return SimpleBlend(best, (1 - best) * tree_margin + best * simple.held_out_margin, simple.boosters)


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
