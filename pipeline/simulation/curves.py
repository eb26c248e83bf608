"""Shape functions of the biomarker kinetics (vectorised, no randomness)."""

from __future__ import annotations

import numpy as np


def expit(values: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-values))


def pulse(hours: np.ndarray, mid_hours: np.ndarray, width_hours: np.ndarray, hold_hours: np.ndarray,
          decay_hours: np.ndarray) -> np.ndarray:
    """Share of the peak log fold change: logistic rise from 0 at infusion, plateau, exponential decay.

    The rise is already under way hours before its midpoint, so a patient's early (24-48 h) values
    carry information about a severe onset that comes later.
    """
    at_zero = expit(-mid_hours / width_hours)
    rise = np.maximum((expit((hours - mid_hours) / width_hours) - at_zero) / (1 - at_zero), 0.0)
    return rise * np.exp(-np.maximum(hours - mid_hours - hold_hours, 0.0) / decay_hours)


def soft_cap(values: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Smooth ceiling: ~identity well below cap, approaches cap above it (no pile-up at a bound)."""
    return values / np.sqrt(np.sqrt(1.0 + (values / cap) ** 4))


def fever_excess_celsius(amplitude: np.ndarray) -> np.ndarray:
    """Typical height of a CRS fever above 38.05 C for a marker amplitude: sicker patients run hotter."""
    return 0.3 * np.clip(amplitude, 0, 3)
