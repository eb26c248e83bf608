"""SAS transport (XPORT v5) data as Arrow text, vectorised: the SDTM adapter's fast path for large domains.

pyreadstat reads the header (names, types, widths) and so checks the file is a transport file; this module
then reads the fixed-width observation block with numpy: character variables become Arrow strings (trailing
blanks removed, empty -> null) built from offsets without a Python object per row, numbers are IBM
floating point converted to IEEE in bulk. Anything it does not recognise (version 8 files, several members,
a layout that does not add up, text that is not UTF-8) returns None and the caller reads with pyreadstat instead,
so the two paths give the same table (tests compare them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    """(n, width) blank-padded bytes -> Arrow strings (trailing blanks and NULs removed, empty -> null), built
    on the fixed-width buffer without a copy per row; None if the bytes are not UTF-8 text."""
    n, width = raw.shape
    offsets = pa.py_buffer(np.arange(n + 1, dtype=np.int32) * np.int32(width))
    padded = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(raw))
    try:
        padded.validate(full=True)
    except pa.ArrowInvalid:
        return None
    trimmed = pc.ascii_rtrim(padded, characters=" \x00")
    empty = np.diff(np.frombuffer(trimmed.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * trimmed.offset)) == 0
    if not empty.any():
        return trimmed
    validity = pa.py_buffer(np.packbits(~empty, bitorder="little"))
    return pa.StringArray.from_buffers(n, trimmed.buffers()[1], trimmed.buffers()[2], validity, int(empty.sum()),
                                       trimmed.offset)


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

    def convert(v: Variable, rows: np.ndarray) -> pa.Array | None:
        raw = np.ascontiguousarray(rows[:, v.position:v.position + v.width])
        return _numbers_as_text(_ibm_to_ieee(raw)) if v.numeric else _text(raw)

    parts: dict[str, list[pa.Array]] = {v.name.upper(): [] for v in chosen}
    with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow and numpy kernels release the GIL
        for first in range(0, n, _CHUNK_ROWS):
            rows = block[first:min(n, first + _CHUNK_ROWS)]
            for v, array in zip(chosen, pool.map(convert, chosen, [rows] * len(chosen)), strict=True):
                if array is None:
                    return None
                parts[v.name.upper()].append(array)
    return pa.table({name: pa.chunked_array(arrays, pa.string()) for name, arrays in parts.items()})
