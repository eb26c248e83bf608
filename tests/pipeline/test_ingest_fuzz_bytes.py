"""Fuzzing the reading layer and ingest: random bytes and random CSV dialects end as accepted rows,
quarantined rows with a reason, or one clean :class:`UserError`, never another exception."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters.canonical import read_cohort
from pipeline.cohort import REASONS
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATIENTS = [["patient_id", "anchor_time"], ["P1", "2024-01-01T00:00:00"], ["P2", "2024-01-02T00:00:00"]]
MEASUREMENTS_HEADER = ["patient_id", "time", "analyte", "value", "unit"]
EVENTS = "patient_id,event,grade,time\nP1,CRS,2,30\n"
# Header and cell text without line breaks, NULs, quotes or candidate delimiters (those are fuzzed below).
SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=',;|"\t\r\n\x00\ufeff'), min_size=1, max_size=12
).filter(lambda s: s.strip() == s and s not in ("patient_id", "anchor_time"))


def ingest_or_user_error(files: dict[str, bytes], secret_lines: tuple[str, ...] = ()) -> object:
    """Read and ingest a cohort; return the result or the UserError (anything else fails the test).

    An error is one line and quotes none of ``secret_lines`` (the fuzzed file's data lines).
    """
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            result = ingest_tables(read_cohort(tmp))
        except UserError as error:
            message = str(error)
            assert message and "\n" not in message and "Traceback" not in message
            said = message.split(": ", 1)[-1]  # after the file's path
            assert not [line for line in secret_lines if line in said], message
            return error
    report = result.report
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"] + report["duplicates_dropped"]
    assert set(result.quarantine["reason"]) <= set(REASONS) if len(result.quarantine) else True
    return result


def render(rows: list[list[str]], delimiter: str, quoting: int, line_end: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=line_end).writerows(rows)
    return out.getvalue()


@st.composite
def dialect_cohorts(draw) -> tuple[dict[str, bytes], list[float], list[float]]:
    """A small valid cohort written in a random dialect, with the values it must read back as."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    line_end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    encoding = draw(st.sampled_from(["utf-8", "cp1252", "latin-1"]))
    decimal = draw(st.sampled_from([".", ","]))
    bom = encoding == "utf-8" and draw(st.booleans())
    text = SAFE_TEXT.filter(lambda s: _encodable(s, encoding))
    extra, cells = draw(text), draw(st.lists(text, min_size=2, max_size=2))
    values = draw(st.lists(st.integers(1, 10**7), min_size=1, max_size=6))
    hours = draw(st.lists(st.integers(-480, 2000), min_size=len(values), max_size=len(values), unique=True))
    as_float = [v / 100 for v in values]
    time_float = [h / 4 for h in hours]
    grouped = decimal == "," and draw(st.booleans())  # 1.234,56: thousands dots come with decimal commas
    rows = [MEASUREMENTS_HEADER] + [
        ["P1", _number(t, decimal, False), "Ferritin", _number(v, decimal, grouped), "ng/mL"]
        for t, v in zip(time_float, as_float, strict=True)
    ]
    patients = [PATIENTS[0] + [extra]] + [row + [cell] for row, cell in zip(PATIENTS[1:], cells, strict=True)]
    events = EVENTS if delimiter == "," else EVENTS.replace(",", delimiter)
    prefix = b"\xef\xbb\xbf" if bom else b""
    files = {
        "patients.csv": prefix + render(patients, delimiter, quoting, line_end).encode(encoding),
        "measurements.csv": prefix + render(rows, delimiter, quoting, line_end).encode(encoding),
        "events.csv": events.replace("\n", line_end).encode(encoding),
    }
    return files, time_float, as_float


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


def _number(x: float, decimal: str, grouped: bool) -> str:
    text = f"{x:,.2f}" if grouped else repr(x)
    return text.translate(str.maketrans(",.", ".,")) if decimal == "," else text


@SETTINGS
@given(dialect_cohorts())
def test_any_common_dialect_reads_back_the_same_numbers(case):
    files, hours, values = case
    result = ingest_or_user_error(files)
    assert not isinstance(result, UserError), str(result)
    accepted = result.tables["measurements"].sort_values("hours_since_anchor")
    expected = sorted(zip(hours, values, strict=True))
    assert result.report["rows_quarantined"] == 0
    assert accepted["hours_since_anchor"].tolist() == [h for h, _ in expected]
    assert accepted["value"].tolist() == [v for _, v in expected]


VALID = {
    "patients.csv": b"patient_id,anchor_time\nP1,2024-01-01T00:00:00\n",
    "measurements.csv": b"patient_id,time,analyte,value,unit\nP1,6,CRP,12.5,mg/L\n",
    "events.csv": EVENTS.encode(),
}
HEADERS = {name: data.split(b"\n")[0] + b"\n" for name, data in VALID.items()}


@st.composite
def hostile_files(draw) -> tuple[dict[str, bytes], tuple[str, ...]]:
    """One table replaced by random bytes, random text or a valid header followed by garbage, and the
    garbage's longer lines (which no message may quote)."""
    files = dict(VALID)
    name = draw(st.sampled_from(sorted(files)))
    files[name] = draw(st.one_of(
        st.binary(max_size=400),
        st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=300).map(lambda b, n=name: HEADERS[n] + b),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=200).map(
            lambda s, n=name: HEADERS[n] + s.encode("utf-8")),
        st.lists(st.text(max_size=8), min_size=1, max_size=8).map(
            lambda names, n=name: HEADERS[n].rstrip(b"\n") + ("," + ",".join(names)).encode("utf-8", "surrogatepass")
            + b"\n" + VALID[n].split(b"\n", 1)[1]),
    ))
    body = files[name].split(b"\n", 1)[-1].decode("latin-1")
    return files, tuple(line.strip() for line in body.splitlines() if len(line.strip()) >= 8)


GARBAGE_ROW = st.text(st.characters(min_codepoint=0x41, max_codepoint=0x7A), min_size=8, max_size=20)


@SETTINGS
@given(hostile_files())
def test_random_bytes_end_as_rows_quarantine_or_one_clean_error(case):
    files, secret_lines = case
    ingest_or_user_error(files, secret_lines)


@SETTINGS
@given(st.sampled_from(sorted(VALID)), st.lists(GARBAGE_ROW, min_size=1, max_size=4), st.integers(1, 4))
def test_rows_with_the_wrong_field_count_are_never_quoted(name, cells, extra):
    # A row with too many fields: one clean line naming the file and line, none of the row's text.
    row = ",".join(cells + ["x"] * extra)
    error = ingest_or_user_error({**VALID, name: VALID[name] + row.encode() + b"\n"}, (row, *cells))
    fields = len(VALID[name].split(b"\n")[0].split(b","))
    if len(cells) + extra != fields:
        assert isinstance(error, UserError) and f"{name}: line 3 has {len(cells) + extra} fields" in str(error)
