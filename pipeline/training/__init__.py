"""Training library: patient-grouped cross-validation, calibrated boosters, baselines, final models.

:mod:`.booster` (XGBoost parameters and fits), :mod:`.splits` (grouped folds), :mod:`.calibrated`
(booster + calibrator + threshold from one training fold), :mod:`.baselines` (published scores and the
logistic regression on the same folds), :mod:`.cv` (one outer fold, task running), :mod:`.final`
(out-of-fold table, final models and their files), :mod:`.tracking_log` (MLflow runs). The stage
module ``pipeline/train.py`` composes them. Imports the model layer, never the other way round.
"""
