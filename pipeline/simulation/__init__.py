"""Synthetic CAR-T cohort simulator, one module per phase (see docs/simulator.md for the model).

Phases, in draw order (one ``np.random.Generator`` passed through them explicitly):

* ``patients`` / ``arms`` / ``severity``: arm, latent risk factors and severity liability, site and
  its habits, the random course timing, demographics, the covariates as recorded (noisy tumour burden,
  administered dose); the untreated CRS / ICANS grades and the grades reached under treatment;
* ``calibration``: per-arm cuts (under treatment) and onset location from a fixed reference sample;
* ``policy`` / ``treatments``: when tocilizumab, dexamethasone and methylprednisolone are given (only
  the past and the site's habits decide a dose), how they slow progression and move the markers;
* ``sampling``: routine labs, research cytokine panels, ward vitals, and the extra draws a febrile
  patient gets (they see only the observed past of the course);
* ``kinetics``: cytokine / biomarker values and body temperature (``curves``: pulse shapes);
* ``bedside`` (its own stream): the grade course as a ward charts it, so that ASTCT grading of the
  charts (docs/grading.md) gives back the grades: courses that resolve, vitals (SBP, MAP, SpO2, oxygen
  flow, FiO2, temperature) at the ward's rounds, oxygen devices and neurological assessments (the
  ``observations`` table), vasopressor courses; every value a function of the course so far only;
* ``assay``: site units, rounding, censoring at the limits of quantification, analyte names;
* ``faults``: the data-quality faults ingest must quarantine (their own random streams; a few in
  observations too: an unknown oxygen device term, an ICE score of 11);
* ``tables`` / ``truth``: the CSV text and truth.json.

Imports only ``pipeline.registry`` from the rest of the pipeline.
"""

from pipeline.simulation.arms import ARMS, Arm
from pipeline.simulation.simulator import simulate_cohort, simulate_tables
from pipeline.simulation.tables import TABLE_NAMES

__all__ = ["ARMS", "TABLE_NAMES", "Arm", "simulate_cohort", "simulate_tables"]
