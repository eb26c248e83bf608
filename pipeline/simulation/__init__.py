"""Synthetic CAR-T cohort simulator, one module per phase (see docs/simulator.md for the model).

Phases, in draw order (one ``np.random.Generator`` passed through them explicitly):

* ``patients`` / ``arms`` / ``severity``: arm, latent risk factors and severity liability,
  demographics; CRS / ICANS grades and the hour of every grade change (calibrated in ``severity``);
* ``treatments``: tocilizumab, dexamethasone, methylprednisolone (only the past decides a dose);
* ``sampling``: routine labs, research cytokine panels, ward vitals (never looks at outcomes);
* ``kinetics``: cytokine / biomarker values and body temperature (``curves``: pulse shapes);
* ``assay``: site units, rounding, censoring at the limits of quantification, analyte names;
* ``faults``: the data-quality faults ingest must quarantine (their own random stream);
* ``tables`` / ``truth``: the CSV text and truth.json.

Imports only ``pipeline.registry`` from the rest of the pipeline.
"""

from pipeline.simulation.arms import ARMS, Arm
from pipeline.simulation.simulator import simulate_cohort, simulate_tables
from pipeline.simulation.tables import TABLE_NAMES

__all__ = ["ARMS", "TABLE_NAMES", "Arm", "simulate_cohort", "simulate_tables"]
