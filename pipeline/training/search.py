"""Nested hyperparameter search on the inner folds of one training set (Optuna TPE, fixed seed).

Search space (documented in docs/training.md): ``max_depth`` 1-4, ``learning_rate`` 0.03-0.2 (log),
``min_child_weight`` 1-30 (log), ``subsample`` 0.5-1, ``colsample_bytree`` 0.2-1, ``reg_lambda``
0.1-30 (log), and the feature set: ``all`` features or the ``simple`` summaries (last, first, max,
log(last/first) per analyte, plus covariates) when the cohort has both. The first trial is the
``train`` params as configured (clamped into the space), so the search can only replace them by something better on the
inner folds. Rounds come from early stopping; the objective is the mean held-out log-loss. The
search sees the training set only: outer test folds never inform it.
"""

from __future__ import annotations

from typing import Any

from pipeline import contracts
from pipeline.config import TrainConfig
from pipeline.model import FeatureSpec
from pipeline.training.booster import xgb_params
from pipeline.training.inner import InnerFit, InnerFolds, fit_inner


def feature_sets(specs: list[FeatureSpec]) -> dict[str, list[str]]:
    """``all`` features, and ``simple`` when it is a non-empty strict subset with analyte summaries."""
    names = [s.name for s in specs]
    simple = contracts.simple_summary_columns(names)
    sets = {"all": names}
    if any(contracts.ANALYTE_SEPARATOR in c for c in simple) and len(simple) < len(names):
        sets["simple"] = simple
    return sets


def _suggest(trial: Any, sets: dict[str, list[str]]) -> tuple[dict[str, Any], str]:
    overrides = {
        "max_depth": trial.suggest_int("max_depth", 1, 4),
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.2, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 30.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 30.0, log=True),
    }
    return overrides, trial.suggest_categorical("feature_set", sorted(sets))


def _first_trial(cfg: TrainConfig) -> dict[str, Any]:
    return {"max_depth": min(max(cfg.max_depth, 1), 4), "learning_rate": min(max(cfg.learning_rate, 0.03), 0.2),
            "min_child_weight": min(max(cfg.min_child_weight, 1.0), 30.0), "subsample": max(cfg.subsample, 0.5),
            "colsample_bytree": max(cfg.colsample_bytree, 0.2), "reg_lambda": min(max(cfg.reg_lambda, 0.1), 30.0),
            "feature_set": "all"}


def choose_candidate(folds: InnerFolds, cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> tuple[InnerFit, str]:
    """The inner fit of the chosen candidate and its feature set's name (``train.tune`` off: the
    configured params with exactly ``n_estimators`` rounds on all features)."""
    sets = feature_sets(specs)
    if not cfg.tune:
        return fit_inner(folds, xgb_params(cfg, specs, seed), cfg.n_estimators, None, ("all", sets["all"])), "all"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(_first_trial(cfg))
    fits: dict[int, tuple[InnerFit, str]] = {}

    def objective(trial: Any) -> float:
        overrides, name = _suggest(trial, sets)
        params = xgb_params(cfg, specs, seed, overrides)
        fits[trial.number] = (fit_inner(folds, params, cfg.max_rounds, cfg.early_stopping_rounds, (name, sets[name])), name)
        return fits[trial.number][0].loss

    study.optimize(objective, n_trials=cfg.n_trials)
    return fits[study.best_trial.number]
