"""Vectorised formatting of the CSV text: timestamps and numbers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EPOCH_START = np.datetime64("2021-01-04", "m")


def iso_minutes(minutes: np.ndarray) -> pa.Array:
    """Minutes since EPOCH_START -> 'YYYY-MM-DDTHH:MM:00' via day and clock lookup tables."""
    minutes = np.asarray(minutes, dtype=np.int64)
    if minutes.size == 0:
        return pa.array([], pa.string())
    day = minutes // 1440
    first_day, last_day = int(day.min()), int(day.max())
    days = EPOCH_START.astype("datetime64[D]") + np.arange(first_day, last_day + 1)
    day_text = pa.array(np.datetime_as_string(days))
    clock_text = pa.array([f"T{hour:02d}:{minute:02d}:00" for hour in range(24) for minute in range(60)])
    return pc.binary_join_element_wise(
        pc.take(day_text, pa.array(day - first_day)), pc.take(clock_text, pa.array(minutes % 1440)), ""
    )


def num_text(values: np.ndarray) -> pa.Array:
    """Already-rounded floats as shortest decimal text ('250', '12.3')."""
    return pc.cast(pa.array(np.asarray(values, dtype=float)), pa.string())


def round_by(values: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    """Round each value to its own number of decimals."""
    out = np.empty_like(values)
    for n_decimals in np.unique(decimals):  # a handful of decimal settings
        mask = decimals == n_decimals
        out[mask] = np.round(values[mask], int(n_decimals))
    return out
