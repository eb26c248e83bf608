"""sklearn-style entry point for notebooks: long tables in, landmark matrix out.

>>> fz = LandmarkFeaturizer(landmarks_hours=[0, 24], analytes=["IL6", "CRP"], static_features=["age"])
>>> X = fz.fit(measurements, patients=patients).transform(measurements, patients=patients)

``pipeline.featurize.run`` uses this very class, so a notebook and the DVC stage share one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features import definitions
from features.landmarks import LandmarkSpec, StaticEncoding, Target, landmark_matrix, learn_static_encoding

Tables = Mapping[str, pd.DataFrame | None]


class LandmarkFeaturizer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Build the leakage-safe landmark matrix (one row per patient x landmark).

    Parameters mirror ``params.yaml``: ``landmarks_hours`` (hours after infusion), ``analytes``
    (canonical codes), ``baseline_window_hours``, ``horizon_hours``, ``targets`` (name ->
    ``(event, min_grade)``), ``static_features`` (patients-table columns).

    ``fit`` learns only the fixed, sorted category list of each categorical static covariate (so a
    category unseen at fit becomes missing, never a new level). ``transform`` takes the long
    ``measurements`` table (``X``) plus ``patients`` and optionally ``events`` (labels) and
    ``treatments``; ``X`` may also be a mapping holding all four tables.

    The output is already a DataFrame (with ``patient_id``, labels and onsets), so sklearn's
    ``set_output`` wrapping is switched off (``auto_wrap_output_keys=None``).
    """

    def __init__(
        self,
        landmarks_hours: Sequence[float] = (0.0, 24.0, 48.0, 72.0),
        analytes: Sequence[str] = definitions.DEFAULT_ANALYTES,
        baseline_window_hours: float = 168.0,
        horizon_hours: float = 720.0,
        targets: Mapping[str, tuple[str, int]] | None = None,
        static_features: Sequence[str] = (),
    ):
        self.landmarks_hours = landmarks_hours
        self.analytes = analytes
        self.baseline_window_hours = baseline_window_hours
        self.horizon_hours = horizon_hours
        self.targets = targets
        self.static_features = static_features

    @classmethod
    def from_config(cls, config: Any) -> LandmarkFeaturizer:
        """From a ``pipeline.config.Config`` (the stage's parameters)."""
        return cls(
            landmarks_hours=list(config.landmarks_hours),
            analytes=list(config.featurize.analytes),
            baseline_window_hours=config.featurize.baseline_window_hours,
            horizon_hours=config.featurize.horizon_hours,
            targets={name: (t.event, t.min_grade) for name, t in config.targets.items()},
            static_features=list(config.static_features),
        )

    def spec(self) -> LandmarkSpec:
        return LandmarkSpec(
            landmarks_hours=tuple(self.landmarks_hours),
            analytes=tuple(self.analytes),
            baseline_window_hours=float(self.baseline_window_hours),
            horizon_hours=float(self.horizon_hours),
            targets=tuple(Target(name, event, int(grade)) for name, (event, grade) in (self.targets or {}).items()),
            static_features=tuple(self.static_features),
        )

    @staticmethod
    def _tables(X: pd.DataFrame | Tables, **tables: pd.DataFrame | None) -> dict[str, pd.DataFrame | None]:
        if isinstance(X, Mapping):
            merged = dict(X)
            merged.update({k: v for k, v in tables.items() if v is not None})
            return merged
        return {"measurements": X, **tables}

    def fit(
        self,
        X: pd.DataFrame | Tables,
        y: Any = None,
        *,
        patients: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        treatments: pd.DataFrame | None = None,
    ) -> LandmarkFeaturizer:
        tables = self._tables(X, patients=patients, events=events, treatments=treatments)
        if tables.get("patients") is None:
            raise ValueError("LandmarkFeaturizer.fit needs the patients table")
        spec = self.spec()
        self.static_encoding_: StaticEncoding = learn_static_encoding(tables["patients"], spec.static_features)
        self.feature_names_out_ = list(
            definitions.feature_table(spec.analytes, spec.static_features, units={})["name"]
        )
        return self

    def transform(
        self,
        X: pd.DataFrame | Tables,
        *,
        patients: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        treatments: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The landmark matrix: ``patient_id``, ``landmark_hours``, features, ``label__*``, ``onset_hours__*``."""
        if not hasattr(self, "static_encoding_"):
            raise ValueError("LandmarkFeaturizer is not fitted; call fit first")
        tables = self._tables(X, patients=patients, events=events, treatments=treatments)
        return landmark_matrix(tables, self.spec(), self.static_encoding_)

    def fit_transform(self, X: pd.DataFrame | Tables, y: Any = None, **tables: pd.DataFrame | None) -> pd.DataFrame:
        return self.fit(X, y, **tables).transform(X, **tables)

    def get_feature_names_out(self, input_features: Any = None) -> list[str]:
        """Model feature columns (everything except ``patient_id``, labels and onsets)."""
        return list(self.feature_names_out_)
