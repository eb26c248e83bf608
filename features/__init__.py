"""Kinetic feature library: long measurement table -> leakage-safe landmark feature matrix.

Pure functions and one sklearn-style transformer; no file I/O, no MLflow, no CLI.

* :func:`feature_table` — every feature with its description and unit (the declarative table).
* :func:`landmark_matrix` — the landmark matrix from the ingest tables (what ``crs featurize`` runs).
* :class:`LandmarkFeaturizer` — the same, as an sklearn-style transformer for notebooks.
* :func:`cut_at_landmark` — the single cut at L every feature goes through.
* :mod:`features.scores` — EASIX, m-EASIX, CAR-HEMATOTOX.
"""

from features.definitions import DERIVED, SUMMARIES, TREATMENT_CLASSES, feature_table
from features.errors import FeatureError
from features.landmarks import LandmarkSpec, Target, cut_at_landmark, landmark_matrix


def __getattr__(name: str) -> object:
    # The transformer needs scikit-learn (about a second to import); stages that only cut and
    # summarise (grade, featurize) should not pay for it on every start.
    if name == "LandmarkFeaturizer":
        from features.transformer import LandmarkFeaturizer

        return LandmarkFeaturizer
    raise AttributeError(f"module 'features' has no attribute {name!r}")

__all__ = [
    "FeatureError",
    "DERIVED",
    "SUMMARIES",
    "TREATMENT_CLASSES",
    "LandmarkFeaturizer",
    "LandmarkSpec",
    "Target",
    "cut_at_landmark",
    "feature_table",
    "landmark_matrix",
]
