"""CDISC SDTM domains (a folder of ``.xpt`` SAS transport or ``.csv`` files) read into the canonical raw tables.

Each domain file is named after its domain, case-insensitively (``dm.xpt``, ``LB.csv``). ``DM`` and ``LB`` are
required; the others are optional. The adapter maps variables, never validates rows: it emits the canonical
contract's columns as text (plus ``source_table``, the domain each row came from) and :func:`ingest_tables`
checks them like any cohort. Every source row of a domain it reads is either emitted or counted in
``RawTable.out_of_scope[domain]``; rows merged into patient columns (``SUPPDM``, ``TR``) are the exception:
they are used or counted out of scope.

Mapping (README "Your data in SDTM or OMOP"):

- ``DM`` -> patients: USUBJID -> patient_id, RFXSTDTC (RFSTDTC when the file has no RFXSTDTC) ->
  anchor_time, RFPENDTC -> follow_up_end, AGE -> age, SEX -> sex, SITEID -> site, ACTARM (else ARM) ->
  product when it names a CAR-T product of ``features/tables/products.csv`` (written as its code); DTHFL "Y"
  / DTHDTC -> a DEATH event. The first CM / EX start of fludarabine, cyclophosphamide or bendamustine on or
  before the anchor -> lymphodepletion_start (those rows still count as out of scope: no treatment rows).
  ``SUPPDM``: QNAM (lower case; :data:`QNAM_ALIASES` for 8-character names) -> a patient column, QVAL its value.
  ``TR`` TRTESTCD SUMDIAM (baseline flag TRLOBXFL / TRBLFL "Y", else the earliest) -> tumor_burden and
  tumor_burden_unit (TRORRESU, else "mm") where SUPPDM gives none. ``TU`` is out of scope.
- ``LB``, ``VS`` (and the findings domains ``QS``, ``RE``, ``NV``) -> measurements: analyte = --LOINC, else
  --TESTCD, else --TEST, whichever the analyte registry knows (ingest maps codes, LOINC and synonyms), else
  --TEST / --TESTCD as given (an unknown analyte, kept as ingest keeps one); value = --ORRES with --ORRESU,
  or when --ORRES is empty --STRESC (else --STRESN) with --STRESU; time = --DTC as given (partial dates
  pass through). A --TESTCD / --TEST the observation registry knows (ICE score, oxygen device, level of
  consciousness...) -> observations (item, value). Rows with no result and --STAT "NOT DONE", and rows of
  ``QS`` / ``RE`` / ``NV`` that are neither, are out of scope.
- ``AE`` -> events: AEDECOD (else AETERM) naming CRS or ICANS (``events.csv`` synonyms), AETOXGR grade,
  AESTDTC time; other terms are out of scope. A fatal AE (AEOUT "FATAL", AETOXGR 5 or AESDTH "Y") of any
  term is a death at AEENDTC (else AESTDTC).
- ``DS`` DSDECOD "DEATH" (DSSTDTC), ``DD`` (DDDTC) -> deaths. One DEATH row per patient, chosen among DM,
  DD, DS and fatal AEs: a time first, the most precise time next, then that source order. DS / DD death
  rows not chosen are counted out of scope; DEATH rows derived from DM or AE add to their source's rows.
- ``CM``, ``EX`` -> treatments: --TRT (else --DECOD) when ``drugs.csv`` knows it; --STDTC time, --ENDTC
  end_time, --DOSE (else --DOSTXT) dose, --DOSU unit; --OCCUR "N" rows and other drugs (the CAR-T product
  itself in EX) are out of scope.

Only the variables listed in :data:`VARIABLES` are read. ``.xpt`` files: pyreadstat reads the header (and so
checks the file); :mod:`pipeline.adapters.xport` reads the observations vectorised, with pyreadstat as the
fallback for layouts it declines. ``RawTable.path`` is the folder (rows of several domains share a table).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.adapters.canonical import AUTO_FORMAT, DEFAULT_LIMITS, RawTable, read_table_file
from pipeline.adapters.dialect import ReadLimits
from pipeline.cohort import EVENTS, MEASUREMENTS, OBSERVATIONS, PATIENTS, TREATMENTS
from pipeline.errors import UserError
from pipeline.registry import (
    drug_synonyms,
    event_synonyms,
    load_registry,
    normalize_name,
    observation_item_synonyms,
)

REQUIRED_DOMAINS = ("DM", "LB")
#: Domains this adapter reads; any other file in the folder is ignored.
DOMAINS = ("DM", "SUPPDM", "LB", "VS", "QS", "RE", "NV", "AE", "DS", "DD", "CM", "EX", "TR", "TU")
#: Findings domains: measurements and observations (unknown tests are measurements only in LB and VS).
FINDINGS = ("LB", "VS", "QS", "RE", "NV")
_OPEN_FINDINGS = ("LB", "VS")
_SUFFIXES = (".xpt", ".csv")
SOURCE_TABLE = "source_table"
#: SUPPDM QNAMs (at most 8 characters in SDTM) for the harmonised covariates with longer names.
QNAM_ALIASES = {
    "lymphdep": "lymphodepletion",
    "ldreg": "lymphodepletion",
    "cartdose": "dose",
    "cartdosu": "dose_unit",
    "doseu": "dose_unit",
    "tumburd": "tumor_burden",
    "tumburdu": "tumor_burden_unit",
}
_DM_COLUMNS = {"patient_id": "USUBJID", "anchor_time": "RFXSTDTC", "age": "AGE", "sex": "SEX", "site": "SITEID",
               "follow_up_end": "RFPENDTC"}
#: Lymphodepleting chemotherapy (CM / EX --TRT or --DECOD, whole words): its first start on or before the
#: anchor is the patient's ``lymphodepletion_start``.
LYMPHODEPLETION_DRUGS = re.compile(r"\b(?:fludarabine|cyclophosphamide|bendamustine)\b")
#: Death sources in the order a tie is broken (the earlier wins).
_DEATH_SOURCES = ("DM", "DD", "DS", "AE")
_PARENTHESES = re.compile(r"^(?P<outer>[^()]*?)\s*\((?P<inner>[^()]*)\)\s*$")


# --- files ---------------------------------------------------------------------------------------------

def find_domains(folder: str | Path) -> dict[str, Path]:
    """Domain -> file in an SDTM folder (``.xpt`` or ``.csv``, names case-insensitive); DM and LB required."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: SDTM folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        domain = path.stem.upper()
        if path.suffix.lower() not in _SUFFIXES or domain not in DOMAINS:
            continue
        if domain in found:
            raise UserError(f"{folder}: domain {domain} given twice ({found[domain].name}, {path.name}); keep one")
        found[domain] = path
    for domain in REQUIRED_DOMAINS:
        if domain not in found:
            raise UserError(f"{folder}: required SDTM domain {domain} not found ({domain.lower()}.xpt or .csv)")
    return found


def _xpt_text(frame: pd.DataFrame) -> pa.Table:
    """pyreadstat's frame as Arrow text: numbers in shortest form, empty strings as nulls."""
    columns = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series.dtype):
            column = pa.array(series.to_numpy(dtype=float), from_pandas=True).cast(pa.string())
        else:
            column = pa.array(series, type=pa.string(), from_pandas=True)
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
        columns.append(column)
    return pa.table(columns, names=[str(c).strip().upper() for c in frame.columns])


def _findings_variables(p: str) -> tuple[str, ...]:
    return ("USUBJID", *(p + v for v in ("TESTCD", "TEST", "LOINC", "ORRES", "ORRESU", "STRESC", "STRESN", "STRESU",
                                         "STAT", "DTC")))


def _drug_variables(p: str) -> tuple[str, ...]:
    return ("USUBJID", *(p + v for v in ("TRT", "DECOD", "OCCUR", "STDTC", "ENDTC", "DOSE", "DOSTXT", "DOSU")))


#: The variables read from each domain (the others are never converted).
VARIABLES: dict[str, tuple[str, ...]] = {
    "DM": ("USUBJID", "RFXSTDTC", "RFSTDTC", "RFPENDTC", "AGE", "SEX", "SITEID", "ARM", "ACTARM", "DTHFL", "DTHDTC"),
    "SUPPDM": ("RDOMAIN", "USUBJID", "QNAM", "QVAL"),
    **{d: _findings_variables(d) for d in FINDINGS},
    "AE": ("USUBJID", "AEDECOD", "AETERM", "AETOXGR", "AESTDTC", "AEENDTC", "AEOUT", "AESDTH"),
    "DS": ("USUBJID", "DSDECOD", "DSSTDTC"),
    "DD": ("USUBJID", "DDDTC"),
    "CM": _drug_variables("CM"),
    "EX": _drug_variables("EX"),
    "TR": ("USUBJID", "TRTESTCD", "TRORRES", "TRORRESU", "TRSTRESN", "TRSTRESU", "TRDTC", "TRLOBXFL", "TRBLFL"),
    "TU": ("USUBJID",),
}


def _read_xpt(path: Path, limits: ReadLimits, wanted: set[str]) -> pa.Table:
    """A transport file's ``wanted`` variables: pyreadstat checks the header; the observations are read by
    :mod:`pipeline.adapters.xport` (vectorised), or by pyreadstat where that reader declines the layout."""
    import pyreadstat  # a compiled extension: imported only for SDTM transport files

    from pipeline.adapters import xport

    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    if path.stat().st_size > limits.max_bytes:
        raise UserError(f"{path}: larger than ingest.max_file_mb ({limits.max_file_mb:g} MB)")
    try:
        _, meta = pyreadstat.read_xport(str(path), metadataonly=True)
        if len(meta.column_names) > limits.max_columns:
            raise UserError(f"{path}: {len(meta.column_names)} columns, more than ingest.max_columns")
        table = xport.read_columns(path, wanted)
        if table is None or set(table.column_names) != {c.upper() for c in meta.column_names} & wanted:
            usecols = [c for c in meta.column_names if c.upper() in wanted]
            frame, _ = pyreadstat.read_xport(str(path), usecols=usecols)
            table = _xpt_text(frame)
    except UserError:
        raise
    except Exception as exc:  # pyreadstat raises its own types; the message may quote the file
        raise UserError(f"{path}: unreadable SAS transport file ({type(exc).__name__})") from None
    if table.num_rows > limits.max_rows:
        raise UserError(f"{path}: {table.num_rows} rows, more than ingest.max_rows ({limits.max_rows})")
    return table


def read_domain(path: Path, limits: ReadLimits = DEFAULT_LIMITS, wanted: set[str] | None = None) -> pa.Table:
    """One domain as Arrow text with upper-case variable names (empty fields null): the ``wanted`` variables
    (default: those :data:`VARIABLES` lists for the domain the file name gives)."""
    wanted = wanted if wanted is not None else set(VARIABLES.get(path.stem.upper(), ()))
    if path.suffix.lower() == ".xpt":
        return _read_xpt(path, limits, wanted)
    table, _ = read_table_file(path, "", AUTO_FORMAT, limits)
    table = table.rename_columns([c.upper() for c in table.column_names])
    return table.select([i for i, c in enumerate(table.column_names) if c in wanted])


# --- Arrow helpers -------------------------------------------------------------------------------------

def _col(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A column as text, all nulls when the domain has no such variable."""
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, pa.string())], pa.string())


def _present(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.greater(pc.utf8_length(column), 0), False)


def _map_distinct(column: pa.ChunkedArray, function) -> pa.ChunkedArray:
    """``function`` applied once per distinct text (None -> null); nulls stay null."""
    uniques = pc.unique(column).drop_null()
    mapped = pa.array([function(v) for v in uniques.to_pylist()], pa.string())
    return pc.take(mapped, pc.index_in(column, value_set=uniques))


def _constant(n: int, text: str) -> pa.Array:
    return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([text])).cast(pa.string())


def _upper_is(column: pa.ChunkedArray, *texts: str) -> np.ndarray:
    hit = pc.is_in(pc.utf8_upper(pc.utf8_trim_whitespace(column)), value_set=pa.array(list(texts)))
    return pc.fill_null(hit, False).to_numpy(zero_copy_only=False).astype(bool)


def _canonical_table(columns: dict[str, pa.Array | pa.ChunkedArray], source: pa.Array) -> pa.Table:
    return pa.table({**{k: v for k, v in columns.items()}, SOURCE_TABLE: source})


# --- registry lookups ----------------------------------------------------------------------------------

def _lookup(name: str, synonyms: dict[str, str]) -> str | None:
    """``name`` through a synonym table (normalised; for "a (b)" also a, then b), as ingest looks it up."""
    match = _PARENTHESES.match(name)
    for candidate in (name, *(match.group("outer", "inner") if match else ())):
        found = synonyms.get(normalize_name(candidate))
        if found is not None:
            return found
    return None


def _analyte(text: str) -> str | None:
    return load_registry().synonyms.get(normalize_name(text))


def _item(text: str) -> str | None:
    return observation_item_synonyms().get(normalize_name(text))


@functools.cache
def _products_csv() -> Path:
    """features/tables/products.csv, found without importing ``features`` (its import pulls in scikit-learn)."""
    spec = importlib.util.find_spec("features")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("features/tables/products.csv not found (is the features package installed?)")
    return Path(next(iter(spec.submodule_search_locations))) / "tables" / "products.csv"


@functools.cache
def _product_names() -> tuple[tuple[str, re.Pattern], ...]:
    """(product code, pattern matching any of its names as whole words) from features/tables/products.csv."""
    with _products_csv().open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")
    out = []
    for row in table.itertuples(index=False):
        names = [row.product, *filter(None, row.synonyms.split("|"))]
        words = "|".join(re.escape(normalize_name(n)) for n in sorted(names, key=len, reverse=True))
        out.append((row.product, re.compile(rf"(?<![\w-])(?:{words})(?![\w-])")))
    return tuple(out)


def product_code(arm: str) -> str | None:
    """The CAR-T product an ARM / ACTARM text names (one product only), as its products.csv code."""
    text = normalize_name(arm)
    hits = {code for code, pattern in _product_names() if pattern.search(text)}
    return hits.pop() if len(hits) == 1 else None


# --- findings: LB, VS, QS, RE, NV ----------------------------------------------------------------------

def _result(table: pa.Table, p: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray, np.ndarray]:
    """(value, unit, has a result): --ORRES with --ORRESU, else --STRESC / --STRESN with --STRESU."""
    original = _present(_col(table, f"{p}ORRES"))
    standard = pc.coalesce(_col(table, f"{p}STRESC"), _col(table, f"{p}STRESN"))
    value = pc.if_else(original, _col(table, f"{p}ORRES"), standard)
    unit = pc.if_else(original, _col(table, f"{p}ORRESU"), _col(table, f"{p}STRESU"))
    has_result = pc.or_(original, pc.fill_null(pc.is_valid(standard), False))
    return value, unit, has_result.to_numpy(zero_copy_only=False).astype(bool)


def _filtered(table: pa.Table, mask: np.ndarray) -> pa.Table:
    return table if mask.all() else table.filter(pa.array(mask))


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Dictionary index per row (-1 for null), from one hash pass."""
    encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _test_keys(columns: list[pa.ChunkedArray]) -> tuple[np.ndarray, list[tuple]]:
    """One key per distinct combination of the columns' texts (per row), and each combination's texts."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes = _codes(column)
        key = pd.factorize(key * (int(codes.max(initial=-1)) + 2) + codes + 1)[0].astype(np.int64)
    n_keys = int(key.max(initial=-1)) + 1
    first = np.zeros(n_keys, dtype=np.int64)
    first[key[::-1]] = np.arange(len(key) - 1, -1, -1)  # the first row of each key (last write wins)
    texts = [pc.take(c, pa.array(first)).to_pylist() for c in columns]
    return key, list(zip(*texts, strict=True))


def _classify(loinc: str | None, testcd: str | None, test: str | None) -> tuple[str | None, str | None]:
    """(analyte as emitted, observation item as emitted) for one test: the first of LOINC, --TESTCD, --TEST the
    analyte registry knows, else the first --TESTCD / --TEST the observation registry knows; an unknown test
    keeps --TEST (else --TESTCD) as its analyte name."""
    for text in (loinc, testcd, test):
        if text is not None and _analyte(text) is not None:
            return text, None
    for text in (testcd, test):
        if text is not None and _item(text) is not None:
            return None, text
    return test if test is not None else testcd, None


def _findings(domain: str, table: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """(measurement rows, observation rows, rows out of scope) of one findings domain."""
    p = domain
    key, combos = _test_keys([_col(table, f"{p}{v}") for v in ("LOINC", "TESTCD", "TEST")])
    classified = [_classify(*combo) for combo in combos]
    known = np.array([bool(c[0]) and _analyte(c[0]) is not None for c in classified] + [False])[key]
    is_item = np.array([c[1] is not None for c in classified] + [False])[key]
    value, unit, has_result = _result(table, p)
    not_done = ~has_result & _upper_is(_col(table, f"{p}STAT"), "NOT DONE")
    measured = ~not_done & ~is_item & (known | (domain in _OPEN_FINDINGS))
    observed = ~not_done & is_item
    base = {"patient_id": _col(table, "USUBJID"), "time": _col(table, f"{p}DTC")}
    keys = pa.array(key)
    analyte = pc.take(pa.array([c[0] for c in classified], pa.string()), keys)
    rows = _filtered(pa.table({**base, "analyte": analyte, "value": value, "unit": unit}), measured)
    item = pc.take(pa.array([c[1] for c in classified], pa.string()), keys)
    items = _filtered(pa.table({**base, "item": item, "value": value}), observed)
    measurements = rows.append_column(SOURCE_TABLE, _constant(rows.num_rows, domain))
    observations = items.append_column(SOURCE_TABLE, _constant(items.num_rows, domain))
    return measurements, observations, int(table.num_rows - measured.sum() - observed.sum())


# --- events: AE, DS, DD and DM deaths --------------------------------------------------------------------

def _frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    """Small domains as pandas object columns (None for empty), only the variables asked for."""
    return pd.DataFrame({c: pd.Series(_col(table, c).to_pylist(), dtype=object) for c in columns})


def _upper(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).strip().upper() if v is not None else "")


def _ae_events(ae: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(CRS / ICANS rows, death candidates from fatal AEs, AE rows out of scope)."""
    f = _frame(ae, ["USUBJID", "AEDECOD", "AETERM", "AETOXGR", "AESTDTC", "AEENDTC", "AEOUT", "AESDTH"])
    synonyms = event_synonyms()
    decod = f["AEDECOD"].map(lambda v: _lookup(str(v), synonyms) if v is not None else None)
    term = f["AETERM"].map(lambda v: _lookup(str(v), synonyms) if v is not None else None)
    event = decod.where(decod.notna(), term)
    named = f["AEDECOD"].where(decod.notna(), f["AETERM"])
    keep = event.isin(["CRS", "ICANS"]).to_numpy()
    grade = _upper(f["AETOXGR"]).str.replace(r"^(GRADE|GR\.?|G)\s*", "", regex=True)
    fatal = ((_upper(f["AEOUT"]) == "FATAL") | grade.isin(["5", "5.0", "V"]) | (_upper(f["AESDTH"]) == "Y")
             | (event == "DEATH")).to_numpy()
    events = pd.DataFrame({"patient_id": f["USUBJID"], "event": named, "grade": f["AETOXGR"],
                           "time": f["AESTDTC"]})[keep].assign(source_table="AE")
    deaths = pd.DataFrame({"patient_id": f["USUBJID"], "time": f["AEENDTC"].where(f["AEENDTC"].notna(),
                                                                                  f["AESTDTC"])})[fatal]
    return events, deaths.assign(source_table="AE"), int((~keep).sum())


def _death_candidates(domains: dict[str, pa.Table]) -> tuple[list[pd.DataFrame], dict[str, int]]:
    """Deaths from DM (DTHFL / DTHDTC), DS (DSDECOD DEATH) and DD (one per subject), and DS rows out of scope."""
    out, skipped = [], {}
    dm = _frame(domains["DM"], ["USUBJID", "DTHFL", "DTHDTC"])
    died = ((_upper(dm["DTHFL"]) == "Y") | dm["DTHDTC"].notna()).to_numpy()
    out.append(pd.DataFrame({"patient_id": dm["USUBJID"], "time": dm["DTHDTC"]})[died].assign(source_table="DM"))
    if "DS" in domains:
        ds = _frame(domains["DS"], ["USUBJID", "DSDECOD", "DSSTDTC"])
        death = (_upper(ds["DSDECOD"]) == "DEATH").to_numpy()
        out.append(pd.DataFrame({"patient_id": ds["USUBJID"], "time": ds["DSSTDTC"]})[death].assign(source_table="DS"))
        skipped["DS"] = int((~death).sum())
    if "DD" in domains:
        dd = _frame(domains["DD"], ["USUBJID", "DDDTC"])
        out.append(pd.DataFrame({"patient_id": dd["USUBJID"], "time": dd["DDDTC"]}).assign(source_table="DD"))
    return out, skipped


def _one_death_each(candidates: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One DEATH row per patient (a time first, the most precise next, then DM, DD, DS, AE); DS and DD rows
    not chosen are counted out of scope (DM and AE deaths are derived, not source rows)."""
    if candidates.empty:
        return candidates.assign(event=[], grade=[]), {}
    timed = candidates["time"].map(lambda v: len(str(v).strip()) if v is not None else 0)
    rank = candidates["source_table"].map({s: i for i, s in enumerate(_DEATH_SOURCES)})
    order = pd.DataFrame({"t": -timed, "r": rank}).sort_values(["t", "r"], kind="stable").index
    ranked = candidates.loc[order]
    chosen = ~ranked["patient_id"].fillna("\0missing").duplicated()
    dropped = ranked[~chosen.to_numpy()]["source_table"]
    skipped = {s: int(n) for s, n in dropped[dropped.isin(["DS", "DD"])].value_counts().items()}
    deaths = ranked[chosen.to_numpy()].sort_index(kind="stable").assign(event="DEATH", grade="5")
    return deaths, skipped


def _events(domains: dict[str, pa.Table]) -> tuple[pa.Table, dict[str, int]]:
    frames, skipped = _death_candidates(domains)
    rows = []
    if "AE" in domains:
        ae_events, ae_deaths, skipped["AE"] = _ae_events(domains["AE"])
        rows.append(ae_events)
        frames.append(ae_deaths)
    deaths, dropped = _one_death_each(pd.concat(frames, ignore_index=True))
    for source, n in dropped.items():
        skipped[source] = skipped.get(source, 0) + n
    columns = ["patient_id", "event", "grade", "time", SOURCE_TABLE]
    events = pd.concat([*rows, deaths], ignore_index=True).reindex(columns=columns)
    return _text_table(events), skipped


def _text_table(frame: pd.DataFrame) -> pa.Table:
    return pa.table({c: pa.array(frame[c].astype(object).where(frame[c].notna(), None).tolist(), pa.string())
                     for c in frame.columns})


# --- treatments: CM, EX ----------------------------------------------------------------------------------

def _drug_rows(domain: str, table: pa.Table) -> tuple[pd.DataFrame, int]:
    """Rows of drugs the registry knows (``drugs.csv``), and the count of the others."""
    p = domain
    f = _frame(table, ["USUBJID", f"{p}TRT", f"{p}DECOD", f"{p}OCCUR", f"{p}STDTC", f"{p}ENDTC",
                       f"{p}DOSE", f"{p}DOSTXT", f"{p}DOSU"])
    synonyms = drug_synonyms()
    known = [f[c].map(lambda v: v if v is not None and _lookup(str(v), synonyms) else None)
             for c in (f"{p}TRT", f"{p}DECOD")]
    drug = known[0].where(known[0].notna(), known[1])
    keep = (drug.notna() & (_upper(f[f"{p}OCCUR"]) != "N")).to_numpy()
    rows = pd.DataFrame({
        "patient_id": f["USUBJID"], "time": f[f"{p}STDTC"], "drug": drug,
        "dose": f[f"{p}DOSE"].where(f[f"{p}DOSE"].notna(), f[f"{p}DOSTXT"]), "unit": f[f"{p}DOSU"],
        "end_time": f[f"{p}ENDTC"], SOURCE_TABLE: domain,
    })[keep]
    return rows, int((~keep).sum())


# --- patients: DM, SUPPDM, TR ----------------------------------------------------------------------------

def _dm_patients(dm: pa.Table) -> pd.DataFrame:
    """DM's variables as the patient columns (only those the file has; product when an arm names one)."""
    variables = dict(_DM_COLUMNS)
    if "RFXSTDTC" not in dm.column_names and "RFSTDTC" in dm.column_names:
        variables["anchor_time"] = "RFSTDTC"
    frame = pd.DataFrame({name: pd.Series(_col(dm, var).to_pylist(), dtype=object)
                          for name, var in variables.items() if var in dm.column_names or name == "patient_id"})
    arms = [pd.Series(_map_distinct(_col(dm, v), product_code).to_pylist(), dtype=object) for v in ("ACTARM", "ARM")]
    product = arms[0].where(arms[0].notna(), arms[1])
    if product.notna().any():
        frame["product"] = product
    return frame


def _supp_columns(supp: pa.Table, patients: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """SUPPDM pivoted to patient columns (QNAM lower case or its alias -> QVAL), and rows not used."""
    f = _frame(supp, ["RDOMAIN", "USUBJID", "QNAM", "QVAL"])
    name = f["QNAM"].map(lambda v: None if v is None else QNAM_ALIASES.get(str(v).strip().lower(),
                                                                             str(v).strip().lower()))
    usable = ((_upper(f["RDOMAIN"]).isin(["DM", ""])) & f["USUBJID"].isin(set(patients["patient_id"].dropna()))
              & name.notna() & ~name.isin([*patients.columns, SOURCE_TABLE]))
    usable &= ~pd.DataFrame({"p": f["USUBJID"], "n": name}).duplicated()
    used = f[usable].assign(name=name[usable])
    columns = pd.DataFrame(index=patients.index)
    for column in dict.fromkeys(used["name"]):
        values = used[used["name"] == column].set_index("USUBJID")["QVAL"]
        columns[column] = patients["patient_id"].map(values).astype(object)
    return columns.where(columns.notna(), None), int((~usable).sum())


def _tumor_burden(tr: pa.Table, patients: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Baseline sum of diameters per patient (TRTESTCD SUMDIAM) and the TR rows not used."""
    f = _frame(tr, ["USUBJID", "TRTESTCD", "TRORRES", "TRORRESU", "TRSTRESN", "TRSTRESU", "TRDTC",
                    "TRLOBXFL", "TRBLFL"])
    value = f["TRORRES"].where(f["TRORRES"].notna(), f["TRSTRESN"])
    unit = f["TRORRESU"].where(f["TRORRES"].notna(), f["TRSTRESU"]).fillna("mm")
    usable = (_upper(f["TRTESTCD"]) == "SUMDIAM") & value.notna() & f["USUBJID"].isin(set(patients["patient_id"]))
    baseline = (_upper(f["TRLOBXFL"]) == "Y") | (_upper(f["TRBLFL"]) == "Y")
    key = pd.DataFrame({"b": ~baseline, "t": f["TRDTC"].fillna("\uffff")})[usable]
    first = f.loc[key.sort_values(["b", "t"], kind="stable").index].drop_duplicates("USUBJID")
    chosen = pd.DataFrame({"tumor_burden": value[first.index], "tumor_burden_unit": unit[first.index]})
    chosen.index = first["USUBJID"].to_numpy()
    out = pd.DataFrame({c: patients["patient_id"].map(chosen[c]).astype(object) for c in chosen.columns})
    return out.where(out.notna(), None), int(tr.num_rows - len(first))


def _lymphodepletion_start(domains: dict[str, pa.Table], patients: pd.DataFrame) -> pd.Series:
    """Per patient, the first CM / EX start of a lymphodepleting drug on or before the anchor (None if none).
    Those CM / EX rows are still counted out of scope: they are no treatment rows."""
    starts = []
    for p in ("CM", "EX"):
        if p in domains:
            f = _frame(domains[p], ["USUBJID", f"{p}TRT", f"{p}DECOD", f"{p}STDTC"])
            name = (f[f"{p}TRT"].fillna("") + " " + f[f"{p}DECOD"].fillna("")).map(normalize_name)
            hit = name.str.contains(LYMPHODEPLETION_DRUGS) & f[f"{p}STDTC"].notna()
            starts.append(f.loc[hit, ["USUBJID", f"{p}STDTC"]].set_axis(["patient_id", "start"], axis=1))
    found = pd.concat(starts, ignore_index=True) if starts else pd.DataFrame(columns=["patient_id", "start"])
    anchor = found["patient_id"].map(patients.drop_duplicates("patient_id").set_index("patient_id")["anchor_time"]) \
        if "anchor_time" in patients.columns else pd.Series(None, index=found.index, dtype=object)
    before = found[anchor.isna().to_numpy() | (found["start"].str.strip() <= anchor.fillna("").str.strip()).to_numpy()]
    first = before.sort_values("start", kind="stable").drop_duplicates("patient_id").set_index("patient_id")["start"]
    return patients["patient_id"].map(first).astype(object).where(lambda v: v.notna(), None)


def _patients(domains: dict[str, pa.Table]) -> tuple[pa.Table, dict[str, int]]:
    patients = _dm_patients(domains["DM"])
    skipped: dict[str, int] = {}
    if "SUPPDM" in domains:
        supp, skipped["SUPPDM"] = _supp_columns(domains["SUPPDM"], patients)
        patients = pd.concat([patients, supp], axis=1)
    if "TR" in domains:
        burden, skipped["TR"] = _tumor_burden(domains["TR"], patients)
        if "tumor_burden" in patients.columns:  # SUPPDM's value wins; TR fills the gaps
            gap = patients["tumor_burden"].isna() & burden["tumor_burden"].notna()
            skipped["TR"] += int(burden["tumor_burden"].notna().sum() - gap.sum())
            for column in burden.columns:
                patients.loc[gap, column] = burden.loc[gap, column]
        elif burden["tumor_burden"].notna().any():
            patients = pd.concat([patients, burden], axis=1)
    if "TU" in domains:
        skipped["TU"] = domains["TU"].num_rows
    start = _lymphodepletion_start(domains, patients)
    if start.notna().any():
        patients["lymphodepletion_start"] = start
    return _text_table(patients.assign(**{SOURCE_TABLE: "DM"})), skipped


# --- the folder ------------------------------------------------------------------------------------------

def _stack(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t is not None]
    return pa.concat_tables(tables) if tables else None


def _findings_tables(domains: dict[str, pa.Table]) -> tuple[pa.Table, pa.Table | None, dict[str, int]]:
    measured, observed, skipped = [], [], {}
    for domain in FINDINGS:
        if domain in domains:
            rows, items, skipped[domain] = _findings(domain, domains[domain])
            measured.append(rows)
            observed.append(items if items.num_rows else None)
    return _stack(measured), _stack(observed), skipped


def _treatments(domains: dict[str, pa.Table]) -> tuple[pa.Table | None, dict[str, int]]:
    frames, skipped = [], {}
    for domain in ("CM", "EX"):
        if domain in domains:
            rows, skipped[domain] = _drug_rows(domain, domains[domain])
            frames.append(rows)
    if not frames:
        return None, skipped
    return _text_table(pd.concat(frames, ignore_index=True)), skipped


def read_sdtm(folder: str | Path, *, limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, RawTable]:
    """The canonical raw tables of an SDTM folder (``.xpt`` or ``.csv`` domains); see the module docstring.

    Raises :class:`UserError` for a missing folder, DM or LB, or an unreadable file. Each table's
    ``out_of_scope`` counts, per domain, the source rows it left out.
    """
    folder = Path(folder)
    domains = {}
    for name, path in find_domains(folder).items():
        domains[name] = read_domain(path, limits)
        if "USUBJID" not in domains[name].column_names:
            raise UserError(f"{path}: SDTM domain {name} has no USUBJID variable")
    patients, patient_skips = _patients(domains)
    measurements, observations, findings_skips = _findings_tables(domains)
    events, event_skips = _events(domains)
    treatments, treatment_skips = _treatments(domains)
    raw = {
        PATIENTS.name: RawTable(PATIENTS, folder, patients, out_of_scope=patient_skips),
        MEASUREMENTS.name: RawTable(MEASUREMENTS, folder, measurements, out_of_scope=findings_skips),
        EVENTS.name: RawTable(EVENTS, folder, events, out_of_scope=event_skips),
    }
    if treatments is not None:
        raw[TREATMENTS.name] = RawTable(TREATMENTS, folder, treatments, out_of_scope=treatment_skips)
    if observations is not None:
        raw[OBSERVATIONS.name] = RawTable(OBSERVATIONS, folder, observations)
    return raw
