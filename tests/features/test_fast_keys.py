"""The text keys of the measurements read faster (issue 14), against the Arrow hashing they replaced, on
nulls, empty strings, near-misses, categorical and object columns and tables of several Arrow chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.landmarks import (
    CENSORED_ABOVE,
    CENSORED_BELOW,
    _arrow_strings,
    _codes,
    _name_index,
    _to_numpy,
    censoring_codes,
)

WORDS = ["none", "left", "right", None, "", "Left", "left ", "rightx", "lef"]


def _old_censoring_codes(measurements: pd.DataFrame) -> np.ndarray:
    cens = _arrow_strings(measurements["censoring"])
    found = pc.fill_null(pc.index_in(cens, value_set=pa.array(["left", "right"], type=cens.type)), -1)
    lut = np.array([0, CENSORED_BELOW, CENSORED_ABOVE], dtype=np.int8)
    return np.take(lut, _to_numpy(found) + 1)


def _columns(words: list[str | None]) -> list[pd.Series]:
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([words[:3], words[3:], []], pa.large_string())))
    return [
        pd.Series(pd.array(words, dtype="str")),
        pd.Series(words, dtype=object),
        pd.Series(words, dtype="category"),
        chunked,
    ]


@pytest.mark.parametrize("which", range(4))
def test_censoring_codes_as_before(which: int) -> None:
    rng = np.random.default_rng(which)
    words = list(rng.choice(np.array(WORDS, dtype=object), 500)) + WORDS
    column = _columns(words)[which]
    table = pd.DataFrame({"censoring": column})
    got = censoring_codes(table)
    assert got.dtype == np.int8 and np.array_equal(got, _old_censoring_codes(table))
    assert (got == CENSORED_BELOW).any() and (got == CENSORED_ABOVE).any()


def test_censoring_codes_of_an_empty_table() -> None:
    table = pd.DataFrame({"censoring": pd.array([], dtype="str")})
    assert censoring_codes(table).dtype == np.int8 and len(censoring_codes(table)) == 0


def _old_name_index(values: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    arr = _arrow_strings(values)
    uniques = pc.unique(arr)
    names = [None if u is None else str(u) for u in uniques.to_pylist()]
    found = pc.fill_null(pc.index_in(arr, value_set=uniques), len(names))
    return _to_numpy(found), names


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("head", [0, 3, 7])
def test_name_index_as_before(which: int, head: int) -> None:
    """Same positions and the same list (first-appearance order, None for a missing text)."""
    rng = np.random.default_rng(head)
    words = WORDS[head:] + list(rng.choice(np.array(WORDS, dtype=object), 300))
    index, names = _name_index(_columns(words)[which])
    old_index, old_names = _old_name_index(_columns(words)[which])
    assert names == old_names and index.dtype == np.int32 and np.array_equal(index, old_index)


def test_name_index_of_an_empty_column() -> None:
    for column in (pd.Series(pd.array([], dtype="str")),
                   pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([], pa.large_string())))):
        index, names = _name_index(column)
        assert len(index) == 0 and index.dtype == np.int32 and names == []


def _categorical_with_unused(words: list[str | None]) -> pd.Series:
    """``words`` as a categorical whose categories also hold texts no row uses (as a Parquet dictionary
    column read back may), in an order unrelated to the rows'."""
    used = {w for w in words if w is not None}
    return pd.Series(pd.Categorical(words, categories=sorted(used | {"unused", "zz", "IL6"}, reverse=True)))


@pytest.mark.parametrize("size", [0, 1, 5000, 70000])
def test_categorical_keys_ignore_unused_categories(size: int) -> None:
    """Name index, censoring codes and patient codes of a categorical column with unused categories, over
    more rows than the first prefix scanned, equal those of the same text as plain strings."""
    rng = np.random.default_rng(size)
    words = list(rng.choice(np.array(WORDS[:4], dtype=object), size))
    words += ["rightx"] * (size > 60000)  # first seen far past the first prefix
    column, plain = _categorical_with_unused(words), pd.Series(pd.array(words, dtype="str"))
    index, names = _name_index(column)
    old_index, old_names = _old_name_index(plain)
    assert names == old_names and index.dtype == np.int32 and np.array_equal(index, old_index)
    got = censoring_codes(pd.DataFrame({"censoring": column}))
    assert got.dtype == np.int8 and np.array_equal(got, _old_censoring_codes(pd.DataFrame({"censoring": plain})))
    universe = np.array(["", "left", "none", "rightx", "unused"], dtype=object)
    codes = _codes(column, universe)
    assert codes.dtype == np.int64 and np.array_equal(codes, _codes(plain, universe))
