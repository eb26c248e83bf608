"""The canonical cohort directory: ``patients``, ``measurements``, ``events`` and optional ``treatments``
and ``observations``, each as ``.csv``, ``.csv.gz`` or ``.parquet``, read as text with file-level checks only."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.adapters.dialect import (
    FALLBACK_ENCODINGS,
    HEAD_BYTES,
    CsvFormat,
    Dialect,
    Header,
    ReadLimits,
    delimiter_hint,
    name_hint,
    read_header,
    resolve_decimal,
    to_dot_decimal,
)
from pipeline.cohort import TABLES, TableSpec
from pipeline.errors import UserError

#: :attr:`RawTable.frame`'s column type, and the Arrow text type read straight into it.
_PANDAS_STRING = pd.StringDtype()
_AS_PANDAS_STRING = {pa.string(): _PANDAS_STRING}
TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")
AUTO_FORMAT = CsvFormat()  # detect every file's encoding, delimiter and decimal mark
DEFAULT_LIMITS = ReadLimits()


#: From this many rows, :func:`arrow_to_pandas` converts the columns in threads.
THREADED_CONVERSION_ROWS = 65_536


def arrow_to_pandas(table: pa.Table | pa.Array | pa.ChunkedArray, **options: Any) -> Any:
    """``to_pandas`` with threads only for large tables: starting the thread pool cost more than the
    conversion itself on small ones (0.25 against 0.1 ms for one patient's 640 rows). Same output."""
    rows = table.num_rows if isinstance(table, pa.Table) else len(table)
    return table.to_pandas(use_threads=rows >= THREADED_CONVERSION_ROWS, **options)


@dataclass
class RawTable:
    """One cohort file read as text (Arrow strings, nulls for empty fields) and where it came from."""

    spec: TableSpec
    path: Path
    arrow: pa.Table
    #: How a CSV file was written (encoding, delimiter, decimal mark); None for Parquet and frames.
    dialect: Dialect | None = None
    #: Standard-format adapters (SDTM, OMOP): source table -> source rows left out as not asked for
    #: (e.g. unrelated OMOP measurements skipped by the concept filter). Rows that reach ``arrow`` carry
    #: their source table in a ``source_table`` column; ingest reports counts per source table.
    out_of_scope: dict[str, int] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The table as pandas strings (used for the small tables: patients, events, treatments).

        Arrow strings become pandas ``string`` columns directly (what ``to_pandas().astype("string")``
        gives, without converting each column twice: ~1 ms of one new patient's scoring)."""
        frame = arrow_to_pandas(self.arrow, types_mapper=_AS_PANDAS_STRING.get)
        return frame if all(dtype == _PANDAS_STRING for dtype in frame.dtypes) else frame.astype("string")

    @property
    def n_rows(self) -> int:
        return self.arrow.num_rows

    def line_numbers(self, rows: np.ndarray) -> np.ndarray:
        # CSV: physical line in the file (header is line 1; assumes no newlines inside quoted
        # fields). Parquet: 1-based row number.
        return rows.astype(np.int64) + (1 if self.path.suffix == ".parquet" else 2)


def find_table(directory: str | Path, name: str, *, required: bool = True) -> Path | None:
    """Return the file for table ``name`` in a cohort directory (``name.parquet|csv|csv.gz``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: cohort directory not found")
    found = [directory / f"{name}{suffix}" for suffix in TABLE_SUFFIXES if (directory / f"{name}{suffix}").exists()]
    if len(found) > 1:
        raise UserError(f"{directory}: table '{name}' given twice ({', '.join(p.name for p in found)}); keep one")
    if not found:
        if required:
            raise UserError(f"{directory / (name + '.csv')}: required table '{name}' not found (.csv or .parquet)")
        return None
    return found[0]


class _TooLarge(Exception):
    """Raised inside Arrow's read when a decompressed stream passes the size limit."""


class _CountingReader(io.RawIOBase):
    """Decompressed bytes of a ``.csv.gz`` that stop past ``limit``, so a gzip bomb never materialises."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream, self._limit, self.count = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._stream.readinto(buffer)
        self.count += n or 0
        if self.count > self._limit:
            raise _TooLarge
        return n

    def close(self) -> None:
        self._stream.close()
        super().close()


def _open(path: Path, limits: ReadLimits) -> BinaryIO:
    if path.suffix == ".gz":
        return io.BufferedReader(_CountingReader(gzip.open(path, "rb"), limits.max_bytes), 1 << 20)
    return open(path, "rb")


def _too_large(path: Path, limits: ReadLimits) -> UserError:
    return UserError(f"{path}: larger than ingest.max_file_mb ({limits.max_file_mb:g} MB) once decompressed")


def _check_file(path: Path, limits: ReadLimits) -> tuple[bytes, bool]:
    """The first bytes of a CSV file (decompressed) and whether they are the whole file."""
    if not path.is_file():  # a symlink to /dev/zero or a FIFO is no cohort table
        raise UserError(f"{path}: not a regular file")
    if path.suffix != ".gz" and path.stat().st_size > limits.max_bytes:
        raise _too_large(path, limits)
    with _open(path, limits) as handle:
        head = handle.read(HEAD_BYTES)
        complete = len(head) < HEAD_BYTES or not handle.read(1)
    return head, complete


def _arrow_read(path: Path, header: Header, encoding: str, limits: ReadLimits, handler=None) -> pa.Table:
    source = path if path.suffix != ".gz" else _open(path, limits)
    try:
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=header.names,
                skip_rows=1,
                encoding="utf8" if encoding == "utf-8" else encoding,
                # A Python stream (.csv.gz, counted against the size limit) is read serially: with
                # threads, a read still in flight when the limit stopped the parse aborted the
                # interpreter at exit now and then (6 of 80 runs; 0 of 160 serially; 1 M rows: 0.19 -> 0.24 s).
                use_threads=handler is None and source is path,
            ),
            parse_options=pacsv.ParseOptions(delimiter=header.dialect.delimiter, invalid_row_handler=handler),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header.names},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    finally:
        if source is not path:
            source.close()


def _field_count_error(path: Path, header: Header, encoding: str, limits: ReadLimits) -> UserError:
    """Re-read serially (error path only) to learn which line has the wrong number of fields."""
    bad: list[tuple[int | None, int]] = []

    def first_bad(row) -> str:
        bad.append((row.number, row.actual_columns))
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        _arrow_read(path, header, encoding, limits, handler=first_bad)
    where = f"line {bad[0][0]}" if bad and bad[0][0] is not None else "a line"
    got = f"{bad[0][1]} fields" if bad else "a different number of fields"
    shown = "\\t" if header.dialect.delimiter == "\t" else header.dialect.delimiter
    return UserError(
        f"{path}: {where} has {got} but the header has {len(header.names)} (delimiter '{shown}'); "
        "check quoting or cohort.csv.delimiter"
    )


def _advance(data: bytes, offset: int, sep: bytes, line: int, field: int) -> tuple[int, int]:
    """(line, field) reached after ``data[:offset]``, starting from (line, field); quoting is ignored."""
    seen = data[:offset]
    newline = seen.rfind(b"\n")
    if newline < 0:
        return line, field + seen.count(sep)
    return line + seen.count(b"\n"), 1 + seen[newline + 1 :].count(sep)


def _bad_text_error(path: Path, encoding: str, delimiter: str, limits: ReadLimits) -> UserError:
    """Line and column of the first byte that is not ``encoding`` text (error path only; streams the file)."""
    line, field, carry, sep = 1, 1, b"", delimiter.encode()
    with _open(path, limits) as handle:
        while data := carry + (chunk := handle.read(1 << 20)):
            try:
                data.decode(encoding)
                good, carry = len(data), b""
            except UnicodeDecodeError as exc:
                if chunk and exc.reason == "unexpected end of data":  # a character cut by the chunk's end
                    good, carry = exc.start, data[exc.start :]
                else:
                    line, field = _advance(data, exc.start, sep, line, field)
                    return UserError(
                        f"{path}: line {line}, column {field}, is not valid {encoding} text; "
                        "set cohort.csv.encoding (auto, utf-8, latin-1, cp1252)"
                    )
            line, field = _advance(data, good, sep, line, field)
            if not chunk:
                break
    return UserError(f"{path}: not valid {encoding} text; set cohort.csv.encoding (auto, utf-8, latin-1, cp1252)")


def _parse_csv(path: Path, header: Header, declared: CsvFormat, limits: ReadLimits) -> tuple[pa.Table, str]:
    """Arrow-parse the rows as text; with ``auto`` encoding, fall back from UTF-8 to cp1252, then Latin-1."""
    encodings = [header.dialect.encoding]
    if declared.encoding == "auto" and not header.dialect.bom:
        encodings += [e for e in FALLBACK_ENCODINGS if e not in encodings]
    for i, encoding in enumerate(encodings):
        last = i == len(encodings) - 1
        try:
            return _arrow_read(path, header, encoding, limits), encoding
        except UnicodeDecodeError:
            if last:
                raise _bad_text_error(path, encoding, header.dialect.delimiter, limits) from None
        except pa.ArrowInvalid as exc:
            message = str(exc)
            if "invalid UTF8" in message:
                if last:
                    raise _bad_text_error(path, encoding, header.dialect.delimiter, limits) from None
            elif "Expected" in message and "columns" in message:
                raise _field_count_error(path, header, encoding, limits) from None
            else:
                # Arrow's messages may quote the row: never pass them on.
                raise UserError(
                    f"{path}: cannot be parsed as CSV (a quoted field left open, or a line longer than 1 MiB?)"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _check_required(path: Path, names: list[str], required: tuple[str, ...], delimiter: str | None) -> None:
    """Missing contract columns fail on the header, before any row is parsed, with the likely cause."""
    missing = [c for c in required if c not in names]
    if missing:
        hint = delimiter_hint(names, delimiter, required) if delimiter else ""
        hint = hint or name_hint(names, required)
        raise UserError(f"{path}: missing required column '{missing[0]}'{hint}")


def _read_csv_as_text(
    path: Path, declared: CsvFormat, limits: ReadLimits, table_name: str, required: tuple[str, ...]
) -> tuple[pa.Table, Dialect]:
    head, complete = _check_file(path, limits)
    header = read_header(path, head, complete, declared, limits)
    _check_required(path, header.names, required, header.dialect.delimiter)
    table, encoding = _parse_csv(path, header, declared, limits)
    decimal = resolve_decimal(table, table_name, header.dialect, declared.decimal)
    if decimal == ",":
        table = to_dot_decimal(table, table_name)
    return table, dataclasses.replace(header.dialect, encoding=encoding, decimal=decimal)


def _read_parquet_as_text(path: Path, limits: ReadLimits, required: tuple[str, ...]) -> pa.Table:
    """Check the footer's counts, sizes and names before reading any data, then cast every column to text."""
    file = pq.ParquetFile(path)
    meta = file.metadata
    _check_required(path, [name.strip() for name in file.schema_arrow.names], required, None)
    if meta.num_columns > limits.max_columns:
        raise UserError(f"{path}: {meta.num_columns} columns, more than ingest.max_columns ({limits.max_columns})")
    if meta.num_rows > limits.max_rows:
        raise UserError(f"{path}: {meta.num_rows} rows, more than ingest.max_rows ({limits.max_rows})")
    if sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > limits.max_bytes:
        raise _too_large(path, limits)
    table = file.read()
    columns = []
    for i, column in enumerate(table.columns):
        try:
            columns.append(column.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # The type's kind only: a struct type's text would list nested (user-named) fields.
            kind = type(column.type).__name__
            raise UserError(f"{path}: column {i + 1} has a {kind}, which cannot be read as text") from None
    return pa.table(columns, names=table.column_names)


def read_table_file(
    path: Path, table_name: str = "", csv_format: CsvFormat = AUTO_FORMAT, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[pa.Table, Dialect | None]:
    """Read one cohort table as text, with the CSV dialect it was written in (``None`` for Parquet).

    ``table_name`` (a cohort table) says which columns hold numbers and which are required.
    """
    dialect = None
    spec = next((t for t in TABLES if t.name == table_name), None)
    required = spec.required_columns if spec else ()
    try:
        if path.suffix == ".parquet":
            table = _read_parquet_as_text(path, limits, required)
        else:
            table, dialect = _read_csv_as_text(path, csv_format, limits, table_name, required)
    except _TooLarge:
        raise _too_large(path, limits) from None
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise UserError(f"{path}: damaged gzip stream (not gzip, truncated or corrupt)") from None
    except OSError as exc:  # permission denied, a directory...: the reason, never the content
        raise UserError(f"{path}: unreadable file ({exc.strerror or type(exc).__name__})") from None
    except (pa.ArrowException, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: unreadable file ({type(exc).__name__})") from None
    if table.num_rows > limits.max_rows:
        raise UserError(f"{path}: {table.num_rows} rows, more than ingest.max_rows ({limits.max_rows})")
    return table.rename_columns([str(c).strip() for c in table.column_names]), dialect


def read_raw_table(path: Path, csv_format: CsvFormat = AUTO_FORMAT, limits: ReadLimits = DEFAULT_LIMITS) -> pa.Table:
    """Read a cohort table with every column as text (validation happens in ingestion, not here).

    Returns an Arrow table so that large files are validated with Arrow compute kernels without
    ever becoming Python objects. Empty fields are nulls.
    """
    return read_table_file(path, "", csv_format, limits)[0]


def _check_columns(spec: TableSpec, path: Path, table: pa.Table, may_be_empty: bool) -> None:
    _check_required(path, table.column_names, spec.required_columns, None)
    first_seen: dict[str, int] = {}
    for i, column in enumerate(table.column_names):
        if column in first_seen:
            # Only the contract's own names are printed: a header cell may hold anything.
            named = f"column '{column}'" if column in spec.required_columns else "a column name"
            raise UserError(f"{path}: {named} appears twice (columns {first_seen[column] + 1} and {i + 1})")
        first_seen[column] = i
    if table.num_rows == 0 and not may_be_empty:
        raise UserError(f"{path}: table '{spec.name}' has no rows")


def read_cohort(
    cohort_dir: str | Path,
    optional_tables: tuple[str, ...] = (),
    *,
    csv_format: CsvFormat = AUTO_FORMAT,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> dict[str, RawTable]:
    """Read every cohort table as text; raise :class:`UserError` for file-level problems.

    ``optional_tables`` may be absent or empty even if the contract requires them for training (new
    patients scored by ``crs predict`` have no events yet). ``csv_format`` is ``cohort.csv`` (``auto``
    detects each file's encoding, delimiter and decimal mark); ``limits`` are the ``ingest`` limits.
    """
    cohort_dir = Path(cohort_dir)
    raw: dict[str, RawTable] = {}
    for spec in TABLES:
        path = find_table(cohort_dir, spec.name, required=spec.required and spec.name not in optional_tables)
        if path is None:
            continue
        table, dialect = read_table_file(path, spec.name, csv_format, limits)
        _check_columns(spec, path, table, may_be_empty=not spec.required or spec.name in optional_tables)
        raw[spec.name] = RawTable(spec, path, table, dialect)
    return raw


def csv_dialects(raw: dict[str, RawTable]) -> dict[str, dict[str, Any]]:
    """Table -> how its CSV file was read (``reports/ingest.json`` ``csv_dialects``; Parquet tables omitted)."""
    return {name: {"path": str(t.path), **t.dialect.as_report()} for name, t in raw.items() if t.dialect}


__all__ = [
    "TABLE_SUFFIXES",
    "CsvFormat",
    "Dialect",
    "RawTable",
    "ReadLimits",
    "csv_dialects",
    "find_table",
    "read_cohort",
    "read_raw_table",
    "read_table_file",
]
