"""ASTCT grading of CRS and ICANS from raw bedside observations (docs/grading.md).

Pure and table-driven: term grades and drug classes come from ``pipeline.registry``; thresholds from
``GradingRules``. Vectorised over all patients at once (one sorted stream of rows, running maxima).
"""

from __future__ import annotations

from .legacy import regrade_legacy
from .rules import GradingRules
from .summary import daily_grades, onset_events
from .timeline import grade_timeline

__all__ = ["GradingRules", "daily_grades", "grade_timeline", "onset_events", "regrade_legacy"]
