"""``write_parquet`` writes the file ``DataFrame.to_parquet`` writes, byte for byte, attrs included, without
pandas' deep copy of ``attrs`` per column (which made the landmark table's write take seconds)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.io import read_stage_parquet_with_attrs, write_parquet


def _frame(attrs: dict) -> pd.DataFrame:
    frame = pd.DataFrame({
        "patient_id": pd.array(["A", "B", "C"], dtype="str"),
        "landmark_hours": [0.0, 24.0, 48.0],
        "il6__latest": [1.5, np.nan, 300.0],
        "product": pd.Categorical(["axi-cel", None, "tisa-cel"]),
        "label__crs_severe": [0.0, 1.0, np.nan],
    })
    frame.attrs = attrs
    return frame


@pytest.mark.parametrize("attrs", [{}, {"analytes": ["IL6"], "training_summary": {"il6__latest": {"median": 1.5,
                                                                                                   "edges": [0.1, 2.0]}}}])
def test_same_bytes_as_to_parquet_and_attrs_come_back(attrs: dict, tmp_path: Path) -> None:
    frame = _frame(copy.deepcopy(attrs))
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    write_parquet(frame, tmp_path / "ours.parquet")
    assert (tmp_path / "ours.parquet").read_bytes() == (tmp_path / "pandas.parquet").read_bytes()
    back, back_attrs = read_stage_parquet_with_attrs(tmp_path / "ours.parquet", "table", "crs featurize")
    assert back_attrs == attrs
    assert pq.read_table(tmp_path / "ours.parquet").to_pandas().attrs == attrs  # pyarrow's own copy too
    bare = frame.copy()
    bare.attrs = {}
    pd.testing.assert_frame_equal(back, bare)
    assert frame.attrs == attrs  # the caller's frame keeps its attrs


def test_attrs_are_not_copied_per_column(tmp_path: Path, monkeypatch) -> None:
    import pandas.core.generic as generic  # where pandas' __finalize__ takes deepcopy from

    copies = []
    real = generic.deepcopy
    monkeypatch.setattr(generic, "deepcopy", lambda obj, *a, **k: (copies.append(1), real(obj, *a, **k))[1])
    frame = _frame({"training_summary": {f"f{i}": {"median": float(i)} for i in range(50)}})
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    per_column = len(copies)
    copies.clear()
    write_parquet(frame, tmp_path / "ours.parquet")
    assert per_column >= frame.shape[1]  # the check can fail: to_parquet copies attrs once per column
    assert len(copies) <= 1  # the one shallow copy of the frame
