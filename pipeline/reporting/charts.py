"""Self-contained inline SVG charts for the patient pages: no network, no JavaScript, no matplotlib.

Drawn here in Python: crisp on a phone, prints well, and ~1000x faster than a matplotlib figure per
chart. Every function returns one ``<svg>`` element as a string.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.reporting import clinical_text as ct
from pipeline.reporting.cohort_bands import BAND_START_HOURS, EVENT, NO_EVENT, MarkerBands

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); every colour also has a
# word, letter or line style beside it (band names, T / S, solid / dashed series), so none carries meaning alone.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}
TARGET_COLOURS = [OKABE_ITO[c] for c in ("black", "purple", "green", "sky")]
BAND_COLOURS = {"low": OKABE_ITO["blue"], "intermediate": OKABE_ITO["orange"], "high": OKABE_ITO["vermillion"],
                "": "#6b7280"}
UP_COLOUR, DOWN_COLOUR = OKABE_ITO["vermillion"], OKABE_ITO["blue"]
TREATMENT_STYLE = {"tocilizumab": (OKABE_ITO["blue"], "T", "tocilizumab"), "steroids": (OKABE_ITO["green"], "S", "steroid"),
                   "vasopressors": (OKABE_ITO["vermillion"], "V", "vasopressor")}
GROUP_COLOURS = {NO_EVENT: OKABE_ITO["blue"], EVENT: OKABE_ITO["vermillion"]}


def format_risk(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    if p < 0.01:
        return "<1%"
    return f"{p * 100:.0f}%"


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

    def __post_init__(self) -> None:
        # Computed once per axis: charts map thousands of points through it.
        lo, hi = (math.log10(self.lo), math.log10(self.hi)) if self.log else (self.lo, self.hi)
        span = hi - lo if hi > lo else 1.0
        self._origin, self._scale = lo, (self.px_hi - self.px_lo) / span
        # Far-off values stay off the chart but finite: an SVG coordinate must never read "inf".
        self._far_lo, self._far_hi = lo - 10 * span, hi + 10 * span

    def __call__(self, v: float | np.ndarray) -> Any:
        if isinstance(v, float | int):  # scalar fast path (ticks, labels)
            v = math.log10(max(v, 1e-12)) if self.log else v
            return self.px_lo + (min(max(v, self._far_lo), self._far_hi) - self._origin) * self._scale
        v = np.asarray(v, dtype=float)
        if self.log:
            v = np.log10(np.maximum(v, 1e-12))
        clipped = np.minimum(np.maximum(v, self._far_lo), self._far_hi)
        return self.px_lo + (clipped - self._origin) * self._scale


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
    hours: list[float], series: list[tuple[str, str, list[float], list[bool]]], low_below: float | None,
    high_from: float | None, treatments: list[tuple[float, str]],
) -> str:
    """Calibrated risk per landmark, one line per target, over low/intermediate/high bands (when one pair
    of cut-offs applies to every line; None: no shading).

    ``series``: (label, colour, probabilities, after_onset flags) per target.
    """
    w, h, left, right, top, bottom = 400, 190, 34, 88, 14, 30
    finite = [p for _, _, ps, _ in series for p in ps if np.isfinite(p)]
    y_hi = min(1.0, _nice_ticks(max((high_from or 0.1) * 1.5, (max(finite) if finite else 0) * 1.1), 5)[-1])
    x_lo, x_hi = min(hours) - 6, max(hours) + 6
    x = _Axis(x_lo, x_hi, left, w - right)
    y = _Axis(0.0, y_hi, h - bottom, top)
    parts = _svg_open(w, h, "Risk trajectory over landmarks")
    zones = [] if low_below is None or high_from is None else [
        (0, low_below, "low"), (low_below, high_from, "intermediate"), (high_from, y_hi, "high")]
    for lo, hi, name in zones:
        hi = min(hi, y_hi)
        if hi <= lo:
            continue
        parts.append(f'<rect x="{left}" y="{_f(y(hi))}" width="{w - left - right}" height="{_f(y(lo) - y(hi))}" '
                     f'fill="{BAND_COLOURS[name]}" fill-opacity="0.09"/>')
        parts.append(f'<text x="{w - right + 3}" y="{_f((y(lo) + y(hi)) / 2 + 3)}" fill="#374151" '
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
        colour = UP_COLOUR if v > 0 else DOWN_COLOUR
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


#: The widest marker axis drawn; no laboratory value lies outside it, and 10^k ticks stay finite.
PLOT_MIN, PLOT_MAX = 1e-9, 1e15


def _marker_range(values: np.ndarray, shown: list[np.ndarray]) -> tuple[float, float, bool]:
    """y range and log scale for a marker chart: the patient's positive values and the bands shown."""
    pool = [values[values > 0]] + [s[:, [2, 4]].ravel() for s in shown]
    pool_all = np.concatenate(pool) if pool else np.array([])
    pool_all = pool_all[np.isfinite(pool_all) & (pool_all > 0)]
    # Any cell value must draw: the axis spans at most PLOT_MIN..PLOT_MAX (beyond it points sit off-chart).
    pool_all = np.clip(pool_all, PLOT_MIN, PLOT_MAX)
    if pool_all.size == 0:
        return 0.0, _nice_ticks(1.0)[-1], False
    y_lo, y_hi = float(pool_all.min()), float(pool_all.max())
    log = y_hi / max(y_lo, 1e-12) > 20
    if log:
        return 10 ** math.floor(math.log10(y_lo)), 10 ** math.ceil(math.log10(y_hi)), True
    y_hi = y_hi * 1.1 if y_hi > 0 else 1.0
    return 0.0, _nice_ticks(y_hi)[-1], False


def _band_polygons(parts: list[str], shown: list[np.ndarray], groups: list[str], x: _Axis, y: _Axis) -> None:
    """Interquartile polygon and median line of each cohort group."""
    for s, group in zip(shown, groups, strict=True):
        if not len(s):
            continue
        mid = (s[:, 0] + s[:, 1]) / 2
        up = _points(x(mid), y(s[:, 4]))
        down = _points(x(mid[::-1]), y(s[::-1, 2]))
        med = _points(x(mid), y(s[:, 3]))
        parts.append(f'<polygon points="{up} {down}" fill="{GROUP_COLOURS[group]}" fill-opacity="0.16" stroke="none"/>')
        parts.append(f'<polyline points="{med}" fill="none" stroke="{GROUP_COLOURS[group]}" stroke-width="1" '
                     f'stroke-opacity="0.6"/>')


def _patient_curve(parts: list[str], times: np.ndarray, values: np.ndarray, censored: np.ndarray, unit: str,
                   x: _Axis, y: _Axis, log: bool) -> bool:
    """The patient's values (open circles: censored); False when nothing can be drawn."""
    keep = np.isfinite(values) & ((values > 0) | (not log))
    if not keep.any():
        return False
    xs, ys = x(times[keep]), y(values[keep])
    parts.append(f'<polyline points="{_points(xs, ys)}" fill="none" stroke="#111827" stroke-width="1.6"/>')
    for a, b, cens, t, v in zip(xs.tolist(), ys.tolist(), censored[keep].tolist(), times[keep].tolist(),
                                values[keep].tolist(), strict=True):
        fill = "#ffffff" if cens else "#111827"
        parts.append(f'<circle cx="{_f(a)}" cy="{_f(b)}" r="2.4" fill="{fill}" stroke="#111827">'
                     f'<title>{ct.format_number(t)} h: {"&lt;" if cens else ""}{_e(ct.format_number(v))} '
                     f'{_e(unit)}</title></circle>')
    return True


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
    y_lo, y_hi, log = _marker_range(values, shown)
    x = _Axis(x_lo, x_hi, left, w - right)
    y = _Axis(y_lo, y_hi, h - bottom, top, log=log)
    parts = _svg_open(w, h, f"{name} over time against the cohort")
    parts.append(f'<text x="{left}" y="11" font-weight="bold" fill="#111827">{_e(name)} '
                 f'<tspan font-weight="normal" fill="#6b7280">({_e(unit)}{", log scale" if log else ""})</tspan></text>')
    ticks = _log_ticks(y_lo, y_hi) if log else _nice_ticks(y_hi)
    for t in ticks:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{_f(y(t))}" y2="{_f(y(t))}" stroke="#eef0f3"/>')
        parts.append(f'<text x="{left - 3}" y="{_f(y(t) + 3)}" text-anchor="end" fill="#6b7280" font-size="9">'
                     f'{_e(ct.format_number(t))}</text>')
    for t in _day_ticks(x_lo, x_hi):
        parts.append(f'<text x="{_f(x(t))}" y="{h - bottom + 11}" text-anchor="middle" fill="#6b7280" '
                     f'font-size="9">d{t / 24:+.0f}</text>'.replace("d+0", "d0"))
    _band_polygons(parts, shown, [g for _, g in band_frames], x, y)
    now = _f(x(landmark_hours))
    parts.append(f'<line x1="{now}" x2="{now}" y1="{top}" y2="{h - bottom}" stroke="#111827" stroke-width="1"/>')
    parts.append(f'<text x="{_f(x(landmark_hours) - 3)}" y="{h - bottom - 4}" text-anchor="end" font-size="9" '
                 f'fill="#111827">now</text>')
    _treatment_lines(parts, treatments, x, top + 8, h - bottom)
    if not _patient_curve(parts, times, values, censored, unit, x, y, log):
        parts.append(f'<text x="{(left + w) / 2}" y="{h / 2}" text-anchor="middle" fill="#6b7280">'
                     f'not measured before {ct.format_number(landmark_hours)} h</text>')
    parts.append(f'<text x="{w - right}" y="11" text-anchor="end" font-size="9">'
                 f'<tspan fill="{GROUP_COLOURS[EVENT]}">■ {_e(event_label)}</tspan> '
                 f'<tspan fill="{GROUP_COLOURS[NO_EVENT]}">■ without</tspan></text>')
    parts.append("</svg>")
    return "".join(parts)
