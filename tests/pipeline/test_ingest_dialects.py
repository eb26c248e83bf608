"""Hospital CSV exports (BOM, Latin-1, ``;`` with decimal commas) and hostile files (gzip bombs, 20,000
columns, rows that must not leak into messages): each is read right or stopped with one clean line."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import ingest
from pipeline.adapters.canonical import read_cohort, read_table_file
from pipeline.adapters.dialect import CsvFormat, ReadLimits
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables

REPO = Path(__file__).resolve().parents[2]
PATIENTS = "patient_id,anchor_time,weight\nP1,2024-01-01T00:00:00,72.5\nP2,2024-01-02T00:00:00,80\n"
MEASUREMENTS = "patient_id,time,analyte,value,unit\nP1,6,CRP,12.5,mg/L\nP2,12,IL-6,1234.5,pg/mL\nP2,13,CRP,<1.5,mg/L\n"
EVENTS = "patient_id,event,grade,time\nP1,CRS,2,30\n"
SECRET = "Jane Doe 1957"  # stands for any patient data a message must never repeat


def write(directory: Path, files: dict[str, bytes | str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (directory / name).write_bytes(data)
    return directory


def cohort(tmp_path: Path, **overrides: bytes | str) -> Path:
    files = {"patients.csv": PATIENTS, "measurements.csv": MEASUREMENTS, "events.csv": EVENTS}
    files.update({f"{name}.csv": content for name, content in overrides.items()})
    return write(tmp_path / "cohort", files)


def values(result) -> list[float]:
    return result.tables["measurements"].sort_values("hours_since_anchor")["value"].round(6).tolist()


def reference(tmp_path: Path):
    return ingest_tables(read_cohort(write(tmp_path / "ref", {
        "patients.csv": PATIENTS, "measurements.csv": MEASUREMENTS, "events.csv": EVENTS})))


def test_utf8_bom_header_is_read(tmp_path):
    # Excel's "CSV UTF-8" starts with a byte-order mark; it used to hide the first column's name.
    bom = b"\xef\xbb\xbf"
    raw = read_cohort(cohort(tmp_path, patients=bom + PATIENTS.encode(), measurements=bom + MEASUREMENTS.encode()))
    assert raw["patients"].arrow.column_names[0] == "patient_id"
    assert raw["measurements"].dialect.bom and raw["measurements"].dialect.encoding == "utf-8"
    assert values(ingest_tables(raw)) == values(reference(tmp_path))


def test_semicolon_file_with_decimal_commas_reads_the_right_numbers(tmp_path):
    patients = "patient_id;anchor_time;weight\r\nP1;2024-01-01T00:00:00;72,5\r\nP2;2024-01-02T00:00:00;80\r\n"
    measurements = ("patient_id;time;analyte;value;unit\r\nP1;6;CRP;12,5;mg/L\r\nP2;12;IL-6;1.234,5;pg/mL\r\n"
                    "P2;13;CRP;<1,5;mg/L\r\n")
    raw = read_cohort(cohort(tmp_path, patients=patients, measurements=measurements))
    result = ingest_tables(raw)
    assert result.report["rows_quarantined"] == 0
    assert values(result) == [12.5, 1234.5, 1.5]
    assert result.tables["patients"]["weight"].tolist() == [72.5, 80.0]
    assert raw["measurements"].dialect.as_report() == {"encoding": "utf-8", "bom": False, "delimiter": ";",
                                                       "decimal": ","}


def test_comma_file_with_quoted_decimal_commas_is_not_mass_quarantined(tmp_path):
    measurements = ('patient_id,time,analyte,value,unit\nP1,"6,5",CRP,"12,5",mg/L\nP2,12,IL-6,"1.234,5",pg/mL\n'
                    'P2,13,CRP,"<1,5",mg/L\n')
    result = ingest_tables(read_cohort(cohort(tmp_path, measurements=measurements)))
    assert result.report["rows_quarantined"] == 0
    assert values(result) == [12.5, 1234.5, 1.5]
    assert result.tables["measurements"]["hours_since_anchor"].min() == 6.5


def test_declared_dialect_is_obeyed(tmp_path):
    measurements = "patient_id|time|analyte|value|unit\nP1|6|CRP|12,5|mg/L\nP2|12|IL-6|1234,5|pg/mL\nP2|13|CRP|<1,5|mg/L\n"
    declared = CsvFormat(encoding="utf-8", delimiter="|", decimal=",")
    directory = write(tmp_path / "cohort", {"patients.csv": PATIENTS.replace(",", "|"), "measurements.csv": measurements,
                                            "events.csv": EVENTS.replace(",", "|")})
    raw = read_cohort(directory, csv_format=declared)
    assert values(ingest_tables(raw)) == [12.5, 1234.5, 1.5]
    assert raw["patients"].arrow.column("weight").to_pylist() == ["72.5", "80"]  # dot decimals left alone
    # A declared "." never rewrites commas.
    dot = read_table_file(tmp_path / "cohort" / "measurements.csv", "measurements", CsvFormat(decimal="."))[0]
    assert dot.column("value").to_pylist() == ["12,5", "1234,5", "<1,5"]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_latin1_and_cp1252_files_are_read(tmp_path, encoding):
    patients = "patient_id,anchor_time,site\nP1,2024-01-01T00:00:00,Zürich\nP2,2024-01-02T00:00:00,Malmö – Skåne\n"
    if encoding == "latin-1":
        patients = patients.replace(" – ", " ")  # the en dash exists in cp1252 only
    raw = read_cohort(cohort(tmp_path, patients=patients.encode(encoding)))
    assert raw["patients"].arrow.column("site").to_pylist() == [line.split(",")[2] for line in patients.splitlines()[1:]]
    assert raw["patients"].dialect.encoding == "cp1252"


def test_latin1_bytes_after_the_first_mebibyte_fall_back_too(tmp_path):
    rows = "".join(f"P1,{i % 500},CRP,{i % 90 + 1},mg/L\n" for i in range(60_000))
    late = ("patient_id,time,analyte,value,unit\n" + rows + "P1,600,Protéine C,3,mg/L\n").encode("latin-1")
    assert len(late) > 1 << 20 and late.index(b"\xe9") > 1 << 20
    raw = read_cohort(cohort(tmp_path, measurements=late))
    assert raw["measurements"].dialect.encoding == "cp1252"
    assert raw["measurements"].arrow.column("analyte")[-1].as_py() == "Protéine C"


def test_declared_utf8_on_latin1_text_names_line_and_column_only(tmp_path):
    measurements = f"patient_id,time,analyte,value,unit\nP1,6,CRP,12,mg/L\nP1,7,{SECRET} é,3,mg/L\n"
    path = cohort(tmp_path, measurements=measurements.encode("latin-1"))
    with pytest.raises(UserError) as info:
        read_cohort(path, csv_format=CsvFormat(encoding="utf-8"))
    assert "measurements.csv: line 3, column 3, is not valid utf-8 text" in str(info.value)
    assert SECRET not in str(info.value)


def test_missing_column_names_the_real_cause(tmp_path):
    semicolons = MEASUREMENTS.replace(",", ";")
    with pytest.raises(UserError, match=r"missing required column 'patient_id'; header looks ';'-delimited"):
        read_cohort(cohort(tmp_path, measurements=semicolons), csv_format=CsvFormat(delimiter=","))
    renamed = MEASUREMENTS.replace("patient_id", "Patient ID", 1)
    with pytest.raises(UserError, match=r"column 1 differs from 'patient_id' only in case or spacing"):
        read_cohort(cohort(tmp_path, measurements=renamed))


def test_a_gzip_stream_is_parsed_without_arrow_threads(tmp_path, monkeypatch):
    """Arrow's threaded reader on a Python stream that raises at the size limit could abort the process
    at exit (a read still in flight); plain files keep the threaded reader."""
    import pyarrow.csv as pacsv

    directory = cohort(tmp_path)
    with gzip.open(directory / "measurements.csv.gz", "wb") as out:
        out.write((directory / "measurements.csv").read_bytes())
    (directory / "measurements.csv").unlink()
    seen: dict[str, bool] = {}
    real = pacsv.read_csv

    def spy(source, read_options=None, **kwargs):
        seen[getattr(source, "name", None) or str(source)] = read_options.use_threads
        return real(source, read_options=read_options, **kwargs)

    monkeypatch.setattr(pacsv, "read_csv", spy)
    raw = read_cohort(directory)
    assert raw["measurements"].n_rows > 0
    threads = {Path(str(name)).name: used for name, used in seen.items()}
    assert threads.get("patients.csv") is True
    assert [used for name, used in seen.items() if "patients" not in str(name) and "events" not in str(name)] == [False]


def test_gzip_bomb_stops_fast_with_bounded_memory(tmp_path):
    # ~200 MB of rows compressed to about 1 MB; the limit is 5 MB decompressed.
    directory = cohort(tmp_path)
    (directory / "measurements.csv").unlink()
    row = b"P1,1,CRP,1,mg/L\n" * 4096
    with gzip.open(directory / "measurements.csv.gz", "wb", compresslevel=1) as out:
        out.write(b"patient_id,time,analyte,value,unit\n")
        for _ in range(200 * (1 << 20) // len(row)):
            out.write(row)
    code = (
        "import time, sys; from pipeline.adapters.canonical import read_cohort; "
        "from pipeline.adapters.dialect import ReadLimits; from pipeline.errors import UserError\n"
        "start = time.perf_counter()\n"
        f"try: read_cohort({str(directory)!r}, limits=ReadLimits(max_file_mb=5))\n"
        "except UserError as e: print(e)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking pytest process.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(time.perf_counter() - start, int(hwm) // 1024)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr: {proc.stderr[-2000:]}"  # say why, if it dies
    message, measures = proc.stdout.strip().splitlines()
    seconds, peak_mb = (float(x) for x in measures.split())
    assert message.endswith("measurements.csv.gz: larger than ingest.max_file_mb (5 MB) once decompressed")
    assert seconds < 2.0 and peak_mb < 400  # 200 MB would have been read, and held, before


def test_plain_file_above_the_size_limit_is_refused_before_reading(tmp_path):
    path = cohort(tmp_path, measurements=MEASUREMENTS + "P1,7,CRP,1,mg/L\n" * 80_000)
    with pytest.raises(UserError, match=r"measurements\.csv: larger than ingest\.max_file_mb \(1 MB\)"):
        read_cohort(path, limits=ReadLimits(max_file_mb=1))


def test_twenty_thousand_columns_fail_fast(tmp_path):
    header = ",".join(["patient_id", *(f"c{i}" for i in range(20_000))])
    path = cohort(tmp_path, patients=header + "\n" + ",".join(["P1", *("1" for _ in range(20_000))]) + "\n")
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"patients\.csv: line 1 has 20001 columns, more than ingest\.max_columns \(500\)"):
        read_cohort(path)
    assert time.perf_counter() - start < 0.5


def test_row_limit_and_parquet_footer_checks(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"measurements\.csv: 3 rows, more than ingest\.max_rows \(2\)"):
        read_cohort(cohort(tmp_path), limits=ReadLimits(max_rows=2))
    parquet = tmp_path / "measurements.parquet"
    pd.read_csv(tmp_path / "cohort" / "measurements.csv", dtype=str).to_parquet(parquet)

    def no_data_read(*args, **kwargs):
        raise AssertionError("the data was read before the footer was checked")

    monkeypatch.setattr(pq.ParquetFile, "read", no_data_read)
    with pytest.raises(UserError, match=r"measurements\.parquet: 3 rows, more than ingest\.max_rows \(2\)"):
        read_table_file(parquet, "measurements", limits=ReadLimits(max_rows=2))
    with pytest.raises(UserError, match=r"measurements\.parquet: 5 columns, more than ingest\.max_columns \(4\)"):
        read_table_file(parquet, "measurements", limits=ReadLimits(max_columns=4))


def test_messages_never_quote_a_row_or_a_header_cell(tmp_path):
    # A row with one field too many: Arrow's own message quotes the whole row.
    extra = MEASUREMENTS + f"P1,7,CRP,3,mg/L,{SECRET}\n"
    with pytest.raises(UserError) as info:
        read_cohort(cohort(tmp_path / "a", measurements=extra))
    assert "measurements.csv: line 5 has 6 fields but the header has 5" in str(info.value)
    # Two header cells with the same (non-contract) name.
    with pytest.raises(UserError) as dup:
        read_cohort(cohort(tmp_path / "b", patients=f"patient_id,{SECRET},{SECRET}\nP1,1,2\n"))
    assert "a column name appears twice (columns 2 and 3)" in str(dup.value)
    # A symlink to some other file whose lines are no cohort table.
    other = tmp_path / "secret.txt"
    other.write_text(f"{SECRET}:x:0:0\nsomething,else,{SECRET}\n")
    directory = cohort(tmp_path / "c")
    (directory / "patients.csv").unlink()
    (directory / "patients.csv").symlink_to(other)
    with pytest.raises(UserError) as link:
        read_cohort(directory)
    for error in (info, dup, link):
        assert SECRET not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (gzip.compress(PATIENTS.encode()), "file is gzip-compressed; name it .csv.gz"),
        (b"PK\x03\x04" + b"\x00" * 64, "looks like a zip archive or an Excel workbook"),
        (PATIENTS.encode("utf-16"), "is UTF-16 text"),
        (b"patient_id\nP1\x00\x00\n", "line 2 holds NUL bytes"),
    ],
    ids=["gzip", "xlsx", "utf16", "nul"],
)
def test_files_that_are_not_csv_text_get_one_clean_line(tmp_path, content, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        read_cohort(cohort(tmp_path, patients=content))


def test_ingest_reports_each_files_dialect_and_obeys_config(tmp_path):
    measurements = "patient_id;time;analyte;value;unit\nP1;6;CRP;12,5;mg/L\nP2;12;IL-6;1.234,5;pg/mL\n"
    directory = cohort(tmp_path, measurements=b"\xef\xbb\xbf" + measurements.encode())
    report = tmp_path / "ingest.json"
    ingest.main(Config(), cohort=directory, out=tmp_path / "interim", report=report)
    dialects = json.loads(report.read_text())["csv_dialects"]
    assert dialects["measurements"] == {"path": str(directory / "measurements.csv"), "encoding": "utf-8",
                                        "bom": True, "delimiter": ";", "decimal": ","}
    assert dialects["patients"]["delimiter"] == ","
    comma = Config.model_validate({"cohort": {"csv": {"delimiter": ","}}})
    with pytest.raises(UserError, match="measurements.csv: missing required column 'patient_id'; header looks ';'"):
        ingest.main(comma, cohort=directory, out=tmp_path / "interim2", report=tmp_path / "r2.json")
    few_rows = Config.model_validate({"ingest": {"max_rows": 1}})
    with pytest.raises(UserError, match=r"patients\.csv: 2 rows, more than ingest\.max_rows \(1\)"):
        ingest.main(few_rows, cohort=directory, out=tmp_path / "interim2", report=tmp_path / "r2.json")


def test_truncated_gzip_is_one_clean_line(tmp_path):
    directory = cohort(tmp_path)
    data = gzip.compress((MEASUREMENTS + "P1,7,CRP,1,mg/L\n" * 5000).encode())
    (directory / "measurements.csv").unlink()
    (directory / "measurements.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"measurements\.csv\.gz: damaged gzip stream \(not gzip, truncated or corrupt\)$"):
        read_cohort(directory)


def test_parquet_column_that_is_no_text_names_its_number_not_its_fields(tmp_path):
    directory = cohort(tmp_path)
    (directory / "patients.csv").unlink()
    pq.write_table(pa.table({"patient_id": ["P1"], "x": pa.array([{SECRET: 1}])}), directory / "patients.parquet")
    with pytest.raises(UserError) as info:
        read_cohort(directory)
    assert "patients.parquet: column 2 has a StructType, which cannot be read as text" in str(info.value)
    assert SECRET not in str(info.value)
