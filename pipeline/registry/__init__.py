"""The analyte registry: codes, synonyms, canonical units, conversions and plausible ranges.

Two data tables beside this module drive all analyte handling (adding an analyte is one row):

* ``analytes.csv`` — canonical code, name, canonical unit, plausible range (canonical units),
  ``|``-separated synonyms, LOINC codes and SDTM LBTESTCD.
* ``units.csv`` — conversions to the canonical unit: ``canonical = value * scale + offset``. A row whose
  analyte is ``*UNIT`` applies to every analyte whose canonical unit is ``UNIT``.

Names and units are matched case-insensitively after normalisation (spaces, micro signs, ``x10^9``
spellings), see :func:`normalize_unit` and :func:`normalize_name`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import pandas as pd

_WS = re.compile(r"\s+")
#: Greek letters as the registry's synonyms spell them (IFN-γ -> ifn-g, TNF-α -> tnf-a, IL-1β -> il-1b).
_GREEK = str.maketrans({"γ": "g", "α": "a", "β": "b", "κ": "k"})


def normalize_name(name: str) -> str:
    """Lower-case, fold Greek letters, trim and collapse internal whitespace: ``" IFN-γ "`` -> ``"ifn-g"``."""
    return _WS.sub(" ", str(name).strip().lower().translate(_GREEK))


def normalize_unit(unit: str) -> str:
    """Canonical spelling of a unit string for matching: ``"x10E9 / L"`` -> ``"10^9/l"``."""
    text = str(unit).strip().lower()
    text = text.replace("µ", "u").replace("μ", "u").replace("×", "x")
    text = _WS.sub("", text)
    text = re.sub(r"^x(?=10)", "", text)
    text = re.sub(r"10(?:\*\*|\*|e|\^)(\d)", r"10^\1", text)
    text = text.replace("mm3", "ul").replace("mcl", "ul").replace("mcg", "ug")
    return text


@dataclass(frozen=True)
class Registry:
    analytes: pd.DataFrame
    #: normalised synonym / code / LOINC -> canonical code
    synonyms: dict[str, str]
    #: (code, normalised unit) -> (scale, offset) into the canonical unit
    conversions: dict[tuple[str, str], tuple[float, float]]

    def canonical_unit(self, code: str) -> str:
        return str(self.analytes.loc[code, "canonical_unit"])

    @property
    def canonical_units(self) -> dict[str, str]:
        """Analyte code -> canonical unit (what ``features.feature_table`` describes features in)."""
        return dict(zip(self.analytes["code"], self.analytes["canonical_unit"], strict=True))


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath(name).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")


@functools.cache
def load_registry() -> Registry:
    analytes = _read_csv("analytes.csv")
    analytes["plausible_min"] = analytes["plausible_min"].astype(float)
    analytes["plausible_max"] = analytes["plausible_max"].astype(float)
    analytes = analytes.set_index("code", drop=False)

    synonyms: dict[str, str] = {}
    for row in analytes.itertuples(index=False):
        keys = [row.code, *row.synonyms.split("|"), *filter(None, row.loinc.split("|"))]
        if row.sdtm_lbtestcd:
            keys.append(row.sdtm_lbtestcd)
        for key in keys:
            norm = normalize_name(key)
            if synonyms.get(norm, row.code) != row.code:
                raise ValueError(f"analytes.csv: synonym '{key}' maps to both {synonyms[norm]} and {row.code}")
            synonyms[norm] = row.code

    conversions: dict[tuple[str, str], tuple[float, float]] = {}
    for row in analytes.itertuples(index=False):
        conversions[(row.code, normalize_unit(row.canonical_unit))] = (1.0, 0.0)
    units = _read_csv("units.csv")
    for row in units.itertuples(index=False):
        scale, offset = float(row.scale), float(row.offset)
        if row.analyte.startswith("*"):
            group_unit = normalize_unit(row.analyte[1:])
            codes = [c for c, u in zip(analytes["code"], analytes["canonical_unit"], strict=True)
                     if normalize_unit(u) == group_unit]
        else:
            if row.analyte not in analytes.index:
                raise ValueError(f"units.csv: analyte '{row.analyte}' is not in analytes.csv")
            codes = [row.analyte]
        for code in codes:
            conversions[(code, normalize_unit(row.unit))] = (scale, offset)
    return Registry(analytes=analytes, synonyms=synonyms, conversions=conversions)


def _synonym_map(name: str, column: str) -> dict[str, str]:
    """normalised name or synonym -> canonical value of ``column`` (one table of this package)."""
    out: dict[str, str] = {}
    for row in _read_csv(name).itertuples(index=False):
        canonical = getattr(row, column)
        for key in (canonical, *filter(None, str(row.synonyms).split("|"))):
            norm = normalize_name(key)
            if out.get(norm, canonical) != canonical:
                raise ValueError(f"{name}: synonym '{key}' maps to both {out[norm]} and {canonical}")
            out[norm] = canonical
    return out


@functools.cache
def event_synonyms() -> dict[str, str]:
    """``events.csv``: normalised event name or synonym -> canonical event (CRS, ICANS, DEATH)."""
    return _synonym_map("events.csv", "event")


@functools.cache
def drug_synonyms() -> dict[str, str]:
    """``drugs.csv``: normalised drug name, brand or spelling -> canonical generic name (lower case)."""
    return _synonym_map("drugs.csv", "drug")


@dataclass(frozen=True)
class ObservationItem:
    """One ``observation_items.csv`` row: ``kind`` is ``term`` or ``integer`` (then ``[min, max]``)."""

    item: str
    kind: str
    min: float
    max: float
    #: normalised words read as "not assessed" for an integer item (kept, never a score)
    not_assessable: frozenset[str]


@functools.cache
def observation_items() -> dict[str, ObservationItem]:
    """``observation_items.csv``: canonical item -> its kind and range."""
    items = {}
    for row in _read_csv("observation_items.csv").itertuples(index=False):
        words = frozenset(normalize_name(w) for w in str(row.not_assessable).split("|") if w)
        items[row.item] = ObservationItem(row.item, row.kind, float(row.min or "nan"), float(row.max or "nan"), words)
    return items


@functools.cache
def observation_item_synonyms() -> dict[str, str]:
    """Normalised item name or synonym -> canonical item (``O2_DEVICE``, ``ICE_SCORE``, ...)."""
    return _synonym_map("observation_items.csv", "item")


@functools.cache
def observation_terms() -> pd.DataFrame:
    """``observations.csv``: columns ``item, term, grade`` (int), one row per canonical term."""
    table = _read_csv("observations.csv")
    return table.assign(grade=table["grade"].astype(int))[["item", "term", "grade"]]


@functools.cache
def observation_term_synonyms() -> dict[tuple[str, str], str]:
    """(canonical item, normalised term or synonym) -> canonical term. Synonyms are per item ("none" is
    a seizure term and a motor term)."""
    out: dict[tuple[str, str], str] = {}
    for row in _read_csv("observations.csv").itertuples(index=False):
        for key in (row.term, *filter(None, str(row.synonyms).split("|"))):
            norm = (row.item, normalize_name(key))
            if out.get(norm, row.term) != row.term:
                raise ValueError(f"observations.csv: {row.item} synonym '{key}' maps to both {out[norm]} and {row.term}")
            out[norm] = row.term
    return out


@functools.cache
def drug_classes() -> dict[str, str]:
    """``drug_classes.csv``: canonical generic drug -> class (vasopressor, vasopressin, anti_cytokine,
    steroid, antipyretic)."""
    return dict(_read_csv("drug_classes.csv")[["drug", "class"]].itertuples(index=False, name=None))
