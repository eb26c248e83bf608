"""The simulated cohort through ingest: every injected fault is caught, and nothing else is lost."""

from __future__ import annotations

import json

import pytest

from pipeline.adapters.canonical import read_cohort
from pipeline.config import Config, SimulateConfig
from pipeline.ingestion import ingest_tables
from pipeline.simulate import main as simulate_main


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "cohort"
    config = Config(simulate=SimulateConfig(n_patients=400, seed=11, faults=True))
    simulate_main(config, out=out)
    return out, json.loads((out / "truth.json").read_text())


def test_ingest_reports_exactly_the_injected_faults(simulated):
    cohort, truth = simulated
    report = ingest_tables(read_cohort(cohort)).report
    expected = truth["expected_ingest"]
    assert report["quarantine_by_reason"] == expected["quarantine_by_reason"]
    assert report["duplicates_dropped"] == expected["duplicates_dropped"]
    assert report["unit_conversions"] == expected["unit_conversions"]
    assert report["synonyms_mapped"] == expected["synonyms_mapped"]
    # Every injected kind is present at this size, so the check above is not vacuous.
    assert set(expected["quarantine_by_reason"]) >= {"unparseable_value", "missing_value", "out_of_range",
                                                      "unknown_patient", "bad_time"}
    assert expected["duplicates_dropped"] > 0
    for name, counts in truth["tables"].items():
        assert report["files"][name]["rows_read"] == counts["rows_written"]
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"] + report["duplicates_dropped"]


def test_clean_cohort_has_no_quarantine(tmp_path):
    config = Config(simulate=SimulateConfig(n_patients=150, seed=3, faults=False))
    simulate_main(config, out=tmp_path / "clean")
    report = ingest_tables(read_cohort(tmp_path / "clean")).report
    assert report["rows_quarantined"] == 0 and report["duplicates_dropped"] == 0
    assert report["rows_accepted"] == report["rows_read"]
