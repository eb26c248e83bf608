"""The external-validation HTML page (pipeline.validation.html): renders the documented example, is
self-contained, escapes every text, shows n/a for missing figures, one calibration plot per target."""

from __future__ import annotations

import copy
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from pipeline.validation.drift import drift_report, feature_summary, unit_factors_from_registry
from pipeline.validation.html import render_validation_html

LANDMARKS = ("24", "48", "72", "120")
THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 11)]


def _landmark_entry(k: int) -> dict:
    predicted = [0.01, 0.03, 0.05, 0.08, 0.12, 0.2]
    return {
        "n": 290 - 10 * k, "n_events": 20 + k, "auroc": 0.74 + 0.02 * k, "auroc_ci": [0.65, 0.82],
        "auprc": 0.3, "brier": 0.06, "calibration_intercept": -0.2, "calibration_slope": 0.9, "citl": -0.15,
        "sensitivity": 0.85, "specificity": 0.5, "threshold": 0.07,
        "calibration_curve": {"predicted": predicted, "observed": [p * (0.8 + 0.1 * k) for p in predicted],
                              "n": [60, 50, 50, 50, 40, 40]},
        "decision_curve": {"thresholds": THRESHOLDS,
                           "net_benefit": [0.07 - 0.05 * t - 0.02 * k * t for t in THRESHOLDS],
                           "treat_all": [0.07 - 0.93 * t / (1 - t) for t in THRESHOLDS]},
        "training_cv": {"auroc": 0.8, "brier": 0.05, "calibration_slope": 1.0, "calibration_intercept": 0.0},
    }


def _drift() -> dict:
    rng = np.random.default_rng(0)
    ids = [f"T{i}" for i in range(40)]
    lm = pd.DataFrame({"patient_id": ids, "landmark_hours": 24.0, "crp__max": rng.lognormal(3, 1, 40),
                       "product": ["axi"] * 20 + ["tisa"] * 20})
    meas = pd.DataFrame({"patient_id": np.repeat(ids, 2), "hours_since_anchor": np.tile([-24.0, 12.0], 40),
                         "analyte": "CRP", "value": rng.lognormal(3, 0.5, 80), "censoring": 0})
    summary = feature_summary(lm, ["crp__max", "product"], meas)
    new_lm = lm.assign(crp__max=lm["crp__max"] / 10, product=["axi"] * 36 + ["<b>Kymriah</b>"] * 4)
    return drift_report(summary, new_lm, meas.assign(value=meas["value"] / 10), unit_factors_from_registry())


def example_validation() -> dict:
    """The example ``validation.json`` of ``crs validate`` (2 targets x 4 landmarks)."""
    return {
        "model": {"source": "models", "trained_on": "data/raw/synthetic (seed 42)", "n_patients": 1200},
        "cohort": {"path": "/data/site-b", "n_patients": 300, "fingerprint": "sha256:" + "ab" * 32},
        "targets": {target: {"landmarks": {lm: _landmark_entry(k) for k, lm in enumerate(LANDMARKS)}}
                    for target in ("crs_severe", "icans_severe")},
        "recalibration": {"crs_severe": {"before": {"citl": -0.4, "calibration_slope": 0.8, "brier": 0.07},
                                         "after": {"citl": 0.01, "calibration_slope": 0.98, "brier": 0.06},
                                         "intercept": -0.42, "slope": 1.0}},
        "drift": _drift(),
        "warnings": ["ICANS events are few (21): confidence intervals are wide."],
    }


@pytest.fixture
def validation() -> dict:
    return example_validation()


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_renders_the_example_quickly_and_self_contained(validation):
    start = time.perf_counter()
    page = render_validation_html(validation)
    assert time.perf_counter() - start < 1.0
    assert page.startswith("<!DOCTYPE html>") and "<title>External validation report</title>" in page
    for text in ("crs_severe", "icans_severe", "/data/site-b", "1200", "ICANS events are few (21)",
                 "0.74", "0.65–0.82", "0.80", "Local recalibration", "-0.42"):
        assert text in page
    # nothing loaded from elsewhere, nothing executed
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    for svg in _svgs(page):
        ET.fromstring(svg)  # every chart is well-formed XML


def test_one_calibration_plot_and_one_decision_curve_per_target(validation):
    page = render_validation_html(validation)
    assert page.count('class="chart calibration"') == 2
    assert page.count('class="chart decision-curve"') == 2
    calibration = [s for s in _svgs(page) if 'class="chart calibration"' in s][0]
    assert calibration.count("<polyline") == len(LANDMARKS)  # all landmarks on one chart
    # landmarks in numeric order in the table: 120 h last, not between 24 h and 48 h
    rows = re.findall(r"<tr><td class=\"\">([^<]+)</td>", page)
    assert rows[:4] == ["24 h", "48 h", "72 h", "120 h"]


def test_escapes_text_from_the_data(validation):
    validation["cohort"]["path"] = '/data/<script>alert("x")</script>'
    validation["warnings"].append("<img src=x onerror=alert(1)>")
    validation["targets"]['<script>t</script>'] = validation["targets"].pop("icans_severe")
    page = render_validation_html(validation)
    assert "<script" not in page and "<img" not in page and "<b>Kymriah" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&lt;script&gt;t&lt;/script&gt;" in page  # also inside the SVG titles
    for svg in _svgs(page):
        ET.fromstring(svg)


def test_missing_figures_read_n_a(validation):
    entry = validation["targets"]["crs_severe"]["landmarks"]["24"]
    entry.update(auroc=None, auroc_ci=[None, None], brier=float("nan"))
    del entry["training_cv"]
    entry["calibration_curve"]["observed"][0] = None
    validation["model"].update(trained_on=None, targets=["crs_severe", "icans_severe"], extra={"nested": 1})
    page = render_validation_html(validation)
    first_row = re.search(r"<tr><td class=\"\">24 h</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", first_row)
    # n, events, AUROC, CI, AUROC (CV), AUPRC, Brier, Brier (CV)
    assert cells[:8] == ["290", "20", "n/a", "n/a", "n/a", "0.30", "n/a", "n/a"]
    assert "<dt>trained on</dt><dd>n/a</dd>" in page
    assert "<dt>targets</dt><dd>crs_severe, icans_severe</dd>" in page and "nested" not in page
    assert "nan" not in page.lower().replace("fingerprint", "")


def test_without_recalibration_or_drift(validation):
    bare = copy.deepcopy(validation)
    bare.update(recalibration=None, drift=None, warnings=[])
    page = render_validation_html(bare)
    assert "Local recalibration" not in page and 'role="alert"' not in page
    assert "n/a: drift was not computed." in page
    assert render_validation_html({}).count("<svg") == 0  # an empty dict still renders


def test_drift_section_lists_flagged_items(validation):
    page = render_validation_html(validation)
    drift = page[page.index('<section class="drift">'):]
    assert "CRP values about 10x lower than in training: reported in mg/dL but labelled mg/L?" in drift
    assert "crp__max" in drift and "product" in drift and "major" in drift
    assert "&lt;b&gt;Kymriah" not in drift  # category names are not echoed, only the unseen-category share
