"""One sorted stream of every row that can change a grade, and "the latest row of a kind in force".

All inputs become entries ``(patient code, time, kind, tie, value, label, end)`` in one array set sorted
by (patient, time, tie). Grades are evaluated at *grid points*: the last entry of each (patient, time)
run, so a grid point sees every row at its own time. Expiry times (a row's time plus its hold, a
vasopressor's stop) enter the stream as ``EXPIRY`` entries, which makes them grid points without being
evidence. "The latest row of kind k at or before grid point g" is then a running maximum of entry
indices (``numpy.maximum.accumulate``): O(n) per domain, no per-patient loop, no look-ahead (a running
maximum only looks back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Entry kinds. EXPIRY entries only make grid points; the others are evidence of their own domain.
EXPIRY, FEVER, SBP, MAP, FLOW, DEVICE, VASO, DOSE, DEATH, ICE, CAPD = range(11)
#: ICANS term items get kinds from here on, in rules.ICANS_TERM_ITEMS order.
TERM_KIND0 = 11


@dataclass
class Parts:
    """Entries collected before sorting; ``labels`` is the shared list that ``label`` indexes."""

    labels: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def label_codes(self, words: np.ndarray) -> np.ndarray:
        """Strings -> indices into ``labels`` (a Python loop over the distinct words only)."""
        uniques, inverse = np.unique(np.asarray(words, dtype=object).astype(str), return_inverse=True)
        table = np.array([self._index.setdefault(w, len(self._index)) for w in uniques], dtype=np.int32)
        self.labels[:] = sorted(self._index, key=self._index.__getitem__)
        return table[inverse] if len(uniques) else np.zeros(0, dtype=np.int32)

    def add(self, code: np.ndarray, time: np.ndarray, kind: int, *, tie: np.ndarray | float = 0.0,
            value: np.ndarray | float = np.nan, label: np.ndarray | int = -1,
            end: np.ndarray | float = np.nan) -> None:
        n = len(code)
        if n == 0:
            return
        self._parts.append({
            "code": np.asarray(code, dtype=np.int64), "time": np.asarray(time, dtype=np.float64),
            "kind": np.full(n, kind, dtype=np.int16), "tie": np.broadcast_to(tie, n).astype(np.float64),
            "value": np.broadcast_to(value, n).astype(np.float64),
            "label": np.broadcast_to(label, n).astype(np.int32), "end": np.broadcast_to(end, n).astype(np.float64),
        })

    def expiry(self, code: np.ndarray, time: np.ndarray) -> None:
        """Grid points where a held value lapses (the grade is re-evaluated there)."""
        self.add(code, time, EXPIRY)

    def build(self) -> Stream:
        columns = ("code", "time", "kind", "tie", "value", "label", "end")
        dtypes = (np.int64, np.float64, np.int16, np.float64, np.float64, np.int32, np.float64)
        arrays = {c: (np.concatenate([p[c] for p in self._parts]) if self._parts else np.zeros(0, dtype=d))
                  for c, d in zip(columns, dtypes, strict=True)}
        # Worst value last at equal (patient, time): the tie key is each kind's severity.
        order = np.lexsort((arrays["tie"], arrays["time"], arrays["code"]))
        return Stream(**{c: a[order] for c, a in arrays.items()}, labels=list(self.labels))


@dataclass
class Stream:
    code: np.ndarray
    time: np.ndarray
    kind: np.ndarray
    tie: np.ndarray
    value: np.ndarray
    label: np.ndarray
    end: np.ndarray
    labels: list[str]
    grid: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.code)
        last_of_run = np.ones(n, dtype=bool)
        if n:
            last_of_run[:-1] = (self.code[1:] != self.code[:-1]) | (self.time[1:] != self.time[:-1])
        self.grid = np.flatnonzero(last_of_run)

    @property
    def gcode(self) -> np.ndarray:
        return self.code[self.grid]

    @property
    def gtime(self) -> np.ndarray:
        return self.time[self.grid]

    def latest(self, mask: np.ndarray, hold: float = np.inf) -> np.ndarray:
        """At each grid point: the index of the latest entry with ``mask`` of the same patient whose
        time t0 satisfies ``grid time < t0 + hold`` (held over [t0, t0 + hold)), else -1. The sum is the
        same float as the row's EXPIRY entry, so the value lapses exactly at that grid point."""
        index = np.where(mask, np.arange(len(mask)), -1)
        j = np.maximum.accumulate(index)[self.grid] if len(index) else index
        safe = np.maximum(j, 0)
        ok = (j >= 0) & (self.code[safe] == self.gcode) & (self.gtime < self.time[safe] + hold)
        return np.where(ok, j, -1)

    def take(self, column: np.ndarray, j: np.ndarray, default: float) -> np.ndarray:
        """``column[j]`` where j >= 0, else ``default``."""
        return np.where(j >= 0, column[np.maximum(j, 0)], default)
