"""SAS transport (XPORT v5) data as Arrow text, vectorised: the SDTM adapter's fast path for large domains.

pyreadstat reads the header (names, types, widths) and so checks the file is a transport file; this module
then reads the fixed-width observation block with numpy: character variables become Arrow strings (trailing
blanks removed, empty -> null) built from offsets without a Python object per row, numbers are IBM
floating point converted to IEEE in bulk. Anything it does not recognise (version 8 files, several members,
a layout that does not add up, non-ASCII text) returns None and the caller reads with pyreadstat instead,
so the two paths give the same table (tests compare them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

_RECORD = 80
_HEADER = b"HEADER RECORD*******"
_NAMESTR = _HEADER + b"NAMESTR HEADER RECORD!!!!!!!"
_OBS = _HEADER + b"OBS     HEADER RECORD!!!!!!!"
_MEMBER = _HEADER + b"MEMBER  HEADER RECORD!!!!!!!"
_CHUNK_ROWS = 1 << 20
#: First byte of an IBM missing value: "." and the special missing values ._ and .A-.Z.
_MISSING_FIRST = np.array([0x2E, 0x5F, *range(0x41, 0x5B)], dtype=np.uint8)


@dataclass(frozen=True)
class Variable:
    name: str
    numeric: bool
    width: int
    position: int


def _namestrs(head: bytes, start: int, count: int, size: int) -> list[Variable]:
    out = []
    for i in range(count):
        rec = head[start + i * size:start + (i + 1) * size]
        ntype = int.from_bytes(rec[0:2], "big")
        out.append(Variable(rec[8:16].decode("ascii").strip(), ntype == 1, int.from_bytes(rec[4:6], "big"),
                            int.from_bytes(rec[84:88], "big")))
    return out


def layout(data: bytes) -> tuple[list[Variable], int] | None:
    """Variables and the offset of the observations of a one-member v5 file, or None."""
    if data.count(_MEMBER) != 1 or data.count(_OBS) != 1:
        return None
    member = data.index(_MEMBER)
    size = int(data[member + 74:member + 78].decode("ascii").strip() or 140)
    names = data.index(_NAMESTR)
    count = int(data[names + 54:names + 58].decode("ascii"))
    variables = _namestrs(data, names + _RECORD, count, size)
    obs = data.index(_OBS) + _RECORD
    expected = names + _RECORD + -(-count * size // _RECORD) * _RECORD
    if obs != expected + _RECORD or any(v.width < 1 for v in variables):
        return None
    return variables, obs


def _ibm_to_ieee(raw: np.ndarray) -> np.ndarray:
    """(n, width) big-endian IBM floats (width 2-8, truncated on the right) -> float64, NaN for missing."""
    padded = np.zeros((raw.shape[0], 8), dtype=np.uint8)
    padded[:, : raw.shape[1]] = raw
    bits = padded.view(">u8").ravel().astype(np.uint64)
    mantissa = (bits & np.uint64(0x00FFFFFFFFFFFFFF)).astype(np.float64)
    exponent = ((bits >> np.uint64(56)) & np.uint64(0x7F)).astype(np.int64)
    value = np.ldexp(mantissa, (4 * (exponent - 64) - 56).astype(np.int32))
    value = np.where((bits >> np.uint64(63)) == 1, -value, value)
    missing = np.isin(padded[:, 0], _MISSING_FIRST) & ~padded[:, 1:].any(axis=1)
    value[missing] = np.nan
    return value


def _text(raw: np.ndarray) -> pa.Array | None:
    """(n, width) blank-padded bytes -> Arrow strings (trailing blanks removed, empty -> null); None if not ASCII."""
    if raw.size and raw.max() >= 0x80:
        return None
    n, width = raw.shape
    filled = (raw != 0x20) & (raw != 0)
    lengths = np.where(filled.any(axis=1), width - np.argmax(filled[:, ::-1], axis=1), 0).astype(np.int32)
    keep = np.arange(width) < lengths[:, None]
    body = raw[keep]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    valid = lengths > 0
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(body.tobytes()), validity,
                                       int((~valid).sum()))


def _numbers_as_text(values: np.ndarray) -> pa.Array:
    return pa.array(values, from_pandas=True).cast(pa.string())


def read_columns(path: Path, wanted: set[str] | None = None) -> pa.Table | None:
    """The observations of a one-member XPORT v5 file as Arrow text (upper-case names), only ``wanted``
    variables (all if None); None when the file is not in the layout this reader knows."""
    data = path.read_bytes()
    found = layout(data)
    if found is None:
        return None
    variables, start = found
    row = sum(v.width for v in variables)
    if sum(v.width for v in variables) != max(v.position + v.width for v in variables) or row == 0:
        return None
    n = (len(data) - start) // row
    block = np.frombuffer(data, dtype=np.uint8, count=n * row, offset=start).reshape(n, row)
    while n and (len(data) - start) - (n - 1) * row <= _RECORD and not (block[n - 1] != 0x20).any():
        n -= 1  # the blanks padding the last 80-byte record are no observation
    chosen = [v for v in variables if wanted is None or v.name.upper() in wanted]
    columns: dict[str, list[pa.Array]] = {v.name.upper(): [] for v in chosen}
    for first in range(0, n, _CHUNK_ROWS):
        rows = block[first:min(n, first + _CHUNK_ROWS)]
        for v in chosen:
            raw = np.ascontiguousarray(rows[:, v.position:v.position + v.width])
            array = _numbers_as_text(_ibm_to_ieee(raw)) if v.numeric else _text(raw)
            if array is None:
                return None
            columns[v.name.upper()].append(array)
    return pa.table({name: pa.chunked_array(parts, pa.string()) for name, parts in columns.items()})
