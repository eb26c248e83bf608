"""``positions`` is ``Index.get_indexer`` for distinct ids, on both sides of its few-ids switch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import lookup

texts = st.text(alphabet="AB1 é", max_size=3)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(texts, unique=True, max_size=80), wanted=st.lists(texts, max_size=20))
def test_positions_equal_get_indexer(ids: list[str], wanted: list[str]) -> None:
    expected = pd.Index(np.array(ids, dtype=object), dtype=object).get_indexer(np.array(wanted, dtype=object))
    got = lookup.positions(np.array(ids, dtype=object), np.array(wanted, dtype=object))
    assert got.dtype == np.intp and got.tolist() == expected.tolist()


@pytest.mark.parametrize("few", [-1, 64])
def test_hand_built_lookup(few: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "FEW_IDS", few)  # -1: always the hash index
    ids = np.array(["P2", "P10", "P1"], dtype=object)
    assert lookup.positions(ids, np.array(["P1", "P3", "P2", "P1"], dtype=object)).tolist() == [2, -1, 0, 2]
    assert lookup.positions(ids, np.zeros(0, dtype=object)).tolist() == []
    assert lookup.positions(np.zeros(0, dtype=object), np.array(["P1"], dtype=object)).tolist() == [-1]


@pytest.mark.parametrize("few", [-1, 64])
def test_repeated_ids_raise_on_both_paths(few: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "FEW_IDS", few)
    with pytest.raises(pd.errors.InvalidIndexError):
        lookup.positions(np.array(["P1", "P2", "P1"], dtype=object), np.array(["P1"], dtype=object))
