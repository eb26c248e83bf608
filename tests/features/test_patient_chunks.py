"""Patient-chunked featurize: blocks of patients give the very same landmark matrix (issue 14)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer
from features.landmarks import patient_chunks

IDS = [f"P{i:02d}" for i in range(23)]


def cohort(seed: int = 3) -> dict[str, pd.DataFrame]:
    """23 patients (one with no rows), rows of an unknown patient, unsorted rows, a category one block lacks."""
    rng = np.random.default_rng(seed)
    n = 900
    pid = rng.choice([*IDS[:-1], "GHOST"], n)
    measurements = pd.DataFrame({
        "patient_id": pd.array(pid, dtype="str"),
        "hours_since_anchor": rng.uniform(-200, 100, n).round(1),
        "analyte": pd.array(rng.choice(["IL6", "CRP", "FERRITIN", "TEMP"], n), dtype="str"),
        "value": rng.lognormal(3, 1, n),
        "censoring": pd.array(rng.choice(["none", "left", "right"], n), dtype="str"),
    })
    patients = pd.DataFrame({
        "patient_id": pd.array(IDS[::-1], dtype="str"),
        "age": rng.uniform(20, 80, len(IDS)),
        "sex": pd.array(["F"] * (len(IDS) - 1) + ["M"], dtype="str"),
    })
    events = pd.DataFrame({
        "patient_id": pd.array(rng.choice([*IDS, "GHOST"], 30), dtype="str"),
        "event": pd.array(rng.choice(["CRS", "ICANS", "DEATH"], 30), dtype="str"),
        "grade": rng.integers(1, 5, 30),
        "hours_since_anchor": rng.uniform(-5, 150, 30),
    })
    treatments = pd.DataFrame({
        "patient_id": pd.array(rng.choice(IDS, 12), dtype="str"),
        "hours_since_anchor": rng.uniform(0, 80, 12),
        "drug": pd.array(rng.choice(["tocilizumab", "dexamethasone"], 12), dtype="str"),
    })
    return {"measurements": measurements, "patients": patients, "events": events, "treatments": treatments}


def featurizer(chunk_patients: int | None) -> LandmarkFeaturizer:
    return LandmarkFeaturizer(landmarks_hours=[0, 24, 72], analytes=["IL6", "CRP", "FERRITIN"],
                              targets={"crs": ("CRS", 3), "icans": ("ICANS", 2)}, static_features=["age", "sex"],
                              harmonise_covariates=False, chunk_patients=chunk_patients)


@pytest.mark.parametrize("size", [1, 4, 7, 22])
def test_chunked_matrix_equals_the_whole_cohort_matrix(size: int) -> None:
    tables = cohort()
    whole = featurizer(None).fit(tables).transform(tables)
    chunked = featurizer(size).fit(tables).transform(tables)
    assert whole["patient_id"].nunique() == len(IDS)
    assert whole["label__crs"].notna().any() and whole["il6__latest"].notna().any()
    pd.testing.assert_frame_equal(chunked, whole)


def test_chunks_partition_the_rows_of_known_patients() -> None:
    tables = cohort()
    blocks = list(patient_chunks(tables, 5))
    assert len(blocks) == 5  # 23 patients in blocks of 5
    seen = pd.concat([b["measurements"] for b in blocks])
    known = tables["measurements"][tables["measurements"]["patient_id"] != "GHOST"]
    assert len(seen) == len(known)
    assert sorted(map(tuple, seen.astype(str).to_numpy())) == sorted(map(tuple, known.astype(str).to_numpy()))
    for block in blocks:
        ids = set(block["patients"]["patient_id"])
        assert 1 <= len(ids) <= 5
        assert set(block["measurements"]["patient_id"]) <= ids
        assert set(block["events"]["patient_id"]) <= ids
    firsts = [sorted(b["patients"]["patient_id"])[0] for b in blocks]
    assert firsts == sorted(firsts) == ["P00", "P05", "P10", "P15", "P20"]


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(patient_chunks(cohort(), 0))
