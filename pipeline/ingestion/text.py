"""Vectorised text parsing with Arrow kernels: trimming, dictionary codes, plain and censored numbers.

Text (ids, analyte names, units) is handled once per distinct value, never once per row.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.cohort import MISSING_VALUE_TOKENS

NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_CENSORED = re.compile(r"^(<=|>=|<|>|≤|≥)\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")
#: Censoring codes of the measurements table: 0 none, 1 left (``<``), 2 right (``>``).
CENSORING_NAMES = ("none", "left", "right")
_CENSORING_BY_SIGN = {"<": 1, "<=": 1, "≤": 1, ">": 2, ">=": 2, "≥": 2}
#: :data:`_CENSORED` for Arrow (RE2), ASCII digits and spaces only: what it matches, ``_CENSORED`` reads alike.
_CENSORED_RE2 = r"^(?P<sign><=|>=|<|>|≤|≥)[ \t\n\r\f]*(?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)$"
#: Spellings of infinity (``inf``, ``-Infinity``): numbers, but never usable ones (``non_finite_value``).
INFINITY = r"[+-]?(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)"
#: Largest magnitude a value may have: XGBoost (and the MLflow model) read features as float32, where
#: anything larger is infinite and stops the whole scoring batch.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def beyond_float32(values: np.ndarray) -> np.ndarray:
    """Values that are infinite or too large for float32 (NaN is not: it is a missing value)."""
    with np.errstate(invalid="ignore"):
        return (values > FLOAT32_MAX) | (values < -FLOAT32_MAX)


def arrow_trim(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Trimmed text (empty stays empty: every parser downstream rejects it)."""
    trimmed = pc.utf8_trim_whitespace(values)
    return trimmed.combine_chunks() if isinstance(trimmed, pa.ChunkedArray) else trimmed


def _indices(encoded: pa.DictionaryArray) -> np.ndarray:
    """Dictionary indices as int64 with -1 for null."""
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def encode_stripped(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dictionary codes of trimmed text, -1 for empty or null, and the trimmed dictionary.

    For low-cardinality columns (ids, analyte names, units) trimming the dictionary instead of every
    row saves whole passes over millions of strings. Entries equal after trimming stay separate
    codes that carry the same text.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    texts = [text.strip() for text in encoded.dictionary.to_pylist()]
    remap = np.array([i if text else -1 for i, text in enumerate(texts)] + [-1], dtype=np.int64)
    return remap[_indices(encoded)], texts


def arrow_numbers(values: pa.Array) -> np.ndarray:
    """Plain numbers (``12``, ``-3.5``, ``1e3``) as float; NaN for anything else or null."""
    is_number = pc.fill_null(pc.match_substring_regex(values, f"^{NUMBER}$"), False)
    out = np.full(len(values), np.nan)
    mask = is_number.to_numpy(zero_copy_only=False)
    if mask.any():
        out[mask] = pc.cast(pc.filter(values, is_number), pa.float64()).to_numpy(zero_copy_only=False)
    return out


def missing_values(value_text: pa.Array) -> np.ndarray:
    """Rows whose trimmed value text is null or a "no result" token (``NA``, ``null``, ``.``...)."""
    lowered = pc.utf8_lower(value_text)
    missing = pc.or_(pc.is_null(value_text), pc.is_in(lowered, value_set=pa.array(sorted(MISSING_VALUE_TOKENS))))
    return pc.fill_null(missing, True).to_numpy(zero_copy_only=False)


def parse_censored(value_text: pa.Array, rows: np.ndarray, values: np.ndarray, censoring: np.ndarray) -> None:
    """Fill ``values`` (the bound, NaN if unparseable) and ``censoring`` for ``rows`` like ``<1.5``.

    Arrow's RE2 reads the plain forms; what it cannot (Unicode digits or spaces, a trailing newline)
    goes through the Python expression :data:`_CENSORED`, which reads the plain forms alike.
    """
    idx = np.flatnonzero(rows)
    text = value_text.take(pa.array(idx))
    parts = pc.extract_regex(pc.replace_substring(text, " ", ""), _CENSORED_RE2)
    matched = pc.is_valid(parts).to_numpy(zero_copy_only=False)
    if matched.any():
        found = parts.filter(pa.array(matched))
        signs = pc.index_in(pc.struct_field(found, "sign"), value_set=pa.array(list(_CENSORING_BY_SIGN)))
        censoring[idx[matched]] = np.array(list(_CENSORING_BY_SIGN.values()), dtype=np.int8)[
            signs.to_numpy(zero_copy_only=False)]
        numbers = pc.struct_field(found, "number").to_pandas()  # the text dtype pandas' path parses too
        values[idx[matched]] = pd.to_numeric(numbers, errors="coerce").to_numpy(dtype=float)
    if not matched.all():
        _parse_censored_python(text.filter(pa.array(~matched)), idx[~matched], values, censoring)
    # "inf" is a number, just not a usable one: it gets non_finite_value, not unparseable_value.
    infinite = pc.fill_null(pc.match_substring_regex(text, f"^{INFINITY}$"), False).to_numpy(zero_copy_only=False)
    if infinite.any():
        negative = pc.starts_with(text.filter(pa.array(infinite)), "-").to_numpy(zero_copy_only=False)
        values[idx[infinite]] = np.where(negative, -np.inf, np.inf)


def _parse_censored_python(text: pa.Array, idx: np.ndarray, values: np.ndarray, censoring: np.ndarray) -> None:
    """The general reading of censored values (Python's regular expressions), for the rows RE2 did not read."""
    parts = text.to_pandas().str.replace(" ", "", regex=False).str.extract(_CENSORED)
    values[idx] = pd.to_numeric(parts[1], errors="coerce").to_numpy(dtype=float)
    censoring[idx] = parts[0].map(_CENSORING_BY_SIGN).fillna(0).to_numpy(dtype=np.int8)
