"""The optional observations table: bedside observations that are words or scores (oxygen device, level
of consciousness, seizure, ICE and CAPD scores), each row an item and its value at a time.

Items through ``observation_items.csv`` (name or synonym), terms through ``observations.csv`` (per item,
case-insensitive). An integer item (``ICE_SCORE``, ``CAPD_SCORE``) takes a whole number in its range, or
one of its "not assessable" words (kept as ``not_assessable``, score NaN). An unknown item or term is
quarantined (``unknown_term``), never guessed. Text is looked up once per distinct value.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import MISSING_VALUE_TOKENS
from pipeline.ingestion.checks import TableOutcome, finish, settle, strip
from pipeline.ingestion.records import _open_small_table, lookup_name
from pipeline.registry import (
    normalize_name,
    observation_item_synonyms,
    observation_items,
    observation_term_synonyms,
)

NOT_ASSESSABLE = "not_assessable"
COLUMNS = ("patient_id", "hours_since_anchor", "item", "value", "score")


def _items(text: pd.Series) -> pd.Series:
    """Canonical item per row (None when empty or not a known item)."""
    synonyms = observation_item_synonyms()
    uniques = text.dropna().unique()
    return text.map({u: lookup_name(u, synonyms) for u in uniques}).astype(object)


def _integer(text: str) -> tuple[str, float] | str:
    """A whole number as (canonical text, score), else the reason it is not one."""
    number = pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0]
    if np.isnan(number):
        return "unparseable_value"
    if not np.isfinite(number):
        return "non_finite_value"
    if number != np.floor(number):
        return "unparseable_value"
    return str(int(number)), float(number)


def _read_value(item: str, text: str) -> tuple[str | None, float, str | None]:
    """(canonical value, score, reason) of one distinct (item, value text) pair; reason None when good."""
    spec = observation_items()[item]
    norm = normalize_name(text)
    if spec.kind == "integer":
        if norm in spec.not_assessable:
            return NOT_ASSESSABLE, np.nan, None
        if norm in MISSING_VALUE_TOKENS:
            return None, np.nan, "missing_value"
        read = _integer(text)
        if isinstance(read, str):
            return None, np.nan, read
        value, score = read
        if not spec.min <= score <= spec.max:
            return None, np.nan, "out_of_range"
        return value, score, None
    term = lookup_name(text, observation_term_synonyms(), key=lambda n: (item, n))
    if term is not None:
        return term, np.nan, None
    if norm in MISSING_VALUE_TOKENS:
        return None, np.nan, "missing_value"
    return None, np.nan, "unknown_term"


_DETAILS = {
    "missing_value": "value is a missing-value token",
    "unparseable_value": "value is not a whole number (integer item)",
    "non_finite_value": "value is infinite (integer item)",
    "unknown_term": "value is not a known term for its item (pipeline/registry/observations.csv)",
    "out_of_range": "score outside the item's range (pipeline/registry/observation_items.csv)",
}


def validate_observations(table: RawTable, patients: pd.DataFrame) -> TableOutcome:
    """Accepted observations (canonical item and term; for integer items the integer as text or
    ``not_assessable``, and the score; hours) and the quarantine."""
    frame, duplicate, checks, ids, hours = _open_small_table(table, patients)
    item_text, value_text = strip(frame["item"]), strip(frame["value"])
    checks.flag((item_text.isna() | value_text.isna()).to_numpy(), "missing_value", "item or value is empty")
    item = _items(item_text)
    pairs = pd.DataFrame({"i": item, "v": value_text.astype(object)})
    distinct = pairs.dropna().drop_duplicates().reset_index(drop=True)
    read = [_read_value(i, v) for i, v in distinct.itertuples(index=False, name=None)]
    distinct = distinct.assign(
        value=pd.Series([r[0] for r in read], dtype=object),
        score=pd.Series([r[1] for r in read], dtype=float),
        reason=pd.Series([r[2] for r in read], dtype=object),
    )
    found = pairs.merge(distinct, on=["i", "v"], how="left", sort=False)  # row order kept
    value = found["value"].to_numpy(dtype=object)
    score = found["score"].to_numpy(dtype=float)
    reason = found["reason"].to_numpy(dtype=object)
    # In the order of REASONS: an unknown item is an unknown term, and a value is read only for known items.
    for code in ("missing_value", "unparseable_value", "non_finite_value"):
        checks.flag(reason == code, code, _DETAILS[code])
    checks.flag((item.isna() & item_text.notna()).to_numpy(), "unknown_term",
                "item is not a known observation item (pipeline/registry/observation_items.csv)")
    for code in ("unknown_term", "out_of_range"):
        checks.flag(reason == code, code, _DETAILS[code])
    item_values = item.to_numpy(dtype=object)
    keys = pd.DataFrame({"p": ids.to_numpy(dtype=object), "i": item_values, "h": hours})
    kept, good, dropped = settle(
        checks, duplicate, keys, pd.DataFrame({"v": value}), "same patient, item and time with a different value",
        checks.codes == 0,
    )
    accepted = pd.DataFrame(
        {
            "patient_id": pd.array(ids.to_numpy(dtype=object)[good], dtype="string"),
            "hours_since_anchor": hours[good],
            "item": pd.array(item_values[good], dtype="string"),
            "value": pd.array(value[good], dtype="string"),
            "score": score[good],
        }
    ).sort_values(["patient_id", "hours_since_anchor", "item"], kind="stable")
    return finish(table, kept, checks, accepted.reset_index(drop=True), dropped)


def empty_observations() -> pd.DataFrame:
    """The accepted observations table of a cohort without an observations file (a new frame each
    call; copy-on-write keeps the template empty)."""
    return _empty_observations().copy(deep=False)


@functools.cache
def _empty_observations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.array([], dtype="string"),
            "hours_since_anchor": np.zeros(0),
            "item": pd.array([], dtype="string"),
            "value": pd.array([], dtype="string"),
            "score": np.zeros(0),
        }
    )


__all__ = ["COLUMNS", "NOT_ASSESSABLE", "empty_observations", "validate_observations"]
