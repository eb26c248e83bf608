"""How a cohort CSV is written (encoding, delimiter, decimal mark) and the limits on what we read.

Hospital exports rarely look like the README's example: Excel writes a UTF-8 byte-order mark or
Windows-1252 text, European locales use ``;`` delimiters and decimal commas. Everything here is
detected from the first bytes of a file (``auto``) or taken as declared in ``cohort.csv``, and no
message ever quotes a cell or a raw line: files hold patient data and may be hostile.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import UserError

CANDIDATE_DELIMITERS = (",", ";", "\t", "|")  # in order of preference on a tie
FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # latin-1 decodes any byte, so the chain always ends
HEAD_BYTES = 1 << 20  # the header line must end within the first MiB
UTF8_BOM = codecs.BOM_UTF8

#: Contract columns that hold numbers; a patients table's covariates are added per file.
NUMERIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "measurements": ("value", "time"),
    "treatments": ("dose", "time", "end_time"),
    "events": ("time",),
    "observations": ("value", "time"),
}
NOT_COVARIATES = ("patient_id", "anchor_time")

# RE2 (Arrow) patterns; an optional censoring prefix so that "<1,5" converts like "1,5".
_PREFIX = r"^\s*(?:[<>]=?\s*)?[+-]?"
COMMA_DECIMAL = _PREFIX + r"\d+(?:\.\d{3})*,\d+\s*$"
DOT_DECIMAL = _PREFIX + r"\d*\.\d+\s*$"

# Magic numbers of files that are not CSV text, with what to tell the user.
_NOT_TEXT = (
    (b"\x1f\x8b", "is gzip-compressed; name it .csv.gz"),
    (b"PAR1", "is a Parquet file; name it .parquet"),
    (b"PK\x03\x04", "looks like a zip archive or an Excel workbook; export it as CSV"),
    (codecs.BOM_UTF16_LE, "is UTF-16 text; export it as UTF-8 CSV"),
    (codecs.BOM_UTF16_BE, "is UTF-16 text; export it as UTF-8 CSV"),
)


@dataclass(frozen=True)
class CsvFormat:
    """Declared CSV dialect (``cohort.csv``); ``auto`` means detect per file."""

    encoding: str = "auto"
    delimiter: str = "auto"
    decimal: str = "auto"


@dataclass(frozen=True)
class ReadLimits:
    """Resource limits on one table file (``ingest`` section of params.yaml)."""

    max_file_mb: float = 2048.0
    max_rows: int = 50_000_000
    max_columns: int = 500

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


@dataclass(frozen=True)
class Dialect:
    """What a CSV file turned out to be (reported per file under ``csv_dialects``)."""

    encoding: str
    bom: bool
    delimiter: str
    decimal: str = "."

    def as_report(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "bom": self.bom, "delimiter": self.delimiter, "decimal": self.decimal}


@dataclass(frozen=True)
class Header:
    dialect: Dialect
    names: list[str]


def read_options(config: Any) -> dict[str, Any]:
    """``read_cohort`` keyword arguments from a config with ``cohort.csv`` and ``ingest`` sections.

    Duck-typed so that adapters stay below :mod:`pipeline.config` in the import layers.
    """
    declared, limits = config.cohort.csv, config.ingest
    return {
        "csv_format": CsvFormat(declared.encoding, declared.delimiter, declared.decimal),
        "limits": ReadLimits(limits.max_file_mb, limits.max_rows, limits.max_columns),
    }


def _first_line_end(head: bytes) -> int:
    ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
    return min(ends) if ends else -1


def _guess_encoding(head: bytes, complete: bool) -> str:
    """UTF-8 when the first bytes decode as UTF-8 (a character cut at the end of ``head`` is fine)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    for encoding in FALLBACK_ENCODINGS:
        try:
            head.decode(encoding)
            return encoding
        except UnicodeDecodeError:
            continue
    return FALLBACK_ENCODINGS[-1]  # pragma: no cover - latin-1 decodes every byte


def _sniff_delimiter(text: str) -> str:
    # Count candidates outside quoted names; the most frequent wins, ties in preference order.
    unquoted = re.sub(r'"[^"]*"', "", text)
    counts = [unquoted.count(d) for d in CANDIDATE_DELIMITERS]
    best = max(range(len(counts)), key=lambda i: (counts[i], -i))
    return CANDIDATE_DELIMITERS[best] if counts[best] else ","


def _check_is_text(path: Path, head: bytes) -> None:
    for magic, what in _NOT_TEXT:
        if head.startswith(magic):
            raise UserError(f"{path}: file {what}")
    if b"\x00" in head:
        line = head[: head.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"{path}: line {line} holds NUL bytes (a binary file, not CSV text)")


def _decode_header(path: Path, raw_line: bytes, encoding: str, delimiter: str) -> str:
    try:
        return raw_line.decode(encoding)
    except UnicodeDecodeError as exc:
        column = raw_line[: exc.start].count(delimiter.encode()) + 1
        raise UserError(
            f"{path}: line 1, column {column}, is not valid {encoding} text; "
            "set cohort.csv.encoding (auto, utf-8, latin-1, cp1252)"
        ) from None


def _split_header(path: Path, text: str, delimiter: str, limits: ReadLimits) -> list[str]:
    try:
        names = next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        raise UserError(f"{path}: line 1 (the header) cannot be parsed as CSV") from None
    if len(names) > limits.max_columns:
        raise UserError(f"{path}: line 1 has {len(names)} columns, more than ingest.max_columns ({limits.max_columns})")
    # Excel leaves unnamed trailing columns; give them names rather than failing as duplicates.
    return [name.strip() or f"unnamed_{i + 1}" for i, name in enumerate(names)]


def read_header(path: Path, head: bytes, complete: bool, declared: CsvFormat, limits: ReadLimits) -> Header:
    """The dialect and column names of a CSV file from its first bytes (``complete``: the whole file)."""
    _check_is_text(path, head)
    bom = head.startswith(UTF8_BOM)
    body = head[len(UTF8_BOM) :] if bom else head
    end = _first_line_end(body)
    if end < 0 and not complete:
        delimiter = declared.delimiter if declared.delimiter != "auto" else _sniff_delimiter(body.decode("latin-1"))
        if body.count(delimiter.encode()) + 1 > limits.max_columns:
            raise UserError(f"{path}: line 1 has more columns than ingest.max_columns ({limits.max_columns})")
        raise UserError(f"{path}: line 1 (the header) is longer than {HEAD_BYTES // (1 << 20)} MiB; not a cohort table")
    raw_line = body if end < 0 else body[:end]
    if not raw_line.strip():
        empty = not body.strip()
        raise UserError(f"{path}: " + ("file is empty (no header line)" if empty else "line 1 (the header) is blank"))
    if declared.encoding != "auto":
        encoding = declared.encoding
    else:
        encoding = "utf-8" if bom else _guess_encoding(body, complete)
    # Candidate delimiters are ASCII, the same byte in every supported encoding.
    delimiter = declared.delimiter if declared.delimiter != "auto" else _sniff_delimiter(raw_line.decode("latin-1"))
    text = _decode_header(path, raw_line, encoding, delimiter)
    names = _split_header(path, text, delimiter, limits)
    return Header(Dialect(encoding, bom, delimiter), names)


def delimiter_hint(names: list[str], delimiter: str, required: tuple[str, ...]) -> str:
    """Why a required column may look missing: the header splits into it with another delimiter."""
    text = delimiter.join(names)  # the header line again, near enough
    for other in CANDIDATE_DELIMITERS:
        if other != delimiter and set(required) <= {n.strip().strip('"') for n in text.split(other)}:
            shown = "\\t" if other == "\t" else other
            return f"; header looks '{shown}'-delimited; set cohort.csv.delimiter or check the export"
    return ""


def name_hint(names: list[str], required: tuple[str, ...]) -> str:
    """A column whose name matches a missing required one but for case or spacing (by number, not name)."""
    def norm(name: str) -> str:
        return re.sub(r"[\s\-]+", "_", name.strip().lower().lstrip("\ufeff"))

    for column in required:
        if column in names:
            continue
        for i, name in enumerate(names):
            if norm(name) == column:
                return f"; column {i + 1} differs from '{column}' only in case or spacing (names are exact)"
    return ""


def _numeric_columns(table_name: str, names: list[str], contract_only: bool) -> list[str]:
    columns = [c for c in NUMERIC_COLUMNS.get(table_name, ()) if c in names]
    if table_name == "patients" and not contract_only:
        columns += [c for c in names if c not in NOT_COVARIATES]
    return columns


def _holds_byte(column: pa.ChunkedArray, byte: bytes) -> bool:
    """Whether any string in ``column`` may hold ``byte``: a scan of the raw character buffers, which
    may see bytes outside a sliced chunk (then the exact, slower check decides)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2] if chunk.type == pa.string() else None
        if data is None:
            if chunk.null_count < len(chunk):
                return True  # not a plain string array: let the exact check decide
            continue
        if data.to_pybytes().find(byte) >= 0:
            return True
    return False


def resolve_decimal(table: pa.Table, table_name: str, dialect: Dialect, declared: str) -> str:
    """``,`` when the file's numeric cells use decimal commas, else ``.`` (``declared`` wins over ``auto``).

    In a comma-delimited file a cell holding a comma was quoted, so only contract number columns
    are looked at there (a quoted covariate like ``"3,4"`` may be a list); elsewhere covariates too.
    """
    if declared != "auto":
        return declared
    columns = _numeric_columns(table_name, table.column_names, contract_only=dialect.delimiter == ",")
    n_comma = n_dot = 0
    for name in columns:
        column = table.column(name)
        if not _holds_byte(column, b","):  # the common case, decided at memchr speed
            continue
        n_comma += pc.sum(pc.match_substring_regex(column, COMMA_DECIMAL)).as_py() or 0
        n_dot += pc.sum(pc.match_substring_regex(column, DOT_DECIMAL)).as_py() or 0
    return "," if n_comma > n_dot else "."


def to_dot_decimal(table: pa.Table, table_name: str) -> pa.Table:
    """Rewrite decimal-comma numbers (``1.234,5`` -> ``1234.5``) in the number columns; text stays text."""
    for name in _numeric_columns(table_name, table.column_names, contract_only=False):
        column = table.column(name)
        mask = pc.match_substring_regex(column, COMMA_DECIMAL)
        if not pc.any(mask).as_py():
            continue
        # Only masked cells are replaced, and their dots can only be thousands separators.
        dotted = pc.replace_substring(pc.replace_substring(column, ".", ""), ",", ".")
        fixed = pc.if_else(pc.fill_null(mask, False), dotted, column)
        table = table.set_column(table.column_names.index(name), name, fixed)
    return table


__all__ = [
    "CANDIDATE_DELIMITERS",
    "CsvFormat",
    "Dialect",
    "Header",
    "ReadLimits",
    "delimiter_hint",
    "name_hint",
    "read_header",
    "read_options",
    "resolve_decimal",
    "to_dot_decimal",
]
