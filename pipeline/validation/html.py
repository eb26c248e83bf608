"""The external-validation report: one self-contained HTML page (no external assets, no JavaScript).

:func:`render_validation_html` turns the ``validation.json`` dict of ``crs validate`` into the page:
model and cohort, warnings, per target a table of external figures next to the model's own
cross-validated ones, a calibration plot and a decision curve (all landmarks on one chart each), the
recalibration before/after table, and the drift findings. Charts are inline SVG drawn here (fast, crisp
in print); all text goes through Jinja2 autoescaping, and SVG labels through :func:`html.escape`.
Missing figures (None, NaN, absent keys) read "n/a".
"""

from __future__ import annotations

import functools
import html
import math
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

LANDMARK_COLOURS = ["#1d4ed8", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0f766e", "#a16207", "#be185d"]
NA = "n/a"


def _number(x: Any) -> float | None:
    """``x`` as a finite float, else None (None, NaN, text, missing keys)."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def fmt(x: Any, digits: int = 2) -> str:
    value = _number(x)
    return NA if value is None else f"{value:.{digits}f}"


def fmt_pct(x: Any, digits: int = 0) -> str:
    value = _number(x)
    return NA if value is None else f"{value * 100:.{digits}f}%"


def fmt_p(x: Any) -> str:
    value = _number(x)
    return NA if value is None else "< 0.001" if value < 0.001 else f"{value:.3f}"


def fmt_ci(ci: Any) -> str:
    if not isinstance(ci, list | tuple) or len(ci) != 2 or None in (_number(ci[0]), _number(ci[1])):
        return NA
    return f"{fmt(ci[0])}–{fmt(ci[1])}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _sorted_landmarks(landmarks: dict) -> list[tuple[str, dict]]:
    """Landmark entries in numeric order of their keys (``"24"`` < ``"120"``); non-numeric keys last."""
    def key(item: tuple[str, Any]) -> tuple[int, float, str]:
        try:
            return 0, float(item[0]), ""
        except (TypeError, ValueError):
            return 1, 0.0, str(item[0])
    return sorted(((str(k), v if isinstance(v, dict) else {}) for k, v in landmarks.items()), key=key)


def _landmark_label(key: str) -> str:
    try:
        return f"{float(key):g} h"
    except ValueError:
        return key


# ----------------------------------------------------------------------------- SVG charts


def _nice_max(hi: float) -> float:
    return next((m for m in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75) if m >= hi), 1.0)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round ticks (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]."""
    raw = (hi - lo) / n if hi > lo else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [round(k * step, 12) for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def _scale(lo: float, hi: float, px_lo: float, px_hi: float):
    span = hi - lo if hi > lo else 1.0
    return lambda v: px_lo + (v - lo) * (px_hi - px_lo) / span


def _series(entry: dict, key: str, x_name: str, y_name: str) -> tuple[list[float], list[float], list[Any]]:
    """Paired finite (x, y) points of ``entry[key]`` plus the matching rows' extra ``n`` values."""
    block = entry.get(key) if isinstance(entry.get(key), dict) else {}
    xs, ys, ns = block.get(x_name) or [], block.get(y_name) or [], block.get("n") or []
    points = [(_number(x), _number(y), ns[i] if i < len(ns) else None)
              for i, (x, y) in enumerate(zip(xs, ys, strict=False))]
    kept = [(x, y, n) for x, y, n in points if x is not None and y is not None]
    return [p[0] for p in kept], [p[1] for p in kept], [p[2] for p in kept]


def _frame(parts: list[str], x, y, ticks_x: list[float], ticks_y: list[float], box: tuple[int, ...],
           labels: tuple[str, str], pct_y: bool) -> None:
    w, h, left, right, top, bottom = box
    for t in ticks_y:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 4}" y="{y(t) + 3:.1f}" text-anchor="end" fill="#374151">'
                     f'{f"{t * 100:.0f}%" if pct_y else f"{t:g}"}</text>')
    for t in ticks_x:
        parts.append(f'<text x="{x(t):.1f}" y="{h - bottom + 13}" text-anchor="middle" fill="#374151">'
                     f'{t * 100:.0f}%</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
                 f'fill="none" stroke="#9ca3af"/>'
                 f'<text x="{(left + w - right) / 2:.0f}" y="{h - 4}" text-anchor="middle" fill="#6b7280">'
                 f'{_e(labels[0])}</text>'
                 f'<text transform="translate(11 {(top + h - bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
                 f'fill="#6b7280">{_e(labels[1])}</text>')


def _legend(parts: list[str], entries: list[tuple[str, str, str]], x0: float, y0: float) -> None:
    for i, (label, colour, dash) in enumerate(entries):
        yy = y0 + 14 * i
        parts.append(f'<line x1="{x0}" x2="{x0 + 16}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="2"'
                     f'{dash}/><text x="{x0 + 20}" y="{yy + 3}" fill="#374151">{_e(label)}</text>')


def _svg_open(w: int, h: int, klass: str, label: str) -> list[str]:
    return [f'<svg class="chart {klass}" viewBox="0 0 {w} {h}" role="img" aria-label="{_e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui,sans-serif" font-size="10">'
            f"<title>{_e(label)}</title>"]


def svg_calibration(target: str, landmarks: list[tuple[str, dict]]) -> str:
    """Observed event rate against mean predicted risk per bin, one line per landmark, diagonal = ideal."""
    box = w, h, left, right, top, bottom = 400, 300, 44, 96, 12, 34
    curves = [(key, *_series(entry, "calibration_curve", "predicted", "observed")) for key, entry in landmarks]
    finite = [v for _, xs, ys, _ in curves for v in xs + ys]
    hi = _nice_max(max(finite, default=0.0) * 1.05)
    x, y = _scale(0.0, hi, left, w - right), _scale(0.0, hi, h - bottom, top)
    ticks = _nice_ticks(0.0, hi)
    parts = _svg_open(w, h, "calibration", f"Calibration plot, {target}")
    _frame(parts, x, y, ticks, ticks, box, ("mean predicted risk", "observed event rate"), pct_y=True)
    parts.append(f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(hi):.1f}" y2="{y(hi):.1f}" stroke="#9ca3af" '
                 f'stroke-dasharray="4 3"/>')
    max_n = max((_number(n) or 0.0 for *_, ns in curves for n in ns), default=0.0) or 1.0
    for i, (key, xs, ys, ns) in enumerate(curves):
        colour, label = LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)], _landmark_label(key)
        order = np.argsort(xs)
        pts = " ".join(f"{x(xs[j]):.1f},{y(ys[j]):.1f}" for j in order)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for j in order:
            radius = 2.0 + 3.0 * math.sqrt((_number(ns[j]) or 0.0) / max_n)
            parts.append(f'<circle cx="{x(xs[j]):.1f}" cy="{y(ys[j]):.1f}" r="{radius:.1f}" fill="{colour}" '
                         f'fill-opacity="0.7"><title>{_e(label)}: predicted {fmt_pct(xs[j], 1)}, observed '
                         f'{fmt_pct(ys[j], 1)}, n {_e(fmt(ns[j], 0))}</title></circle>')
    _legend(parts, [(_landmark_label(k), LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)], "")
                    for i, (k, _) in enumerate(landmarks)], w - right + 8, top + 8)
    parts.append("</svg>")
    return "".join(parts)


def svg_decision_curve(target: str, landmarks: list[tuple[str, dict]], chart_id: str) -> str:
    """Net benefit of the model (solid) and of treating all (dotted) per landmark; treat none = 0."""
    box = w, h, left, right, top, bottom = 400, 300, 44, 96, 12, 34
    model = [(k, *_series(e, "decision_curve", "thresholds", "net_benefit")[:2]) for k, e in landmarks]
    treat_all = [(k, *_series(e, "decision_curve", "thresholds", "treat_all")[:2]) for k, e in landmarks]
    xs_all = [v for _, xs, _ in model + treat_all for v in xs]
    x_hi = max(xs_all, default=0.5)
    y_hi = max([v for _, _, ys in model + treat_all for v in ys] + [0.01]) * 1.1
    y_lo = -0.3 * y_hi
    x, y = _scale(0.0, x_hi, left, w - right), _scale(y_lo, y_hi, h - bottom, top)
    parts = _svg_open(w, h, "decision-curve", f"Decision curve, {target}")
    _frame(parts, x, y, _nice_ticks(0.0, x_hi), _nice_ticks(y_lo, y_hi), box,
           ("threshold probability", "net benefit"), pct_y=False)
    parts.append(f'<clipPath id="{chart_id}"><rect x="{left}" y="{top}" width="{w - left - right}" '
                 f'height="{h - top - bottom}"/></clipPath><g clip-path="url(#{chart_id})">'
                 f'<line x1="{left}" x2="{w - right}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}" stroke="#111827"/>')
    for i, ((key, xs, ys), (_, xa, ya)) in enumerate(zip(model, treat_all, strict=True)):
        colour = LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)]
        for px, py, style in ((xa, ya, ' stroke-dasharray="2 3" stroke-width="1"'), (xs, ys, ' stroke-width="2"')):
            pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(px, py, strict=True))
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}"{style}>'
                         f'<title>{_e(_landmark_label(key))}</title></polyline>')
    parts.append("</g>")
    entries = [(_landmark_label(k), LANDMARK_COLOURS[i % len(LANDMARK_COLOURS)], "") for i, (k, _) in enumerate(landmarks)]
    _legend(parts, [*entries, ("treat all", "#6b7280", ' stroke-dasharray="2 3"'), ("treat none", "#111827", "")],
            w - right + 8, top + 8)
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- page


#: Columns of the per-target table: header, row key, whether it is the model's cross-validated figure.
TABLE_COLUMNS: list[tuple[str, str, bool]] = [
    ("Landmark", "landmark", False), ("n", "n", False), ("Events", "events", False),
    ("AUROC", "auroc", False), ("95% CI", "auroc_ci", False), ("AUROC (CV)", "auroc_cv", True),
    ("AUPRC", "auprc", False), ("Brier", "brier", False), ("Brier (CV)", "brier_cv", True),
    ("Cal. intercept", "intercept", False), ("Intercept (CV)", "intercept_cv", True),
    ("Cal. slope", "slope", False), ("Slope (CV)", "slope_cv", True), ("CITL", "citl", False),
    ("Threshold", "threshold", False), ("Sensitivity", "sensitivity", False), ("Specificity", "specificity", False),
]


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _row(key: str, entry: dict) -> dict[str, str]:
    cv = _dict(entry.get("training_cv"))
    return {
        "landmark": _landmark_label(key), "n": fmt(entry.get("n"), 0), "events": fmt(entry.get("n_events"), 0),
        "auroc": fmt(entry.get("auroc")), "auroc_ci": fmt_ci(entry.get("auroc_ci")), "auroc_cv": fmt(cv.get("auroc")),
        "auprc": fmt(entry.get("auprc")), "brier": fmt(entry.get("brier"), 3), "brier_cv": fmt(cv.get("brier"), 3),
        "intercept": fmt(entry.get("calibration_intercept")), "intercept_cv": fmt(cv.get("calibration_intercept")),
        "slope": fmt(entry.get("calibration_slope")), "slope_cv": fmt(cv.get("calibration_slope")),
        "citl": fmt(entry.get("citl")), "threshold": fmt_pct(entry.get("threshold"), 1),
        "sensitivity": fmt_pct(entry.get("sensitivity")), "specificity": fmt_pct(entry.get("specificity")),
    }


def _target_view(index: int, name: str, target: dict) -> dict:
    landmarks = _sorted_landmarks(_dict(target.get("landmarks")))
    return {
        "name": name,
        "rows": [_row(key, entry) for key, entry in landmarks],
        "calibration": Markup(svg_calibration(name, landmarks)) if landmarks else None,
        "decision": Markup(svg_decision_curve(name, landmarks, f"dc-clip-{index}")) if landmarks else None,
    }


def _recalibration_view(recalibration: Any) -> list[dict]:
    out = []
    for target, entry in _dict(recalibration).items():
        entry = _dict(entry)
        rows = [(label, _dict(entry.get(key))) for label, key in (("before", "before"), ("after", "after"))]
        out.append({
            "target": str(target), "intercept": fmt(entry.get("intercept")), "slope": fmt(entry.get("slope")),
            "rows": [{"when": label, "citl": fmt(r.get("citl")), "slope": fmt(r.get("calibration_slope")),
                      "brier": fmt(r.get("brier"), 3)} for label, r in rows],
        })
    return out


def _drift_view(drift: Any) -> dict | None:
    if not isinstance(drift, dict):
        return None
    features = [f for f in drift.get("features") or [] if isinstance(f, dict)]
    density = _dict(drift.get("sampling_density"))
    overall = _dict(density.get("overall"))
    return {
        "summary": [str(s) for s in drift.get("summary") or []],
        "n_features": len(features),
        "features": [{"feature": f.get("feature"), "level": f.get("level") or NA, "psi": fmt(f.get("psi")),
                      "p": fmt_p(f.get("p_value")), "missing_training": fmt_pct(f.get("missing_fraction_training")),
                      "missing_new": fmt_pct(f.get("missing_fraction_new"))}
                     for f in features if f.get("level") in ("major", "moderate") or f.get("absent")],
        "unit_shifts": [{"analyte": u.get("analyte"), "ratio": fmt(u.get("ratio_new_to_training"), 3),
                         "message": u.get("message") or ""}
                        for u in drift.get("unit_shifts") or [] if _dict(u).get("suspected")],
        "missingness": [{"analyte": m.get("analyte"), "training": fmt_pct(m.get("share_training")),
                         "new": fmt_pct(m.get("share_new"))}
                        for m in drift.get("missingness") or [] if _dict(m).get("flagged")],
        "density_overall": {"training": fmt(overall.get("per_patient_day_training")),
                            "new": fmt(overall.get("per_patient_day_new")), "ratio": fmt(overall.get("ratio")),
                            "flagged": bool(overall.get("flagged"))},
        "density": [{"analyte": d.get("analyte"), "training": fmt(d.get("per_patient_day_training")),
                     "new": fmt(d.get("per_patient_day_new")), "ratio": fmt(d.get("ratio"))}
                    for d in density.get("analytes") or [] if _dict(d).get("flagged")],
    }


def _text(value: Any) -> str:
    return NA if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(value)


def _facts(block: Any) -> list[tuple[str, str]]:
    """(label, text) per entry of the model / cohort block: scalars, and lists of scalars joined by commas
    (nested dicts are left out); None and NaN read n/a."""
    out = []
    for key, value in _dict(block).items():
        if isinstance(value, list | tuple) and not any(isinstance(v, dict | list | tuple) for v in value):
            text = ", ".join(_text(v) for v in value) if value else NA
        elif isinstance(value, dict | list | tuple):
            continue
        else:
            text = _text(value)
        out.append((str(key).replace("_", " "), text))
    return out


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pipeline.validation", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True)


def render_validation_html(validation: dict) -> str:
    """The self-contained HTML page of one external validation (``validation.json`` as a dict)."""
    targets = _dict(validation.get("targets"))
    return _environment().get_template("validation.html.j2").render(
        model=_facts(validation.get("model")),
        cohort=_facts(validation.get("cohort")),
        warnings=[str(w) for w in validation.get("warnings") or []],
        columns=TABLE_COLUMNS,
        targets=[_target_view(i, str(name), _dict(t)) for i, (name, t) in enumerate(targets.items())],
        recalibration=_recalibration_view(validation.get("recalibration")),
        drift=_drift_view(validation.get("drift")),
    )
