"""One builder per section of a patient page; each returns the context of one template block.

A builder takes the indexed report inputs (:class:`~pipeline.reporting.patient_data.ReportData`) and
one patient (:class:`~pipeline.reporting.patient_data.PatientView`) and returns a dict that the block
of the same name in ``templates/patient.html.j2`` renders. Adding a section to the page is one
function here (listed in :data:`PAGE_SECTIONS`) and one ``{% block <name> %}`` in the template.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from features.definitions import analyte_feature_name
from features.landmarks import GRADED_EVENTS
from pipeline.config import Config
from pipeline.contracts import HOURS_SINCE_ANCHOR, LANDMARK_HOURS, PATIENT_ID, onset_column
from pipeline.reporting import clinical_text as ct
from pipeline.reporting.charts import BAND_COLOURS, svg_marker, svg_risk_trajectory, svg_waterfall
from pipeline.reporting.cohort_bands import MarkerBands
from pipeline.reporting.model_info import alert_figures, horizon_text, validation_at
from pipeline.reporting.patient_data import PatientView, ReportData

DISCLAIMER_LEAD = "Decision support, not a diagnosis."
DISCLAIMER = (
    "These risks are statistical estimates from a model trained on past patients; they do not replace "
    "clinical assessment, ASTCT grading or local protocols."
)
NEUTRAL_COLOUR = "#6b7280"
SIMULATED_BANNER = ("This model was trained on simulated patients only (the project's default cohort): its risks "
                    "show how the pipeline works and are not validated on real patients. Do not use them for care.")

Section = Callable[[ReportData, PatientView], dict[str, Any]]


def _onset(view: PatientView, target: str) -> float | None:
    return ct.to_number(view.landmark_row.get(onset_column(target)))  # any cell value: text is no onset


def data_as_of(data: ReportData, view: PatientView) -> str | None:
    """When the newest value this page uses was taken: clock time (UTC) from the infusion time when the
    cohort has one and ids are not pseudonymised (dates identify patients), else hours after infusion."""
    first, last = view.measurements
    if not view.scored or last <= first:
        return None
    hours = float(data.measurements.columns[HOURS_SINCE_ANCHOR][last - 1])
    after = f"{ct.format_number(hours)} h after infusion"
    anchor = data.anchors.get(view.pid)
    if anchor is None or data.pseudonymise:
        return f"Data as of {after} (newest value used)"
    clock = (anchor + pd.Timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M UTC")
    return f"Data as of {clock}, {after} (newest value used)"


def header_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Patient id, landmark, risk source, disclaimer and the data-quality notes."""
    notes = [n.replace(view.pid, view.display) if view.pid else n for n in data.messages.get(view.pid, [])]
    return {"patient": view.display, "latest": view.latest if view.scored else None,
            "data_as_of": data_as_of(data, view),
            "pseudonymised": data.pseudonymise, "risk_note": data.risk_note, "notes": notes,
            "disclaimer": DISCLAIMER, "disclaimer_lead": DISCLAIMER_LEAD,
            "simulated": SIMULATED_BANNER if data.simulated else None}


def alert_status(data: ReportData, target: str, row: int) -> str | None:
    """The validated alert rule in words: above or below the model's threshold at this landmark, with
    what that threshold did in cross-validation (sensitivity; 1 in N alerts followed by the event)."""
    thresholds = data.thresholds.get(target)
    probability = float(data.rows[target].probability[row])
    if thresholds is None or not np.isfinite(thresholds[row]) or not np.isfinite(probability):
        return None
    threshold = float(thresholds[row])
    side = "Above" if probability >= threshold else "Below"
    text = f"{side} the validated alert threshold ({threshold * 100:.1f}%)"
    figures = alert_figures(data.metrics, target, float(data.rows[target].hours[row]))
    if figures and figures["sensitivity"] > 0:
        followed = (f"1 in {1 / figures['ppv']:.0f} alerts was followed by one" if figures["ppv"] > 0
                    else "no alert was followed by one")
        text += (f": in cross-validation {figures['sensitivity'] * 100:.0f}% of these events at this landmark were "
                 f"above it, and {followed}")
    return text + "."


def risk_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """One card per target scored at the latest landmark: calibrated risk, band, horizon, onset."""
    cards = []
    for t, i in view.at_latest.items():
        rows = data.rows[t]
        band = str(rows.band[i])
        onset = _onset(view, t)
        cards.append({"target": t, "label": data.labels[t], "probability": float(rows.probability[i]),
                      "band": band, "band_colour": BAND_COLOURS.get(band, NEUTRAL_COLOUR),
                      "horizon": horizon_text(data.identities[t]["horizon_hours"]),
                      "onset": ct.format_number(onset) if onset is not None else None,
                      "alert": alert_status(data, t, i), "cutoffs": _cutoffs(data, t, i)})
    rcfg = data.config.report
    return {"cards": cards, "validated": rcfg.bands == "validated",
            "low_below": rcfg.band_low_below, "high_from": rcfg.band_high_from}


def _cutoffs(data: ReportData, target: str, row: int) -> dict[str, float] | None:
    """The band cut-offs that gave this row its band (validated ones differ by target and landmark)."""
    if target not in data.cutoffs:
        return None
    low, high = data.cutoffs[target]
    return {"low_below": float(low[row]), "high_from": float(high[row])}


def given_treatments(data: ReportData, view: PatientView) -> list[tuple[float, str]]:
    """(hours, class) of tocilizumab / steroid doses up to the landmark (drawn on the charts)."""
    a, b = view.treatments
    hours = data.treatments.columns["hours_since_anchor"]
    return [(float(hours[i]), data.treatment_class[i]) for i in range(a, b) if data.treatment_class[i]]


def trajectory_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Risk over the landmarks, one line per target (open circles after a recorded onset)."""
    if not view.scored:
        return {"svg": Markup(""), "legend": []}
    series = []
    for t in data.targets:
        rows, by_hour = data.rows[t], view.by_hour[t]
        probs = [float(rows.probability[by_hour[h]]) if h in by_hour else math.nan for h in view.hours]
        onset = _onset(view, t)
        series.append((data.labels[t], data.colours[t], probs, [onset is not None and onset <= h for h in view.hours]))
    rcfg = data.config.report
    # Validated bands differ by target and landmark: the cards name each one, the chart shades none.
    zones = (rcfg.band_low_below, rcfg.band_high_from) if rcfg.bands == "fixed" else (None, None)
    svg = svg_risk_trajectory(view.hours, series, *zones, given_treatments(data, view))
    legend = [{"label": data.labels[t], "colour": data.colours[t], "dashed": data.targets.index(t) % 2 == 1}
              for t in view.at_latest]
    return {"svg": Markup(svg), "legend": legend}


def _top_groups(keys: list[str], sums: np.ndarray, top_n: int) -> tuple[list[tuple[str, float]], float, int]:
    """Top groups by |sum| plus the summed rest, for one row."""
    order = np.argsort(-np.abs(sums), kind="stable")
    top = [(keys[j], float(sums[j])) for j in order[:top_n]]
    rest = order[top_n:]
    return top, float(sums[rest].sum()), len(rest)


def _latest_censoring(data: ReportData, view: PatientView, code: str) -> str | None:
    a, upto = view.measurements
    idx = np.flatnonzero(data.measurements.columns["analyte"][a:upto] == code)
    return str(data.measurements.columns["censoring"][a + idx[-1]]) if idx.size else None


def target_drivers(data: ReportData, view: PatientView, target: str, i: int) -> dict[str, Any]:
    """Top driver groups of one target's score at the latest landmark, in words and as a waterfall."""
    rows = data.rows[target]
    top, other, n_other = _top_groups(rows.groups, rows.group_shap[i], data.config.report.top_drivers)
    drivers = []
    for group, v in top:
        text = ct.describe_group(group, view.landmark_row, data.units, censoring=_latest_censoring(data, view, group))
        drivers.append({"label": ct.group_label(group), "text": text, "sentence": ct.driver_sentence(text, v),
                        "effect": f"{v:+.2f}", "direction": "up" if v > 0 else "down"})
    items = [(ct.group_label(g), v) for g, v in top]
    if n_other:
        items.append((f"{n_other} other factors", other))
    waterfall = svg_waterfall(float(rows.base_value[i]), items, float(rows.margin[i]),
                              f"Waterfall of drivers for {data.labels[target]}")
    return {"target": target, "label": data.labels[target], "drivers": drivers, "waterfall": Markup(waterfall)}


def drivers_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Per target scored at the latest landmark: its top drivers (exact SHAP summed per group)."""
    return {"latest": view.latest, "targets": [target_drivers(data, view, t, i) for t, i in view.at_latest.items()]}


def markers_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """One chart per configured marker: the patient's values up to now against the cohort bands."""
    cols = data.measurements.columns
    a, upto = view.measurements
    given = given_treatments(data, view)
    charts = []
    for code in data.config.report.markers:
        idx = a + np.flatnonzero(cols["analyte"][a:upto] == code)
        times = cols["hours_since_anchor"][idx]
        now = view.latest if view.scored else (float(times.max()) if idx.size else 0.0)
        charts.append(Markup(svg_marker(
            ct.display_name(code), ct.display_unit(data.units.get(code, "")), times, cols["value"][idx],
            cols["censoring"][idx] != "none", data.bands.get(code, MarkerBands()), given, now, data.band_label)))
    return {"charts": charts, "band_label": data.band_label}


def treatments_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Every treatment recorded up to the landmark."""
    a, b = view.treatments
    cols = data.treatments.columns
    items = [{"hours": ct.format_number(cols["hours_since_anchor"][i]), "drug": cols["drug"][i]} for i in range(a, b)]
    return {"latest": view.latest if view.scored else None, "rows": items}


def grades_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Per syndrome, the grade in force at the landmark, since when, and what set it (the observation,
    or the events table); ``available`` False when no grade timeline was given to the report."""
    if data.grades is None or not view.scored:
        return {"available": False, "rows": []}
    a, b = view.grades
    cols = data.grades.columns
    rows = []
    for event in GRADED_EVENTS:
        own = [i for i in range(a, b) if cols["event"][i] == event]
        if not own:
            rows.append({"event": event, "grade": 0, "since": None, "reason": "no grade recorded or graded"})
            continue
        last = own[-1]
        rows.append({"event": event, "grade": int(cols["grade"][last]),
                     "since": ct.format_number(cols[HOURS_SINCE_ANCHOR][last]), "reason": cols["reason"][last]})
    return {"available": True, "latest": view.latest, "rows": rows}


def model_section(data: ReportData, view: PatientView) -> dict[str, Any]:
    """Per target scored at the latest landmark: validation there and the model's identity."""
    return {"targets": [{"label": data.labels[t], "validation": validation_at(data.metrics, t, view.latest),
                         "identity": data.identities[t]} for t in view.at_latest]}


#: Template block name -> builder, in page order.
PAGE_SECTIONS: dict[str, Section] = {
    "header": header_section,
    "risk": risk_section,
    "trajectory": trajectory_section,
    "drivers": drivers_section,
    "markers": markers_section,
    "treatments": treatments_section,
    "grades": grades_section,
    "model": model_section,
}


def page_context(data: ReportData, view: PatientView) -> dict[str, dict[str, Any]]:
    """The context of every section of one patient's page."""
    return {name: build(data, view) for name, build in PAGE_SECTIONS.items()}


def data_quality_messages(landmarks: pd.DataFrame, config: Config) -> dict[str, list[str]]:
    """Per patient, notes about data the model lacked at their latest landmark (shown on the pages)."""
    latest = landmarks.sort_values([PATIENT_ID, LANDMARK_HOURS]).groupby(PATIENT_ID, observed=True).tail(1)
    codes = [c for c in config.report.markers if analyte_feature_name(c, "count") in latest.columns]
    out: dict[str, list[str]] = {}
    for row in latest.itertuples(index=False):
        r = row._asdict()
        lm = ct.format_number(r[LANDMARK_HOURS])
        counts = [r.get(analyte_feature_name(c, "count"), 0) or 0 for c in codes]
        notes = []
        if codes and all(float(n) == 0 for n in counts):
            notes.append(f"No marker measured before {lm} h: risk rests on covariates and scores only.")
        else:
            missing = [ct.display_name(c) for c, n in zip(codes, counts, strict=True) if float(n) == 0]
            if missing:
                notes.append(f"Not measured before {lm} h: {', '.join(missing)}.")
            no_base = [ct.display_name(c) for c, n in zip(codes, counts, strict=True)
                       if float(n) > 0 and not r.get(analyte_feature_name(c, "has_baseline"), 1)]
            if no_base:
                notes.append(f"No pre-infusion baseline for {', '.join(no_base)}: fold changes unknown.")
        if notes:
            out[str(r[PATIENT_ID])] = notes
    return out
