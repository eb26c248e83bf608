"""The cohort tables as the text written to CSV (Arrow string columns, sorted as written)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.simulation.analytes import TEMP_INDEX
from pipeline.simulation.arms import LD_NAMES, SITES, arm_attribute
from pipeline.simulation.assay import NAME_DIALECTS, Reported
from pipeline.simulation.bedside import (
    OBSERVATION_ITEMS,
    PRESSOR_DOSES,
    PRESSOR_UNITS,
    PRESSORS,
    VITAL_CODES,
    VITAL_UNITS,
    Charted,
)
from pipeline.simulation.faults import Faults
from pipeline.simulation.patients import Patients
from pipeline.simulation.policy import DOSE_UNITS, DOSES, DRUGS
from pipeline.simulation.sampling import Rows
from pipeline.simulation.severity import Outcomes
from pipeline.simulation.text import iso_minutes, num_text
from pipeline.simulation.treatments import Treatments

TABLE_NAMES = ("patients", "measurements", "events", "treatments", "observations")
EVENT_NAMES = np.array(["CRS"] * 5 + ["ICANS"] * 5 + ["DEATH"])
EVENT_GRADES = np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 5])
CENSORING_SIGNS = ["", "<", ">"]


def patient_ids(n_patients: int) -> pa.Array:
    """'P00001'... for the cohort, then the ids of the unknown-patient copies (1000 + n + k)."""
    n_unknown = max(1, n_patients // 400)
    width = max(5, len(str(n_patients + 1001 + n_patients // 400)))
    id_numbers = np.concatenate([np.arange(1, n_patients + 1), 1000 + n_patients + np.arange(1, n_unknown + 1)])
    return pa.array(np.char.add("P", np.char.zfill(id_numbers.astype(str), width)))


def _written_row_order(rows: Rows, faults: Faults, anchor_minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean rows + exact copies + unknown-patient copies, sorted by patient, time and analyte.

    Returns the source clean row and the patient index of every written row.
    """
    source = np.concatenate([np.arange(rows.n_rows), faults.duplicate_rows, faults.unknown_rows])
    row_patient = np.concatenate([rows.patient, rows.patient[faults.duplicate_rows], faults.unknown_patient])
    absolute_minutes = anchor_minutes[rows.patient[source]] + rows.minutes[source]
    key = row_patient * (1 << 42) + (absolute_minutes - absolute_minutes.min()) * 32 + rows.analyte[source]
    order = np.argsort(key, kind="stable")
    return source[order], row_patient[order]


def _with_overrides(text: pa.Array, override: np.ndarray, texts: list, text_type: pa.DataType | None) -> pa.Array:
    """Replace the text of rows with an override index (>= 0) by the override text."""
    if not (override >= 0).any():
        return text
    return pc.replace_with_mask(text, pa.array(override >= 0),
                                pa.array([texts[i] for i in override[override >= 0]], text_type))


# Sort position of the bedside vitals among the analytes (after the CODES indexes, TEMP at its own).
VITAL_SORT_INDEX = np.array([TEMP_INDEX, 17, 18, 19, 20, 21])


def vital_names(charted: Charted, patient_site: np.ndarray) -> np.ndarray:
    """The analyte name each bedside vital row is written under (the site's dialect for TEMP)."""
    names = np.array(VITAL_CODES, dtype=object)[charted.vital_code]
    site = patient_site[charted.vital_patient]
    for site_index, mapping in NAME_DIALECTS.items():
        for code, written in mapping.items():
            if code in VITAL_CODES:
                names[(charted.vital_code == VITAL_CODES.index(code)) & (site == site_index)] = written
    return names


def vital_units(registry: object) -> list[str]:
    """Canonical unit of each bedside vital: the registry's where it lists the analyte, else the unit
    docs/grading.md names."""
    analytes = getattr(registry, "analytes", None)
    return [str(analytes.loc[code, "canonical_unit"]) if analytes is not None and code in analytes.index else unit
            for code, unit in zip(VITAL_CODES, VITAL_UNITS, strict=True)]


def measurement_table(rows: Rows, reported: Reported, faults: Faults, anchor_minutes: np.ndarray,
                      ids: pa.Array, charted: Charted | None = None, patient_site: np.ndarray | None = None,
                      units: list[str] | None = None) -> pa.Table:
    """The measurement rows (with their faults) and the bedside vitals, sorted by patient, time and analyte."""
    source, row_patient = _written_row_order(rows, faults, anchor_minutes)
    value_text = pc.binary_join_element_wise(pc.take(pa.array(CENSORING_SIGNS), pa.array(reported.censoring[source])),
                                             num_text(reported.value[source]), "")
    value_text = _with_overrides(value_text, faults.value_override[source], faults.value_texts, pa.string())
    absolute_minutes = anchor_minutes[rows.patient[source]] + rows.minutes[source]
    time_text = iso_minutes(absolute_minutes)
    time_text = _with_overrides(time_text, faults.time_override[source], faults.time_texts, None)
    columns = {
        "patient_id": pc.take(ids, pa.array(row_patient)),
        "time": time_text,
        "analyte": pc.take(pa.array(reported.analyte_names), pa.array(reported.name_index[source])),
        "value": value_text,
        "unit": pc.take(pa.array(reported.unit_names), pa.array(reported.unit_index[source])),
    }
    if charted is None or charted.vital_patient.size == 0:
        return pa.table(columns)
    vital_minutes = anchor_minutes[charted.vital_patient] + charted.vital_minutes
    extra = {
        "patient_id": pc.take(ids, pa.array(charted.vital_patient)),
        "time": iso_minutes(vital_minutes),
        "analyte": pa.array(vital_names(charted, patient_site), pa.string()),
        "value": num_text(charted.vital_value),
        "unit": pc.take(pa.array(units or list(VITAL_UNITS)), pa.array(charted.vital_code)),
    }
    patient = np.concatenate([row_patient, charted.vital_patient])
    at = np.concatenate([absolute_minutes, vital_minutes])
    code = np.concatenate([rows.analyte[source], VITAL_SORT_INDEX[charted.vital_code]])
    order = np.lexsort((code, at, patient))  # stable: the written order of the measurement rows is kept
    return pa.table({name: pc.take(pa.concat_arrays([columns[name].cast(pa.string()), extra[name].cast(pa.string())]),
                                   pa.array(order)) for name in columns})


def event_table(outcomes: Outcomes, anchor_minutes: np.ndarray, ids: pa.Array) -> pa.Table:
    """One row per grade change (CRS / ICANS grade 1..5) and death."""
    event_hours = np.concatenate(
        [outcomes.crs_grade_hours, outcomes.icans_grade_hours, outcomes.death_hours[:, None]], axis=1)  # (n, 11)
    patient, kind = np.nonzero(np.isfinite(event_hours))
    minutes = anchor_minutes[patient] + np.round(event_hours[patient, kind] * 60).astype(np.int64)
    order = np.lexsort((kind, minutes, patient))
    patient, kind, minutes = patient[order], kind[order], minutes[order]
    return pa.table({
        "patient_id": pc.take(ids, pa.array(patient)),
        "event": pa.array(EVENT_NAMES[kind]),
        "grade": pa.array(EVENT_GRADES[kind]),
        "time": iso_minutes(minutes),
    })


def treatment_table(treatments: Treatments, ids: pa.Array, charted: Charted | None = None,
                    anchor_minutes: np.ndarray | None = None) -> pa.Table:
    """Doses (one administration each, ``end_time`` empty) and vasopressor courses (``end_time`` their
    stop), sorted by patient and time (doses first at the same minute)."""
    columns = {
        "patient_id": pc.take(ids, pa.array(treatments.patient)),
        "time": iso_minutes(treatments.minutes),
        "drug": pa.array(DRUGS[treatments.drug]),
        "dose": num_text(DOSES[treatments.drug]),
        "unit": pa.array(DOSE_UNITS[treatments.drug]),
        "end_time": pa.array([""] * treatments.patient.size, pa.string()),
    }
    if charted is None or charted.pressor_patient.size == 0:
        return pa.table(columns)
    start = anchor_minutes[charted.pressor_patient] + charted.pressor_start
    extra = {
        "patient_id": pc.take(ids, pa.array(charted.pressor_patient)),
        "time": iso_minutes(start),
        "drug": pa.array(PRESSORS[charted.pressor_drug]),
        "dose": num_text(PRESSOR_DOSES[charted.pressor_drug]),
        "unit": pa.array(PRESSOR_UNITS[charted.pressor_drug]),
        "end_time": iso_minutes(anchor_minutes[charted.pressor_patient] + charted.pressor_end),
    }
    patient = np.concatenate([treatments.patient, charted.pressor_patient])
    order = np.lexsort((np.arange(patient.size), np.concatenate([treatments.minutes, start]), patient))
    return pa.table({name: pc.take(pa.concat_arrays([columns[name].cast(pa.string()), extra[name].cast(pa.string())]),
                                   pa.array(order)) for name in columns})


def observation_table(charted: Charted, anchor_minutes: np.ndarray, ids: pa.Array,
                      value_override: dict[int, str] | None = None) -> pa.Table:
    """Bedside observations (oxygen device, ICE score, consciousness, seizure, motor weakness, oedema),
    sorted by patient, time and item; ``value_override``: row -> text (injected faults)."""
    value = charted.obs_value.copy()
    for row, text in (value_override or {}).items():
        value[row] = text
    return pa.table({
        "patient_id": pc.take(ids, pa.array(charted.obs_patient)),
        "time": iso_minutes(anchor_minutes[charted.obs_patient] + charted.obs_minutes),
        "item": pa.array(OBSERVATION_ITEMS[charted.obs_item].astype(str)),
        "value": pa.array(value.astype(str)),
    })


def patient_table(patients: Patients, ids: pa.Array) -> pa.Table:
    """What a real cohort records: no latent or pre-standardised column (costim, dose_rel and a
    standardised burden are derived by the pipeline from product, dose and tumour burden)."""
    return pa.table({
        "patient_id": pc.take(ids, pa.array(np.arange(patients.n))),
        "anchor_time": iso_minutes(patients.anchor_minutes),
        "age": pa.array(patients.age_years),
        "sex": pa.array(patients.sex),
        "site": pa.array(SITES[patients.site]),
        "product": pa.array(arm_attribute("product")[patients.arm]),
        "disease": pa.array(patients.disease),
        "tumor_burden": num_text(patients.tumor_burden),
        "tumor_burden_unit": pa.array(patients.tumor_burden_unit),
        "lymphodepletion": pa.array(LD_NAMES[patients.latents.lymphodepletion]),
        "dose": num_text(patients.dose),
        "dose_unit": pa.array(patients.dose_unit),
    })
