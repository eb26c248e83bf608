"""sklearn-style entry point for notebooks: long tables in, landmark matrix out.

>>> fz = LandmarkFeaturizer(landmarks_hours=[0, 24], analytes="auto", static_features=["age"])
>>> X = fz.fit(measurements, patients=patients).transform(measurements, patients=patients)
>>> fz.analytes_            # the analytes chosen from the measurements (coverage in fz.analyte_choice_)

``pipeline.featurize.run`` uses this very class, so a notebook and the DVC stage share one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features import definitions
from features.covariates import (
    CovariateReference,
    Harmonised,
    default_covariate_tables,
    fit_covariate_reference,
    harmonise,
    model_covariates,
)
from features.errors import FeatureError
from features.landmarks import (
    LandmarkSpec,
    MeasurementKeys,
    StaticEncoding,
    Target,
    landmark_matrix,
    learn_static_encoding,
    measurement_keys,
    patient_chunks,
    patient_index,
    usable_threads,
)
from features.selection import choose_analytes

Tables = Mapping[str, pd.DataFrame | None]


class LandmarkFeaturizer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Build the leakage-safe landmark matrix (one row per patient x landmark).

    Parameters mirror ``params.yaml``: ``landmarks_hours`` (hours after infusion), ``analytes``
    (``"auto"`` or a list of codes), ``baseline_window_hours``, ``horizon_hours``, ``targets`` (name ->
    ``(event, min_grade)``), ``static_features`` (patients-table columns), ``min_coverage`` and
    ``min_patients`` (the ``"auto"`` rule), ``baseline_fallback_hours`` (the post-anchor baseline).
    With ``harmonise_covariates`` (default; tables in ``features/tables``) the static features
    ``tumor_burden``, ``dose`` and ``product`` are harmonised (:mod:`features.covariates`) against
    ``covariate_reference`` when given (a trained model's), else against one learnt at ``fit``
    (``covariate_reference_``, label-free).

    ``fit`` learns the analytes (``analytes_``; with ``"auto"`` chosen from the measurements by
    :func:`features.selection.choose_analytes`, never from labels; ``analyte_choice_`` holds every
    analyte's coverage and why it was left out) and the fixed, sorted category list of each
    categorical static covariate (so a category unseen at fit becomes missing, never a new level).
    ``transform`` takes the long
    ``measurements`` table (``X``) plus ``patients`` and optionally ``events`` (labels) and
    ``treatments``; ``X`` may also be a mapping holding all four tables. With ``chunk_patients``,
    ``transform`` builds the matrix in blocks of that many patients (the same frame, less peak memory);
    with ``n_threads`` > 1 (or ``"auto"``: the usable cores, at most 4), threads compute the features of large blocks' patient ranges at once (the
    same frame, less wall time).

    The output is already a DataFrame (with ``patient_id``, labels and onsets), so sklearn's
    ``set_output`` wrapping is switched off (``auto_wrap_output_keys=None``).
    """

    def __init__(
        self,
        landmarks_hours: Sequence[float] = (0.0, 24.0, 48.0, 72.0),
        analytes: str | Sequence[str] = "auto",
        baseline_window_hours: float = 168.0,
        horizon_hours: float = 720.0,
        targets: Mapping[str, tuple[str, int]] | None = None,
        static_features: Sequence[str] = (),
        min_coverage: float = 0.2,
        min_patients: int = 10,
        baseline_fallback_hours: float = 24.0,
        harmonise_covariates: bool = True,
        covariate_reference: CovariateReference | None = None,
        chunk_patients: int | None = None,
        result_lag_hours: Mapping[str, float] | None = None,
        n_threads: int | str = 1,
    ):
        self.landmarks_hours = landmarks_hours
        self.analytes = analytes
        self.baseline_window_hours = baseline_window_hours
        self.horizon_hours = horizon_hours
        self.targets = targets
        self.static_features = static_features
        self.min_coverage = min_coverage
        self.min_patients = min_patients
        self.baseline_fallback_hours = baseline_fallback_hours
        self.harmonise_covariates = harmonise_covariates
        self.covariate_reference = covariate_reference
        self.chunk_patients = chunk_patients
        self.result_lag_hours = result_lag_hours
        self.n_threads = n_threads

    @classmethod
    def from_config(cls, config: Any) -> LandmarkFeaturizer:
        """From a ``pipeline.config.Config`` (the stage's parameters)."""
        fz = config.featurize
        return cls(
            landmarks_hours=list(config.landmarks_hours),
            analytes=fz.analytes if isinstance(fz.analytes, str) else list(fz.analytes),
            baseline_window_hours=fz.baseline_window_hours,
            horizon_hours=fz.horizon_hours,
            targets={name: (t.event, t.min_grade) for name, t in config.targets.items()},
            static_features=list(config.static_features),
            min_coverage=fz.min_coverage,
            min_patients=fz.min_patients,
            baseline_fallback_hours=fz.baseline_fallback_hours,
            chunk_patients=fz.chunk_patients,
            result_lag_hours=dict(fz.result_lag_hours),
            n_threads=fz.n_threads,
        )

    @property
    def auto(self) -> bool:
        return isinstance(self.analytes, str)

    def spec(self) -> LandmarkSpec:
        """The landmark spec; with ``analytes="auto"`` it needs ``fit`` (it uses ``analytes_``)."""
        if self.auto and not hasattr(self, "analytes_"):
            raise ValueError('LandmarkFeaturizer(analytes="auto") is not fitted; call fit first')
        return LandmarkSpec(
            landmarks_hours=tuple(self.landmarks_hours),
            analytes=tuple(self.analytes_ if self.auto else self.analytes),
            baseline_window_hours=float(self.baseline_window_hours),
            horizon_hours=float(self.horizon_hours),
            targets=tuple(Target(name, event, int(grade)) for name, (event, grade) in (self.targets or {}).items()),
            static_features=tuple(self.model_static_features),
            baseline_fallback_hours=float(self.baseline_fallback_hours),
            result_lag_hours=tuple(sorted((self.result_lag_hours or {}).items())),
        )

    @property
    def model_static_features(self) -> list[str]:
        """The model's static columns: ``static_features``, harmonised ones expanded when harmonising."""
        if not self.harmonise_covariates:
            return list(self.static_features)
        return model_covariates(self.static_features)

    def harmonise(self, patients: pd.DataFrame) -> Harmonised:
        """The patients table with harmonised covariates (needs ``fit`` unless a reference was given)."""
        if not self.harmonise_covariates:
            return Harmonised(patients, pd.DataFrame(columns=["patient_id", "covariate", "reason"]))
        reference = self.covariate_reference or getattr(self, "covariate_reference_", None)
        if reference is None:
            raise ValueError("LandmarkFeaturizer is not fitted; call fit first")
        return harmonise(patients, list(self.static_features), default_covariate_tables(), reference)

    def _choose(self, tables: Mapping[str, pd.DataFrame | None], keys: MeasurementKeys | None) -> pd.DataFrame | None:
        if self.auto and self.analytes != "auto":
            raise ValueError(f"analytes must be 'auto' or a list of codes, not {self.analytes!r}")
        measurements = tables.get("measurements")
        if measurements is None:
            if self.auto:
                raise ValueError('LandmarkFeaturizer(analytes="auto").fit needs the measurements table')
            return None
        patient_ids = patient_index(tables["patients"])
        explicit = None if self.auto else list(self.analytes)
        return choose_analytes(
            measurements, patient_ids, max(self.landmarks_hours), self.min_coverage, self.min_patients, explicit, keys
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
        self._fit(self._tables(X, patients=patients, events=events, treatments=treatments), None)
        return self

    def _fit(self, tables: Tables, keys: MeasurementKeys | None) -> pd.DataFrame:
        """Learn from ``tables``; returns the harmonised patients table (``fit_transform`` reuses it)."""
        if tables.get("patients") is None:
            raise ValueError("LandmarkFeaturizer.fit needs the patients table")
        patients = tables["patients"]
        absent = [c for c in self.static_features if c not in patients.columns]
        if absent:
            raise FeatureError(f"static_features: column '{absent[0]}' is not in the patients table "
                               f"(columns: {', '.join(map(str, patients.columns))})")
        if self.harmonise_covariates:
            self.covariate_reference_ = self.covariate_reference or fit_covariate_reference(
                patients, default_covariate_tables())
        self.analyte_choice_: pd.DataFrame | None = self._choose(tables, keys)
        if self.auto:
            self.analytes_: list[str] = list(self.analyte_choice_.loc[self.analyte_choice_["used"], "analyte"])
        else:
            self.analytes_ = list(dict.fromkeys(a.strip().upper() for a in self.analytes))
        spec = self.spec()
        harmonised = self.harmonise(patients).patients
        self.static_encoding_: StaticEncoding = learn_static_encoding(harmonised, spec.static_features)
        self.feature_names_out_ = list(
            definitions.feature_table(spec.analytes, spec.static_features, units={})["name"]
        )
        return harmonised

    def transform(
        self,
        X: pd.DataFrame | Tables,
        *,
        patients: pd.DataFrame | None = None,
        events: pd.DataFrame | None = None,
        treatments: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The landmark matrix: ``patient_id``, ``landmark_hours``, features, ``label__*``, ``onset_hours__*``."""
        return self._transform(self._tables(X, patients=patients, events=events, treatments=treatments), None)

    def _transform(self, tables: dict[str, pd.DataFrame | None], keys: MeasurementKeys | None,
                   harmonised: pd.DataFrame | None = None) -> pd.DataFrame:
        """``transform``; ``harmonised``: the patients table already harmonised by this fit (else redone)."""
        if not hasattr(self, "static_encoding_"):
            raise ValueError("LandmarkFeaturizer is not fitted; call fit first")
        if self.harmonise_covariates and tables.get("patients") is not None:
            tables["patients"] = self.harmonise(tables["patients"]).patients if harmonised is None else harmonised
        spec = self.spec()
        size = self.chunk_patients
        threads = usable_threads(self.n_threads)
        if size is None or tables.get("patients") is None or len(tables["patients"]) <= size:
            return landmark_matrix(tables, spec, self.static_encoding_, keys, threads)
        blocks = [landmark_matrix(chunk, spec, self.static_encoding_, threads=threads)
                  for chunk in patient_chunks(tables, size)]
        return pd.concat(blocks, ignore_index=True)

    def fit_transform(self, X: pd.DataFrame | Tables, y: Any = None, **tables: pd.DataFrame | None) -> pd.DataFrame:
        """``fit(X).transform(X)``, hashing the measurements' patient ids and analyte names and harmonising
        the covariates once for both."""
        merged = self._tables(X, **tables)
        keys = None
        if merged.get("measurements") is not None and merged.get("patients") is not None:
            keys = measurement_keys(merged["measurements"], patient_index(merged["patients"]))
        harmonised = self._fit(merged, keys)
        return self._transform(merged, keys, harmonised)

    def get_feature_names_out(self, input_features: Any = None) -> list[str]:
        """Model feature columns (everything except ``patient_id``, labels and onsets)."""
        return list(self.feature_names_out_)
