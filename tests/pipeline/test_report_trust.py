"""What a clinician's page must not hide (issue 13): the validated alert rule in words, and a model
trained on simulated patients recognised as such (banner on pages, note on predictions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_a_model_trained_on_the_simulated_cohort_is_recognised(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pipeline.model.setup import trained_on_simulated

    def bundle(path: str) -> SimpleNamespace:
        return SimpleNamespace(targets={"crs_severe": SimpleNamespace(metadata={"cohort_path": path})})

    assert trained_on_simulated(bundle("data/raw/synthetic"))
    (tmp_path / "truth.json").write_text("{}")  # crs simulate writes truth.json beside the tables
    assert trained_on_simulated(bundle(str(tmp_path)))
    assert not trained_on_simulated(bundle(str(tmp_path / "real_cohort")))
    assert not trained_on_simulated(bundle(""))


def test_alert_status_states_the_validated_rule_in_words() -> None:
    from types import SimpleNamespace

    from pipeline.reporting.sections import alert_status

    rows = SimpleNamespace(probability=np.array([0.08, 0.05]), hours=np.array([24.0, 24.0]))
    metrics = {"crs_severe": {"24": {"model": {"sensitivity": 0.9, "ppv": 0.25}}}}
    data = SimpleNamespace(thresholds={"crs_severe": np.array([0.067, 0.067])}, rows={"crs_severe": rows},
                           metrics=metrics)
    # A patient at 8 % is above a 6.7 % threshold even though the 10 % band calls that "low".
    assert alert_status(data, "crs_severe", 0) == (
        "Above the validated alert threshold (6.7%): in cross-validation 90% of these events at this landmark "
        "were above it, and 1 in 4 alerts was followed by one.")
    assert alert_status(data, "crs_severe", 1).startswith("Below the validated alert threshold (6.7%)")
    data.metrics = None  # no validation figures: the rule alone
    assert alert_status(data, "crs_severe", 0) == "Above the validated alert threshold (6.7%)."


def test_il6_after_tocilizumab_carries_a_caveat() -> None:
    from pipeline.reporting import clinical_text as ct

    row = {"il6__latest": 80.0, "il6__baseline": 5.0, "il6__fold_change": 16.0, "tocilizumab__given": 1.0}
    assert ct.describe_analyte("IL6", row, "pg/mL").endswith(
        "after tocilizumab, which itself raises serum IL-6: read with care")
    assert "tocilizumab" not in ct.describe_analyte("IL6", {**row, "tocilizumab__given": 0.0}, "pg/mL")
    assert "tocilizumab" not in ct.describe_analyte("CRP", {"crp__latest": 50.0, "tocilizumab__given": 1.0}, "mg/L")
