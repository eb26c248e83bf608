"""``RawTable.frame`` reads Arrow text straight into pandas ``string`` columns (issue 14): the very frame
``to_pandas().astype("string")`` gave, whatever the table holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import PATIENTS

TABLES = {
    "one_row": pa.table({"patient_id": ["P1"], "age": ["61"], "sex": [None]}),
    "empty": pa.table({"patient_id": pa.array([], pa.string()), "age": pa.array([], pa.string())}),
    "all_null": pa.table({"patient_id": pa.array([None, None], pa.string())}),
    "unicode_and_spaces": pa.table({"patient_id": [" P1 ", "Pé", ""], "x": ["NA", "1e400", "<1.5"]}),
    "large_string": pa.table({"patient_id": pa.array(["P1", None], pa.large_string())}),
    "not_text": pa.table({"patient_id": ["P1", "P2"], "age": pa.array([61, None], pa.int64()),
                          "dose": pa.array([1.5, 2.0]), "flag": pa.array([True, None])}),
    "chunked": pa.concat_tables([pa.table({"patient_id": ["P1"]}), pa.table({"patient_id": pa.array([None], pa.string())})]),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_frame_is_what_astype_string_gave(name: str) -> None:
    arrow = TABLES[name]
    got = RawTable(PATIENTS, Path("patients.csv"), arrow).frame
    pd.testing.assert_frame_equal(got, arrow.to_pandas().astype("string"), check_exact=True)
    assert list(got.dtypes) == list(arrow.to_pandas().astype("string").dtypes)
