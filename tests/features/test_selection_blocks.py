"""``choose_analytes`` scans the measurements in blocks of rows (issue 14: block-sized temporaries, not
whole-table masks and copies); any block size gives the table the whole-table algorithm gave."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import selection
from features.landmarks import _name_index, patient_index
from features.selection import choose_analytes

IDS = [f"P{i:02d}" for i in range(30)]


def _whole_table_choice(measurements: pd.DataFrame, patient_ids: np.ndarray, last: float) -> pd.DataFrame:
    """The counts as the previous code computed them: whole-table masks, bincount for ``known``."""
    codes = pd.Series(measurements["analyte"], dtype="str").str.strip().str.upper()
    idx = patient_index(pd.DataFrame({"patient_id": patient_ids}))
    patient = pd.Index(idx).get_indexer(measurements["patient_id"].astype("str"))
    names = sorted({c for c in codes.dropna() if c})
    analyte = pd.Index(names).get_indexer(codes)
    hours, value = measurements["hours_since_anchor"].to_numpy(), measurements["value"].to_numpy()
    keep = (patient >= 0) & (analyte >= 0) & np.isfinite(hours) & np.isfinite(value)
    early = keep & (hours <= last)
    n_patients = [len(set(patient[early & (analyte == i)])) for i in range(len(names))]
    unit_index, unit_raw = _name_index(measurements["unit"])
    unit_text = np.array([None if u is None else u.strip() for u in unit_raw] + [None], dtype=object)[unit_index]
    units = [sorted({u for u in unit_text[keep & (analyte == i)] if u}) for i in range(len(names))]
    known_col = measurements["known_analyte"].fillna(True).to_numpy(dtype=bool)
    known = np.bincount(analyte[keep], weights=known_col[keep], minlength=len(names)) > 0
    return pd.DataFrame({"analyte": names, "known": known, "units": units, "n_patients": n_patients})


def _measurements(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 700
    analytes = np.array(["IL6", " il6", "CRP", "Troponin I", "ODD", "", None, "LDH"], dtype=object)
    units = np.array(["pg/mL", "mg/L", "ng/L", " ng/L", "", None, "U/L"], dtype=object)
    analyte = rng.choice(analytes, n)
    known = np.where(analyte == "ODD", False, rng.choice(np.array([True, False, None], dtype=object), n, p=[0.6, 0.3, 0.1]))
    return pd.DataFrame({
        "patient_id": pd.array(rng.choice([*IDS, "GHOST"], n), dtype="str"),
        "hours_since_anchor": np.where(rng.random(n) < 0.05, np.nan, rng.uniform(-100, 120, n)),
        "analyte": pd.array(analyte, dtype="str"),
        "value": np.where(rng.random(n) < 0.05, np.inf, rng.lognormal(2, 1, n)),
        "unit": pd.array(rng.choice(units, n), dtype="str"),
        "known_analyte": pd.array(known, dtype="boolean"),  # ODD: never known to the registry
    })


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_any_block_size_gives_the_whole_table_counts(monkeypatch: pytest.MonkeyPatch, block_rows: int, seed: int) -> None:
    m = _measurements(seed)
    ids = patient_index(pd.DataFrame({"patient_id": pd.array(IDS, dtype="str")}))
    monkeypatch.setattr(selection, "BLOCK_ROWS", block_rows)
    got = choose_analytes(m, ids, 48.0, min_coverage=0.1, min_patients=2)
    expected = _whole_table_choice(m, ids, 48.0)
    pd.testing.assert_frame_equal(got[["analyte", "known", "units", "n_patients"]], expected, check_dtype=False)
    assert got["n_patients"].dtype == np.int64 and (~got["known"]).any() and got["used"].any()


def test_known_column_of_plain_booleans_and_without_the_column() -> None:
    m = _measurements(2)
    ids = patient_index(pd.DataFrame({"patient_id": pd.array(IDS, dtype="str")}))
    plain = m.assign(known_analyte=m["known_analyte"].fillna(True).astype(bool))
    pd.testing.assert_frame_equal(choose_analytes(plain, ids, 48.0), choose_analytes(m, ids, 48.0))
    assert choose_analytes(m.drop(columns="known_analyte"), ids, 48.0)["known"].all()
    assert choose_analytes(m.drop(columns="unit"), ids, 48.0)["units"].map(len).eq(0).all()
