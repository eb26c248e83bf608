"""Assay reporting: site units, rounding, censoring at the limits of quantification, analyte names.

Site conventions (not quarantine faults): some sites report in other units or under other analyte
names; ingest must convert and map them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.registry import Registry
from pipeline.simulation.analytes import ANALYTE_INDEX, CODES, analyte_column
from pipeline.simulation.sampling import Rows
from pipeline.simulation.text import round_by

UNIT_FAULTS = {  # code -> (site index, written unit, factor canonical -> written, decimals)
    "CRP": (2, "mg/dL", 0.1, 2),
    "FERRITIN": (1, "ug/L", 1.0, 0),
    "CREAT": (4, "umol/L", 88.4, 0),
}
NAME_DIALECTS = {  # site index -> {code: name as written}
    0: {"IL6": "IL-6", "IFNG": "IFN-gamma", "IL10": "IL-10"},
    3: {"IL6": "Interleukin 6", "CRP": "C-reactive protein", "PLT": "Platelets"},
    5: {"TEMP": "Temperature", "CREAT": "Creatinine", "MCP1": "MCP-1", "IL1RA": "IL-1RA"},
}
NOT_CENSORED, BELOW_LLOQ, ABOVE_ULOQ = 0, 1, 2


@dataclass(frozen=True)
class Reported:
    """Per clean row: the value as reported, its censoring and indexes into the written unit / name lists."""

    value: np.ndarray  # rounded; the limit itself where censored
    censoring: np.ndarray  # NOT_CENSORED, BELOW_LLOQ or ABOVE_ULOQ
    unit_index: np.ndarray  # into unit_names
    unit_names: list[str]  # canonical units (CODES order), then the site units
    name_index: np.ndarray  # into analyte_names
    analyte_names: list[str]  # CODES, then the site dialect names


def _site_units(rows: Rows, row_site: np.ndarray, value: np.ndarray, registry: Registry
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Convert the rows of the UNIT_FAULTS sites: (value, lloq, decimals, unit index, unit names)."""
    analyte = rows.analyte
    unit_names: list[str] = [registry.canonical_unit(c) for c in CODES]
    unit_index = analyte.copy()
    value = value.copy()
    decimals = analyte_column("decimals")[analyte].astype(int)
    lloq = analyte_column("lloq")[analyte]
    for code, (site_index, unit, factor, site_decimals) in UNIT_FAULTS.items():
        converted = (analyte == ANALYTE_INDEX[code]) & (row_site == site_index)
        unit_names.append(unit)
        unit_index[converted] = len(unit_names) - 1
        value[converted] *= factor
        lloq[converted] *= factor
        decimals[converted] = site_decimals
    return value, lloq, decimals, unit_index, unit_names


def _site_names(rows: Rows, row_site: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Analyte name index per row (site dialects) and the list of written names."""
    analyte_names: list[str] = list(CODES)
    name_index = rows.analyte.copy()
    for site_index, mapping in NAME_DIALECTS.items():
        for code, written in mapping.items():
            analyte_names.append(written)
            name_index[(rows.analyte == ANALYTE_INDEX[code]) & (row_site == site_index)] = len(analyte_names) - 1
    return name_index, analyte_names


def report_measurements(rows: Rows, value: np.ndarray, patient_site: np.ndarray, registry: Registry) -> Reported:
    """Units and decimals per site, rounding, then '<lloq' / '>uloq' censoring and site analyte names."""
    row_site = patient_site[rows.patient]
    value, lloq, decimals, unit_index, unit_names = _site_units(rows, row_site, value, registry)
    uloq = analyte_column("uloq")[rows.analyte]
    value = round_by(value, decimals)
    lloq = round_by(lloq, decimals + 1)
    censoring = np.where((lloq > 0) & (value < lloq), BELOW_LLOQ,
                         np.where((uloq > 0) & (value > uloq), ABOVE_ULOQ, NOT_CENSORED))
    value = np.where(censoring == BELOW_LLOQ, lloq, np.where(censoring == ABOVE_ULOQ, uloq, value))
    name_index, analyte_names = _site_names(rows, row_site)
    return Reported(value=value, censoring=censoring, unit_index=unit_index, unit_names=unit_names,
                    name_index=name_index, analyte_names=analyte_names)
