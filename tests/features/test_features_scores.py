"""EASIX, m-EASIX and CAR-HEMATOTOX formulas, units and band edges; the feature table."""

from __future__ import annotations

import numpy as np
import pytest

from features import DERIVED, SUMMARIES, feature_table
from features.scores import car_hematotox, doubling_time_hours, easix, m_easix, safe_log2, safe_ratio


def test_easix_formula_and_units() -> None:
    # LDH 300 U/L x creatinine 1.2 mg/dL / platelets 150 x10^9/L
    assert easix(300.0, 1.2, 150.0) == pytest.approx(2.4)
    assert np.isnan(easix(300.0, 1.2, 0.0))  # no platelets: undefined, not inf
    assert np.isnan(easix(np.nan, 1.2, 150.0))


def test_m_easix_uses_crp_in_mg_per_dl() -> None:
    # canonical CRP 50 mg/L = 5 mg/dL (Pennisi 2021 uses mg/dL)
    assert m_easix(300.0, 50.0, 150.0) == pytest.approx(300 * 5 / 150)
    np.testing.assert_allclose(m_easix([300, 600], [50, 200], [150, 100]), [10.0, 120.0])


@pytest.mark.parametrize(
    ("plt_", "anc", "hgb", "crp_mg_l", "ferritin", "points"),
    [
        (200.0, 2.0, 12.0, 10.0, 300.0, 0),
        (175.0, 2.0, 12.0, 10.0, 300.0, 1),  # platelets 175 is in the 75-175 band
        (175.1, 2.0, 12.0, 10.0, 300.0, 0),
        (75.0, 2.0, 12.0, 10.0, 300.0, 1),
        (74.9, 2.0, 12.0, 10.0, 300.0, 2),
        (200.0, 1.2, 12.0, 10.0, 300.0, 1),  # ANC <= 1.2
        (200.0, 2.0, 9.0, 10.0, 300.0, 1),  # haemoglobin <= 9.0 g/dL
        (200.0, 2.0, 12.0, 30.0, 300.0, 1),  # CRP 30 mg/L = 3.0 mg/dL
        (200.0, 2.0, 12.0, 29.9, 300.0, 0),
        (200.0, 2.0, 12.0, 10.0, 650.0, 1),
        (200.0, 2.0, 12.0, 10.0, 2000.0, 1),
        (200.0, 2.0, 12.0, 10.0, 2000.1, 2),
        (50.0, 0.5, 8.0, 100.0, 5000.0, 7),
    ],
)
def test_car_hematotox_bands(plt_, anc, hgb, crp_mg_l, ferritin, points) -> None:
    assert car_hematotox(plt_, anc, hgb, crp_mg_l, ferritin) == points


def test_car_hematotox_needs_every_input() -> None:
    assert np.isnan(car_hematotox(200.0, np.nan, 12.0, 10.0, 300.0))


def test_helpers_never_return_inf() -> None:
    np.testing.assert_array_equal(safe_ratio([1.0, 1.0, 1.0], [0.0, -1.0, np.inf]), [np.nan] * 3)
    np.testing.assert_array_equal(safe_log2([0.0, -1.0, 8.0]), [np.nan, np.nan, 3.0])
    np.testing.assert_array_equal(doubling_time_hours([0.5, 0.0, -0.1, np.nan]), [2.0, np.nan, np.nan, np.nan])


def test_feature_table_is_declarative_and_complete() -> None:
    table = feature_table(["IL6", "crp"], ["age"], units={"IL6": "pg/mL", "CRP": "mg/L"})
    assert table["name"].is_unique
    assert len(table) == 1 + 2 * len(SUMMARIES) + len(DERIVED) + 1
    row = table.set_index("name").loc["crp__latest"]
    assert (row["analyte"], row["summary"], row["unit"]) == ("CRP", "latest", "mg/L")
    assert {"easix__baseline", "easix__latest", "m_easix__baseline", "m_easix__latest", "car_hematotox__baseline",
            "temp__max", "fever__hours_since_first", "tocilizumab__given", "tocilizumab__hours_since",
            "steroids__given", "steroids__hours_since", "landmark_hours", "age"} <= set(table["name"])
    assert (table["description"].str.len() > 0).all()
    assert "{" not in "".join(table["description"]) + "".join(table["unit"])
    # Without units (the library knows no registry) the description says "canonical unit".
    assert feature_table(["IL6"]).set_index("name").loc["il6__latest", "unit"] == "canonical unit"
