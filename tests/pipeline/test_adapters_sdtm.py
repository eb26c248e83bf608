"""The SDTM adapter: simulated cohort -> SDTM (.xpt, .csv) -> read_sdtm + ingest gives the canonical tables;
a hand-built folder with the faults real extracts have reconciles row by row; missing domains fail in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.adapters import read_cohort
from pipeline.adapters.sdtm import SOURCE_TABLE, product_code, read_sdtm
from pipeline.config import parse_config
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables
from pipeline.simulate import main as simulate_main
from pipeline.simulate import write_cohort
from pipeline.simulation import simulate_tables
from pipeline.simulation.export_sdtm import write_sdtm

N_PATIENTS = 60


def _accepted(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Accepted tables without ``source_table``; measurements in a full sort order (rows tied on patient and
    time keep their file order, and LB and VS rows of one minute come from two domains)."""
    out = {}
    for name, frame in tables.items():
        frame = frame.drop(columns=[SOURCE_TABLE], errors="ignore")
        if name == "measurements":
            frame = frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)
        out[name] = frame
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["clean", "faults"])
def cohort(request, tmp_path_factory) -> tuple[dict[str, pa.Table], dict[str, pd.DataFrame], Path]:
    tables, truth = simulate_tables(N_PATIENTS, 7, request.param)
    root = tmp_path_factory.mktemp("sdtm")
    write_cohort(tables, truth, root / "canonical")
    canonical = ingest_tables(read_cohort(root / "canonical", ("treatments", "observations")))
    return tables, _accepted(canonical.tables), root


@pytest.mark.parametrize("fmt", ["xpt", "csv"])
def test_round_trip_gives_the_canonical_tables(cohort, fmt):
    tables, expected, root = cohort
    folder = root / fmt
    folder.mkdir()
    write_sdtm(tables, folder, fmt)
    raw = read_sdtm(folder)
    assert {name: raw[name].n_rows for name in raw} == {name: t.num_rows for name, t in tables.items()}
    got = _accepted(ingest_tables(raw).tables)
    assert set(got) == set(expected)
    for name, frame in expected.items():
        assert len(frame) > 0, name
        pd.testing.assert_frame_equal(got[name], frame, check_like=True, obj=name)


def test_simulate_writes_sdtm(tmp_path):
    simulate_main(parse_config({}), out=tmp_path / "sdtm", n_patients=20, seed=2, fmt="sdtm")
    names = sorted(p.name for p in (tmp_path / "sdtm").iterdir())
    assert {"dm.xpt", "lb.xpt", "vs.xpt", "ae.xpt", "cm.xpt", "suppdm.xpt", "truth.json"} <= set(names)
    assert read_sdtm(tmp_path / "sdtm")["patients"].n_rows == 20
    with pytest.raises(UserError, match="unknown format"):
        simulate_main(parse_config({}), out=tmp_path / "x", n_patients=20, seed=2, fmt="sas")


# --- a hand-built extract with the faults real ones have -------------------------------------------------

DOMAINS = {
    "DM": ["USUBJID,SITEID,AGE,SEX,ARM,ACTARM,RFXSTDTC,RFPENDTC,DTHFL,DTHDTC",
           "S1,01,61,M,Axicabtagene ciloleucel 2x10^6/kg,,2023-03-01T10:00:00,2023-06-01T00:00:00,,",
           "S2,02,55,F,Arm B,Tisagenlecleucel,2023-04-06T11:00:00,,,",
           "S3,02,70,M,Screen Failure,,2023-05-01T09:30:00,,Y,2023-05-10"],
    "SUPPDM": ["RDOMAIN,USUBJID,QNAM,QVAL",
               "DM,S1,DISEASE,LBCL", "DM,S2,LYMPHDEP,flu_cy", "DM,S9,DISEASE,MM", "DM,S1,AGE,99"],
    "LB": ["USUBJID,LBTESTCD,LBTEST,LBLOINC,LBORRES,LBORRESU,LBSTRESC,LBSTRESN,LBSTRESU,LBSTAT,LBDTC",
           "S1,CRP,C-reactive protein,1988-5,12,mg/L,12,12,mg/L,,2023-03-01T08:00:00",
           "S1,TROPI,Troponin I,,0.03,ng/mL,,,,,2023-03-01T08:00:00",      # unmapped LBTESTCD
           "S1,FERRITIN,Ferritin,,850,ng/mL,,,,,2023-03-01T08:00:00",      # unit only in LBORRESU
           "S1,INTLK6,Interleukin 6,,,,<2.0,,pg/mL,,2023-03-01T08:00:00",  # censored, standard result only
           "S2,PLAT,Platelets,,,,,150,10^9/L,,2023-04-06T08:00:00",        # LBSTRESN only
           "S2,CREAT,Creatinine,,0.9,mg/dL,,,,,2023-04",                    # partial date
           "S2,LDH,Lactate dehydrogenase,,,,,,,NOT DONE,2023-04-06",       # not done: out of scope
           "S9,CRP,C-reactive protein,,3,mg/L,,,,,2023-03-01T08:00:00",    # no such subject
           "S1,HGB,Hemoglobin,,hemolyzed,g/dL,,,,,2023-03-02T08:00:00",    # unparseable
           "S1,CRP,C-reactive protein,,4,furlongs,,,,,2023-03-02T08:00:00"],  # unknown unit
    "VS": ["USUBJID,VSTESTCD,VSTEST,VSORRES,VSORRESU,VSDTC",
           "S1,TEMP,Temperature,38.5,C,2023-03-02T10:00:00",
           "S1,SYSBP,Systolic Blood Pressure,90,mmHg,2023-03-02T10:00:00",
           "S1,WEIGHT,Weight,70,kg,2023-03-01T08:00:00",
           "S1,O2DEV,Oxygen device,nasal cannula,,2023-03-02T10:00:00"],
    "QS": ["USUBJID,QSTESTCD,QSTEST,QSORRES,QSDTC",
           "S1,ICE,ICE score,8,2023-03-02T12:00:00", "S1,PHQ0101,Little interest,2,2023-03-02T12:00:00"],
    "AE": ["USUBJID,AETERM,AEDECOD,AETOXGR,AESTDTC,AEENDTC,AEOUT",
           "S1,Cytokine release syndrome,Cytokine release syndrome,2,2023-03-02T09:00:00,,RECOVERED",
           "S1,CRS (cytokine release syndrome),,3,2023-03-02T18:00:00,,RECOVERED",  # spelled differently
           "S2,Neurotoxicity,,Grade 2,2023-04-09T10:00:00,,RECOVERED",              # a synonym
           "S2,Nausea,Nausea,1,2023-04-07,,RECOVERED",                             # unrelated: out of scope
           "S3,Sepsis,Sepsis,5,2023-05-09,2023-05-10T08:00:00,FATAL"],             # fatal, any term: a death
    "DS": ["USUBJID,DSDECOD,DSSTDTC", "S3,DEATH,2023-05-10", "S1,COMPLETED,2023-06-01"],
    "CM": ["USUBJID,CMTRT,CMDECOD,CMOCCUR,CMDOSE,CMDOSU,CMSTDTC,CMENDTC",
           "S1,Actemra,,,8,mg/kg,2023-03-02T20:00:00,",
           "S1,Dexamethasone,,,10,mg,2023-03-03T08:00:00,2023-03-05T08:00:00",
           "S1,Ondansetron,,,8,mg,2023-03-02T08:00:00,",                           # not in the registry
           "S1,Fludarabine,,,30,mg/m2,2023-02-25T09:00:00,",                       # lymphodepletion start
           "S1,Fludarabine,,,30,mg/m2,2023-02-26T09:00:00,",
           "S2,Tocilizumab,,N,,,,"],                                                # not given
    "EX": ["USUBJID,EXTRT,EXDOSE,EXDOSU,EXSTDTC", "S1,Axicabtagene ciloleucel,2000000,cells/kg,2023-03-01T10:00:00"],
    "TR": ["USUBJID,TRTESTCD,TRORRES,TRORRESU,TRDTC,TRLOBXFL",
           "S1,SUMDIAM,45,mm,2023-02-20,Y", "S1,SUMDIAM,30,mm,2023-04-01,", "S1,LDIAM,20,mm,2023-02-20,Y"],
    "TU": ["USUBJID,TULNKID,TULOC", "S1,T01,LYMPH NODE"],
}


@pytest.fixture
def extract(tmp_path) -> Path:
    for name, lines in DOMAINS.items():
        # "lb.csv", "Vs.csv": file names are case-insensitive
        (tmp_path / f"{name.lower() if name != 'VS' else 'Vs'}.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def _emitted(raw, domain: str) -> int:
    return sum(pa.compute.sum(pa.compute.equal(t.arrow.column(SOURCE_TABLE), domain)).as_py() or 0
               for t in raw.values())


def test_every_source_row_is_emitted_or_out_of_scope(extract):
    raw = read_sdtm(extract)
    skipped: dict[str, int] = {}
    for table in raw.values():
        for domain, n in table.out_of_scope.items():
            skipped[domain] = skipped.get(domain, 0) + n
    assert skipped == {"LB": 1, "VS": 0, "QS": 1, "AE": 2, "DS": 2, "CM": 4, "EX": 1, "SUPPDM": 2, "TR": 2, "TU": 1}
    for domain in ("LB", "VS", "QS", "DS", "CM", "EX"):
        assert _emitted(raw, domain) + skipped[domain] == len(DOMAINS[domain]) - 1, domain
    events = raw["events"].frame
    ae_rows = ((events[SOURCE_TABLE] == "AE") & (events["event"] != "DEATH")).sum()
    assert ae_rows + skipped["AE"] == len(DOMAINS["AE"]) - 1
    # One death for S3: DM (date only), DS (date only) and the fatal AE (with a time) agree; the most precise wins.
    deaths = events[events["event"] == "DEATH"]
    assert deaths[["patient_id", "time", SOURCE_TABLE]].values.tolist() == [["S3", "2023-05-10T08:00:00", "AE"]]
    assert raw["patients"].n_rows == 3 and _emitted(raw, "DM") == 3  # patient rows
    lb = raw["measurements"].frame
    assert lb.loc[lb["analyte"].isin(["CREAT", "Creatinine"]), "time"].tolist() == ["2023-04"]  # as given


def test_extract_reconciles_through_ingest(extract):
    raw = read_sdtm(extract)
    result = ingest_tables(raw)
    report = result.report
    for name, counts in report["files"].items():
        assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
        assert counts["rows_read"] == raw[name].n_rows
    quarantine = result.quarantine
    lb = quarantine[quarantine[SOURCE_TABLE] == "LB"]
    # The partial date is ingest's call (quarantined as bad_time, or placed in time): never lost.
    partial = lb["time"] == "2023-04"
    assert set(lb.loc[partial, "reason"]) <= {"bad_time"}
    assert sorted(lb.loc[~partial, "reason"]) == ["unknown_patient", "unknown_unit", "unparseable_value"]
    m = result.tables["measurements"]
    known = dict(zip(m["analyte"], m["known_analyte"], strict=True))
    assert known["Troponin I"] is False or not known["Troponin I"]
    assert known["Weight"] is False or not known["Weight"]
    il6 = m[m["analyte"] == "IL6"].iloc[0]
    assert (il6["value"], il6["censoring"], il6["unit"]) == (2.0, "left", "pg/mL")
    assert m.loc[m["analyte"] == "PLT", "value"].tolist() == [150.0]
    assert m.loc[m["analyte"] == "FERRITIN", "value"].tolist() == [850.0]
    assert m.loc[m["analyte"] == "SBP", "value"].tolist() == [90.0]
    events = result.tables["events"]
    assert events[["patient_id", "event", "grade"]].values.tolist() == [
        ["S1", "CRS", 2], ["S1", "CRS", 3], ["S2", "ICANS", 2], ["S3", "DEATH", 5]]
    assert sorted(result.tables["treatments"]["drug"]) == ["dexamethasone", "tocilizumab"]
    obs = result.tables["observations"]
    assert sorted(zip(obs["item"], obs["value"], strict=True)) == [("ICE_SCORE", "8"), ("O2_DEVICE", "nasal_cannula")]
    patients = result.tables["patients"].set_index("patient_id")
    assert patients["product"].tolist()[:2] == ["axi-cel", "tisa-cel"] and pd.isna(patients.loc["S3", "product"])
    assert patients.loc["S1", "disease"] == "LBCL" and patients.loc["S2", "lymphodepletion"] == "flu_cy"
    assert patients.loc["S1", "age"] == 61  # DM's AGE wins over a SUPPDM AGE
    assert (patients.loc["S1", "tumor_burden"], patients.loc["S1", "tumor_burden_unit"]) == (45.0, "mm")
    assert patients.loc["S1", "lymphodepletion_start_hours"] == -97.0  # the first fludarabine start
    assert patients.loc["S1", "follow_up_end_hours"] == 92 * 24 - 10  # DM RFPENDTC
    assert pd.isna(patients.loc["S2", "lymphodepletion_start_hours"])


def test_product_names():
    assert product_code("YESCARTA") == "axi-cel"
    assert product_code("Cilta-cel 0.75x10^6/kg") == "cilta-cel"
    assert product_code("axi-cel vs tisa-cel") is None  # two products: not one arm's product
    assert product_code("Standard of care") is None


@pytest.mark.parametrize("missing", ["DM", "LB"])
def test_missing_required_domain_is_one_line(extract, missing):
    (extract / f"{missing.lower()}.csv").unlink()
    with pytest.raises(UserError) as error:
        read_sdtm(extract)
    message = str(error.value)
    assert "\n" not in message and str(extract) in message and f"domain {missing}" in message


def test_domain_given_twice_and_missing_folder(extract, tmp_path):
    (extract / "LB.xpt").write_bytes(b"")
    with pytest.raises(UserError, match="given twice"):
        read_sdtm(extract)
    with pytest.raises(UserError, match="not found"):
        read_sdtm(tmp_path / "nowhere")


def test_unreadable_transport_file(extract):
    (extract / "lb.csv").unlink()
    (extract / "lb.xpt").write_bytes(b"not a SAS transport file" * 10)
    with pytest.raises(UserError, match="unreadable SAS transport file"):
        read_sdtm(extract)


def test_vectorised_transport_reader_matches_pyreadstat(cohort, tmp_path, monkeypatch):
    """Every domain the exporter writes (text, numbers, missing numbers, empty text) reads the same through the
    vectorised XPORT reader as through pyreadstat; the adapter falls back to pyreadstat when it declines."""
    import pyreadstat

    from pipeline.adapters import sdtm, xport

    tables, _, _ = cohort
    written = write_sdtm(tables, tmp_path, "xpt")
    for path in written:
        frame, _ = pyreadstat.read_xport(str(path))
        expected = sdtm._xpt_text(frame)
        got = xport.read_columns(path)
        assert got is not None and got.column_names == expected.column_names, path.name
        for name in expected.column_names:
            assert got.column(name).equals(expected.column(name)), (path.name, name)
    fast = read_sdtm(tmp_path)
    monkeypatch.setattr(xport, "read_columns", lambda *args, **kwargs: None)
    slow = read_sdtm(tmp_path)
    for name, table in fast.items():
        assert table.arrow.equals(slow[name].arrow), name


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"USUBJID": pd.Series([], dtype=object), "X": pd.Series([], dtype=float)}),  # no rows
    pd.DataFrame({"USUBJID": ["A", "", "C"], "X": [float("nan"), -1.5e-300, 1e70], "Y": [0.0, -0.0, 123456789.125]}),
    pd.DataFrame({"A": ["x"] * 7}),  # 1-byte rows: the blanks padding the last record are no rows
], ids=["empty", "numbers", "short-rows"])
def test_transport_edge_layouts(tmp_path, frame):
    import pyreadstat

    from pipeline.adapters import sdtm, xport

    path = tmp_path / "t.xpt"
    pyreadstat.write_xport(frame, str(path), table_name="T", file_format_version=5)
    expected = sdtm._xpt_text(pyreadstat.read_xport(str(path))[0])
    got = xport.read_columns(path)
    assert got is not None and got.num_rows == len(frame)
    assert all(got.column(c).equals(expected.column(c)) for c in expected.column_names)
