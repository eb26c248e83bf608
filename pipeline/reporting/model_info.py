"""What a page or the model card says about a model: target names, horizon, identity, validation."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from typing import Any

from pipeline.config import Config, landmark_key
from pipeline.model import ModelBundle
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


def alert_figures(metrics: dict | None, target: str, hours: float) -> dict[str, float] | None:
    """Cross-validated sensitivity and PPV of the alert rule at a landmark (metrics.json), else None."""
    entry = (metrics or {}).get(target, {}).get(landmark_key(hours)) or {}
    model = entry.get("model") or {}
    if model.get("sensitivity") is None or model.get("ppv") is None:
        return None
    return {"sensitivity": float(model["sensitivity"]), "ppv": float(model["ppv"])}


__all__ = ["alert_figures", "horizon_text", "is_simulated_cohort", "model_identity", "target_label", "trained_on_simulated"]
