"""Where each of a few ids sits in a list of distinct ids: ``pandas.Index.get_indexer`` builds a hash
table per call (~0.1 ms even for one id), which one new patient's scoring paid several times over."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Up to this many distinct ids, :func:`positions` looks them up in a dict.
FEW_IDS = 64


def positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position in ``ids`` of each of ``wanted`` (-1: absent), as ``pd.Index(ids, dtype=object)
    .get_indexer(wanted)`` gives it. ``ids``: distinct, non-missing values (patient id texts); repeated
    ids raise as ``get_indexer`` does (missing ones are not matched like pandas matches them)."""
    ids, wanted = np.asarray(ids, dtype=object), np.asarray(wanted, dtype=object)
    where = {v: i for i, v in enumerate(ids.tolist())} if len(ids) <= FEW_IDS else None
    if where is None or len(where) < len(ids):
        return pd.Index(ids, dtype=object).get_indexer(wanted)
    return np.fromiter((where.get(v, -1) for v in wanted.tolist()), dtype=np.intp, count=len(wanted))


def id_texts(column: pd.Series) -> np.ndarray:
    """A patient id column as ``astype(str)`` gives it, as an object array (a text column is read as is:
    converting it cost ~0.1 ms a call)."""
    if isinstance(column.dtype, pd.StringDtype):
        values = column.to_numpy(dtype=object)
        if not pd.isna(values).any():  # (a missing id is text "nan" or NaN there: the slow path below)
            return values
    return column.astype(str).to_numpy(dtype=object)


def take_or_nan(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values[at]`` as floats, NaN where ``at`` is -1 (absent): ``Series.reindex`` of :func:`positions`."""
    return np.append(np.asarray(values, dtype=float), np.nan)[at]
