"""Benchmark: the simulator's realism targets, each measured on a simulated cohort beside its source.

Usage: .venv/bin/python benchmarks/bench_simulator_realism.py [--patients 5000] [--seed 20261121] [--proxy]

Everything is measured from the four tables the simulator writes (as a user would read a real
cohort: timestamps, analyte names and units through the registry), never from its latent variables,
except the counterfactual "untreated" grade that only the simulator knows (shown when available).
Prints a markdown table (target, source, measured) that docs/simulator.md quotes. ``--proxy`` adds a
learnability proxy (gradient boosting on simple landmark summaries, 5-fold CV; ~1 min at 5000).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.registry import load_registry, normalize_name, normalize_unit
from pipeline.simulation import ARMS, simulate_cohort

LANDMARK_HOURS = 48.0
VITALS = ("TEMP", "SBP", "MAP", "SPO2", "O2_FLOW", "FIO2")  # ward vitals (bedside charts), not labs
STEROIDS = ("dexamethasone", "methylprednisolone")
HORIZON_HOURS = 720.0


@dataclass(frozen=True)
class Cohort:
    patients: pd.DataFrame  # index patient_id: product, disease, site, crs, icans, onset hours
    measurements: pd.DataFrame  # patient_id, hours, day (calendar day vs infusion day), analyte, value
    events: pd.DataFrame  # patient_id, event, grade, hours
    treatments: pd.DataFrame  # patient_id, drug, hours


def _hours(frame: pd.DataFrame, anchors: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(frame["time"], format="%Y-%m-%dT%H:%M:%S", errors="coerce")
    anchor = anchors.reindex(frame["patient_id"]).to_numpy()
    return ((stamps.to_numpy() - anchor) / np.timedelta64(1, "h")).astype(float)


def _measurements(raw: pd.DataFrame, anchors: pd.Series) -> pd.DataFrame:
    """Canonical codes and units (censored values at their limit), hours and calendar day."""
    registry = load_registry()
    code = raw["analyte"].map({n: registry.synonyms[normalize_name(n)] for n in raw["analyte"].unique()})
    pairs = pd.DataFrame({"code": code, "unit": raw["unit"]}).drop_duplicates()
    scale = {(c, u): registry.conversions[(c, normalize_unit(u))][0] for c, u in pairs.itertuples(index=False)}
    stamps = pd.to_datetime(raw["time"], format="%Y-%m-%dT%H:%M:%S", errors="coerce")
    anchor = anchors.reindex(raw["patient_id"]).to_numpy()
    day = (stamps.to_numpy().astype("datetime64[D]") - anchor.astype("datetime64[D]")).astype(int)
    return pd.DataFrame({
        "patient_id": raw["patient_id"].to_numpy(),
        "hours": _hours(raw, anchors),
        "day": day,
        "analyte": code.to_numpy(),
        "value": pd.to_numeric(raw["value"].str.lstrip("<>"), errors="coerce").to_numpy()
        * np.array([scale[k] for k in zip(code, raw["unit"], strict=True)]),
    })


def load_cohort(n_patients: int, seed: int) -> tuple[Cohort, dict]:
    tables, truth = simulate_cohort(n_patients, seed, faults=False)
    patients = tables["patients"].set_index("patient_id")
    anchors = pd.Series(pd.to_datetime(patients["anchor_time"]).to_numpy(), index=patients.index)
    events = tables["events"].assign(hours=lambda e: _hours(e, anchors))
    treatments = tables["treatments"].assign(hours=lambda t: _hours(t, anchors))
    worst = events.groupby(["patient_id", "event"])["grade"].max().unstack()
    patients["crs"] = worst["CRS"].reindex(patients.index).fillna(0)
    patients["icans"] = worst["ICANS"].reindex(patients.index).fillna(0)
    crs = events[events["event"] == "CRS"]
    patients["crs_onset_hours"] = crs.groupby("patient_id")["hours"].min().reindex(patients.index)
    patients["severe_onset_hours"] = crs[crs["grade"] >= 3].groupby("patient_id")["hours"].min().reindex(
        patients.index)
    death = events[events["event"] == "DEATH"].groupby("patient_id")["hours"].min()
    patients["death_hours"] = death.reindex(patients.index)
    return Cohort(patients, _measurements(tables["measurements"], anchors), events, treatments), truth


# ------------------------------------------------------------------------------------------------
# Measures
# ------------------------------------------------------------------------------------------------


def peak_fold(cohort: Cohort, code: str) -> pd.Series:
    """Per patient: observed peak on days 0-14 over the last pre-infusion value (within 7 days)."""
    m = cohort.measurements[cohort.measurements["analyte"] == code]
    base = m[(m["hours"] <= 0) & (m["hours"] > -168)].sort_values("hours").groupby("patient_id")["value"].last()
    peak = m[(m["hours"] > 0) & (m["hours"] <= 336)].groupby("patient_id")["value"].max()
    return (peak / base).dropna()


def fold_by_severity(cohort: Cohort, code: str) -> tuple[float, float]:
    """Median peak fold in patients with grade >= 3 CRS and in the others."""
    fold = peak_fold(cohort, code)
    severe = (cohort.patients["crs"] >= 3).reindex(fold.index)
    return float(fold[severe].median()), float(fold[~severe].median())


def peak_hours_from_onset(cohort: Cohort, code: str, untreated: bool = False) -> float:
    """Median hour of the observed day 0-14 peak minus the CRS onset, patients with CRS (``untreated``:
    only those never given tocilizumab or a steroid)."""
    m = cohort.measurements
    p = cohort.patients
    with_crs = p.index[p["crs"] >= 1]
    if untreated:
        treated = cohort.treatments[cohort.treatments["drug"].isin(("tocilizumab", *STEROIDS))]
        with_crs = with_crs.difference(treated["patient_id"].unique())
    d = m[(m["analyte"] == code) & (m["hours"] > 0) & (m["hours"] <= 336) & m["patient_id"].isin(with_crs)]
    at_max = d.loc[d.groupby("patient_id")["value"].idxmax()].set_index("patient_id")["hours"]
    return float((at_max - p["crs_onset_hours"].reindex(at_max.index)).median())


def severe_onset_shares(cohort: Cohort) -> str:
    """Share of grade >= 3 CRS onsets before 24 / 48 / 72 h after infusion."""
    onset = cohort.patients["severe_onset_hours"].dropna()
    return ", ".join(f"{(onset <= h).mean():.0%} by {h} h" for h in (24, 48, 72))


def il6_peak_by_grade(cohort: Cohort) -> str:
    """Median observed day 0-14 IL-6 peak (pg/mL) by worst CRS grade 0..4 (4 includes 5)."""
    m = cohort.measurements
    d = m[(m["analyte"] == "IL6") & (m["hours"] > 0) & (m["hours"] <= 336)]
    peak = d.groupby("patient_id")["value"].max()
    grade = cohort.patients["crs"].clip(upper=4).reindex(peak.index)
    return " / ".join(f"{v:.0f}" for v in peak.groupby(grade).median())


def m_easix_auroc(cohort: Cohort, first_day: int, last_day: int) -> tuple[float, int]:
    """AUROC of m-EASIX (LDH x CRP mg/dL / platelets; last of each in the calendar-day window) for
    grade >= 3 CRS, complete cases; and the number of patients scored."""
    m = cohort.measurements
    window = m[(m["day"] >= first_day) & (m["day"] <= last_day) & (m["hours"] <= max(last_day, 0) * 24 + 24)]
    if last_day >= 0 and first_day <= 0:
        window = window[(window["day"] != 0) | (window["hours"] <= 0)]  # day 0: before infusion only
    last = window.sort_values("hours").groupby(["patient_id", "analyte"])["value"].last().unstack()
    score = (last["LDH"] * last["CRP"] / 10 / last["PLT"]).dropna()
    severe = cohort.patients["crs"].reindex(score.index) >= 3
    return float(roc_auc_score(severe, score)), int(score.size)


def at_risk_labels(cohort: Cohort, landmark_hours: float = LANDMARK_HOURS) -> pd.Series:
    """Grade >= 3 CRS onset in (L, L + horizon] among patients at risk at L (alive, not yet severe)."""
    p = cohort.patients
    onset = p["severe_onset_hours"].fillna(np.inf)
    at_risk = (onset > landmark_hours) & ~(p["death_hours"] <= landmark_hours)
    return (onset[at_risk] <= landmark_hours + HORIZON_HOURS).astype(int)


def within_arm_auroc(cohort: Cohort, label: pd.Series, score: pd.Series, min_events: int = 20) -> float:
    """Event-weighted mean AUROC within product arms (what a single-product cohort would see)."""
    arm = cohort.patients["product"].reindex(label.index) + "/" + cohort.patients["disease"].reindex(label.index)
    pairs = [(label[idx].sum(), roc_auc_score(label[idx], score[idx])) for idx in label.groupby(arm).groups.values()
             if min(label[idx].sum(), (1 - label[idx]).sum()) >= min_events]
    weights, aurocs = np.array(pairs).T
    return float(np.average(aurocs, weights=weights))


def sampling_density_auroc(cohort: Cohort) -> dict[str, float]:
    """AUROC at 48 h of sampling-density-only information (rows per patient after infusion up to L),
    beside the AUROC of what the ward reacts to (the highest temperature recorded up to L); pooled
    and within arms."""
    label = at_risk_labels(cohort)
    m = cohort.measurements
    early = m[(m["hours"] > 0) & (m["hours"] <= LANDMARK_HOURS)]
    rows = early.groupby("patient_id").size().reindex(label.index, fill_value=0)
    labs = early[~early["analyte"].isin(VITALS)].groupby("patient_id").size().reindex(label.index, fill_value=0)
    temp = early[early["analyte"] == "TEMP"].groupby("patient_id")["value"].max().reindex(label.index)
    temp = temp.fillna(temp.min())
    return {"rows": float(roc_auc_score(label, rows)), "labs": float(roc_auc_score(label, labs)),
            "temp": float(roc_auc_score(label, temp)), "rows_within": within_arm_auroc(cohort, label, rows),
            "temp_within": within_arm_auroc(cohort, label, temp), "n": int(label.size), "events": int(label.sum())}


def tocilizumab_response(cohort: Cohort) -> tuple[float, float, int]:
    """Median IL-6 ratio 6-30 h after the first tocilizumab and CRP ratio 36-72 h after, vs the last
    value in the 24 h before it; and the number of patients given tocilizumab."""
    t, m = cohort.treatments, cohort.measurements
    toci = t[t["drug"] == "tocilizumab"].groupby("patient_id")["hours"].min()
    rel = m[m["patient_id"].isin(toci.index)]
    rel = rel.assign(since=rel["hours"] - toci.reindex(rel["patient_id"]).to_numpy())

    def ratio(code: str, after: tuple[float, float]) -> float:
        d = rel[rel["analyte"] == code].sort_values("since")
        before = d[(d["since"] > -24) & (d["since"] <= 0)].groupby("patient_id")["value"].last()
        later = d[(d["since"] > after[0]) & (d["since"] <= after[1])].groupby("patient_id")["value"].last()
        return float(np.exp(np.log(later / before).dropna().median()))

    return ratio("IL6", (6, 30)), ratio("CRP", (36, 72)), int(toci.size)


def treatment_by_site(cohort: Cohort) -> pd.DataFrame:
    """Per site: share given tocilizumab, tocilizumab before grade 2 (early), steroid before any CRS
    (prophylaxis), and grade >= 3 CRS among patients reaching grade 2."""
    p, t, e = cohort.patients, cohort.treatments, cohort.events
    crs = e[e["event"] == "CRS"]
    grade2 = crs[crs["grade"] == 2].groupby("patient_id")["hours"].min().reindex(p.index)
    toci = t[t["drug"] == "tocilizumab"].groupby("patient_id")["hours"].min().reindex(p.index)
    steroid = t[t["drug"].isin(STEROIDS)].groupby("patient_id")["hours"].min().reindex(p.index)
    frame = pd.DataFrame({
        "site": p["site"],
        "tocilizumab": toci.notna(),
        "early_tocilizumab": toci < grade2.fillna(np.inf),
        "prophylactic_steroid": steroid <= 0,  # before infusion: prophylaxis
        "reached_2": p["crs"] >= 2,
        "reached_3": p["crs"] >= 3,
    })
    out = frame.groupby("site")[["tocilizumab", "early_tocilizumab", "prophylactic_steroid"]].mean()
    reached = frame[frame["reached_2"]]
    out["ge3_given_ge2"] = reached.groupby("site")["reached_3"].mean()
    return out


def treatment_effect(n_patients: int, seed: int) -> str:
    """Grade >= 3 CRS reached under treatment vs untreated (the simulator's counterfactual, re-drawn with
    the cohort's seed and draw order), overall and by site; empty for a simulator without it."""
    import importlib.util

    if importlib.util.find_spec("pipeline.simulation.calibration") is None:
        return "(no treatment counterfactual in this simulator)"
    from pipeline.simulation import calibration, patients, severity

    rng = np.random.default_rng(seed)
    drawn = patients.draw_patients(n_patients, rng)
    outcomes = severity.draw_outcomes(drawn.arm, drawn.latents, drawn.course, calibration.calibration())
    untreated, treated = outcomes.untreated_crs_grade >= 3, outcomes.crs_grade >= 3
    by_site = pd.Series(treated[untreated]).groupby(drawn.site[untreated]).mean()
    sites = ", ".join(f"SITE{k + 1:02d} {v:.0%}" for k, v in by_site.items())
    return (f"grade >= 3 CRS: {untreated.mean():.1%} untreated -> {treated.mean():.1%} under treatment; "
            f"share of untreated-severe patients still reaching grade 3, by site: {sites}")


def incidence_table(cohort: Cohort) -> pd.DataFrame:
    p = cohort.patients
    rows = []
    for arm in ARMS:
        g = p[(p["product"] == arm.product) & (p["disease"] == arm.disease)]
        rows.append({
            "arm": f"{arm.product} ({arm.trial})", "n": len(g),
            "CRS any": f"{(g['crs'] >= 1).mean():.0%} / {arm.crs_any:.0%}",
            "CRS >=3": f"{(g['crs'] >= 3).mean():.0%} / {arm.crs_ge3:.0%}",
            "ICANS any": f"{(g['icans'] >= 1).mean():.0%} / {arm.icans_any:.0%}",
            "ICANS >=3": f"{(g['icans'] >= 3).mean():.0%} / {arm.icans_ge3:.0%}",
            "onset day": f"{g['crs_onset_hours'].median() / 24:.1f} / {arm.onset_day}",
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Learnability proxy (optional)
# ------------------------------------------------------------------------------------------------

PROXY_ANALYTES = ("IL6", "IFNG", "IL10", "CRP", "FERRITIN", "LDH", "PLT", "CREAT", "ANC", "DDIMER", "MCP1", "IL8")


def _proxy_features(cohort: Cohort, label: pd.Series, landmark_hours: float, kinetic: bool) -> pd.DataFrame:
    """Baseline (and, when kinetic, latest / max / fold) per analyte, max temperature, tocilizumab
    given, and the covariates a real cohort carries (product, disease, age, tumour burden, dose)."""
    m = cohort.measurements
    m = m[(m["hours"] <= landmark_hours) & m["patient_id"].isin(label.index)].sort_values("hours")
    pre = m[m["hours"] <= 0].groupby(["patient_id", "analyte"])["value"].last().unstack()
    columns = {f"{a}_base": pre.get(a) for a in PROXY_ANALYTES}
    if kinetic:
        post = m[m["hours"] > 0]
        last = post.groupby(["patient_id", "analyte"])["value"].last().unstack()
        peak = post.groupby(["patient_id", "analyte"])["value"].max().unstack()
        for a in PROXY_ANALYTES:
            columns[f"{a}_last"] = last.get(a)
            columns[f"{a}_max"] = peak.get(a)
            columns[f"{a}_fold"] = np.log(peak.get(a) / pre.get(a)) if a in peak and a in pre else None
        columns["temp_max"] = peak.get("TEMP")
        toci = cohort.treatments[(cohort.treatments["drug"] == "tocilizumab")
                                 & (cohort.treatments["hours"] <= landmark_hours)]
        columns["toci"] = pd.Series(1.0, index=toci["patient_id"].unique())
    frame = pd.DataFrame({k: v for k, v in columns.items() if v is not None}).reindex(label.index)
    p = cohort.patients.reindex(label.index)
    frame["age"] = p["age"].astype(float)
    frame["tumor_burden"] = np.log(p["tumor_burden"].astype(float))
    if "dose" in p:
        frame["dose_log"] = np.log(p["dose"].astype(float))
    for column in ("product", "disease", "lymphodepletion"):
        frame = frame.join(pd.get_dummies(p[column], prefix=column, dtype=float))
    return frame


def learnability(cohort: Cohort, landmark_hours: float, kinetic: bool = True) -> tuple[float, float]:
    """5-fold CV AUROC of gradient boosting on the proxy features (grade >= 3 CRS after L): pooled, and
    within arm (event-weighted mean over arms with >= 10 events: what a single-product cohort would see)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    label = at_risk_labels(cohort, landmark_hours)
    features = _proxy_features(cohort, label, landmark_hours, kinetic)
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_depth=3)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    predicted = pd.Series(cross_val_predict(model, features.to_numpy(float), label.to_numpy(), cv=folds,
                                            method="predict_proba")[:, 1], index=label.index)
    arm = cohort.patients["product"].reindex(label.index) + "/" + cohort.patients["disease"].reindex(label.index)
    within = [(label[arm == a].sum(), roc_auc_score(label[arm == a], predicted[arm == a]))
              for a in arm.unique() if label[arm == a].sum() >= 10]
    weights, aurocs = np.array(within).T
    return float(roc_auc_score(label, predicted)), float(np.average(aurocs, weights=weights))


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def realism_rows(cohort: Cohort) -> list[tuple[str, str, str]]:
    """(target, source, measured) rows of the realism table."""
    rows = []
    targets = {"IL6": "~100-150x vs ~5x", "IFNG": "~25x vs 2-3x", "IL10": "rises with severity like IL-6",
               "CRP": "higher peak with severity", "FERRITIN": "rises later; weak severity signal"}
    sources = {"IL6": "issue 15 (real CAR-T cohort); Lee 2015 Fig. 3B", "IFNG": "issue 15; Lee 2015 Fig. 3B",
               "IL10": "Cosenza 2021 s. 2.1", "CRP": "Lee 2015 Fig. 3E; Teachey 2016 (docs/clinical.md#published-scores)",
               "FERRITIN": "Cosenza 2021 s. 2.3; Teachey 2016"}
    for code, target in targets.items():
        severe, other = fold_by_severity(cohort, code)
        rows.append((f"{code} peak / baseline, median, CRS >=3 vs others: {target}", sources[code],
                     f"{severe:.0f}x vs {other:.1f}x"))
    timing = ", ".join(f"{c} {peak_hours_from_onset(cohort, c):+.0f} h" for c in ("IFNG", "IL6", "CRP", "FERRITIN"))
    rows.append(("grade >= 3 CRS onsets after infusion (most after the 24-72 h landmarks)", "model property",
                 severe_onset_shares(cohort)))
    rows.append(("median IL-6 peak (pg/mL) by worst CRS grade 0 / 1 / 2 / 3 / 4-5", "model property",
                 il6_peak_by_grade(cohort)))
    untreated = ", ".join(f"{c} {peak_hours_from_onset(cohort, c, untreated=True):+.0f} h" for c in ("IL6", "CRP"))
    rows.append(("observed peak vs CRS onset: IL-6 around onset, CRP ~1 day later, ferritin later",
                 "docs/clinical.md#kinetics-and-treatment-effects", f"{timing} (never treated: {untreated})"))
    for label, days, published in (("at lymphodepletion (days -7..-5)", (-7, -5), "0.80"),
                                   ("day -1", (-1, -1), "0.73"), ("day +1", (1, 1), "0.75")):
        auc, n = m_easix_auroc(cohort, *days)
        rows.append((f"m-EASIX AUROC for CRS >=3, {label}: {published}", "Pennisi 2021 (docs/clinical.md#published-scores)",
                     f"{auc:.2f} (n={n})"))
    density = sampling_density_auroc(cohort)
    rows.append(("AUROC at 48 h of rows per patient in (0, 48 h]: some signal, no more than the highest "
                 "temperature the ward saw", "issue 15; test_simulate.py",
                 f"{density['rows']:.2f} pooled, {density['rows_within']:.2f} within arm (labs only "
                 f"{density['labs']:.2f}; highest temperature {density['temp']:.2f} / {density['temp_within']:.2f}; "
                 f"n={density['n']}, events={density['events']})"))
    il6_ratio, crp_ratio, n_toci = tocilizumab_response(cohort)
    rows.append(("after tocilizumab: IL-6 rises (6-30 h), CRP falls (36-72 h)", "docs/clinical.md#kinetics-and-treatment-effects",
                 f"IL-6 x{il6_ratio:.2f}, CRP x{crp_ratio:.2f} (n={n_toci})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--proxy", action="store_true", help="add the learnability proxy (slow)")
    args = parser.parse_args()
    start = time.perf_counter()
    cohort, _ = load_cohort(args.patients, args.seed)
    print(f"n = {args.patients}, seed {args.seed} (simulated in {time.perf_counter() - start:.1f} s)\n")
    print("| target | source | measured |\n|---|---|---|")
    for target, source, measured in realism_rows(cohort):
        print(f"| {target} | {source} | {measured} |")
    print("\nPer site (share of patients; grade >= 3 among those reaching grade 2):\n")
    print(treatment_by_site(cohort).round(2).to_markdown())
    print("\n" + treatment_effect(args.patients, args.seed))
    print("\nIncidence, simulated / published (docs/clinical.md#reference-incidences):\n")
    print(incidence_table(cohort).to_markdown(index=False))
    if args.proxy:
        print("\nLearnability proxy (5-fold CV AUROC, grade >= 3 CRS after the landmark; pooled / within arm):")
        for landmark in (24.0, 48.0, 72.0):
            kinetic, baseline = learnability(cohort, landmark), learnability(cohort, landmark, kinetic=False)
            print(f"  {landmark:.0f} h: kinetic {kinetic[0]:.3f} / {kinetic[1]:.3f}, "
                  f"baseline only {baseline[0]:.3f} / {baseline[1]:.3f}")


if __name__ == "__main__":
    main()
