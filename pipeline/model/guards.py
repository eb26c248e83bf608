"""The small-data guard's words: one line for a target flagged by ``crs train`` (``metadata["small_data"]``),
shown by train, evaluate (metrics.json), the model card and ``crs register``."""

from __future__ import annotations

from typing import Any


def small_data_warning(target: str, flag: dict[str, Any] | None) -> str | None:
    """One readable line for a small-data flag (console, model card, metrics.json)."""
    if not flag:
        return None
    where = (f"{flag['patients_with_event']} patients with the event" if flag["patients_with_event"] < flag["min_events"]
             else f"landmarks {', '.join(flag['landmarks_below'])} h have fewer events")
    return (f"{target}: small data ({where}; minimum {flag['min_events']}, train.min_events): estimates are "
            "unstable and the model is not registered as deployable unless `crs register --force`")
