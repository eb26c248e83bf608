"""The simulated cohort: deterministic, calibrated to docs/clinical.md#reference-incidences, leak-free, faults counted."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.config import parse_config
from pipeline.registry import load_registry, normalize_name, normalize_unit
from pipeline.simulate import ARMS, main, simulate_cohort

FILES = ("patients.csv", "measurements.csv", "events.csv", "treatments.csv", "observations.csv", "truth.json")
VITALS = ("TEMP", "SBP", "MAP", "SPO2", "O2_FLOW", "FIO2")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
CENSORED = re.compile(r"^[<>]\d+(\.\d+)?$")


def _hours(frame: pd.DataFrame, anchors: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(frame["time"], format="%Y-%m-%dT%H:%M:%S", errors="coerce")
    anchor = anchors.reindex(frame["patient_id"]).to_numpy()
    return ((stamps.to_numpy() - anchor) / np.timedelta64(1, "h")).astype(float)


@pytest.fixture(scope="module")
def cohort5000():
    """The default-seed cohort at the calibration size, with times as hours since infusion."""
    tables, truth = simulate_cohort(5000, 20261121, faults=False)
    patients = tables["patients"].set_index("patient_id")
    anchors = pd.Series(pd.to_datetime(patients["anchor_time"]).to_numpy(), index=patients.index)
    m = tables["measurements"]
    registry = load_registry()
    names = m["analyte"].unique()
    code = m["analyte"].map({n: registry.synonyms[normalize_name(n)] for n in names})
    scale = {(c, u): registry.conversions[(c, normalize_unit(u))][0]
             for c, u in m.assign(code=code)[["code", "unit"]].drop_duplicates().itertuples(index=False)}
    stamps = pd.to_datetime(m["time"], format="%Y-%m-%dT%H:%M:%S").to_numpy()
    anchor_day = anchors.reindex(m["patient_id"]).to_numpy().astype("datetime64[D]")
    m = pd.DataFrame({
        "patient_id": m["patient_id"].to_numpy(),
        "hours": _hours(m, anchors),
        "day": (stamps.astype("datetime64[D]") - anchor_day).astype(int),  # calendar day vs infusion day
        "analyte": code.to_numpy(),
        "value": pd.to_numeric(m["value"].str.lstrip("<>"), errors="coerce").to_numpy()
        * np.array([scale[k] for k in zip(code, m["unit"], strict=True)]),
    })
    events = tables["events"].assign(hours=lambda e: _hours(e, anchors))
    treatments = tables["treatments"].assign(hours=lambda t: _hours(t, anchors))
    worst = events.groupby(["patient_id", "event"])["grade"].max().unstack()
    patients["crs"] = worst["CRS"].reindex(patients.index).fillna(0)
    patients["icans"] = worst["ICANS"].reindex(patients.index).fillna(0)
    crs_rows = events[events["event"] == "CRS"]
    patients["crs_onset_days"] = crs_rows.groupby("patient_id")["hours"].min().reindex(patients.index) / 24
    patients["severe_onset_hours"] = (
        crs_rows[crs_rows["grade"] >= 3].groupby("patient_id")["hours"].min().reindex(patients.index)
    )
    patients["death_hours"] = events[events["event"] == "DEATH"].groupby("patient_id")["hours"].min().reindex(
        patients.index)
    return {"patients": patients, "measurements": m, "events": events, "treatments": treatments, "truth": truth}


# ------------------------------------------------------------------------------------------------
# Output contract and determinism
# ------------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    config = parse_config({"simulate": {"n_patients": 150, "seed": 3}})
    main(config, out=tmp_path / "a")
    main(config, out=tmp_path / "b")
    main(config, out=tmp_path / "c", seed=4)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "measurements.csv").read_bytes() != (tmp_path / "c" / "measurements.csv").read_bytes()


# sha256 of every file written for n_patients=200, seed=11, faults on. Re-recorded on purpose for the
# realism changes of issue 15 (patients table without latent columns, treatment that slows progression,
# worry sampling, stronger kinetics), then for the bedside charts (docs/grading.md inputs: SBP / MAP /
# SPO2 / O2_FLOW / FIO2 vitals and extra TEMP rounds in measurements, observations.csv (ICE, CAPD for
# children, consciousness, seizure, oedema, motor, oxygen device), vasopressor courses and
# the end_time column in treatments, bedside counts in truth.json; TEMP values changed by the fever
# look-ahead fix; patients.csv and events.csv unchanged). Any refactor must leave them unchanged. An
# intentional change to the simulator's output (model, draw order, formatting) must update these digests
# in the same commit and say so. (They also pin the numpy Generator streams and pyarrow's float-to-text cast.)
GOLDEN_SHA256 = {
    "patients.csv": "c521649157aff50fd35e768d67d32cf89e2abb2e3bc5345f5023a596a2ba2785",
    "measurements.csv": "a4f4787c038323a80e1547dec93b04ebd28ac6916b2a549ec3191abe1e5775aa",
    "events.csv": "eeb87eebeb14677d12e09592e514b2b051eac00fe726d23b63f85c747270c276",
    "treatments.csv": "3a1b6d29c15dd3b8f81defa98d178701a7a51d4c1bb60edc277075dc2e241436",
    "observations.csv": "200c6841f2731d64e463f6d5519f45469bf04df1ebd8b973e7f590af4d8ad0cf",
    "truth.json": "79e5a95915a9115a5f8cf7d1bde0ca890ffd0ba9122e6b5460ce4788a953c939",
}


def test_output_matches_recorded_digests(tmp_path):
    config = parse_config({"simulate": {"n_patients": 200, "seed": 11, "faults": True}})
    main(config, out=tmp_path / "cohort")
    digests = {name: hashlib.sha256((tmp_path / "cohort" / name).read_bytes()).hexdigest() for name in FILES}
    assert digests == GOLDEN_SHA256


def test_files_and_columns(tmp_path):
    main(parse_config({}), out=tmp_path / "cohort", n_patients=60, seed=1)
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == sorted(FILES)
    read = {n: pd.read_csv(tmp_path / "cohort" / f"{n}.csv", dtype=str, keep_default_na=False)
            for n in ("patients", "measurements", "events", "treatments", "observations")}
    # Only what a real cohort records: no latent or pre-standardised column (costim, dose_rel, a
    # standardised burden are derived by the pipeline from product, dose and tumour burden).
    assert list(read["patients"].columns) == [
        "patient_id", "anchor_time", "age", "sex", "site", "product", "disease", "tumor_burden",
        "tumor_burden_unit", "lymphodepletion", "dose", "dose_unit",
    ]
    assert set(read["patients"]["dose_unit"]) <= {"cells/kg", "cells"}
    assert (read["patients"]["dose"].astype(float) > 0).all() and (read["patients"]["tumor_burden"].astype(float) > 0).all()
    assert list(read["measurements"].columns) == ["patient_id", "time", "analyte", "value", "unit"]
    assert list(read["events"].columns) == ["patient_id", "event", "grade", "time"]
    assert list(read["treatments"].columns) == ["patient_id", "time", "drug", "dose", "unit", "end_time"]
    assert read["patients"]["anchor_time"].str.match(ISO).all()
    assert read["events"]["time"].str.match(ISO).all() and read["treatments"]["time"].str.match(ISO).all()
    assert set(read["events"]["grade"].astype(int)) <= set(range(6))
    assert list(read["observations"].columns) == ["patient_id", "time", "item", "value"]
    assert read["observations"]["time"].str.match(ISO).all()
    doses = read["treatments"]["drug"].isin(["tocilizumab", "dexamethasone", "methylprednisolone"])
    assert (read["treatments"]["end_time"][doses] == "").all()  # one administration each
    assert read["treatments"]["end_time"][~doses].str.match(ISO).all()  # vasopressor courses: their stop
    assert set(read["treatments"]["drug"][~doses]) <= {"norepinephrine", "phenylephrine", "epinephrine", "dopamine",
                                                        "vasopressin"}


def test_failed_run_leaves_no_directory(tmp_path, monkeypatch):
    import pipeline.simulate as sim

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sim.pcsv, "write_csv", broken)
    with pytest.raises(RuntimeError):
        main(parse_config({}), out=tmp_path / "cohort", n_patients=20, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_clean_cohort_trips_no_ingest_check():
    tables, truth = simulate_cohort(400, 11, faults=False)
    registry = load_registry()
    m = tables["measurements"]
    assert m["time"].str.match(ISO).all()
    assert m["patient_id"].isin(tables["patients"]["patient_id"]).all()
    code = m["analyte"].map(lambda n: registry.synonyms[normalize_name(n)])
    conv = [registry.conversions.get((c, normalize_unit(u))) for c, u in zip(code, m["unit"], strict=True)]
    assert all(c is not None for c in conv), "every unit has a registry conversion"
    numeric = pd.to_numeric(m["value"], errors="coerce")
    censored = m["value"].str.match(CENSORED)
    assert (numeric.notna() | censored).all()
    value = pd.to_numeric(m["value"].str.lstrip("<>")).to_numpy() * np.array([c[0] for c in conv]) + np.array(
        [c[1] for c in conv]
    )
    low = code.map(registry.analytes["plausible_min"]).to_numpy()
    high = code.map(registry.analytes["plausible_max"]).to_numpy()
    assert ((value >= low) & (value <= high)).all()
    assert not pd.DataFrame({"p": m["patient_id"], "t": m["time"], "a": code}).duplicated().any()
    assert not tables["events"].duplicated(["patient_id", "time", "event"]).any()
    assert not tables["treatments"].duplicated(["patient_id", "time", "drug"]).any()
    expected = truth["expected_ingest"]
    assert expected["quarantine_by_reason"] == {} and expected["duplicates_dropped"] == 0


def test_truth_counts_match_the_files(tmp_path):
    """Recount every injected fault from the CSV text, independently of the simulator's bookkeeping."""
    out = tmp_path / "cohort"
    truth = main(parse_config({}), out=out, n_patients=800, seed=5)
    registry = load_registry()
    patients = pd.read_csv(out / "patients.csv", dtype=str, keep_default_na=False)
    m = pd.read_csv(out / "measurements.csv", dtype=str, keep_default_na=False)
    assert len(m) == truth["tables"]["measurements"]["rows_written"]

    dup = m.duplicated(keep="first").to_numpy()
    unknown = ~m["patient_id"].isin(patients["patient_id"]).to_numpy() & ~dup
    stamps = pd.to_datetime(m["time"], format="%Y-%m-%dT%H:%M:%S", errors="coerce")
    bad_time = stamps.isna().to_numpy() & ~dup & ~unknown
    rest = ~dup & ~unknown & ~bad_time
    missing = (m["value"] == "").to_numpy() & rest
    numeric = pd.to_numeric(m["value"].str.lstrip("<>"), errors="coerce").to_numpy()
    parsable = ~np.isnan(numeric) & (m["value"].str.match(CENSORED) | pd.to_numeric(m["value"], errors="coerce").notna())
    unparseable = ~parsable.to_numpy() & rest & ~missing
    code = m["analyte"].map(lambda n: registry.synonyms[normalize_name(n)])
    conv = [registry.conversions[(c, normalize_unit(u))] for c, u in zip(code, m["unit"], strict=True)]
    value = numeric * np.array([c[0] for c in conv]) + np.array([c[1] for c in conv])
    low = code.map(registry.analytes["plausible_min"]).to_numpy()
    high = code.map(registry.analytes["plausible_max"]).to_numpy()
    out_of_range = rest & ~missing & ~unparseable & ((value < low) | (value > high))
    counted = {
        "bad_time": int(bad_time.sum()), "missing_value": int(missing.sum()),
        "out_of_range": int(out_of_range.sum()), "unknown_patient": int(unknown.sum()),
        "unparseable_value": int(unparseable.sum()),
    }
    expected = truth["expected_ingest"]
    assert all(v > 0 for v in counted.values()), counted
    assert expected["files"]["measurements"]["quarantine_by_reason"] == counted
    # Observations: a device term the registry does not list, an ICE score out of 0-10.
    from pipeline.registry import observation_term_synonyms

    obs = pd.read_csv(out / "observations.csv", dtype=str, keep_default_na=False)
    assert len(obs) == truth["tables"]["observations"]["rows_written"]
    terms = observation_term_synonyms()
    device = obs["item"] == "O2_DEVICE"
    unknown_term = device & ~obs["value"].map(lambda v: ("O2_DEVICE", normalize_name(v)) in terms)
    ice = pd.to_numeric(obs["value"].where(obs["item"] == "ICE_SCORE"), errors="coerce")
    obs_counted = {"unknown_term": int(unknown_term.sum()), "out_of_range": int(((ice < 0) | (ice > 10)).sum())}
    assert all(v > 0 for v in obs_counted.values()), obs_counted
    assert expected["files"]["observations"]["quarantine_by_reason"] == obs_counted
    assert expected["files"]["observations"]["rows_accepted"] == len(obs) - sum(obs_counted.values())
    assert expected["quarantine_by_reason"] == {k: counted.get(k, 0) + obs_counted.get(k, 0)
                                                for k in sorted(set(counted) | set(obs_counted))}
    assert expected["duplicates_dropped"] == int(dup.sum())
    accepted = rest & ~missing & ~unparseable & ~out_of_range
    assert expected["files"]["measurements"]["rows_accepted"] == int(accepted.sum())

    ok = m[accepted].assign(code=code[accepted])
    canonical = ok["code"].map(registry.analytes["canonical_unit"])
    converted = ok[ok["unit"].map(normalize_unit) != canonical.map(normalize_unit)]
    conversions = (converted["code"] + ": " + converted["unit"] + " -> " + canonical[converted.index]).value_counts()
    assert expected["unit_conversions"] == {k: int(v) for k, v in conversions.items()}
    assert set(expected["unit_conversions"]) == {
        "CRP: mg/dL -> mg/L", "CREAT: umol/L -> mg/dL", "FERRITIN: ug/L -> ng/mL"}
    renamed = ok[ok["analyte"] != ok["code"]]
    synonyms = (renamed["analyte"] + " -> " + renamed["code"]).value_counts()
    assert expected["synonyms_mapped"] == {k: int(v) for k, v in synonyms.items()}
    assert "IL-6 -> IL6" in expected["synonyms_mapped"] and "Interleukin 6 -> IL6" in expected["synonyms_mapped"]
    # Clean rows: one value per patient, time and analyte (no accidental conflicting duplicates).
    assert not ok.duplicated(["patient_id", "time", "code"]).any()


# ------------------------------------------------------------------------------------------------
# Clinical calibration and model properties (n = 5000)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arm", ARMS, ids=[a.key for a in ARMS])
def test_incidence_and_onset_match_published(cohort5000, arm):
    p = cohort5000["patients"]
    g = p[(p["product"] == arm.product) & (p["disease"] == arm.disease)]
    assert len(g) > 300
    tol = 0.05  # "a few percentage points"
    assert (g["crs"] >= 1).mean() == pytest.approx(arm.crs_any, abs=tol)
    assert (g["crs"] >= 3).mean() == pytest.approx(arm.crs_ge3, abs=tol)
    assert (g["icans"] >= 1).mean() == pytest.approx(arm.icans_any, abs=tol)
    assert (g["icans"] >= 3).mean() == pytest.approx(arm.icans_ge3, abs=tol)
    assert g["crs_onset_days"].median() == pytest.approx(arm.onset_day, abs=1.0)


def test_risk_rises_with_burden_dose_and_cd28(cohort5000):
    p = cohort5000["patients"].copy()
    p["severe"] = p["crs"] >= 3
    arm = p["product"] + "/" + p["disease"]
    # Within each arm, compare the top and bottom thirds; pool the within-arm differences.
    for column in ("tumor_burden", "dose"):  # recorded values: within an arm, ranks as the latent ones would
        value = p[column].astype(float)
        rank = value.groupby(arm).rank(pct=True)
        high = p["severe"][rank > 2 / 3].groupby(arm).mean()
        low = p["severe"][rank <= 1 / 3].groupby(arm).mean()
        assert (high - low).mean() > 0.02, column
    lbcl = p[p["disease"] == "LBCL"]
    cd28 = lbcl["product"].isin(["axi-cel", "brexu-cel"])
    cd28, bb = lbcl[cd28], lbcl[~cd28]
    assert (cd28["crs"] >= 1).mean() > (bb["crs"] >= 1).mean() + 0.2
    assert (cd28["icans"] >= 3).mean() > (bb["icans"] >= 3).mean() + 0.1


def test_kinetics_order_and_peaks_scale_with_grade(cohort5000):
    m, p = cohort5000["measurements"], cohort5000["patients"]
    post = m[(m["hours"] > 0) & (m["hours"] < 14 * 24)]
    with_crs = p.index[p["crs"] >= 1]
    peak_hours = {}
    for code in ("IL6", "IFNG", "CRP", "FERRITIN"):
        d = post[(post["analyte"] == code) & post["patient_id"].isin(with_crs)]
        at_max = d.loc[d.groupby("patient_id")["value"].idxmax()]
        peak_hours[code] = at_max["hours"].median()
    assert max(peak_hours["IL6"], peak_hours["IFNG"]) < peak_hours["CRP"] < peak_hours["FERRITIN"], peak_hours
    assert peak_hours["CRP"] - peak_hours["IL6"] > 12
    il6 = post[post["analyte"] == "IL6"].groupby("patient_id")["value"].max()
    by_grade = np.log(il6).groupby(p["crs"].clip(upper=4).reindex(il6.index)).quantile([0.25, 0.5, 0.75]).unstack()
    assert by_grade[0.5].is_monotonic_increasing
    # Wide overlap: the grade 3 lower quartile sits below the grade 2 upper quartile.
    assert by_grade.loc[3, 0.25] < by_grade.loc[2, 0.75]


def test_early_rise_precedes_most_severe_onsets(cohort5000):
    p, m = cohort5000["patients"], cohort5000["measurements"]
    onset = p["severe_onset_hours"].dropna()
    assert 0.05 < (onset <= 48).mean() < 0.4  # some severe onsets before the early landmarks, most after
    il6 = m[m["analyte"] == "IL6"]
    base = il6[(il6["hours"] <= 0) & (il6["hours"] > -24)].groupby("patient_id")["value"].last()
    day2 = il6[(il6["hours"] > 24) & (il6["hours"] <= 48)].groupby("patient_id")["value"].last()
    fold = np.log(day2 / base).dropna()
    later = p.index[p["severe_onset_hours"] > 48]
    never = p.index[p["crs"] <= 1]
    assert fold.reindex(later).median() > fold.reindex(never).median() + 0.5


def test_schedule_before_any_fever_does_not_depend_on_outcome(cohort5000):
    """Extra draws follow only the observed course: before a patient's first fever, the schedule of a
    patient who will become severe is the one of a patient who will not (same rows, same analytes)."""
    p, m = cohort5000["patients"], cohort5000["measurements"]
    quiet = p.index[~(p["crs_onset_days"] * 24 <= 72) & ~(p["death_hours"] <= 72)]  # no fever by 72 h
    early = m[(m["hours"] <= 72) & m["patient_id"].isin(quiet)]
    counts = early.groupby("patient_id").size().reindex(quiet, fill_value=0)
    severe = (p["crs"] >= 3).reindex(quiet)
    assert severe.sum() > 100
    assert abs(counts[severe].mean() / counts[~severe].mean() - 1) < 0.03
    # Nothing measured only (or mostly) in patients who later have an event.
    measured = early.groupby(["patient_id", "analyte"]).size().unstack(fill_value=0) > 0
    measured = measured.reindex(quiet, fill_value=False)
    share = measured.groupby(severe.to_numpy()).mean()
    assert (share.loc[True] - share.loc[False]).abs().max() < 0.05


def test_wards_sample_more_after_fever_and_by_site(cohort5000):
    """Once a patient has fever the ward draws more often (labs and vitals), more at some sites."""
    p, m = cohort5000["patients"], cohort5000["measurements"]
    onset = (p["crs_onset_days"] * 24).dropna()
    onset = onset[(onset > 24) & (onset < 10 * 24)]
    labs = m[~m["analyte"].isin(VITALS) & m["patient_id"].isin(onset.index)]
    since = labs["hours"] - onset.reindex(labs["patient_id"]).to_numpy()
    before = labs[(since > -24) & (since <= 0)].groupby("patient_id").size().reindex(onset.index, fill_value=0)
    after = labs[(since > 0) & (since <= 24)].groupby("patient_id").size().reindex(onset.index, fill_value=0)
    assert after.mean() > 1.3 * before.mean()
    extra_by_site = (after - before).groupby(p["site"].reindex(onset.index)).mean()
    assert extra_by_site.max() > 2 * extra_by_site.min()


def _within_arm_auroc(label: pd.Series, score: pd.Series, arm: pd.Series, min_events: int = 20) -> float:
    """Event-weighted mean AUROC within arms (what a single-product cohort would see)."""
    from sklearn.metrics import roc_auc_score

    pairs = [(label[idx].sum(), roc_auc_score(label[idx], score[idx])) for idx in label.groupby(arm).groups.values()
             if min(label[idx].sum(), (1 - label[idx]).sum()) >= min_events]
    weights, aurocs = np.array(pairs).T
    return float(np.average(aurocs, weights=weights))


def test_sampling_density_carries_no_more_than_the_ward_saw(cohort5000):
    """AUROC at the 48 h landmark (grade >= 3 CRS after 48 h, patients still at risk) of sampling
    density alone: the number of measurement rows per patient in (0, 48 h].

    Bounds, and why: a ward orders extra draws only in response to what it has seen (a fever and how
    high it runs, a grade change), so density can carry outcome information only through that
    observed course; the temperature chart shows it. So the density's AUROC must stay at or below
    the AUROC of the highest temperature recorded in (0, 48 h], plus 0.02 for sampling noise (the
    AUROC's standard error here is ~0.013), both pooled and within product arms; and below an
    absolute 0.65, far from what the kinetics carry. It must also carry *some* signal within arms
    (> 0.52), as real wards' sampling does. A density that beat its trigger would mean the schedule
    leaks the future outcome (as a schedule set from the eventual grade would).
    """
    from sklearn.metrics import roc_auc_score

    p, m = cohort5000["patients"], cohort5000["measurements"]
    at_risk = ~(p["severe_onset_hours"] <= 48) & ~(p["death_hours"] <= 48)
    label = (p["severe_onset_hours"][at_risk] <= 48 + 720).astype(int)
    early = m[(m["hours"] > 0) & (m["hours"] <= 48)]
    rows = early.groupby("patient_id").size().reindex(label.index, fill_value=0)
    highest_temp = early[early["analyte"] == "TEMP"].groupby("patient_id")["value"].max().reindex(label.index)
    highest_temp = highest_temp.fillna(highest_temp.min())
    arm = (p["product"] + "/" + p["disease"])[at_risk]
    assert label.sum() > 300
    density, trigger = roc_auc_score(label, rows), roc_auc_score(label, highest_temp)
    assert density <= trigger + 0.02, (density, trigger)
    assert density < 0.65
    density_within, trigger_within = _within_arm_auroc(label, rows, arm), _within_arm_auroc(label, highest_temp, arm)
    assert 0.52 < density_within <= trigger_within + 0.02, (density_within, trigger_within)


def test_treatment_schedule_uses_only_the_past(cohort5000):
    """Steroid courses are extended only after a grade >= 3 onset: before that onset, patients who
    will become severe and those who will not get the same treatment, so treatment features at a
    landmark cannot encode the future outcome."""
    e, t = cohort5000["events"], cohort5000["treatments"]
    severe = e[e["grade"] >= 3].groupby("patient_id")["hours"].min()
    dex = t[t["drug"] == "dexamethasone"].sort_values(["patient_id", "hours"])
    # Prophylactic doses (1 h before infusion, then daily at 23 h and 47 h) are not part of a course.
    prophylaxis = dex["patient_id"].isin(dex.loc[dex["hours"].round(3) == -1.0, "patient_id"])
    dex = dex[~(prophylaxis & dex["hours"].round(3).isin([-1.0, 23.0, 47.0]))]
    dex = dex.assign(dose_number=dex.groupby("patient_id").cumcount() + 1,
                     severe_at=severe.reindex(dex["patient_id"]).to_numpy())
    before_onset = dex[~(dex["severe_at"] <= dex["hours"])]  # never severe, or dose before the onset
    assert len(before_onset) > 200
    assert before_onset["dose_number"].max() <= 4
    # ... and the extension does happen after a severe onset, so this test can fail.
    assert (dex["dose_number"] > 4).any()


def test_tocilizumab_raises_il6_and_lowers_crp(cohort5000):
    m, t = cohort5000["measurements"], cohort5000["treatments"]
    toci = t[t["drug"] == "tocilizumab"].groupby("patient_id")["hours"].min()
    assert len(toci) > 100
    rel = m[m["patient_id"].isin(toci.index)].assign(since=lambda d: d["hours"] - toci.reindex(d["patient_id"]).to_numpy())

    def ratio(code: str, after: tuple[float, float]) -> float:
        d = rel[rel["analyte"] == code]
        before = d[(d["since"] > -24) & (d["since"] <= 0)].groupby("patient_id")["value"].last()
        later = d[(d["since"] > after[0]) & (d["since"] <= after[1])].groupby("patient_id")["value"].last()
        return float(np.exp(np.log(later / before).dropna().median()))

    assert ratio("CRP", (36, 72)) < 0.8
    assert ratio("IL6", (6, 30)) > 1.0


# ------------------------------------------------------------------------------------------------
# Realism targets (docs/simulator.md; benchmarks/bench_simulator_realism.py prints them all)
# ------------------------------------------------------------------------------------------------


def _peak_fold(m: pd.DataFrame, code: str) -> pd.Series:
    """Observed day 0-14 peak over the last pre-infusion value (within 7 days), per patient."""
    d = m[m["analyte"] == code].sort_values("hours")
    base = d[(d["hours"] <= 0) & (d["hours"] > -168)].groupby("patient_id")["value"].last()
    peak = d[(d["hours"] > 0) & (d["hours"] <= 336)].groupby("patient_id")["value"].max()
    return (peak / base).dropna()


@pytest.mark.parametrize(("code", "severe_range", "other_range"), [
    ("IL6", (80, 200), (3, 8)),  # real cohort: ~100-150x vs ~5x (issue 15)
    ("IFNG", (15, 40), (1.5, 4)),  # real cohort: ~25x vs 2-3x (issue 15)
])
def test_kinetics_separate_severe_from_mild_as_in_real_cohorts(cohort5000, code, severe_range, other_range):
    """Median peak over the patient's own baseline, grade >= 3 CRS vs the others: the real-cohort
    figures of issue 15, with room for sampling noise (bounds about +-1/3 on the log scale)."""
    fold = _peak_fold(cohort5000["measurements"], code)
    severe = (cohort5000["patients"]["crs"] >= 3).reindex(fold.index)
    assert severe_range[0] < fold[severe].median() < severe_range[1]
    assert other_range[0] < fold[~severe].median() < other_range[1]


def test_m_easix_at_lymphodepletion_discriminates_as_published(cohort5000):
    """m-EASIX (LDH x CRP mg/dL / platelets) from the last values on days -7..-5 (before
    lymphodepletion) for grade >= 3 CRS at any time. Pennisi et al. 2021 (docs/clinical.md#published-scores) report
    AUROC 0.80 at lymphodepletion (0.73 at day -1, 0.75 at day +1; 118 patients, so a 95% CI of about
    +-0.1). Bounds 0.70-0.85: inside that uncertainty, and far from the 0.60 a baseline without
    severity information gave before; above 0.85 a single baseline score would beat the published
    kinetic models, which real cohorts do not show."""
    from sklearn.metrics import roc_auc_score

    from features.scores import m_easix

    m, p = cohort5000["measurements"], cohort5000["patients"]
    window = m[(m["day"] >= -7) & (m["day"] <= -5)].sort_values("hours")
    last = window.groupby(["patient_id", "analyte"])["value"].last().unstack()
    score = pd.Series(m_easix(last["LDH"], last["CRP"], last["PLT"]), index=last.index).dropna()
    assert len(score) > 4000
    auroc = roc_auc_score(p["crs"].reindex(score.index) >= 3, score)
    assert 0.70 < auroc < 0.85, auroc


def test_treatment_slows_progression():
    """A treated patient's chance of reaching a higher grade is reduced (never raised), more where the
    site treats early or gives prophylaxis. (The published incidences hold for the treated grades:
    test_incidence_and_onset_match_published.)"""
    from pipeline.simulation.arms import site_attribute
    from pipeline.simulation.calibration import calibration
    from pipeline.simulation.patients import draw_patients
    from pipeline.simulation.severity import draw_outcomes

    drawn = draw_patients(20000, np.random.default_rng(3))
    outcomes = draw_outcomes(drawn.arm, drawn.latents, drawn.course, calibration())
    assert (outcomes.crs_grade <= outcomes.untreated_crs_grade).all()
    assert (outcomes.icans_grade <= outcomes.untreated_icans_grade).all()
    severe = outcomes.untreated_crs_grade >= 3
    kept = pd.Series(outcomes.crs_grade[severe] >= 3).groupby(drawn.site[severe]).mean()
    assert 0.5 < kept.mean() < 0.9  # treatment stops some progressions, not most
    early_sites = site_attribute("early_tocilizumab") + site_attribute("prophylaxis") > 0.3
    assert kept[early_sites].max() < kept[~early_sites].min()


def test_recorded_tumour_burden_carries_measurement_error():
    """The model only sees the recorded burden: the latent one plus ~20 % relative error at each
    disease's median (15-25 %, issue 15), strongly but not perfectly correlated with the latent."""
    from pipeline.simulation.curves import expit
    from pipeline.simulation.patients import BURDEN_MEASURES, draw_patients

    drawn = draw_patients(20000, np.random.default_rng(4))
    z = drawn.latents.burden_z
    for measure in BURDEN_MEASURES:
        in_disease = drawn.disease == measure.disease
        scaled = measure.location + measure.slope * z[in_disease]
        latent = np.exp(scaled) if measure.scale == "log" else 100 * expit(scaled)
        near_median = np.abs(z[in_disease]) < 0.25
        relative_error = drawn.tumor_burden[in_disease][near_median] / latent[near_median] - 1
        assert 0.15 < relative_error.std() < 0.25, measure.disease
        assert (drawn.tumor_burden_unit[in_disease] == measure.unit).all()
        assert 0.8 < np.corrcoef(drawn.tumor_burden[in_disease], latent)[0, 1] < 0.995
    # Dose: the latent relative dose x the product's reference dose (the pipeline's registry figures).
    reference = {("axi-cel", "LBCL"): (2.0e6, "cells/kg"), ("brexu-cel", "MCL"): (2.0e6, "cells/kg"),
                 ("cilta-cel", "MM"): (0.75e6, "cells/kg"), ("tisa-cel", "LBCL"): (3.0e8, "cells"),
                 ("tisa-cel", "B-ALL"): (3.0e6, "cells/kg"), ("liso-cel", "LBCL"): (1.0e8, "cells"),
                 ("ide-cel", "MM"): (4.5e8, "cells")}
    keys = [(ARMS[a].product, ARMS[a].disease) for a in drawn.arm]
    assert np.allclose(drawn.dose, np.rint(drawn.latents.dose_rel * np.array([reference[k][0] for k in keys])))
    assert (drawn.dose_unit == np.array([reference[k][1] for k in keys])).all()
