"""Benchmark ``pipeline.grading.grade_timeline`` on a synthetic cohort (target: 20,000 patients <= 10 s).

The cohort is built here in the ingest output contract (no simulator, no ingest): 14 days of vitals
(TEMP, SBP, MAP every 4-8 h, plus HR and SPO2 rows grading ignores), ICE twice daily, oxygen devices and
flows, consciousness checks, vasopressor courses with and without stop times, tocilizumab, dexamethasone
and acetaminophen, and a few deaths. Peak memory is the grading run's own: traced allocations
(tracemalloc, which numpy and pandas report to) in a separate, untimed run.

    .venv/bin/python benchmarks/bench_grading.py [--n-patients 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.grading import GradingRules, daily_grades, grade_timeline, onset_events  # noqa: E402

DAYS = 14
DEVICES = np.array(["room_air", "nasal_cannula", "face_mask", "high_flow_nasal_cannula", "bipap"], dtype=object)
CONSCIOUSNESS = np.array(["awake", "wakes_spontaneously", "wakes_to_voice", "wakes_to_touch"], dtype=object)


def _times(rng: np.random.Generator, n_patients: int, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Per patient, times from 0 to 14 days with gaps uniform in [low, high] hours."""
    per = int(DAYS * 24 / low) + 1
    gaps = rng.uniform(low, high, (n_patients, per))
    hours = np.cumsum(gaps, axis=1) - gaps[:, :1]
    keep = hours < DAYS * 24
    patient = np.broadcast_to(np.arange(n_patients)[:, None], hours.shape)[keep]
    return patient, hours[keep].round(2)


def make_cohort(n_patients: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"P{i:06d}" for i in range(n_patients)], dtype=object)
    severity = rng.beta(1.5, 4.0, n_patients)  # per-patient illness, drives every abnormal value

    vp, vh = _times(rng, n_patients, 4.0, 8.0)
    s = severity[vp]
    analytes = {"TEMP": 37.0 + 2.5 * s + rng.normal(0, 0.4, len(vp)),
                "SBP": 125 - 50 * s + rng.normal(0, 10, len(vp)),
                "MAP": 88 - 35 * s + rng.normal(0, 7, len(vp)),
                "HR": 80 + 40 * s + rng.normal(0, 8, len(vp)),
                "SPO2": 98 - 8 * s + rng.normal(0, 1, len(vp))}
    measurements = [pd.DataFrame({"patient_id": ids[vp], "hours_since_anchor": vh, "analyte": code, "value": v})
                    for code, v in analytes.items()]
    flow = rng.random(len(vp)) < s * 0.6
    measurements.append(pd.DataFrame({"patient_id": ids[vp[flow]], "hours_since_anchor": vh[flow],
                                      "analyte": "O2_FLOW", "value": rng.choice([2.0, 4.0, 6.0, 8.0, 15.0], flow.sum())}))

    ip, ih = _times(rng, n_patients, 11.0, 13.0)
    ice = np.clip(np.round(10 - 12 * severity[ip] * rng.random(len(ip))), 0, 10)
    dp, dh = _times(rng, n_patients, 8.0, 24.0)
    device = DEVICES[np.minimum((severity[dp] * rng.random(len(dp)) * 8).astype(int), len(DEVICES) - 1)]
    cp, ch = _times(rng, n_patients, 8.0, 12.0)
    consc = CONSCIOUSNESS[np.minimum((severity[cp] * rng.random(len(cp)) * 5).astype(int), 3)]
    observations = pd.concat([
        pd.DataFrame({"patient_id": ids[ip], "hours_since_anchor": ih, "item": "ICE_SCORE",
                      "value": ice.astype(int).astype(str), "score": ice}),
        pd.DataFrame({"patient_id": ids[dp], "hours_since_anchor": dh, "item": "O2_DEVICE", "value": device,
                      "score": np.nan}),
        pd.DataFrame({"patient_id": ids[cp], "hours_since_anchor": ch, "item": "CONSCIOUSNESS", "value": consc,
                      "score": np.nan}),
    ])

    sick = np.flatnonzero(severity > 0.35)
    reps = rng.integers(1, 6, len(sick))
    tp = np.repeat(sick, reps)
    start = rng.uniform(24, 200, len(tp)).round(2)
    drug = rng.choice(np.array(["norepinephrine", "vasopressin", "epinephrine", "phenylephrine", "tocilizumab",
                                "dexamethasone", "acetaminophen"], dtype=object), len(tp))
    end = np.where(rng.random(len(tp)) < 0.5, start + rng.uniform(2, 48, len(tp)), np.nan)
    treatments = pd.DataFrame({"patient_id": ids[tp], "hours_since_anchor": start, "drug": drug,
                               "end_hours_since_anchor": end})
    dead = np.flatnonzero(severity > 0.8)
    events = pd.DataFrame({"patient_id": ids[dead], "event": "DEATH", "grade": 5,
                           "hours_since_anchor": rng.uniform(100, 330, len(dead)).round(2)})
    patients = pd.DataFrame({"patient_id": ids, "age": rng.uniform(18, 80, n_patients)})
    frames = {"patients": patients, "measurements": pd.concat(measurements), "observations": observations,
              "treatments": treatments, "events": events}
    for name in ("measurements", "observations"):  # ingest writes rows sorted by patient and time
        frame = frames[name]
        patient = np.searchsorted(ids, frame["patient_id"].to_numpy(dtype=object))  # ids are sorted
        order = np.lexsort((frame["hours_since_anchor"].to_numpy(), patient))
        frames[name] = frame.iloc[order].reset_index(drop=True).astype({"patient_id": "str"})
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patients", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tables = make_cohort(args.n_patients)
    rows = {k: len(v) for k, v in tables.items()}
    print(f"cohort: {args.n_patients:,} patients, rows {rows}")
    rules = GradingRules()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        timeline = grade_timeline(tables, rules)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    onsets, daily = onset_events(timeline), daily_grades(timeline)
    views = time.perf_counter() - start
    tracemalloc.start()
    grade_timeline(tables, rules)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"grade_timeline: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
          f"({len(timeline):,} timeline rows); onset_events + daily_grades {views:.2f} s "
          f"({len(onsets):,} onsets, {len(daily):,} patient-days)")
    print(f"peak traced memory of grade_timeline: {peak / 1024**3:.2f} GB")


if __name__ == "__main__":
    main()
