"""Treatment policy: when each dose is given along a grade course, and how treatment slows progression.

A dose is decided only from the past (a grade onset that has happened, a site habit, the product):
prophylactic dexamethasone on days 0-2 at some sites for CD28 products (ZUMA-1 cohort 6 style),
tocilizumab at grade 2 CRS (at grade 1 where the site treats early) and again at grade 3,
dexamethasone for grade >= 3 CRS or grade >= 2 ICANS, methylprednisolone at grade 4.

Treatment slows progression: each later grade step (2..5) that a drug given before it could stop is
stopped with that drug's probability (tocilizumab: CRS only; steroids: CRS and ICANS). Fever (grade 1)
is never prevented. Which slot precedes which step depends only on the gaps between grade onsets and on
the dosing delays, never on the untreated grade, so the calibration can solve the cuts exactly.
"""

from __future__ import annotations

import numpy as np

DRUGS = np.array(["tocilizumab", "dexamethasone", "methylprednisolone"])
DOSES = np.array([8.0, 10.0, 1000.0])
DOSE_UNITS = np.array(["mg/kg", "mg", "mg"])
TOCILIZUMAB, DEXAMETHASONE, METHYLPREDNISOLONE = 0, 1, 2
# Dose slots per patient: prophylactic dexamethasone x3, tocilizumab x2, dexamethasone q6h x8,
# methylprednisolone daily x3.
SLOT_DRUG = np.array([DEXAMETHASONE] * 3 + [TOCILIZUMAB] * 2 + [DEXAMETHASONE] * 8 + [METHYLPREDNISOLONE] * 3)
PROPHYLAXIS_SLOTS = slice(0, 3)
DEX_SLOTS = slice(5, 13)
N_SLOTS = SLOT_DRUG.size
PROPHYLAXIS_HOURS = np.array([-1.0, 23.0, 47.0])  # 10 mg before infusion, then daily
N_DELAYS = 6  # uniform delays per patient (dosing decisions)
# Probability that a grade step (2..5) is stopped by a drug class given before it.
BLOCK_TOCILIZUMAB = 0.25
BLOCK_STEROID = 0.30


def _decision_hours(crs_hours: np.ndarray, icans_hours: np.ndarray, delay_uniform: np.ndarray,
                    early_tocilizumab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per patient: first and repeat tocilizumab, start of the dexamethasone and methylprednisolone courses."""
    u = delay_uniform
    toci_early = np.where(early_tocilizumab, crs_hours[:, 0] + 4.0 + 8.0 * u[:, 0], np.inf)  # fever persisting
    toci_first = np.minimum(toci_early, crs_hours[:, 1] + 0.5 + 3.5 * u[:, 1])  # at the latest at grade 2
    toci_repeat = np.maximum(crs_hours[:, 2] + 0.5 + 1.5 * u[:, 2], toci_first + 8.0)  # grade 3, >= 8 h later
    dex_start = np.minimum(crs_hours[:, 2] + 0.5 + 2.0 * u[:, 3], icans_hours[:, 1] + 0.5 + 3.0 * u[:, 4])
    methylpred_start = np.minimum(icans_hours[:, 3], crs_hours[:, 3]) + 1.0 + 2.0 * u[:, 5]
    return toci_first, toci_repeat, dex_start, methylpred_start


def dose_slot_hours(crs_hours: np.ndarray, icans_hours: np.ndarray, delay_uniform: np.ndarray,
                    prophylaxis: np.ndarray, early_tocilizumab: np.ndarray) -> np.ndarray:
    """(n, N_SLOTS) scheduled hour of every dose slot (inf where its trigger never happens).

    ``crs_hours`` / ``icans_hours``: (n, 5) onset of grade 1..5 (inf where not reached);
    ``delay_uniform``: (n, N_DELAYS) uniforms for the dosing delays.
    """
    toci_first, toci_repeat, dex_start, methylpred_start = _decision_hours(crs_hours, icans_hours, delay_uniform,
                                                                          early_tocilizumab)
    # Prophylaxis stops once a treatment course of dexamethasone has started.
    prophylaxis_hours = np.where(prophylaxis[:, None] & (PROPHYLAXIS_HOURS[None, :] < dex_start[:, None]),
                                 PROPHYLAXIS_HOURS[None, :], np.inf)
    return np.concatenate(
        [prophylaxis_hours, toci_first[:, None], toci_repeat[:, None],
         dex_start[:, None] + 6.0 * np.arange(8)[None, :], methylpred_start[:, None] + 24.0 * np.arange(3)[None, :]],
        axis=1,
    )


def first_dose_hours(crs_hours: np.ndarray, icans_hours: np.ndarray, delay_uniform: np.ndarray,
                     prophylaxis: np.ndarray, early_tocilizumab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per patient: first tocilizumab and first steroid (prophylactic or not), inf if none: the first
    slots of :func:`dose_slot_hours` without building them all."""
    toci_first, _, dex_start, methylpred_start = _decision_hours(crs_hours, icans_hours, delay_uniform,
                                                                 early_tocilizumab)
    prophylaxis_first = np.where(prophylaxis & (PROPHYLAXIS_HOURS[0] < dex_start), PROPHYLAXIS_HOURS[0], np.inf)
    return toci_first, np.minimum(np.minimum(dex_start, methylpred_start), prophylaxis_first)


def progression_limit(path_hours: np.ndarray, first_toci: np.ndarray, first_steroid: np.ndarray,
                      block_uniform: np.ndarray, block_tocilizumab: float) -> np.ndarray:
    """Highest grade reachable under treatment: the first step (2..5) a drug given before it stopped, minus 1.

    ``path_hours``: (n, 5) onset each grade would have untreated (the full course, whatever the grade);
    ``first_toci`` / ``first_steroid``: first dose hours; ``block_uniform``: (n, 4) uniforms, steps 2..5.
    Returns 5 where no step is stopped.
    """
    # Stop probability by exposure: none, tocilizumab, steroid, both (a table indexed per step).
    stop_probability = np.array([0.0, block_tocilizumab, BLOCK_STEROID,
                                 1 - (1 - block_tocilizumab) * (1 - BLOCK_STEROID)])
    later_steps_hours = path_hours[:, 1:]  # fever (grade 1) is never prevented
    exposure = ((first_toci[:, None] < later_steps_hours).view(np.int8)
                + 2 * (first_steroid[:, None] < later_steps_hours).view(np.int8))
    stopped = block_uniform < stop_probability[exposure]
    return np.where(stopped.any(axis=1), stopped.argmax(axis=1) + 1, 5)
