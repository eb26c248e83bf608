"""One new patient's tables reach ingest without pandas round trips (issue 14): ``record_to_raw`` and
``frames_to_raw(patient_id=...)`` give the very Arrow tables the frame path gives."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.adapters.frames import frames_to_raw, record_to_raw
from pipeline.cohort import PATIENTS

cells = st.one_of(st.none(), st.just(math.nan), st.text(max_size=6), st.sampled_from(["", " ", "NA", "61", "1e3"]))
OPTIONAL = ("anchor_time", "age", "sex", "product", "dose", "dose_unit", "x y")
MEASUREMENTS = pd.DataFrame({"time": ["1", "2.5"], "analyte": ["CRP", "IL6"], "value": ["3", "<1.5"], "unit": ["mg/L", "pg/mL"]})


@settings(max_examples=150, deadline=None)
@given(record=st.fixed_dictionaries({"patient_id": cells}, optional=dict.fromkeys(OPTIONAL, cells)))
def test_record_equals_the_one_row_frame(record: dict) -> None:
    fast = record_to_raw(PATIENTS, record)
    via_frame = frames_to_raw({"patients": pd.DataFrame([record]), "measurements": MEASUREMENTS.assign(patient_id="P")})
    assert fast is not None and fast.arrow.equals(via_frame["patients"].arrow)
    assert fast.path == via_frame["patients"].path and fast.spec == via_frame["patients"].spec


def test_other_values_go_through_the_frame() -> None:
    for value in (61, 61.5, True, pd.Timestamp("2024-01-01")):
        assert record_to_raw(PATIENTS, {"patient_id": "P1", "age": value}) is None


@settings(max_examples=50, deadline=None)
@given(pid=st.text(min_size=1, max_size=5), n=st.integers(0, 3))
def test_patient_id_fill_equals_assign(pid: str, n: int) -> None:
    rows = MEASUREMENTS.iloc[[i % 2 for i in range(n)]].reset_index(drop=True)
    patients = pd.DataFrame([{"patient_id": pid}])
    filled = frames_to_raw({"patients": patients, "measurements": rows}, patient_id=pid)
    assigned = frames_to_raw({"patients": patients, "measurements": rows.assign(patient_id=pid)})
    assert filled["measurements"].arrow.equals(assigned["measurements"].arrow)
    assert filled["measurements"].arrow.schema.field("patient_id").type == pa.string()
