"""Data-quality faults that ingest must quarantine (measurements only, at most one per row).

Unparseable and missing values, out-of-range values, malformed timestamps, exact duplicate rows and
rows for patients missing from patients.csv. Faults come from their own random stream, so switching
them on never shifts the clean data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.simulation.analytes import TEMP_INDEX
from pipeline.simulation.assay import NOT_CENSORED, Reported
from pipeline.simulation.sampling import Rows
from pipeline.simulation.text import EPOCH_START, num_text

# Quarantine faults: fraction of clean measurement rows (at least MIN_FAULT_ROWS each).
FAULT_FRACTIONS = {
    "unparseable_value": 2e-4,
    "missing_value": 2e-4,
    "out_of_range": 1.5e-4,
    "bad_time": 2e-4,
    "duplicates": 5e-4,
}
MIN_FAULT_ROWS = 2
UNPARSEABLE_TEXTS = np.array(["hemolyzed", "see comment", "clotted", "QNS"])
QUARANTINE_REASONS = ("unparseable_value", "missing_value", "out_of_range", "unknown_patient", "bad_time")


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Faults:
    """What was injected: text overrides per clean row, copied rows, and the count per quarantine reason."""

    value_override: np.ndarray  # per clean row: index into value_texts, -1 for none
    time_override: np.ndarray  # per clean row: index into time_texts, -1 for none
    accepted: np.ndarray  # per clean row: False where ingest must quarantine it
    value_texts: list[str | None] = field(default_factory=list)
    time_texts: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUARANTINE_REASONS, 0))
    duplicate_rows: np.ndarray = field(default_factory=_no_rows)  # clean rows written twice
    unknown_rows: np.ndarray = field(default_factory=_no_rows)  # copied under unknown patient ids
    unknown_patient: np.ndarray = field(default_factory=_no_rows)  # patient index (>= n) per copy

    @classmethod
    def none(cls, n_rows: int) -> Faults:
        return cls(np.full(n_rows, -1, dtype=np.int64), np.full(n_rows, -1, dtype=np.int64),
                   np.ones(n_rows, dtype=bool))

    def override_values(self, rows: np.ndarray, texts: list[str | None], reason: str) -> None:
        self.value_override[rows] = len(self.value_texts) + np.arange(rows.size)
        self.value_texts += texts
        self._quarantine(rows, reason)

    def override_times(self, rows: np.ndarray, texts: list[str], reason: str) -> None:
        self.time_override[rows] = len(self.time_texts) + np.arange(rows.size)
        self.time_texts += texts
        self._quarantine(rows, reason)

    def _quarantine(self, rows: np.ndarray, reason: str) -> None:
        self.counts[reason] = rows.size
        self.accepted[rows] = False


class _RowPicker:
    """Disjoint picks from a single permutation so each faulty row carries exactly one fault."""

    def __init__(self, order: np.ndarray) -> None:
        self.order = order
        self.cursor = 0

    def take(self, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
        pool = self.order[self.cursor:]
        if eligible is not None:
            selected = np.flatnonzero(eligible[pool])[:k]
            picked = pool[selected]
            used = np.zeros(pool.size, dtype=bool)
            used[selected] = True
            self.order[self.cursor:] = np.concatenate([pool[used], pool[~used]])
        else:
            picked = pool[:k]
        self.cursor += picked.size
        return picked

    def picked(self) -> np.ndarray:
        return self.order[: self.cursor]


def _bad_time_texts(rows: np.ndarray, rows_table: Rows, anchor_minutes: np.ndarray) -> list[str]:
    """Day-first dates, impossible dates and free text, in rotation."""
    absolute_minutes = anchor_minutes[rows_table.patient[rows]] + rows_table.minutes[rows]
    stamps = (EPOCH_START + absolute_minutes.astype("timedelta64[m]")).astype(object)
    styles = np.arange(rows.size) % 3
    return [
        t.strftime("%d/%m/%Y %H:%M") if style == 0 else (f"{t.year}-13-45T25:61:00" if style == 1 else "not recorded")
        for t, style in zip(stamps, styles, strict=True)
    ]


def _unknown_patient_copies(faults: Faults, picker: _RowPicker, rows: Rows, n_patients: int,
                            fault_rng: np.random.Generator) -> None:
    """Rows for patients missing from patients.csv: copies of a few patients' rows under new ids."""
    n_source = max(1, n_patients // 400)
    source_patients = fault_rng.choice(n_patients, size=min(n_source, n_patients), replace=False)
    candidate = np.isin(rows.patient, source_patients) & (fault_rng.random(rows.n_rows) < 0.05)
    candidate[picker.picked()] = False
    unknown_rows = np.flatnonzero(candidate)
    if unknown_rows.size == 0:
        unknown_rows = np.flatnonzero(np.isin(rows.patient, source_patients))[:1]
    faults.unknown_rows = unknown_rows
    faults.unknown_patient = n_patients + np.searchsorted(np.sort(source_patients), rows.patient[unknown_rows])
    faults.counts["unknown_patient"] = unknown_rows.size


def inject_faults(rows: Rows, reported: Reported, anchor_minutes: np.ndarray, n_patients: int, seed: int,
                  enabled: bool) -> Faults:
    """Pick the faulty rows (a fixed number per kind) and record what ingest must find."""
    faults = Faults.none(rows.n_rows)
    if not enabled:
        return faults
    fault_rng = np.random.default_rng([seed, 1])  # separate stream: faults never shift the clean data
    picker = _RowPicker(fault_rng.permutation(rows.n_rows))
    want = {kind: max(MIN_FAULT_ROWS, int(round(fraction * rows.n_rows))) for kind, fraction in FAULT_FRACTIONS.items()}

    picked = picker.take(want["unparseable_value"])
    texts = UNPARSEABLE_TEXTS[fault_rng.integers(0, UNPARSEABLE_TEXTS.size, picked.size)].tolist()
    faults.override_values(picked, texts, "unparseable_value")
    picked = picker.take(want["missing_value"])
    faults.override_values(picked, [None] * picked.size, "missing_value")
    # Negative values, or a Fahrenheit reading typed into a Celsius field: outside plausible range.
    picked = picker.take(want["out_of_range"], (reported.censoring == NOT_CENSORED) & (reported.value > 0))
    bad_values = np.where(rows.analyte[picked] == TEMP_INDEX, np.round(reported.value[picked] * 1.8 + 32, 1),
                          -reported.value[picked])
    faults.override_values(picked, num_text(bad_values).to_pylist(), "out_of_range")
    # Malformed timestamps, at most one per patient (so two can never be exact duplicates).
    picked = picker.take(want["bad_time"] * 2)
    _, first = np.unique(rows.patient[picked], return_index=True)
    picked = picked[np.sort(first)][: want["bad_time"]]
    faults.override_times(picked, _bad_time_texts(picked, rows, anchor_minutes), "bad_time")
    faults.duplicate_rows = np.sort(picker.take(want["duplicates"]))
    _unknown_patient_copies(faults, picker, rows, n_patients, fault_rng)
    return faults


OBSERVATION_FAULT_ROWS = 2  # per kind: an unknown oxygen device term, an ICE score of 11
UNKNOWN_DEVICE_TERMS = ["oxygen tent", "trach collar"]


def inject_observation_faults(item: np.ndarray, value: np.ndarray, seed: int, enabled: bool,
                              device_item: int, ice_item: int) -> tuple[dict[int, str], dict[str, int]]:
    """A few observation rows ingest must quarantine: an oxygen device term not in the registry
    (``unknown_term``) and an ICE score of 11 (``out_of_range``). Only rows that chart nothing abnormal
    (room air, ICE 10) are picked, so the grades derived from the rest stay the same. Own stream."""
    if not enabled:
        return {}, {}
    fault_rng = np.random.default_rng([seed, 11])
    override: dict[int, str] = {}
    counts: dict[str, int] = {}
    for reason, eligible, texts in (
        ("unknown_term", (item == device_item) & (value == "room_air"), UNKNOWN_DEVICE_TERMS),
        ("out_of_range", (item == ice_item) & (value == "10"), ["11"] * OBSERVATION_FAULT_ROWS),
    ):
        pool = np.flatnonzero(eligible)
        picked = np.sort(fault_rng.choice(pool, size=min(OBSERVATION_FAULT_ROWS, pool.size), replace=False))
        for row, text in zip(picked.tolist(), texts, strict=False):
            override[row] = text
        if picked.size:
            counts[reason] = int(picked.size)
    return override, counts
