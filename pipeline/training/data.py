"""What one outer fold sees: the model matrix, labels, patient groups and landmarks of one target."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.model import FeatureSpec


@dataclass(frozen=True)
class FoldData:
    """Everything one outer fold needs; picklable so folds can run in worker processes."""

    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray
    landmarks: np.ndarray
    specs: list[FeatureSpec]
    available: dict[str, str | None]
