"""The simulator's bedside charts (vitals, oxygen, neurological assessments, vasopressor courses): graded
with docs/grading.md they give back the simulated grades, and nothing charted looks ahead."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.simulation import bedside, simulate_cohort
from pipeline.simulation.bedside import build_course, chart, draw_bedside, temperature
from pipeline.simulation.calibration import calibration
from pipeline.simulation.patients import draw_patients
from pipeline.simulation.sampling import draw_schedule
from pipeline.simulation.severity import draw_outcomes
from pipeline.simulation.treatments import schedule_treatments

SEED = 20261121
PRESSORS = {"norepinephrine", "phenylephrine", "epinephrine", "dopamine"}


def _hours(frame: pd.DataFrame, anchors: pd.Series, column: str = "time") -> np.ndarray:
    stamps = pd.to_datetime(frame[column].replace("", None), format="%Y-%m-%dT%H:%M:%S")
    return ((stamps.to_numpy() - anchors.reindex(frame["patient_id"]).to_numpy()) / np.timedelta64(1, "h")).astype(float)


@pytest.fixture(scope="module")
def cohort():
    """The default cohort (1000 patients, the default seed), clean, with times as hours since infusion."""
    tables, truth = simulate_cohort(1000, SEED, faults=False)
    patients = tables["patients"].set_index("patient_id")
    anchors = pd.Series(pd.to_datetime(patients["anchor_time"]).to_numpy(), index=patients.index)
    m = tables["measurements"]
    m = m[m["analyte"].isin(["TEMP", "Temperature", "SBP", "MAP", "SPO2", "O2_FLOW", "FIO2"])]
    m = pd.DataFrame({"patient_id": m["patient_id"].to_numpy(), "hours": _hours(m, anchors),
                      "analyte": m["analyte"].replace({"Temperature": "TEMP"}).to_numpy(),
                      "value": pd.to_numeric(m["value"]).to_numpy()})
    obs = tables["observations"].assign(hours=lambda o: _hours(o, anchors))
    t = tables["treatments"]
    t = t.assign(hours=_hours(t, anchors), end_hours=_hours(t, anchors, "end_time"))
    events = tables["events"].assign(hours=lambda e: _hours(e, anchors))
    worst = events.groupby(["patient_id", "event"])["grade"].max().unstack()
    patients["crs"] = worst["CRS"].reindex(patients.index).fillna(0).astype(int)
    patients["icans"] = worst["ICANS"].reindex(patients.index).fillna(0).astype(int)
    return {"tables": tables, "truth": truth, "patients": patients, "vitals": m, "observations": obs,
            "treatments": t, "events": events}


# ------------------------------------------------------------------------------------------------
# Grading the charts gives back the simulated grades (the engine of docs/grading.md, through ingest)
# ------------------------------------------------------------------------------------------------


def test_grading_the_charts_reproduces_the_simulated_grades(tmp_path):
    """Done criterion of the bedside charts: exact maximum CRS and ICANS grade for >= 95 % of patients and
    a grade >= 3 onset within 8 h for >= 95 % of those who reach it, through ingest (faults on) and the
    grading engine, on the default cohort."""
    from pipeline.adapters.canonical import read_cohort
    from pipeline.config import parse_config
    from pipeline.grading import grade_timeline
    from pipeline.ingestion import ingest_tables
    from pipeline.simulate import main

    main(parse_config({"simulate": {"n_patients": 1000, "seed": SEED, "faults": True}}), out=tmp_path / "cohort")
    ingested = ingest_tables(read_cohort(tmp_path / "cohort"))
    assert ingested.report["quarantine_by_reason"]["unknown_term"] == 2  # the injected observation faults
    tables = ingested.tables
    timeline = grade_timeline(tables)
    events, ids = tables["events"], tables["patients"]["patient_id"]
    for event in ("CRS", "ICANS"):
        given = events[events["event"] == event].groupby("patient_id")["grade"].max().reindex(ids, fill_value=0)
        derived = timeline[timeline["event"] == event].groupby("patient_id")["grade"].max().reindex(ids, fill_value=0)
        assert (given.to_numpy() == derived.to_numpy()).mean() >= 0.95, event
        assert set(given[given >= 3].unique()) >= {3, 4, 5}  # every severe grade is exercised
        severe = events[(events["event"] == event) & (events["grade"] >= 3)]
        onset = severe.groupby("patient_id")["hours_since_anchor"].min()
        found = timeline[(timeline["event"] == event) & (timeline["grade"] >= 3)]
        gap = (found.groupby("patient_id")["hours_since_anchor"].min().reindex(onset.index) - onset).abs()
        assert len(onset) > 80 and (gap <= 8).mean() >= 0.95, event


# ------------------------------------------------------------------------------------------------
# What the charts contain
# ------------------------------------------------------------------------------------------------


def test_fever_precedes_every_crs_grade_onset_unless_waived(cohort):
    """ASTCT: fever (TEMP >= 38.0 C) within 24 h before each CRS grade onset (seen at the round 0-2 h
    after it), unless tocilizumab or a steroid was given after the first fever; no fever without CRS."""
    v, e, t, p = cohort["vitals"], cohort["events"], cohort["treatments"], cohort["patients"]
    fever = v[(v["analyte"] == "TEMP") & (v["value"] >= 38.0)]
    assert not fever["patient_id"].isin(p.index[p["crs"] == 0]).any()
    first_fever = fever.groupby("patient_id")["hours"].min()
    onsets = e[(e["event"] == "CRS") & (e["grade"] <= 4)]
    doses = t[t["drug"].isin(["tocilizumab", "dexamethasone", "methylprednisolone"])]
    doses = doses[doses["hours"] >= first_fever.reindex(doses["patient_id"]).to_numpy()]
    first_dose = doses.groupby("patient_id")["hours"].min()
    pairs = onsets[["patient_id", "hours"]].merge(fever[["patient_id", "hours"]], on="patient_id", suffixes=("", "_f"),
                                                  how="left")
    near = pairs[(pairs["hours_f"] > pairs["hours"] - 24) & (pairs["hours_f"] <= pairs["hours"] + 2)]
    seen = onsets.set_index(["patient_id", "hours"]).index.isin(near.set_index(["patient_id", "hours"]).index)
    waived = (first_dose.reindex(onsets["patient_id"]).to_numpy() <= onsets["hours"].to_numpy() + 2)
    assert (seen | waived).all()
    assert (seen[onsets["grade"].to_numpy() == 1]).all()  # every first fever is charted


def test_hypotension_and_oxygen_only_where_the_grade_says(cohort):
    """SBP < 90 or MAP < 65 only in patients with CRS grade >= 2; vasopressors only at grade >= 3; positive
    pressure only at grade 4; a nasal cannula never above 6 L/min; O2_FLOW only beside an oxygen device."""
    v, obs, t, p = cohort["vitals"], cohort["observations"], cohort["treatments"], cohort["patients"]
    wide = v.pivot_table(index=["patient_id", "hours"], columns="analyte", values="value").reset_index()
    low = wide[(wide["SBP"] < 90) | (wide["MAP"] < 65)]
    assert len(low) > 100 and (p["crs"].reindex(low["patient_id"]).to_numpy() >= 2).all()
    pressors = t[t["drug"].isin(PRESSORS | {"vasopressin"})]
    assert len(pressors) > 20 and (p["crs"].reindex(pressors["patient_id"]).to_numpy() >= 3).all()
    assert (pressors["end_hours"] > pressors["hours"]).all()
    device = obs[obs["item"] == "O2_DEVICE"]
    positive = device[device["value"].isin(["cpap", "bipap", "mechanical_ventilation"])]
    assert len(positive) > 0 and (p["crs"].reindex(positive["patient_id"]).to_numpy() >= 4).all()
    high = device[device["value"].isin(["high_flow_nasal_cannula", "face_mask", "non_rebreather", "venturi"])]
    assert (p["crs"].reindex(high["patient_id"]).to_numpy() >= 3).all()
    on_oxygen = device[device["value"] != "room_air"].set_index(["patient_id", "hours"])["value"]
    flow = v[v["analyte"] == "O2_FLOW"].set_index(["patient_id", "hours"])["value"]
    assert flow.index.isin(on_oxygen.index).all()
    nasal = on_oxygen[on_oxygen == "nasal_cannula"].index
    assert (flow.reindex(nasal).dropna() <= 6).all() and (flow.reindex(nasal).dropna() >= 1).all()
    fio2 = v[v["analyte"] == "FIO2"].set_index(["patient_id", "hours"])["value"]
    assert len(fio2) > 100 and fio2.between(21, 100).all()
    assert on_oxygen.reindex(fio2.index).isin(set(high["value"]) | set(positive["value"])).all()
    # Grade 4 by hypotension: two vasopressors other than vasopressin at once.
    two = pressors[pressors["drug"] != "vasopressin"].groupby("patient_id")["drug"].nunique()
    assert (two >= 2).any() and (p["crs"].reindex(two.index[two >= 2]) >= 4).all()


def test_neurological_assessments_follow_the_icans_grade(cohort):
    """ICE twice daily from day 0 (10 without ICANS), and grade-3/4 domains only where ICANS reached them."""
    obs, p = cohort["observations"], cohort["patients"]
    ice = obs[obs["item"] == "ICE_SCORE"]
    per_patient = ice[(ice["hours"] >= 24) & (ice["hours"] < 13 * 24)].groupby("patient_id").size()
    assert per_patient.median() >= 22  # twice a day over 12 days, a few missed
    scores = pd.to_numeric(ice["value"], errors="coerce")
    assert set(ice["value"][scores.isna()]) == {"not assessable"}
    assert scores.dropna().between(0, 10).all()
    no_icans = ice["patient_id"].isin(p.index[p["icans"] == 0])
    assert (scores[no_icans] == 10).all()
    # Children (<= 12 years) are assessed with CAPD instead: 0 without ICANS, >= 9 only at grade >= 3.
    capd = obs[obs["item"] == "CAPD_SCORE"]
    children = p.index[pd.to_numeric(p["age"]) <= 12]
    assert len(children) > 20 and set(capd["patient_id"]) == set(children) and not ice["patient_id"].isin(children).any()
    capd_score = pd.to_numeric(capd["value"], errors="coerce")
    assert (capd_score[capd["patient_id"].isin(p.index[p["icans"] == 0])] == 0).all()
    assert (p["icans"].reindex(capd["patient_id"][capd_score >= 9]) >= 3).all()
    grade = p["icans"].reindex(obs["patient_id"]).to_numpy()
    for item, term, at_least in [("CONSCIOUSNESS", "wakes_to_touch", 3), ("CONSCIOUSNESS", "unarousable", 4),
                                 ("SEIZURE", "rapidly_resolving", 3), ("SEIZURE", "prolonged", 4),
                                 ("CEREBRAL_EDEMA", "focal", 3), ("CEREBRAL_EDEMA", "diffuse", 4),
                                 ("MOTOR_WEAKNESS", "deep_focal", 4)]:
        rows = (obs["item"] == item) & (obs["value"] == term)
        assert rows.any(), (item, term)
        assert (grade[rows.to_numpy()] >= at_least).all(), (item, term)
    assert not obs.duplicated(["patient_id", "time", "item"]).any()


def test_bedside_rows_stay_proportionate(cohort):
    """Size check: the bedside adds vitals every 4-8 h while inpatient (more while CRS is active), not a
    flood; truth.json counts every added row exactly."""
    tables, truth, n = cohort["tables"], cohort["truth"], 1000
    vitals = truth["bedside"]["vital_rows"]
    assert sum(vitals.values()) / n < 320  # ~75 SBP / MAP / SpO2 rows each per patient, plus oxygen
    assert 40 < vitals["SBP"] / n < 110
    assert tables["observations"].shape[0] / n < 100
    assert sum(truth["bedside"]["observation_rows"].values()) == tables["observations"].shape[0]
    pressor_rows = tables["treatments"]["end_time"] != ""
    assert sum(truth["bedside"]["vasopressor_courses"].values()) == int(pressor_rows.sum())
    assert truth["tables"]["observations"]["rows_written"] == tables["observations"].shape[0]
    assert truth["expected_ingest"]["files"]["measurements"]["rows_accepted"] == tables["measurements"].shape[0]


# ------------------------------------------------------------------------------------------------
# No look-ahead: a course cut short changes nothing charted before the cut
# ------------------------------------------------------------------------------------------------


def _cut(outcomes, grade_field: str, at: int):
    """The same outcomes with every course of ``grade_field`` stopped before grade ``at`` (no death from it)."""
    hours = getattr(outcomes, grade_field).copy()
    cut_hours = hours[:, at - 1].copy()
    hours[:, at - 1:] = np.inf
    fields = {grade_field: hours, grade_field.replace("_hours", ""): np.isfinite(hours).sum(axis=1)}
    death = np.isfinite(getattr(outcomes, grade_field)[:, 4])
    fields["death_hours"] = np.where(death, np.inf, outcomes.death_hours)
    return dataclasses.replace(outcomes, **fields), cut_hours


def _charts(patients, outcomes, seed: int, schedule):
    treatments = schedule_treatments(outcomes, patients.course, patients.anchor_minutes)
    rows, rounds = schedule
    course = build_course(outcomes, treatments, draw_bedside(patients.n, rounds.ward_slots, seed), patients.age_years)
    return course, chart(course, rounds, rows, patients.anchor_clock_minutes), rows


def _differences(patients, outcomes, grade_field: str, seed: int) -> int:
    """Rows charted before the cut (and before the cut course resolves) that differ between the full course
    and the course cut at its grade 3 onset: vitals, temperatures, observations and vasopressor courses."""
    rng = np.random.default_rng(seed)
    schedule = draw_schedule(patients.anchor_clock_minutes, outcomes.crs_grade_hours, outcomes.marker_amplitude,
                             outcomes.death_hours, patients.site, rng)  # one schedule for both: only values compared
    cut, cut_hours = _cut(outcomes, grade_field, 3)
    full_course, full, rows = _charts(patients, outcomes, seed, schedule)
    cut_course, short, _ = _charts(patients, cut, seed, schedule)
    resolution = cut_course.crs_resolution if grade_field == "crs_grade_hours" else cut_course.icans_resolution
    until = np.where(np.isfinite(cut_hours), np.minimum(cut_hours, resolution), np.inf)  # minutes < 60 x until

    def before(patient, minutes):
        return minutes < np.round(60 * until[patient])  # before the onset minute as written

    differing = 0
    for fields in (("vital_patient", "vital_minutes", "vital_code", "vital_value"),
                   ("obs_patient", "obs_minutes", "obs_item", "obs_value"),
                   ("pressor_patient", "pressor_start", "pressor_drug", "pressor_end")):
        a = [getattr(full, f) for f in fields]
        b = [getattr(short, f) for f in fields]
        a = pd.DataFrame(dict(zip(fields, a, strict=True)))[before(a[0], a[1])]
        b = pd.DataFrame(dict(zip(fields, b, strict=True)))[before(b[0], b[1])]
        if fields[0] == "pressor_patient":  # a course running at the cut stops differently; its start does not
            a, b = a.drop(columns="pressor_end"), b.drop(columns="pressor_end")
        merged = a.merge(b, how="outer", indicator=True)
        differing += int((merged["_merge"] != "both").sum())
    temp = rows.analyte == bedside.TEMP_INDEX
    kept = before(rows.patient[temp], rows.minutes[temp])
    p, minutes = rows.patient[temp][kept], rows.minutes[temp][kept]
    differing += int((temperature(full_course, p, minutes) != temperature(cut_course, p, minutes)).sum())
    return differing


def test_vitals_before_a_severe_onset_do_not_tell_who_will_reach_it(cohort):
    """At the same course so far (CRS grade 2 begun, grade 3 not, in the first 4 h of grade 2, when no course
    can have resolved), patients who will reach grade 3 and those who will not are equally often
    hypotensive, on oxygen and febrile: what drives grade 2 is drawn without the outcome. (A driver drawn
    from the eventual grade, e.g. hypotension at grade 2 more often in patients heading for vasopressors,
    would separate them.)"""
    v, obs, e = cohort["vitals"], cohort["observations"], cohort["events"]
    crs = e[e["event"] == "CRS"]
    onset2 = crs[crs["grade"] == 2].set_index("patient_id")["hours"]
    onset3 = crs[crs["grade"] == 3].set_index("patient_id")["hours"].reindex(onset2.index)
    end = np.fmin((onset2 + 4.0).to_numpy(), onset3.to_numpy())
    window = pd.DataFrame({"start": onset2.to_numpy(), "end": end}, index=onset2.index)

    def in_window(frame: pd.DataFrame) -> pd.DataFrame:
        w = window.reindex(frame["patient_id"])
        return frame[(frame["hours"].to_numpy() >= w["start"].to_numpy()) & (frame["hours"].to_numpy() < w["end"].to_numpy())]

    wide = in_window(v).pivot_table(index=["patient_id", "hours"], columns="analyte", values="value").reset_index()
    per_patient = pd.DataFrame({
        "hypotensive": ((wide["SBP"] < 90) | (wide["MAP"] < 65)).groupby(wide["patient_id"]).max(),
        "febrile": (wide["TEMP"] >= 38).groupby(wide["patient_id"]).max(),
    })
    device = in_window(obs[obs["item"] == "O2_DEVICE"])
    per_patient["oxygen"] = (device["value"] != "room_air").groupby(device["patient_id"]).max()
    per_patient = per_patient.dropna().astype(float)
    severe = onset3.reindex(per_patient.index).notna()
    assert severe.sum() > 80 and (~severe).sum() > 200
    shares = per_patient.groupby(severe.to_numpy()).mean()
    assert (shares.loc[True] - shares.loc[False]).abs().max() < 0.15, shares  # ~3 standard errors
    assert shares.loc[False, "hypotensive"] > 0.3 and shares.loc[False, "oxygen"] > 0.2  # both drivers occur


@pytest.fixture(scope="module")
def drawn():
    rng = np.random.default_rng(SEED)
    patients = draw_patients(1500, rng)
    outcomes = draw_outcomes(patients.arm, patients.latents, patients.course, calibration())
    assert (outcomes.crs_grade >= 3).sum() > 100 and (outcomes.icans_grade >= 3).sum() > 100
    return patients, outcomes


@pytest.mark.parametrize("grade_field", ["crs_grade_hours", "icans_grade_hours"])
def test_bedside_charts_use_only_the_past(drawn, grade_field):
    """Fever, its duration, every vital, oxygen device, neurological assessment and vasopressor start at
    time t depend only on the course up to t: cutting every course short at its grade 3 onset (as if the
    patient had stopped at grade 2) changes nothing charted before that onset (nor before the cut course
    would resolve). Patients who will and will not reach grade 3, at the same course so far, are charted
    alike; so a landmark's vitals cannot encode the future grade."""
    patients, outcomes = drawn
    assert _differences(patients, outcomes, grade_field, SEED) == 0


def test_the_look_ahead_check_can_fail(drawn, monkeypatch):
    """The old fever (its end set from the eventual grade, ``crs_grade[patient]``) is caught by the check above."""
    patients, outcomes = drawn

    def leaky_fever(course, patient, hours):
        eventual = np.isfinite(course.crs_onset).sum(axis=1)  # the grade the course will reach: the future
        onset = course.crs_onset[:, 0]
        return (hours >= onset[patient]) & (hours < onset[patient] + 8.0 * (1 + 0.5 * eventual[patient]))

    monkeypatch.setattr(bedside, "in_fever", leaky_fever)
    assert _differences(patients, outcomes, "crs_grade_hours", SEED) > 20
