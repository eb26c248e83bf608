"""The simulator: the phases in order, one random generator passed through them explicitly.

The draw order is part of the output: phases must run in this order with the same generator, so
that a seed gives the same cohort byte for byte (faults and the bedside charts use their own streams).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.registry import Registry, load_registry
from pipeline.simulation.assay import report_measurements
from pipeline.simulation.bedside import ICE_SCORE, O2_DEVICE, build_course, chart, draw_bedside
from pipeline.simulation.calibration import calibration
from pipeline.simulation.faults import inject_faults, inject_observation_faults
from pipeline.simulation.kinetics import simulate_values
from pipeline.simulation.patients import Patients, draw_patients
from pipeline.simulation.sampling import draw_schedule
from pipeline.simulation.severity import Outcomes, draw_outcomes
from pipeline.simulation.tables import (
    event_table,
    measurement_table,
    observation_table,
    patient_ids,
    patient_table,
    treatment_table,
    vital_names,
    vital_units,
)
from pipeline.simulation.treatments import Treatments, schedule_treatments
from pipeline.simulation.truth import build_truth


def simulate_tables(n_patients: int, seed: int, faults: bool = True) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Simulate a cohort: (table name -> Arrow table of the text written to CSV, truth dict). Pure."""
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    cal = calibration()
    registry = load_registry()
    rng = np.random.default_rng(seed)
    patients = draw_patients(n_patients, rng)  # arms, latent severity, site and course draws, demographics
    outcomes = draw_outcomes(patients.arm, patients.latents, patients.course, cal)  # grades under treatment
    treatments = schedule_treatments(outcomes, patients.course, patients.anchor_minutes)
    return simulate_from_outcomes(patients, outcomes, treatments, rng, seed, faults, registry)


def simulate_from_outcomes(patients: Patients, outcomes: Outcomes, treatments: Treatments, rng: np.random.Generator,
                           seed: int, faults: bool, registry: Registry) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Everything after the grade course: schedule, kinetics, bedside charts, faults, tables and truth.

    (Tests call it with a course cut short to show that nothing charted before the cut moves.)
    """
    n_patients = patients.n
    rows, rounds = draw_schedule(patients.anchor_clock_minutes, outcomes.crs_grade_hours, outcomes.marker_amplitude,
                                 outcomes.death_hours, patients.site, rng)
    # The bedside stream: its own generator, every draw of a fixed shape (no outcome decides a draw).
    course = build_course(outcomes, treatments, draw_bedside(n_patients, rounds.ward_slots, seed), patients.age_years)
    values = simulate_values(rows, patients, outcomes, treatments, rng, course)  # kinetics
    reported = report_measurements(rows, values, patients.site, registry)  # assay and censoring
    injected = inject_faults(rows, reported, patients.anchor_minutes, n_patients, seed, faults)
    charted = chart(course, rounds, rows, patients.anchor_clock_minutes)
    obs_override, obs_faults = inject_observation_faults(charted.obs_item, charted.obs_value, seed, faults,
                                                         O2_DEVICE, ICE_SCORE)
    ids = patient_ids(n_patients)
    tables = {
        "patients": patient_table(patients, ids),
        "measurements": measurement_table(rows, reported, injected, patients.anchor_minutes, ids, charted,
                                          patients.site, vital_units(registry)),
        "events": event_table(outcomes, patients.anchor_minutes, ids),
        "treatments": treatment_table(treatments, ids, charted, patients.anchor_minutes),
        "observations": observation_table(charted, patients.anchor_minutes, ids, obs_override),
    }
    truth = build_truth(tables, rows, reported, injected, registry, patients.arm, outcomes, seed, faults, charted,
                        vital_names(charted, patients.site), obs_faults)
    return tables, truth


def simulate_cohort(n_patients: int, seed: int, faults: bool = True) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Simulate a cohort: (table name -> DataFrame of the text written to CSV, truth dict). Pure."""
    tables, truth = simulate_tables(n_patients, seed, faults)
    return {name: table.to_pandas() for name, table in tables.items()}, truth
