"""``crs report``: one self-contained HTML page per patient, an index, and the model card.

Pages need no server and no network: CSS is inline and every chart is inline SVG drawn here in
Python (crisp on a phone, prints well, and ~1000x faster than a matplotlib figure per chart). The
two PNG figures of the model card (from ``crs evaluate``) are embedded as base64.

Outputs (DVC stage ``report``):

* ``report.output_dir`` (``reports/patients/``): ``<patient>.html`` per patient and ``index.html``
  (patients sorted by current risk: the highest calibrated risk over targets at their latest landmark);
* ``reports/cohort_bands.parquet``: per target, marker, 12 h time bin and group (event / no event) the
  quartiles of the marker, used to draw a patient against the training cohort (also by ``crs predict``);
* ``report.model_card_path`` (``reports/model_card.html``): TRIPOD+AI items (CLINICAL.md section 8).

With pseudonymisation on, every patient id in file names and text is replaced by a salted SHA-256
(salt from ``$CRS_PSEUDONYM_SALT``), so pages can be shared without the raw ids.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import clinical_text as ct
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.io import atomic_dir, atomic_path, read_stage_parquet, write_parquet
from pipeline.scoring import ModelBundle, risk_band

SALT_ENV = "CRS_PSEUDONYM_SALT"
COHORT_BANDS_PATH = Path("reports/cohort_bands.parquet")
METRICS_PATH = Path("reports/metrics.json")
FIGURES_DIR = Path("reports/figures")
OOF_PATH = Path("data/processed/oof.parquet")
INTERIM_DIR = Path("data/interim")
MODELS_DIR = Path("models")

BAND_BIN_HOURS = 12.0
BAND_START_HOURS, BAND_END_HOURS = -168.0, 336.0
MIN_BAND_PATIENTS = 10  # fewer patients in a bin: no band drawn (quartiles of 3 values mislead)
BAND_POOL_BINS = 1  # each bin pools values from this many neighbouring bins on each side (36 h window)
MIN_SITE_EVENTS = 5  # a site with fewer events (or non-events) gets no AUROC in the model card
BAND_COLUMNS = ["target", "marker", "unit", "group", "bin_start_hours", "bin_end_hours", "n_patients",
                "p25", "p50", "p75"]
EVENT, NO_EVENT = "event", "no_event"

DISCLAIMER_LEAD = "Decision support, not a diagnosis."
DISCLAIMER = (
    "These risks are statistical estimates from a model trained on past patients; they do not replace "
    "clinical assessment, ASTCT grading or local protocols."
)
TARGET_COLOURS = ["#c2410c", "#6d28d9", "#0f766e", "#b91c1c"]
BAND_COLOURS = {"low": "#15803d", "intermediate": "#b45309", "high": "#b91c1c", "": "#6b7280"}
TREATMENT_STYLE = {"tocilizumab": ("#2563eb", "T", "tocilizumab"), "steroids": ("#9333ea", "S", "steroid")}


# --------------------------------------------------------------------------- pseudonymisation


def pseudonym(patient_id: str, salt: str) -> str:
    """Salted SHA-256 of the id, shortened (64 bits): stable for a salt, not reversible without it."""
    return "PS-" + hashlib.sha256(f"{salt}\x00{patient_id}".encode()).hexdigest()[:16]


def id_mapper(pseudonymise: bool) -> Callable[[str], str]:
    """Identity, or the salted pseudonym; a missing salt is a one-line user error."""
    if not pseudonymise:
        return str
    salt = os.environ.get(SALT_ENV, "")
    if not salt:
        raise UserError(f"pseudonymisation needs a secret salt: set the environment variable {SALT_ENV}")
    return lambda pid: pseudonym(str(pid), salt)


# --------------------------------------------------------------------------- cohort bands


def compute_cohort_bands(
    measurements: pd.DataFrame, landmarks: pd.DataFrame, markers: list[str], target: str
) -> pd.DataFrame:
    """Quartiles of each marker per 12 h bin in [-168, 336) h, for patients with / without the event.

    A patient is in the event group when ``onset_hours__<target>`` is set (else ``label__<target>``
    is 1 at some landmark). Values are canonical units (censored results at their bound). Each bin
    pools the 36 h window centred on it (the bin and one neighbour each side; ward sampling is uneven
    across the day, so single 12 h bins are jagged). Each patient contributes one value per bin (the
    median of their values in the window), so densely sampled patients do not dominate; bins with
    fewer than 10 patients are dropped.
    """
    onset_col, label_col = f"onset_hours__{target}", f"label__{target}"
    if onset_col in landmarks:
        by_patient = landmarks.groupby("patient_id", observed=True)[onset_col].max().notna()
    elif label_col in landmarks:
        by_patient = landmarks.groupby("patient_id", observed=True)[label_col].max() == 1
    else:
        raise UserError(f"landmarks: no '{onset_col}' or '{label_col}' column for cohort bands")
    event_ids = set(by_patient.index[by_patient.to_numpy(dtype=bool)].astype(str))
    all_ids = set(by_patient.index.astype(str))
    m = measurements[measurements["analyte"].isin(markers)]
    m = m[(m["hours_since_anchor"] >= BAND_START_HOURS) & (m["hours_since_anchor"] < BAND_END_HOURS)]
    pid = m["patient_id"].astype(str)
    m = m[pid.isin(all_ids).to_numpy()]
    if m.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in BAND_COLUMNS})
    pid = m["patient_id"].astype(str)
    base = pd.DataFrame(
        {
            "marker": m["analyte"].astype(str).to_numpy(),
            "unit": m["unit"].astype(str).to_numpy(),
            "patient_id": pid.to_numpy(),
            "bin": np.floor((m["hours_since_anchor"].to_numpy() - BAND_START_HOURS) / BAND_BIN_HOURS).astype(int),
            "value": m["value"].to_numpy(dtype=float),
            "group": np.where(pid.isin(event_ids).to_numpy(), EVENT, NO_EVENT),
        }
    )
    n_bins = int((BAND_END_HOURS - BAND_START_HOURS) / BAND_BIN_HOURS)
    shifted = [base.assign(bin=base["bin"] + k) for k in range(-BAND_POOL_BINS, BAND_POOL_BINS + 1)]
    frame = pd.concat(shifted, ignore_index=True)
    frame = frame[(frame["bin"] >= 0) & (frame["bin"] < n_bins)]
    per_patient = frame.groupby(["marker", "unit", "group", "bin", "patient_id"], observed=True)["value"].median()
    grouped = per_patient.groupby(level=["marker", "unit", "group", "bin"], observed=True)
    out = grouped.quantile([0.25, 0.5, 0.75]).unstack()
    out.columns = ["p25", "p50", "p75"]
    out["n_patients"] = grouped.size()
    out = out.reset_index()
    out = out[out["n_patients"] >= MIN_BAND_PATIENTS]
    out["bin_start_hours"] = BAND_START_HOURS + out["bin"] * BAND_BIN_HOURS
    out["bin_end_hours"] = out["bin_start_hours"] + BAND_BIN_HOURS
    out["target"] = target
    out["n_patients"] = out["n_patients"].astype("int64")
    return out[BAND_COLUMNS].sort_values(["marker", "group", "bin_start_hours"]).reset_index(drop=True)


# --------------------------------------------------------------------------- inline SVG charts


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}"


@dataclass
class _Axis:
    lo: float
    hi: float
    px_lo: float
    px_hi: float
    log: bool = False

    def __call__(self, v: float | np.ndarray) -> Any:
        lo, hi = (math.log10(self.lo), math.log10(self.hi)) if self.log else (self.lo, self.hi)
        scale = (self.px_hi - self.px_lo) / (hi - lo if hi > lo else 1.0)
        if isinstance(v, float | int):  # scalar fast path (ticks, labels)
            v = math.log10(max(v, 1e-12)) if self.log else v
            return self.px_lo + (v - lo) * scale
        v = np.asarray(v, dtype=float)
        if self.log:
            v = np.log10(np.maximum(v, 1e-12))
        return self.px_lo + (v - lo) * scale


def _day_ticks(lo: float, hi: float) -> list[float]:
    step = 24.0 if hi - lo <= 10 * 24 else 48.0
    return list(np.arange(math.ceil(lo / step) * step, hi + 1e-9, step))


def _nice_ticks(hi: float, n: int = 4) -> list[float]:
    """0 .. >= hi in round steps (1, 2, 2.5, 5 x 10^k)."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step - 1e-9)) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0**k for k in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    """SVG ``points`` attribute from pixel arrays."""
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs.tolist(), ys.tolist(), strict=True))


def _svg_open(width: int, height: int, label: str) -> list[str]:
    return [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui,sans-serif" font-size="10">',
            f"<title>{_e(label)}</title>"]


def _treatment_lines(parts: list[str], treatments: list[tuple[float, str]], x: _Axis, y0: float, y1: float) -> None:
    for hours, klass in treatments:
        if not (x.lo <= hours <= x.hi):
            continue
        colour, letter, _ = TREATMENT_STYLE[klass]
        px = _f(x(hours))
        parts.append(f'<line x1="{px}" x2="{px}" y1="{_f(y0)}" y2="{_f(y1)}" stroke="{colour}" '
                     f'stroke-width="1" stroke-dasharray="3 2"/>')
        parts.append(f'<text x="{px}" y="{_f(y0 - 2)}" fill="{colour}" text-anchor="middle" '
                     f'font-size="9" font-weight="bold">{letter}</text>')


def svg_risk_trajectory(
    hours: list[float], series: list[tuple[str, str, list[float], list[bool]]], low_below: float,
    high_from: float, treatments: list[tuple[float, str]],
) -> str:
    """Calibrated risk per landmark, one line per target, over low/intermediate/high bands.

    ``series``: (label, colour, probabilities, after_onset flags) per target.
    """
    w, h, left, right, top, bottom = 400, 190, 34, 88, 14, 30
    finite = [p for _, _, ps, _ in series for p in ps if np.isfinite(p)]
    y_hi = min(1.0, _nice_ticks(max(high_from * 1.5, (max(finite) if finite else 0) * 1.1), 5)[-1])
    x_lo, x_hi = min(hours) - 6, max(hours) + 6
    x = _Axis(x_lo, x_hi, left, w - right)
    y = _Axis(0.0, y_hi, h - bottom, top)
    parts = _svg_open(w, h, "Risk trajectory over landmarks")
    for lo, hi, name in ((0, low_below, "low"), (low_below, high_from, "intermediate"), (high_from, y_hi, "high")):
        hi = min(hi, y_hi)
        if hi <= lo:
            continue
        parts.append(f'<rect x="{left}" y="{_f(y(hi))}" width="{w - left - right}" height="{_f(y(lo) - y(hi))}" '
                     f'fill="{BAND_COLOURS[name]}" fill-opacity="0.09"/>')
        parts.append(f'<text x="{w - right + 3}" y="{_f((y(lo) + y(hi)) / 2 + 3)}" fill="{BAND_COLOURS[name]}" '
                     f'font-size="9">{name}</text>')
    for tick in [t for t in _nice_ticks(y_hi, 5) if t <= y_hi + 1e-9]:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{_f(y(tick))}" y2="{_f(y(tick))}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 3}" y="{_f(y(tick) + 3)}" text-anchor="end" fill="#374151">'
                     f'{tick * 100:.0f}%</text>')
    for hr in hours:
        parts.append(f'<text x="{_f(x(hr))}" y="{h - bottom + 13}" text-anchor="middle" fill="#374151">'
                     f'{ct.format_number(hr)} h</text>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle" fill="#6b7280">'
                 f'hours after infusion (landmark)</text>')
    _treatment_lines(parts, treatments, x, top + 10, h - bottom)
    for i, (label, colour, probs, after) in enumerate(series):
        pts = [(x(hr), y(p)) for hr, p in zip(hours, probs, strict=True) if np.isfinite(p)]
        if len(pts) > 1:
            dash = ' stroke-dasharray="5 3"' if i % 2 else ""
            parts.append(f'<polyline points="{" ".join(f"{_f(a)},{_f(b)}" for a, b in pts)}" fill="none" '
                         f'stroke="{colour}" stroke-width="2"{dash}/>')
        for hr, p, late in zip(hours, probs, after, strict=True):
            if not np.isfinite(p):
                continue
            fill = "#ffffff" if late else colour
            parts.append(f'<circle cx="{_f(x(hr))}" cy="{_f(y(p))}" r="3.5" fill="{fill}" stroke="{colour}" '
                         f'stroke-width="1.5"><title>{_e(label)} at {ct.format_number(hr)} h: '
                         f'{format_risk(p)}</title></circle>')
        if pts:
            parts.append(f'<text x="{_f(pts[-1][0] + 6)}" y="{_f(pts[-1][1] + 3 + (8 if i % 2 else -4))}" '
                         f'fill="{colour}" font-weight="bold">{_e(format_risk(probs[-1]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_waterfall(base: float, items: list[tuple[str, float]], margin: float, title: str) -> str:
    """Log-odds waterfall: base value, one bar per driver group (+ 'other'), the patient's score."""
    w, row_h, left, right, top = 400, 20, 150, 42, 8
    n = len(items) + 2
    h = top + n * row_h + 26
    cum = [base]
    for _, v in items:
        cum.append(cum[-1] + v)
    lo, hi = min(min(cum), margin, 0.0), max(max(cum), margin, 0.0)
    pad = (hi - lo) * 0.06 + 1e-6
    x = _Axis(lo - pad, hi + pad, left, w - right)
    parts = _svg_open(w, h, title)
    y_end = top + n * row_h
    for tick in np.unique(np.round(np.linspace(lo, hi, 5), 1)):
        parts.append(f'<line x1="{_f(x(tick))}" x2="{_f(x(tick))}" y1="{top}" y2="{y_end}" stroke="#eef0f3"/>')
        parts.append(f'<text x="{_f(x(tick))}" y="{y_end + 11}" text-anchor="middle" fill="#6b7280" '
                     f'font-size="9">{tick:+.1f}</text>')
    parts.append(f'<text x="{(left + w - right) / 2}" y="{h - 3}" text-anchor="middle" fill="#6b7280" '
                 f'font-size="9">model score (log-odds)</text>')

    def label(row: int, text: str, bold: bool = False) -> None:
        weight = ' font-weight="bold"' if bold else ""
        parts.append(f'<text x="{left - 4}" y="{top + row * row_h + 14}" text-anchor="end" '
                     f'fill="#111827"{weight}>{_e(text[:30])}</text>')

    label(0, "Average patient", True)
    parts.append(f'<rect x="{_f(min(x(0), x(base)))}" y="{top + 4}" width="{_f(abs(x(base) - x(0)))}" '
                 f'height="{row_h - 8}" fill="#9ca3af"/>')
    for i, (name, v) in enumerate(items, start=1):
        a, b = cum[i - 1], cum[i]
        colour = "#dc2626" if v > 0 else "#2563eb"
        label(i, name)
        parts.append(f'<rect x="{_f(min(x(a), x(b)))}" y="{top + i * row_h + 4}" '
                     f'width="{_f(max(abs(x(b) - x(a)), 1.0))}" height="{row_h - 8}" fill="{colour}"/>')
        parts.append(f'<line x1="{_f(x(a))}" x2="{_f(x(a))}" y1="{top + (i - 1) * row_h + 4}" '
                     f'y2="{top + i * row_h + row_h - 4}" stroke="#6b7280" stroke-width="0.6"/>')
        parts.append(f'<text x="{_f(max(x(a), x(b)) + 3)}" y="{top + i * row_h + 14}" fill="{colour}" '
                     f'font-size="9">{v:+.2f}</text>')
    last = n - 1
    label(last, "This patient", True)
    parts.append(f'<rect x="{_f(min(x(0), x(margin)))}" y="{top + last * row_h + 4}" '
                 f'width="{_f(abs(x(margin) - x(0)))}" height="{row_h - 8}" fill="#111827"/>')
    parts.append(f'<text x="{_f(max(x(0), x(margin)) + 3)}" y="{top + last * row_h + 14}" fill="#111827" '
                 f'font-size="9">{margin:+.2f}</text>')
    parts.append(f'<line x1="{_f(x(0))}" x2="{_f(x(0))}" y1="{top}" y2="{y_end}" stroke="#374151" stroke-width="0.8"/>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class MarkerBands:
    """Cohort quartile bands of one marker per group: array (bins, 5) of start, end, p25, p50, p75 hours/values."""

    event: np.ndarray | None = None
    no_event: np.ndarray | None = None


def svg_marker(
    name: str, unit: str, times: np.ndarray, values: np.ndarray, censored: np.ndarray, bands: MarkerBands,
    treatments: list[tuple[float, str]], landmark_hours: float, event_label: str,
) -> str:
    """One marker over time: the patient's values up to the landmark against cohort IQR bands."""
    w, h, left, right, top, bottom = 400, 170, 44, 10, 18, 26
    x_lo = max(BAND_START_HOURS, math.floor((min(times.min(), -24.0) if times.size else -24.0) / 24) * 24)
    x_hi = landmark_hours + 48.0  # show where the cohort goes next; the patient stops at "now"
    band_frames = [(b, g) for b, g in ((bands.no_event, NO_EVENT), (bands.event, EVENT)) if b is not None and len(b)]
    shown = [b[(b[:, 1] > x_lo) & (b[:, 0] < x_hi)] for b, _ in band_frames]
    pool = [values[values > 0]] + [s[:, [2, 4]].ravel() for s in shown]
    pool_all = np.concatenate(pool) if pool else np.array([])
    pool_all = pool_all[np.isfinite(pool_all) & (pool_all > 0)]
    if pool_all.size == 0:
        y_lo, y_hi, log = 0.0, 1.0, False
    else:
        y_lo, y_hi = float(pool_all.min()), float(pool_all.max())
        log = y_hi / max(y_lo, 1e-12) > 20
        if log:
            y_lo, y_hi = 10 ** math.floor(math.log10(y_lo)), 10 ** math.ceil(math.log10(y_hi))
        else:
            y_lo, y_hi = 0.0, y_hi * 1.1 if y_hi > 0 else 1.0
    x = _Axis(x_lo, x_hi, left, w - right)
    y = _Axis(y_lo, y_hi, h - bottom, top, log=log)
    parts = _svg_open(w, h, f"{name} over time against the cohort")
    parts.append(f'<text x="{left}" y="11" font-weight="bold" fill="#111827">{_e(name)} '
                 f'<tspan font-weight="normal" fill="#6b7280">({_e(unit)}{", log scale" if log else ""})</tspan></text>')
    if not log:
        y_hi = _nice_ticks(y_hi)[-1]
        y = _Axis(y_lo, y_hi, h - bottom, top)
    ticks = _log_ticks(y_lo, y_hi) if log else _nice_ticks(y_hi)
    for t in ticks:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{_f(y(t))}" y2="{_f(y(t))}" stroke="#eef0f3"/>')
        parts.append(f'<text x="{left - 3}" y="{_f(y(t) + 3)}" text-anchor="end" fill="#6b7280" font-size="9">'
                     f'{_e(ct.format_number(t))}</text>')
    for t in _day_ticks(x_lo, x_hi):
        parts.append(f'<text x="{_f(x(t))}" y="{h - bottom + 11}" text-anchor="middle" fill="#6b7280" '
                     f'font-size="9">d{t / 24:+.0f}</text>'.replace("d+0", "d0"))
    colours = {NO_EVENT: "#64748b", EVENT: "#dc2626"}
    for s, (_, group) in zip(shown, band_frames, strict=True):
        if not len(s):
            continue
        mid = (s[:, 0] + s[:, 1]) / 2
        up = _points(x(mid), y(s[:, 4]))
        down = _points(x(mid[::-1]), y(s[::-1, 2]))
        med = _points(x(mid), y(s[:, 3]))
        parts.append(f'<polygon points="{up} {down}" fill="{colours[group]}" fill-opacity="0.16" stroke="none"/>')
        parts.append(f'<polyline points="{med}" fill="none" stroke="{colours[group]}" stroke-width="1" '
                     f'stroke-opacity="0.6"/>')
    now = _f(x(landmark_hours))
    parts.append(f'<line x1="{now}" x2="{now}" y1="{top}" y2="{h - bottom}" stroke="#111827" stroke-width="1"/>')
    parts.append(f'<text x="{_f(x(landmark_hours) - 3)}" y="{h - bottom - 4}" text-anchor="end" font-size="9" '
                 f'fill="#111827">now</text>')
    _treatment_lines(parts, treatments, x, top + 8, h - bottom)
    keep = np.isfinite(values) & ((values > 0) | (not log))
    if keep.any():
        xs, ys = x(times[keep]), y(values[keep])
        parts.append(f'<polyline points="{_points(xs, ys)}" fill="none" stroke="#111827" stroke-width="1.6"/>')
        for a, b, cens, t, v in zip(xs.tolist(), ys.tolist(), censored[keep].tolist(), times[keep].tolist(),
                                    values[keep].tolist(), strict=True):
            fill = "#ffffff" if cens else "#111827"
            parts.append(f'<circle cx="{_f(a)}" cy="{_f(b)}" r="2.4" fill="{fill}" stroke="#111827">'
                         f'<title>{ct.format_number(t)} h: {"&lt;" if cens else ""}{_e(ct.format_number(v))} '
                         f'{_e(unit)}</title></circle>')
    else:
        parts.append(f'<text x="{(left + w) / 2}" y="{h / 2}" text-anchor="middle" fill="#6b7280">'
                     f'not measured before {ct.format_number(landmark_hours)} h</text>')
    parts.append(f'<text x="{w - right}" y="11" text-anchor="end" font-size="9">'
                 f'<tspan fill="{colours[EVENT]}">■ {_e(event_label)}</tspan> '
                 f'<tspan fill="{colours[NO_EVENT]}">■ without</tspan></text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- page data


def format_risk(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    if p < 0.01:
        return "<1%"
    return f"{p * 100:.0f}%"


def horizon_text(hours: float | None) -> str:
    """``720 -> "30 days"``; unknown -> "the model's horizon"."""
    if hours is None:
        return "the model's horizon"
    hours = float(hours)
    return f"{hours / 24:g} days" if hours % 24 == 0 and hours >= 48 else f"{hours:g} h"


def target_label(config: Config, target: str) -> str:
    t = config.targets.get(target)
    if t is None:
        return target
    event = {"CRS": "CRS", "ICANS": "ICANS"}.get(t.event, t.event.title())
    return f"grade ≥{t.min_grade} {event}"


@lru_cache(maxsize=32)
def _commit_date(commit: str) -> str | None:
    """Commit time of the training code (metadata has no timestamp, by design: identical reruns)."""
    if not commit or commit == "unknown":
        return None
    try:
        result = subprocess.run(["git", "show", "-s", "--format=%cI", commit], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def model_identity(bundle: ModelBundle, target: str) -> dict[str, Any]:
    model = bundle.targets[target]
    meta = model.metadata
    commit = str(meta.get("git_commit", "unknown"))
    trained = meta.get("trained_at") or _commit_date(commit)
    return {
        "run_id": model.run_id or bundle.runs.get("targets", {}).get(target) or "not logged",
        "cohort_path": meta.get("cohort_path", "unknown"),
        "data_sha256": str(meta.get("data_sha256", "unknown"))[:12],
        "git_commit": commit[:10],
        "trained": f"committed {trained}" if trained and not meta.get("trained_at") else (trained or "date not recorded"),
        "n_patients": meta.get("n_patients"),
        "n_events": meta.get("n_events"),
        "horizon_hours": meta.get("horizon_hours"),
    }


def validation_at(metrics: dict | None, target: str, hours: float) -> dict[str, Any]:
    """Validated AUROC (CI) and calibration at a landmark from metrics.json (or why not)."""
    if not metrics or target not in metrics:
        return {"available": False, "reason": "no validation metrics (run `crs evaluate`)"}
    entry = metrics[target].get(landmark_key(hours)) or metrics[target].get("all")
    if not entry or "model" not in entry:
        return {"available": False, "reason": (entry or {}).get("skipped", "not validated at this landmark")}
    m = entry["model"]
    lo, hi = m.get("auroc_ci") or [None, None]

    def r2(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    return {"available": True, "landmark": landmark_key(hours), "n": entry.get("n"), "events": entry.get("events"),
            "auroc": r2(m.get("auroc")), "ci": f"{r2(lo)}–{r2(hi)}", "slope": r2(m.get("calibration_slope")),
            "intercept": r2(m.get("calibration_intercept"))}


def data_quality_messages(landmarks: pd.DataFrame, config: Config) -> dict[str, list[str]]:
    """Per patient, notes about data the model lacked at their latest landmark (shown on the pages)."""
    latest = landmarks.sort_values(["patient_id", "landmark_hours"]).groupby("patient_id", observed=True).tail(1)
    codes = [c for c in config.report.markers if f"{c.lower()}__count" in latest.columns]
    out: dict[str, list[str]] = {}
    for row in latest.itertuples(index=False):
        r = row._asdict()
        lm = ct.format_number(r["landmark_hours"])
        counts = [r.get(f"{c.lower()}__count", 0) or 0 for c in codes]
        notes = []
        if codes and all(float(n) == 0 for n in counts):
            notes.append(f"No marker measured before {lm} h: risk rests on covariates and scores only.")
        else:
            missing = [ct.display_name(c) for c, n in zip(codes, counts, strict=True) if float(n) == 0]
            if missing:
                notes.append(f"Not measured before {lm} h: {', '.join(missing)}.")
            no_base = [ct.display_name(c) for c, n in zip(codes, counts, strict=True)
                       if float(n) > 0 and not r.get(f"{c.lower()}__has_baseline", 1)]
            if no_base:
                notes.append(f"No pre-infusion baseline for {', '.join(no_base)}: fold changes unknown.")
        if notes:
            out[str(r["patient_id"])] = notes
    return out


@dataclass
class _PatientSlices:
    """Row ranges per patient in a table sorted by patient (fast per-patient access, no filtering)."""

    frame: pd.DataFrame
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, frame: pd.DataFrame) -> _PatientSlices:
        if frame is None or frame.empty:
            return cls(pd.DataFrame())
        frame = frame.sort_values(["patient_id", "hours_since_anchor"], kind="stable").reset_index(drop=True)
        ids = frame["patient_id"].astype(str).to_numpy()
        change = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        ranges = {ids[a]: (a, b) for a, b in zip(change[:-1], change[1:], strict=True)}
        return cls(frame, ranges)

    def get(self, pid: str) -> tuple[int, int]:
        return self.ranges.get(pid, (0, 0))


def _treatment_classes(drugs: np.ndarray) -> np.ndarray:
    from features.definitions import TREATMENT_CLASSES

    lookup = {name: klass for klass, names in TREATMENT_CLASSES.items() for name in names}
    return np.array([lookup.get(str(d).strip().lower(), "") for d in drugs], dtype=object)


def _units(config: Config, measurements: pd.DataFrame) -> dict[str, str]:
    from pipeline.registry import load_registry

    analytes = load_registry().analytes
    units = dict(zip(analytes["code"], analytes["canonical_unit"], strict=True))
    return units


def group_shap(names: list[str], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sum SHAP columns per clinical group (exact: SHAP values add). ``values``: (rows, features)."""
    groups = [ct.feature_group(n) for n in names]
    keys = list(dict.fromkeys(groups))
    codes = np.array([keys.index(g) for g in groups])
    summed = np.zeros((values.shape[0], len(keys)))
    np.add.at(summed.T, codes, values.T)
    return keys, summed


def _top_groups(keys: list[str], sums: np.ndarray, top_n: int) -> tuple[list[tuple[str, float]], float, int]:
    """Top groups by |sum| plus the summed rest, for one row."""
    order = np.argsort(-np.abs(sums), kind="stable")
    top = [(keys[j], float(sums[j])) for j in order[:top_n]]
    rest = order[top_n:]
    return top, float(sums[rest].sum()), len(rest)


# --------------------------------------------------------------------------- rendering


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["risk"] = format_risk
    env.filters["num"] = ct.format_number
    return env


OUT_OF_FOLD_NOTE = (
    "Training-cohort report: each risk shown is the cross-validated (out-of-fold) estimate from models that "
    "never saw this patient, averaged over CV repeats; no risk is shown after the event was recorded. The "
    "drivers explain the deployed model's score for this patient, who was part of its training data."
)


def out_of_fold_risks(explanations: dict[str, pd.DataFrame], oof: pd.DataFrame, config: Config) -> dict[str, pd.DataFrame]:
    """Replace each row's probability (and band) by its out-of-fold probability, mean over repeats.

    Rows without an out-of-fold prediction (not at risk at that landmark) get no probability.
    """
    out = {}
    for target, frame in explanations.items():
        rows = oof[oof["target"] == target]
        mean = rows.groupby(["patient_id", "landmark_hours"])["prob__model"].mean()
        keys = pd.MultiIndex.from_arrays(
            [frame["patient_id"].astype(str).to_numpy(), frame["landmark_hours"].to_numpy(dtype=float)]
        )
        mean.index = pd.MultiIndex.from_arrays(
            [mean.index.get_level_values(0).astype(str), mean.index.get_level_values(1).astype(float)]
        )
        probability = mean.reindex(keys).to_numpy(dtype=float)
        band = risk_band(probability, config.report.band_low_below, config.report.band_high_from)
        out[target] = frame.assign(probability=probability, band=band)
    return out


def write_patient_reports(
    out_dir: Path,
    *,
    config: Config,
    bundle: ModelBundle,
    explanations: dict[str, pd.DataFrame],
    landmarks: pd.DataFrame,
    measurements: pd.DataFrame,
    treatments: pd.DataFrame,
    cohort_bands: pd.DataFrame | None,
    metrics: dict | None,
    messages: dict[str, list[str]] | None = None,
    pseudonymise: bool = False,
    risk_note: str | None = None,
) -> list[Path]:
    """Write ``<patient>.html`` per patient and ``index.html`` into ``out_dir`` (atomically, as a whole).

    ``explanations``: per target the SHAP frame of :func:`pipeline.explain.explain_landmarks`.
    ``messages``: per raw patient id, data-quality notes shown prominently on the page and the index.
    Returns the final paths (index first).
    """
    from markupsafe import Markup

    started = time.perf_counter()
    to_id = id_mapper(pseudonymise)
    messages = messages or {}
    rcfg = config.report
    targets = [t for t in explanations if t in bundle.targets]
    if not targets:
        raise UserError("no explanations for any trained target: nothing to report")
    units = _units(config, measurements)
    env = _environment()
    page_tpl, index_tpl = env.get_template("patient.html.j2"), env.get_template("index.html.j2")

    # Per target: arrays keyed by (patient, landmark) so each page is a few dict lookups.
    frames = {t: explanations[t].reset_index(drop=True) for t in targets}
    grouped = {}
    for t in targets:
        names = [c[len("shap__"):] for c in frames[t].columns if c.startswith("shap__")]
        grouped[t] = group_shap(names, frames[t][[f"shap__{n}" for n in names]].to_numpy(dtype=float))
    cols = {t: {c: frames[t][c].to_numpy() for c in ("landmark_hours", "probability", "base_value", "margin")}
            for t in targets}
    for t in targets:
        cols[t]["band"] = (frames[t]["band"].astype(str).to_numpy() if "band" in frames[t]
                           else np.full(len(frames[t]), "", dtype=object))
    lm = landmarks.reset_index(drop=True)
    lm_pid = lm["patient_id"].astype(str).to_numpy()
    lm_hours = lm["landmark_hours"].to_numpy(dtype=float)
    lm_index = {(p, h): i for i, (p, h) in enumerate(zip(lm_pid, lm_hours, strict=True))}
    lm_records = lm.to_dict("records")  # features at each landmark row, for the driver wording
    rows_by_patient: dict[str, dict[str, list[int]]] = {}
    for t in targets:
        pids = frames[t]["patient_id"].astype(str).to_numpy()
        for i, p in enumerate(pids):
            rows_by_patient.setdefault(p, {}).setdefault(t, []).append(i)

    meas = _PatientSlices.build(measurements)
    m_time = meas.frame["hours_since_anchor"].to_numpy(dtype=float) if len(meas.frame) else np.array([])
    m_code = meas.frame["analyte"].astype(str).to_numpy() if len(meas.frame) else np.array([], dtype=object)
    m_value = meas.frame["value"].to_numpy(dtype=float) if len(meas.frame) else np.array([])
    m_cens = meas.frame["censoring"].astype(str).to_numpy() if len(meas.frame) else np.array([], dtype=object)
    trt = _PatientSlices.build(treatments)
    t_time = trt.frame["hours_since_anchor"].to_numpy(dtype=float) if len(trt.frame) else np.array([])
    t_drug = trt.frame["drug"].astype(str).to_numpy() if len(trt.frame) else np.array([], dtype=object)
    t_class = _treatment_classes(t_drug)

    band_target = rcfg.cohort_band_target or targets[0]
    bands: dict[str, MarkerBands] = {}
    if cohort_bands is not None and len(cohort_bands):
        sub = cohort_bands[cohort_bands["target"] == band_target]
        for (marker, group), g in sub.groupby(["marker", "group"], observed=True):
            mb = bands.setdefault(str(marker), MarkerBands())
            g = g.sort_values("bin_start_hours")
            setattr(mb, str(group), g[["bin_start_hours", "bin_end_hours", "p25", "p50", "p75"]].to_numpy(dtype=float))
    band_label = target_label(config, band_target) if band_target in config.targets else band_target
    identities = {t: model_identity(bundle, t) for t in targets}
    labels = {t: target_label(config, t) for t in targets}
    colours = {t: TARGET_COLOURS[i % len(TARGET_COLOURS)] for i, t in enumerate(targets)}

    index_rows = []
    pages: list[tuple[str, str]] = []
    # Patients with only messages (not scoreable, e.g. no data before the landmark) still get a page
    # that says why, so nobody silently disappears from the index.
    for pid in sorted(set(rows_by_patient) | set(messages)):
        display = to_id(pid)
        per_target = rows_by_patient.get(pid, {})
        hours = sorted({float(cols[t]["landmark_hours"][i]) for t in per_target for i in per_target[t]})
        scored = bool(hours)
        latest = hours[-1] if scored else math.inf
        lm_row = lm_records[lm_index[(pid, latest)]] if (pid, latest) in lm_index else {"landmark_hours": latest}
        a, b = meas.get(pid)
        upto = a + int(np.searchsorted(m_time[a:b], latest, side="right"))  # measurements at or before L
        ta, tb = trt.get(pid)
        tupto = ta + int(np.searchsorted(t_time[ta:tb], latest, side="right"))
        given = [(float(t_time[i]), t_class[i]) for i in range(ta, tupto) if t_class[i]]
        treat_list = [{"hours": ct.format_number(t_time[i]), "drug": t_drug[i]} for i in range(ta, tupto)]

        def latest_censoring(code: str, a: int = a, upto: int = upto) -> str | None:
            idx = np.flatnonzero(m_code[a:upto] == code)
            return str(m_cens[a + idx[-1]]) if idx.size else None

        series, sections, current, risk_cells = [], [], -1.0, []
        for t in targets:
            rows = per_target.get(t, [])
            f = cols[t]
            by_hour = {float(f["landmark_hours"][i]): i for i in rows}
            probs = [float(f["probability"][by_hour[h]]) if h in by_hour else math.nan for h in hours]
            onset_col = f"onset_hours__{t}"
            onset = lm_row.get(onset_col)
            onset = float(onset) if onset is not None and not pd.isna(onset) else None
            after = [onset is not None and onset <= h for h in hours]
            series.append((labels[t], colours[t], probs, after))
            if latest not in by_hour:
                continue
            i = by_hour[latest]
            p = float(f["probability"][i])
            band = str(f["band"][i])
            current = max(current, p) if np.isfinite(p) else current
            top, other, n_other = _top_groups(grouped[t][0], grouped[t][1][i], rcfg.top_drivers)
            drivers = []
            for group, v in top:
                text = ct.describe_group(group, lm_row, units, censoring=latest_censoring(group))
                drivers.append({"label": ct.group_label(group), "text": text, "sentence": ct.driver_sentence(text, v),
                                "effect": f"{v:+.2f}", "direction": "up" if v > 0 else "down"})
            items = [(ct.group_label(g), v) for g, v in top]
            if n_other:
                items.append((f"{n_other} other factors", other))
            base, margin = float(f["base_value"][i]), float(f["margin"][i])
            waterfall = svg_waterfall(base, items, margin, f"Waterfall of drivers for {labels[t]}")
            sections.append({
                "target": t, "label": labels[t], "colour": colours[t], "probability": p, "band": band,
                "band_colour": BAND_COLOURS.get(band, "#6b7280"), "drivers": drivers,
                "waterfall": Markup(waterfall), "validation": validation_at(metrics, t, latest),
                "identity": identities[t], "onset": ct.format_number(onset) if onset is not None else None,
                "horizon": horizon_text(identities[t]["horizon_hours"]),
            })
            risk_cells.append({"label": labels[t], "probability": p, "band": band,
                               "band_colour": BAND_COLOURS.get(band, "#6b7280"),
                               "driver": drivers[0]["sentence"] if drivers else ""})
        trajectory = svg_risk_trajectory(hours, series, rcfg.band_low_below, rcfg.band_high_from, given) if scored else ""
        if not scored:
            risk_cells = [{"label": labels[t], "probability": math.nan, "band": "not scored",
                           "band_colour": "#6b7280", "driver": ""} for t in targets]
        charts = []
        for code in rcfg.markers:
            idx = a + np.flatnonzero(m_code[a:upto] == code)
            now = latest if scored else (float(m_time[idx].max()) if idx.size else 0.0)
            charts.append(Markup(svg_marker(
                ct.display_name(code), ct.display_unit(units.get(code, "")), m_time[idx], m_value[idx], m_cens[idx] != "none",
                bands.get(code, MarkerBands()), given, now, band_label)))
        notes = [n.replace(pid, display) for n in messages.get(pid, [])]
        page = page_tpl.render(
            patient=display, latest=latest if scored else None, sections=sections, trajectory=Markup(trajectory), charts=charts,
            treatments=treat_list, notes=notes, disclaimer=DISCLAIMER, disclaimer_lead=DISCLAIMER_LEAD, band_label=band_label,
            risk_note=risk_note,
            low_below=rcfg.band_low_below, high_from=rcfg.band_high_from, pseudonymised=pseudonymise,
        )
        filename = f"{display}.html"
        pages.append((filename, page))
        index_rows.append({"patient": display, "href": filename, "latest": latest if scored else None, "current": current,
                           "cells": risk_cells, "notes": notes})

    index_rows.sort(key=lambda r: (-r["current"], r["patient"]))
    index = index_tpl.render(rows=index_rows, risk_note=risk_note, targets=[labels[t] for t in targets], disclaimer=DISCLAIMER,
                             disclaimer_lead=DISCLAIMER_LEAD,
                             low_below=rcfg.band_low_below, high_from=rcfg.band_high_from,
                             pseudonymised=pseudonymise, n_notes=sum(1 for r in index_rows if r["notes"]))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "index.html").write_text(index, encoding="utf-8")
        for filename, page in pages:
            (tmp / filename).write_text(page, encoding="utf-8")
    paths = [out_dir / "index.html", *(out_dir / name for name, _ in pages)]
    print(f"report: {len(pages)} patient pages in {time.perf_counter() - started:.1f} s -> {out_dir}")
    return paths


# --------------------------------------------------------------------------- model card


def _png_data_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def site_variation(oof: pd.DataFrame | None, patients: pd.DataFrame | None, target: str) -> list[dict[str, Any]]:
    """AUROC per site (mean over CV repeats, all landmarks pooled); sites with < 5 events flagged."""
    from pipeline import metrics as M

    if oof is None or patients is None or "site" not in patients.columns:
        return []
    sub = oof[oof["target"] == target]
    if sub.empty:
        return []
    site = patients.set_index(patients["patient_id"].astype(str))["site"].astype("string")
    sub = sub.assign(site=sub["patient_id"].astype(str).map(site).fillna("unknown").to_numpy())
    first = sub["repeat"].min()
    out = []
    for name, g in sub.groupby("site", observed=True):
        g0 = g[g["repeat"] == first]
        events, n = int(g0["label"].sum()), len(g0)
        row = {"site": str(name), "patients": int(g0["patient_id"].nunique()), "rows": n, "events": events}
        if events < MIN_SITE_EVENTS or n - events < MIN_SITE_EVENTS:
            row["auroc"] = f"too few events (< {MIN_SITE_EVENTS})" if events < MIN_SITE_EVENTS else "too few non-events"
        else:
            aucs = [M.auroc(r["label"].to_numpy(dtype=float), r["prob__model"].to_numpy(dtype=float))
                    for _, r in g.groupby("repeat")]
            row["auroc"] = _fmt(float(np.nanmean(aucs)))
        out.append(row)
    return out


def missingness_table(landmarks: pd.DataFrame, config: Config) -> list[dict[str, Any]]:
    """Share of landmark rows without any measurement / without a baseline, per analyte and landmark."""
    rows = []
    hours = sorted(landmarks["landmark_hours"].unique())
    for code in config.featurize.analytes:
        count, has_base = f"{code.lower()}__count", f"{code.lower()}__has_baseline"
        if count not in landmarks:
            continue
        row = {"analyte": ct.display_name(code)}
        for h in hours:
            at = landmarks[landmarks["landmark_hours"] == h]
            row[f"none_{h:g}"] = f"{(at[count] == 0).mean() * 100:.0f}%"
        row["no_baseline"] = f"{(landmarks[has_base] == 0).mean() * 100:.0f}%" if has_base in landmarks else "–"
        rows.append(row)
    return rows


def _is_simulated(cohort_path: str) -> bool:
    return (Path(cohort_path) / "truth.json").exists() or "synthetic" in str(cohort_path)


def model_card_context(
    *, config: Config, bundle: ModelBundle, metrics: dict | None, landmarks: pd.DataFrame,
    patients: pd.DataFrame | None, oof: pd.DataFrame | None, summaries: Mapping[str, pd.DataFrame] | None = None,
    figures_dir: Path = FIGURES_DIR,
) -> dict[str, Any]:
    from pipeline.metrics import NET_BENEFIT_THRESHOLDS

    metrics = metrics or {}
    keys = [landmark_key(h) for h in config.landmarks_hours] + ["all"]
    targets = []
    for t, model in bundle.targets.items():
        meta = model.metadata
        tdef = meta.get("target_definition", {})
        by_lm = metrics.get(t, {})
        perf, baselines = [], {}
        for k in keys:
            e = by_lm.get(k, {})
            m = e.get("model")
            prev = (e.get("events", 0) / e["n"]) if e.get("n") else None
            perf.append({
                "landmark": "all (pooled)" if k == "all" else f"{k} h", "n": e.get("n", 0), "events": e.get("events", 0),
                "prevalence": f"{prev * 100:.1f}%" if prev is not None else "–",
                "skipped": e.get("skipped"),
                "auroc": _fmt(m["auroc"]) if m else "–",
                "ci": f"{_fmt(m['auroc_ci'][0])}–{_fmt(m['auroc_ci'][1])}" if m else "",
                "auprc": _fmt(m["auprc"]) if m else "–", "brier": _fmt(m["brier"], 3) if m else "–",
                "slope": _fmt(m["calibration_slope"]) if m else "–",
                "intercept": _fmt(m["calibration_intercept"]) if m else "–",
                "sensitivity": _fmt(m["sensitivity"]) if m else "–", "specificity": _fmt(m["specificity"]) if m else "–",
            })
            for name, b in (e.get("baselines") or {}).items():
                cell = (f"unavailable: {b['unavailable']}" if "unavailable" in b
                        else f"{_fmt(b['auroc'])} ({_fmt(b['auroc_ci'][0])}–{_fmt(b['auroc_ci'][1])})")
                baselines.setdefault(name, {})[k] = cell
            if m:
                baselines.setdefault("XGBoost model (this card)", {})[k] = (
                    f"{_fmt(m['auroc'])} ({_fmt(m['auroc_ci'][0])}–{_fmt(m['auroc_ci'][1])})")
        model_row = baselines.pop("XGBoost model (this card)", None)
        baseline_rows = ([{"name": "XGBoost model (this card)", "cells": [model_row.get(k, "–") for k in keys],
                           "model": True}] if model_row else [])
        baseline_rows += [{"name": n, "cells": [c.get(k, "–") for k in keys], "model": False} for n, c in baselines.items()]
        pooled = by_lm.get("all", {})
        nb = []
        if "model" in pooled and pooled.get("n"):
            prev = pooled["events"] / pooled["n"]
            for pt in NET_BENEFIT_THRESHOLDS:
                v = pooled["model"]["net_benefit"].get(f"{pt:.2f}")
                nb.append({"pt": f"{pt:.2f}", "model": _fmt(v, 3), "all": _fmt(prev - (1 - prev) * pt / (1 - pt), 3)})
        summary = summaries.get(t) if summaries else None
        top = ([{"feature": r.feature, "label": ct.group_label(ct.feature_group(r.feature)), "unit": r.unit,
                 "description": r.description, "mean_abs_shap": f"{r.mean_abs_shap:.3f}"}
                for r in summary.head(10).itertuples()] if summary is not None else [])
        targets.append({
            "name": t, "label": target_label(config, t), "event": tdef.get("event"), "min_grade": tdef.get("min_grade"),
            "horizon_hours": meta.get("horizon_hours"), "identity": model_identity(bundle, t),
            "n_rows": meta.get("n_rows"), "n_events": meta.get("n_events"), "n_patients": meta.get("n_patients"),
            "threshold": _fmt((meta.get("models", {}).get("all") or {}).get("threshold"), 3),
            "threshold_rule": meta.get("threshold_rule", ""), "calibration": meta.get("calibration", ""),
            "params": meta.get("params", {}), "perf": perf, "landmark_keys": keys, "baselines": baseline_rows, "net_benefit": nb,
            "figure": _png_data_uri(figures_dir / f"{t}.png"), "sites": site_variation(oof, patients, t), "top": top,
            "n_features": len(model.feature_names),
        })
    first = next(iter(bundle.targets.values())).metadata
    cohort_path = str(first.get("cohort_path", config.cohort.path))
    return {
        "targets": targets, "config": config, "hours": [f"{h:g}" for h in sorted(landmarks["landmark_hours"].unique())],
        "missing": missingness_table(landmarks, config), "disclaimer": DISCLAIMER, "disclaimer_lead": DISCLAIMER_LEAD,
        "n_patients": int(landmarks["patient_id"].nunique()),
        "has_site": patients is not None and "site" in patients.columns,
        "simulated": _is_simulated(cohort_path), "cohort_path": cohort_path, "grading_scale": config.cohort.grading_scale,
        "static_features": config.static_features, "analytes": [ct.display_name(a) for a in config.featurize.analytes],
        "generated": time.strftime("%Y-%m-%d"),
    }


def write_model_card(path: Path, **context_args: Any) -> Path:
    """Render ``reports/model_card.html`` (TRIPOD+AI items); no patient ids appear in it."""
    context = model_card_context(**context_args)
    html_text = _environment().get_template("model_card.html.j2").render(**context)
    with atomic_path(path) as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    return Path(path)


# --------------------------------------------------------------------------- stage


def _read(path: Path, what: str) -> pd.DataFrame:
    return read_stage_parquet(path, what, "dvc repro")


def load_explanations(config: Config, bundle: ModelBundle, landmarks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """SHAP frames written by ``crs explain``; computed here when that stage has not run."""
    out_dir = Path(config.explain.output_dir)
    frames = {t: pd.read_parquet(out_dir / f"{t}.parquet") for t in bundle.targets if (out_dir / f"{t}.parquet").exists()}
    if len(frames) == len(bundle.targets):
        return frames
    from pipeline.explain import explain_landmarks

    return explain_landmarks(bundle, landmarks, config)


def main(config: Config, pseudonymise: bool | None = None, models_dir: Path = MODELS_DIR) -> None:
    import json

    from pipeline.scoring import load_bundle

    started = time.perf_counter()
    pseudonymise = config.report.pseudonymise if pseudonymise is None else pseudonymise
    id_mapper(pseudonymise)  # fail fast on a missing salt, before any work
    landmarks = _read(Path(config.featurize.output_path), "landmark features")
    interim = Path(config.ingest.output_dir)
    measurements = _read(interim / "measurements.parquet", "ingested measurements")
    treatments = _read(interim / "treatments.parquet", "ingested treatments")
    patients = _read(interim / "patients.parquet", "ingested patients")
    bundle = load_bundle(models_dir)
    metrics = json.loads(METRICS_PATH.read_text()) if METRICS_PATH.exists() else None
    oof = read_stage_parquet(OOF_PATH, "out-of-fold predictions", "crs train") if OOF_PATH.exists() else None
    explanations = load_explanations(config, bundle, landmarks)
    risk_note = None
    if oof is not None:
        # These patients trained the deployed model: its own scores for them are in-sample and
        # optimistic. Show the cross-validated (out-of-fold) risk instead, as validated.
        explanations = out_of_fold_risks(explanations, oof, config)
        risk_note = OUT_OF_FOLD_NOTE

    bands = pd.concat([compute_cohort_bands(measurements, landmarks, config.report.markers, t)
                       for t in bundle.targets], ignore_index=True)
    write_parquet(bands, COHORT_BANDS_PATH)
    messages = data_quality_messages(landmarks, config)
    paths = write_patient_reports(
        Path(config.report.output_dir), config=config, bundle=bundle, explanations=explanations,
        landmarks=landmarks, measurements=measurements, treatments=treatments, cohort_bands=bands,
        metrics=metrics, messages=messages, pseudonymise=pseudonymise, risk_note=risk_note,
    )
    summaries = {}
    for t in bundle.targets:
        p = Path(config.explain.output_dir) / f"{t}_summary.csv"
        if p.exists():
            summaries[t] = pd.read_csv(p, keep_default_na=False)
    card = write_model_card(Path(config.report.model_card_path), config=config, bundle=bundle, metrics=metrics,
                            landmarks=landmarks, patients=patients, oof=oof, summaries=summaries)
    print(f"report: {len(paths) - 1} patients{' (pseudonymised)' if pseudonymise else ''}, index "
          f"{paths[0]}, model card {card}, cohort bands {COHORT_BANDS_PATH}; "
          f"total {time.perf_counter() - started:.1f} s")
