"""Reporting library: patient pages, the index, the model card and the cohort marker bands.

Modules: :mod:`.charts` (self-contained SVG charts), :mod:`.clinical_text` (plain-language wording),
:mod:`.cohort_bands`, :mod:`.ids` (keyed pseudonyms, safe file names), :mod:`.model_info` (model identity
and validation), :mod:`.patient_data` (inputs indexed by patient), :mod:`.sections` (one builder per
page section), :mod:`.pages` (pages and index), :mod:`.model_card`. Templates in ``templates/``.
It may import the model layer, contracts, config, io, registry, metrics and :mod:`pipeline.explanation`;
never a stage module. The stage ``crs report`` is :mod:`pipeline.report`; ``crs predict`` uses it too.
"""

from pipeline.reporting.cohort_bands import BAND_COLUMNS, cohort_bands_for, compute_cohort_bands
from pipeline.reporting.ids import (
    KEY_ENV,
    KEY_FILE_ENV,
    LEGACY_SALT_ENV,
    id_mapper,
    load_key,
    page_filename,
    page_href,
    pseudonym,
    write_key,
)
from pipeline.reporting.model_card import (
    model_card_context,
    read_figures,
    render_model_card,
    write_model_card,
)
from pipeline.reporting.pages import (
    OUT_OF_FOLD_NOTE,
    OUT_OF_FOLD_RISK_ONLY_NOTE,
    out_of_fold_explanations,
    out_of_fold_risks,
    render_pages,
    write_pages,
    write_patient_reports,
)
from pipeline.reporting.patient_data import ReportData
from pipeline.reporting.sections import DISCLAIMER, DISCLAIMER_LEAD, PAGE_SECTIONS, data_quality_messages

__all__ = [
    "BAND_COLUMNS",
    "DISCLAIMER",
    "DISCLAIMER_LEAD",
    "OUT_OF_FOLD_NOTE",
    "OUT_OF_FOLD_RISK_ONLY_NOTE",
    "PAGE_SECTIONS",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "LEGACY_SALT_ENV",
    "ReportData",
    "cohort_bands_for",
    "compute_cohort_bands",
    "data_quality_messages",
    "id_mapper",
    "load_key",
    "model_card_context",
    "out_of_fold_explanations",
    "out_of_fold_risks",
    "page_filename",
    "page_href",
    "pseudonym",
    "read_figures",
    "render_model_card",
    "render_pages",
    "write_model_card",
    "write_key",
    "write_pages",
    "write_patient_reports",
]
