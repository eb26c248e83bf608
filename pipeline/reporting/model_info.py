"""What a page or the model card says about a model: target names, horizon, identity, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.model import ModelBundle
from pipeline.model.artifacts import read_manifest
from pipeline.model.setup import is_simulated_cohort, trained_on_simulated


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


def model_identity(bundle: ModelBundle, target: str) -> dict[str, Any]:
    """What identifies a model on a page: digests of its files, code and training data (no MLflow run id
    or git commit: they change on every run or commit, and pages are reproducible outputs; the MLflow
    runs carry the same ``code_sha256`` and ``data_sha256`` tags to find them)."""
    meta = bundle.targets[target].metadata
    code = meta.get("code_sha256") or meta.get("git_commit") or "unknown"  # git_commit: older models
    return {
        "model_sha256": _model_digest(bundle.directory, target)[:12],
        "cohort_path": meta.get("cohort_path", "unknown"),
        "data_sha256": str(meta.get("data_sha256", "unknown"))[:12],
        "code_sha256": str(code)[:12],
        "n_patients": meta.get("n_patients"),
        "n_events": meta.get("n_events"),
        "horizon_hours": meta.get("horizon_hours"),
    }


def _model_digest(models_dir: Path, target: str) -> str:
    """sha256 of the target's sealed ``metadata.json`` (which lists every model file's digest)."""
    try:
        return read_manifest(Path(models_dir)).get(target, "unknown")
    except UserError:
        return "unknown"


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


def alert_figures(metrics: dict | None, target: str, hours: float) -> dict[str, float] | None:
    """Cross-validated sensitivity and PPV of the alert rule at a landmark (metrics.json), else None."""
    entry = (metrics or {}).get(target, {}).get(landmark_key(hours)) or {}
    model = entry.get("model") or {}
    if model.get("sensitivity") is None or model.get("ppv") is None:
        return None
    return {"sensitivity": float(model["sensitivity"]), "ppv": float(model["ppv"])}


__all__ = ["alert_figures", "horizon_text", "is_simulated_cohort", "model_identity", "target_label", "trained_on_simulated"]
