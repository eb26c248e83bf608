"""Per-patient messages: which rows were rejected, what was missing, why a risk is withheld.

Messages name reasons and analytes, never cell values (they reach predictions.csv and the pages).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters.canonical import RawTable
from pipeline.ingestion import IngestResult
from pipeline.lookup import id_texts

#: Readable words for ingest reason codes in per-patient messages.
REASON_TEXT = {
    "missing_patient_id": "no patient id",
    "unknown_patient": "patient not in the patients table",
    "bad_time": "time unusable",
    "missing_value": "empty value",
    "unparseable_value": "value not a number",
    "non_finite_value": "value infinite or too large",
    "unknown_unit": "unit not convertible",
    "out_of_range": "out of plausible range",
    "invalid_grade": "invalid grade",
    "conflicting_duplicate": "conflicting duplicate",
}
_NO_ANCHOR = "no anchor_time"


def patient_universe(result: IngestResult, raw: Mapping[str, RawTable]) -> list[str]:
    """Accepted patients plus ids that only appear in quarantine (a rejected patients row, or records
    of a patient missing from the patients table): they get a message, not silence."""
    ids = id_texts(result.tables["patients"]["patient_id"]).tolist()
    q = result.quarantine
    if len(q) and "patient_id" in q.columns:
        extra = q["patient_id"].dropna().astype(str).str.strip()
        extra = extra[extra != ""]
        ids.extend(extra)
    return sorted(dict.fromkeys(ids))


_NO_ANCHOR_MESSAGE = "no anchor_time (infusion time): its timestamped rows cannot be placed on the timeline"


def _quarantined_message(counts: Mapping[tuple[str, str], int]) -> str:
    """One line for a patient's rejected records: (reason, analyte or drug) -> rows, in sorted order."""
    parts = [f"{what + ' ' if what else ''}{REASON_TEXT.get(reason, reason)} x{n}" for (reason, what), n in
             sorted(counts.items())]
    return f"{sum(counts.values())} row(s) quarantined: {', '.join(parts)}"


def _rejected_rows_message(other: pd.DataFrame) -> str:
    return _quarantined_message(other.groupby(["reason", other["what"].fillna("")], sort=True).size().to_dict())


def _blanked_cells_message(cells: pd.DataFrame) -> str:
    parts = [f"{column} ({REASON_TEXT.get(reason, reason)})" for column, reason in
             cells[["source_column", "reason"]].itertuples(index=False)]
    return f"left blank, scored as not measured: {', '.join(parts)}"


def _patient_quarantine_messages(rows: pd.DataFrame, patients_path: str) -> list[str]:
    msgs: list[str] = []
    cell = rows["source_column"].notna() if "source_column" in rows.columns else pd.Series(False, index=rows.index)
    if cell.any():  # the patient is kept; only these covariates are missing
        msgs.append(_blanked_cells_message(rows[cell]))
        rows = rows[~cell]
    own = rows[rows["source_file"] == patients_path]
    if len(own):
        r = own.iloc[0]
        msgs.append(f"patient row rejected ({REASON_TEXT.get(r['reason'], r['reason'])}: {r['detail']})")
    other = rows[rows["source_file"] != patients_path]
    no_anchor = other["detail"].astype(str).str.contains(_NO_ANCHOR)
    if no_anchor.any():
        msgs.append(_NO_ANCHOR_MESSAGE)
        other = other[~no_anchor]
    if len(own) and (other["reason"] == "unknown_patient").all():
        other = other.iloc[0:0]  # already explained by the rejected patients row
    if len(other):
        msgs.append(_rejected_rows_message(other))
    return msgs


def quarantine_messages(result: IngestResult, patients_path: str) -> dict[str, list[str]]:
    """patient id -> messages about that patient's quarantined rows."""
    q = result.quarantine
    if not len(q) or "patient_id" not in q.columns:
        return {}
    if len(q) <= FEW_ROWS:
        few = _few_record_messages(q, patients_path)
        if few is not None:
            return few
    q = q[q["patient_id"].notna()].copy()
    q["pid"] = q["patient_id"].astype(str).str.strip()
    q["what"] = q["analyte"].astype(object) if "analyte" in q.columns else None
    if "drug" in q.columns:
        q["what"] = q["what"].where(q["what"].notna(), q["drug"].astype(object))
    return {str(pid): _patient_quarantine_messages(rows, patients_path) for pid, rows in q.groupby("pid", sort=True)}


#: Up to this many quarantined rows (one new patient's), messages about rejected records are worded row by
#: row: the same words as the group-by below (tests/pipeline/test_scoring_fast_path.py), ~3 ms less.
FEW_ROWS = 64


def _few_record_messages(q: pd.DataFrame, patients_path: str) -> dict[str, list[str]] | None:
    """:func:`quarantine_messages` when every quarantined row is a record (no patients row, no blanked
    cell) with text ids, reasons and details; None otherwise (the group-by path words those)."""
    if any(f == patients_path for f in _cells(q, "source_file")) or any(
            c is not None for c in _cells(q, "source_column")):
        return None
    ids, what, reasons, details = (_cells(q, c) for c in ("patient_id", "analyte", "reason", "detail"))
    if "drug" in q.columns:
        what = [w if w is not None else d for w, d in zip(what, _cells(q, "drug"), strict=True)]
    if not all(isinstance(v, str) for v in reasons) or not all(
            v is None or isinstance(v, str) for v in (*ids, *what, *details)):
        return None
    keep = [i for i, pid in enumerate(ids) if pid is not None]
    # Trimmed by the kernel ``astype(str).str.strip()`` runs on Arrow-backed text.
    pids = pc.utf8_trim_whitespace(pa.array([ids[i] for i in keep], pa.string())).to_pylist()
    rows: dict[str, list[tuple[str, str, str | None]]] = {}
    for pid, i in zip(pids, keep, strict=True):
        rows.setdefault(pid, []).append((reasons[i], what[i] or "", details[i]))
    return {pid: _record_messages(rows[pid]) for pid in sorted(rows)}


def _cells(frame: pd.DataFrame, column: str) -> list:
    """A column's cells, None where missing (a column the frame lacks: all None)."""
    if column not in frame.columns:
        return [None] * len(frame)
    return frame[column].to_numpy(dtype=object, na_value=None).tolist()


def _record_messages(rows: list[tuple[str, str, str | None]]) -> list[str]:
    """:func:`_patient_quarantine_messages` of one patient's record rows (reason, analyte or drug, detail)."""
    msgs = []
    other = [r for r in rows if not (r[2] is not None and _NO_ANCHOR in r[2])]
    if len(other) < len(rows):
        msgs.append(_NO_ANCHOR_MESSAGE)
    if other:
        msgs.append(_quarantined_message(Counter((reason, what) for reason, what, _ in other)))
    return msgs
