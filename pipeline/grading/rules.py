"""The ASTCT grading thresholds (``GradingRules``) and the words a timeline row gives as its reason.

Term grades come from the registry (``observations.csv``), drug classes from ``drug_classes.csv``; this
module holds only the numbers docs/grading.md names and the short English for each finding, so a new
term or drug is a registry row, not code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import GradingConfig

#: The ``grading`` section of params.yaml holds the defaults (documented there and in docs/grading.md).
_DEFAULTS = GradingConfig()


@dataclass(frozen=True)
class GradingRules:
    """Thresholds and holds (hours) of the ASTCT engine. The defaults are the ``grading`` params'
    (:class:`pipeline.config.GradingConfig`), so they are written in one place."""

    fever_celsius: float = _DEFAULTS.fever_celsius
    fever_window_hours: float = _DEFAULTS.fever_window_hours
    fever_waiver_hours: float = _DEFAULTS.fever_waiver_hours
    sbp_below_mmhg: float = _DEFAULTS.sbp_below_mmhg
    map_below_mmhg: float = _DEFAULTS.map_below_mmhg
    vital_hold_hours: float = _DEFAULTS.vital_hold_hours
    vasopressor_row_hours: float = _DEFAULTS.vasopressor_row_hours
    low_flow_max_l_min: float = _DEFAULTS.low_flow_max_l_min
    device_hold_hours: float = _DEFAULTS.device_hold_hours
    ice_hold_hours: float = _DEFAULTS.ice_hold_hours
    consciousness_hold_hours: float = _DEFAULTS.consciousness_hold_hours
    seizure_hold_hours: float = _DEFAULTS.seizure_hold_hours
    motor_hold_hours: float = _DEFAULTS.motor_hold_hours
    edema_hold_hours: float = _DEFAULTS.edema_hold_hours
    paediatric_max_age_years: float = _DEFAULTS.paediatric_max_age_years


#: Events graded, in output order (the timeline sorts events alphabetically at equal times).
EVENTS = ("CRS", "ICANS")
#: Domain names a timeline row can carry ("" for grade 0); the index is the domain's code internally.
DOMAINS = ("", "fever", "hypotension", "vasopressors", "hypoxia", "ICE", "CAPD", "consciousness",
           "seizure", "motor", "cerebral_edema", "death")
DOMAIN = {name: code for code, name in enumerate(DOMAINS)}
#: The one device term that a flow above ``low_flow_max_l_min`` upgrades to high-flow (grade 3).
NASAL_CANNULA = "nasal_cannula"
#: Drug classes (drug_classes.csv) read by CRS: counted vasopressors, vasopressin, fever-rule waivers.
VASOPRESSOR, VASOPRESSIN = "vasopressor", "vasopressin"
WAIVER_CLASSES = ("anti_cytokine", "steroid", "antipyretic")

#: ICE score (0-10) -> ICANS grade: 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3 (ASTCT, Lee 2019 table 4).
ICE_GRADE = np.array([3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 0], dtype=np.int8)
ICE_REASON = {1: "ICE score 7-9", 2: "ICE score 3-6", 3: "ICE score 0-2"}
#: CAPD score (0-32, children) -> grade: 0 -> 0, 1-8 -> 1, >= 9 -> 3 (docs/grading.md).
CAPD_MIN_SEVERE = 9
CAPD_REASON = {1: "CAPD score 1-8", 3: "CAPD score >= 9"}

#: ICANS term items: (item, domain name, hold field of GradingRules). Listed worst-evidence first: at a
#: tie of grades the timeline names the first domain here (imaging before bedside, ICE last).
ICANS_TERM_ITEMS = (
    ("CEREBRAL_EDEMA", "cerebral_edema", "edema_hold_hours"),
    ("MOTOR_WEAKNESS", "motor", "motor_hold_hours"),
    ("SEIZURE", "seizure", "seizure_hold_hours"),
    ("CONSCIOUSNESS", "consciousness", "consciousness_hold_hours"),
)

#: Short English for a term that grades; a term not listed reads "<item>: <term>" (new registry rows
#: still get a reason without a code change).
TERM_REASON = {
    ("CONSCIOUSNESS", "wakes_spontaneously"): "wakes spontaneously",
    ("CONSCIOUSNESS", "wakes_to_voice"): "wakes to voice",
    ("CONSCIOUSNESS", "wakes_to_touch"): "wakes only to touch",
    ("CONSCIOUSNESS", "unarousable"): "unarousable",
    ("SEIZURE", "rapidly_resolving"): "seizure resolving rapidly",
    ("SEIZURE", "prolonged"): "prolonged or repeated seizure",
    ("MOTOR_WEAKNESS", "deep_focal"): "deep focal motor weakness",
    ("CEREBRAL_EDEMA", "focal"): "focal cerebral oedema",
    ("CEREBRAL_EDEMA", "diffuse"): "diffuse cerebral oedema",
}


def term_reason(item: str, term: str) -> str:
    if item == "O2_DEVICE":
        return f"O2 device: {term}"
    return TERM_REASON.get((item, term), f"{item.lower()}: {term}")

