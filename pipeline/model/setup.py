"""The scoring setup: a loaded model plus the settings that turn raw records into its features.

The settings (landmarks, static features, featurize options, targets, risk bands) are stored with a
registered model (:func:`scoring_config`) and win over local params when it is loaded
(:func:`merge_scoring_config`), so a model is always scored with the features it was trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import LandmarkFeaturizer, landmark_matrix
from features.covariates import (
    CovariateReference,
    Harmonised,
    default_covariate_tables,
    harmonise,
    model_covariates,
)
from features.definitions import feature_stem
from pipeline.config import Config, landmark_key, parse_config
from pipeline.errors import UserError
from pipeline.model.scorer import ModelBundle, TargetModel, risk_band
from pipeline.model.specs import FeatureSpec

#: Registered scoring settings (featurize + bands) that travel with an MLflow model.
SCORING_CONFIG_FILE = "scoring_config.json"


def model_analytes(bundle: ModelBundle, config: Config) -> list[str]:
    """The analytes a model was trained on: recorded with the model, else the params' explicit list.

    Never chosen again at scoring time: ``featurize.analytes: auto`` picks from a whole cohort, and one
    new patient is not a cohort.
    """
    if bundle.analytes is not None:
        return bundle.analytes
    if not isinstance(config.featurize.analytes, str):
        return list(config.featurize.analytes)
    raise UserError(f"{bundle.directory}: the model does not record its analytes (trained by an older version); "
                    "retrain, or set featurize.analytes to the list it was trained with")


def is_simulated_cohort(cohort_path: str) -> bool:
    """A model trained on ``crs simulate`` output (its ``truth.json`` beside it, or the default path)."""
    return (Path(cohort_path) / "truth.json").exists() or "synthetic" in str(cohort_path)


def trained_on_simulated(bundle: ModelBundle) -> bool:
    """Whether the bundle's models were trained on a simulated cohort (from their recorded cohort path)."""
    paths = {str(m.metadata.get("cohort_path", "")) for m in bundle.targets.values()}
    return any(p and is_simulated_cohort(p) for p in paths)


def model_covariate_reference(bundle: ModelBundle) -> CovariateReference | None:
    """The covariate reference a model was trained with (None: trained before harmonisation existed,
    so its covariates are used as the cohort gives them)."""
    for model in bundle.targets.values():
        if "covariate_reference" in model.metadata:
            return CovariateReference.from_json(model.metadata["covariate_reference"])
    return None


def scoring_config(config: Config) -> dict[str, Any]:
    """The parts of params that scoring depends on (stored with the model)."""
    dump = json.loads(config.model_dump_json())
    return {
        "landmarks_hours": dump["landmarks_hours"],
        "static_features": dump["static_features"],
        "targets": dump["targets"],
        "featurize": {k: v for k, v in dump["featurize"].items() if k != "output_path"},
        "report": {k: dump["report"][k] for k in ("bands", "band_low_below", "band_high_from", "top_drivers")},
        # Where grades came from at training: new patients' grade features are graded the same way.
        "cohort": {k: dump["cohort"][k] for k in ("grades", "grading_scale")},
        "grading": dump["grading"],
    }


def merge_scoring_config(base: Config, stored: Mapping[str, Any]) -> Config:
    """``base`` params with the model's stored scoring settings on top (features must match training)."""
    dump = json.loads(base.model_dump_json())
    for key in ("landmarks_hours", "static_features", "targets"):
        dump[key] = stored[key]
    dump["featurize"].update(stored["featurize"])
    dump["report"].update(stored["report"])
    dump["cohort"].update(stored.get("cohort", {}))  # models from before grading: the local params
    dump["grading"].update(stored.get("grading", {}))
    return parse_config(dump, Path(SCORING_CONFIG_FILE))


@dataclass
class ScoringSetup:
    """A loaded model plus the featurize settings and risk bands it is scored with."""

    bundle: ModelBundle
    config: Config
    source: str

    def __post_init__(self) -> None:
        self.targets: list[str] = list(self.bundle.targets)
        first = self.bundle.targets[self.targets[0]]
        self.specs: list[FeatureSpec] = first.specs
        #: The categorical features (every request checks their values; ~400 specs were walked each time).
        self.category_specs: list[FeatureSpec] = [spec for spec in self.specs if spec.dtype == "category"]
        # One matrix serves every target when they share the feature list (they do unless retrained apart).
        self.shared_specs = all(t.specs == self.specs for t in self.bundle.targets.values())
        features = {s.name for t in self.bundle.targets.values() for s in t.specs}
        #: The analytes the model was trained on, and those of them with a feature in the model.
        self.analytes: list[str] = model_analytes(self.bundle, self.config)
        self.key_analytes: list[str] = [
            code for code in self.analytes if any(f.startswith(f"{feature_stem(code)}__") for f in features)
        ]
        trained = sorted({float(h) for t in self.bundle.targets.values() for h in t.metadata.get("landmarks_hours", [])})
        self.trained_landmarks: list[float] = trained or list(self.config.landmarks_hours)
        self.per_landmark = any("all" not in t.models for t in self.bundle.targets.values())
        #: Fixed at training; None for a model trained without harmonised covariates.
        self.covariate_reference = model_covariate_reference(self.bundle)
        self.simulated = trained_on_simulated(self.bundle)
        self._featurizers: dict[tuple[float, ...], Any] = {}
        self._specs: dict[tuple[float, ...], Any] = {}
        self._checked = False

    @property
    def harmonising(self) -> bool:
        """Whether the model was trained on harmonised covariates (else its static columns are the cohort's)."""
        return self.covariate_reference is not None

    def harmonise(self, patients: pd.DataFrame) -> Harmonised:
        """The patients table with the model's harmonised covariates (its stored reference), once per
        request: :meth:`featurizer` expects patients harmonised by this."""
        if not self.harmonising:
            return Harmonised(patients, pd.DataFrame(columns=["patient_id", "covariate", "reason"]))
        return harmonise(patients, list(self.config.static_features), default_covariate_tables(),
                         self.covariate_reference)

    def featurizer(self, landmarks_hours: Sequence[float]) -> LandmarkFeaturizer:
        """The featurizer at these landmarks, for patients already passed through :meth:`harmonise` (its
        static columns are the model's, so nothing is harmonised twice on the per-patient hot path)."""
        key = tuple(sorted({float(h) for h in landmarks_hours}))
        if key not in self._featurizers:
            fz = LandmarkFeaturizer.from_config(self.config)
            static = model_covariates(self.config.static_features) if self.harmonising else self.config.static_features
            fz.set_params(landmarks_hours=list(key), analytes=list(self.analytes), harmonise_covariates=False,
                          static_features=list(static))
            self._featurizers[key] = fz
        return self._featurizers[key]

    def featurize(self, tables: Mapping[str, pd.DataFrame | None], landmarks_hours: Sequence[float]) -> pd.DataFrame:
        """The landmark matrix of ``tables`` (patients passed through :meth:`harmonise`) at these landmarks:
        what ``featurizer(...).fit(tables).transform(tables)`` gives, without refitting what the model fixes
        (its analytes, hence no coverage table per request). The static categories are learnt from the
        request's patients, as ``fit`` does; nothing shared is modified (thread-safe)."""
        key = tuple(sorted({float(h) for h in landmarks_hours}))
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = self.featurizer(key).spec()
        return landmark_matrix(tables, spec)

    def check_features(self, landmarks: pd.DataFrame) -> None:
        """Every model feature must come out of featurize; otherwise params differ from training."""
        if self._checked:
            return
        absent = [s.name for t in self.bundle.targets.values() for s in t.specs if s.name not in landmarks.columns]
        if absent:
            shown = ", ".join(sorted(set(absent))[:5])
            raise UserError(
                f"{self.source}: the model uses features that featurize does not produce with these params "
                f"({shown}); score with the params the model was trained with"
            )
        self._checked = True

    def validate_at(self, at_hours: float | None) -> None:
        if at_hours is None:
            return
        if not math.isfinite(at_hours):
            raise UserError(f"--at {at_hours}: not a number of hours")
        low, high = self.trained_landmarks[0], self.trained_landmarks[-1]
        if self.per_landmark and not any(math.isclose(at_hours, h) for h in self.trained_landmarks):
            shown = ", ".join(landmark_key(h) for h in self.trained_landmarks)
            raise UserError(f"--at {at_hours:g}: the model has one model per landmark; use one of {shown} h")
        if not low <= at_hours <= high:
            raise UserError(
                f"--at {at_hours:g}: outside the landmarks the model was trained on "
                f"({landmark_key(low)}-{landmark_key(high)} h)"
            )

    def bands(self, probability: np.ndarray, targets: np.ndarray, landmark_hours: np.ndarray) -> np.ndarray:
        """Risk band per row (of ``targets`` at ``landmark_hours``): see :func:`band_cutoffs`."""
        low, high = band_cutoffs(self.bundle.targets, self.config, np.asarray(targets),
                                 np.asarray(landmark_hours, dtype=float))
        return risk_band(probability, low, high)


def band_cutoffs(models: Mapping[str, TargetModel], config: Config, targets: np.ndarray, landmark_hours: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the band cut-offs: the target model's validated ones at that landmark (``report.bands:
    validated``, the default), else the fixed ``report.band_low_below`` / ``band_high_from``."""
    low = np.full(len(targets), config.report.band_low_below)
    high = np.full(len(targets), config.report.band_high_from)
    if config.report.bands != "validated":
        return low, high
    for target, model in models.items():
        rows = np.flatnonzero(targets == target)
        cut = model.band_cutoffs(landmark_hours[rows]) if len(rows) else None
        if cut is not None:
            ok = np.isfinite(cut[0]) & np.isfinite(cut[1])
            low[rows[ok]], high[rows[ok]] = cut[0][ok], cut[1][ok]
    return low, high
