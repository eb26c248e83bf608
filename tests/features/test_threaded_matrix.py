"""Threads filling the landmark matrix by patient range give the very same frame as one thread (issue 14)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from features import LandmarkFeaturizer
from features import landmarks as lm


def cohort(n_patients: int = 150, seed: int = 5) -> dict[str, pd.DataFrame]:
    """Patients with and without rows, unsorted rows, an unknown patient, censored values, treatments,
    grades from events and lymphodepletion starts for some patients (the score baseline's end)."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n_patients)]
    n = 40 * n_patients
    measurements = pd.DataFrame({
        "patient_id": pd.array(rng.choice([*ids[:-3], "GHOST"], n), dtype="str"),
        "hours_since_anchor": rng.uniform(-200, 100, n).round(1),
        "analyte": pd.array(rng.choice(["IL6", "CRP", "FERRITIN", "LDH", "PLT", "CREAT"], n), dtype="str"),
        "value": rng.lognormal(3, 1, n),
        "censoring": pd.array(rng.choice(["none", "none", "left", "right"], n), dtype="str"),
    })
    patients = pd.DataFrame({
        "patient_id": pd.array(ids[::-1], dtype="str"),
        "age": rng.uniform(20, 80, n_patients),
        "lymphodepletion_start_hours": np.where(rng.random(n_patients) < 0.5, -rng.uniform(72, 150, n_patients), np.nan),
    })
    k = 2 * n_patients
    events = pd.DataFrame({
        "patient_id": pd.array(rng.choice([*ids, "GHOST"], k), dtype="str"),
        "event": pd.array(rng.choice(["CRS", "ICANS", "DEATH"], k), dtype="str"),
        "grade": rng.integers(1, 5, k),
        "hours_since_anchor": rng.uniform(-5, 150, k),
    })
    treatments = pd.DataFrame({
        "patient_id": pd.array(rng.choice(ids, n_patients), dtype="str"),
        "hours_since_anchor": rng.uniform(0, 80, n_patients),
        "drug": pd.array(rng.choice(["tocilizumab", "dexamethasone"], n_patients), dtype="str"),
    })
    return {"measurements": measurements, "patients": patients, "events": events, "treatments": treatments}


def featurizer(n_threads: int) -> LandmarkFeaturizer:
    return LandmarkFeaturizer(landmarks_hours=[0, 24, 72], analytes=["IL6", "CRP", "FERRITIN", "LDH", "PLT", "CREAT"],
                              targets={"crs": ("CRS", 3), "icans": ("ICANS", 2)}, static_features=["age"],
                              harmonise_covariates=False, result_lag_hours={"IL6": 30.0}, n_threads=n_threads)


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_threaded_matrix_equals_the_one_thread_matrix(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = cohort()
    one = featurizer(1).fit(tables).transform(tables)
    calls: list[tuple[int, int]] = []
    real_range = lm.patient_range

    def spy(timeline: lm.Timeline, lo: int, hi: int) -> lm.Timeline:
        calls.append((lo, hi))
        return real_range(timeline, lo, hi)

    monkeypatch.setattr(lm, "THREAD_MIN_PATIENTS", 20)
    monkeypatch.setattr(lm, "THREAD_MIN_ROWS", 100)  # the analytes' gathers in threads too
    monkeypatch.setattr(lm, "patient_range", spy)
    threaded = featurizer(threads).fit(tables).transform(tables)
    # The ranges tile 0..150 with `threads` parts: the threaded path really ran.
    assert len(calls) == threads and calls[0][0] == 0 and calls[-1][1] == 150
    assert all(a[1] == b[0] for a, b in zip(calls, calls[1:], strict=False))
    assert one["il6__latest"].notna().any() and one["label__crs"].notna().any()
    pd.testing.assert_frame_equal(threaded, one, check_exact=True)


def test_few_patients_per_thread_use_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below THREAD_MIN_PATIENTS patients per thread the matrix is filled without a thread pool."""
    monkeypatch.setattr(lm, "patient_range", lambda *a: pytest.fail("split a small cohort into threads"))
    tables = cohort(n_patients=100)
    assert len(featurizer(4).fit(tables).transform(tables)) == 300


def test_patient_range_keeps_only_its_patients_with_codes_from_zero() -> None:
    rows = lm.SortedRows(np.array([0, 1, 1, 2, 4]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
                         np.array([10.0, 20.0, 30.0, 40.0, 50.0]), np.zeros(5, np.int8))
    timeline = lm.Timeline(patient_ids=np.array(["a", "b", "c", "d", "e"], dtype=object), analytes={"IL6": rows},
                           treatments={}, score_baseline_end=np.array([0.0, -1.0, -2.0, -3.0, -4.0]))
    part = lm.patient_range(timeline, 1, 4)
    assert list(part.patient_ids) == ["b", "c", "d"]
    assert part.analytes["IL6"].patient.tolist() == [0, 0, 1]
    assert part.analytes["IL6"].value.tolist() == [20.0, 30.0, 40.0]
    assert part.score_baseline_end.tolist() == [-1.0, -2.0, -3.0]


def spy_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker counts of every thread pool features.landmarks opens from now on."""
    pools: list[int] = []

    class Spy(ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(lm, "ThreadPoolExecutor", Spy)
    return pools


def test_encoding_with_threads_gives_the_same_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    tables = cohort()
    ids = lm.patient_index(tables["patients"])
    codes = ["IL6", "CRP", "FERRITIN", "LDH", "PLT", "CREAT"]
    one = lm.encode_cohort(tables["measurements"], ids, tables["treatments"], codes, result_lag_hours={"IL6": 30.0})
    monkeypatch.setattr(lm, "THREAD_MIN_ROWS", 100)
    pools = spy_pools(monkeypatch)
    threaded = lm.encode_cohort(tables["measurements"], ids, tables["treatments"], codes,
                                result_lag_hours={"IL6": 30.0}, threads=3)
    assert pools == [3] and list(threaded.analytes) == codes
    for code in codes:
        a, b = one.analytes[code], threaded.analytes[code]
        assert len(a.patient) > 0
        for name in ("patient", "hours", "value", "censoring", "known"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y, equal_nan=True), (code, name)


def test_grouping_sorted_rows_by_analyte_with_threads_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows already sorted by (patient, hours), as ingest writes them, are grouped by analyte block by
    block; threads group consecutive runs of blocks, and each analyte's rows come out in the same order."""
    rng = np.random.default_rng(3)
    n = 1_000
    patient = np.sort(rng.integers(0, 40, n))
    hours = np.concatenate([np.sort(rng.uniform(0, 100, c)) for c in np.bincount(patient, minlength=40)])
    analyte = rng.integers(-1, 5, n).astype(np.int32)
    valid = (analyte >= 0) & (rng.random(n) > 0.2)
    monkeypatch.setattr(lm, "BLOCK_ROWS", 64)  # 16 blocks
    one = lm._analyte_rows(analyte, valid, patient, hours, 5)
    monkeypatch.setattr(lm, "THREAD_MIN_ROWS", 100)
    pools = spy_pools(monkeypatch)
    threaded = lm._analyte_rows(analyte, valid, patient, hours, 5, threads=3)
    assert pools == [3]
    expected = [np.flatnonzero(valid & (analyte == code)) for code in range(5)]  # input order = sorted order
    for code in range(5):
        assert len(one[code]) > 0
        assert np.array_equal(one[code], expected[code]) and np.array_equal(threaded[code], expected[code])


def test_auto_threads_are_the_usable_cores_up_to_4(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    assert lm.usable_threads("auto") == lm.usable_threads(None) == 4 and lm.usable_threads(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert lm.usable_threads("auto") == 1 and lm.usable_threads(0) == 1
    tables = cohort(n_patients=100)
    auto = LandmarkFeaturizer(landmarks_hours=[0, 24], analytes=["IL6"], harmonise_covariates=False, n_threads="auto")
    assert len(auto.fit(tables).transform(tables)) == 200  # "auto" is accepted, not only a number
