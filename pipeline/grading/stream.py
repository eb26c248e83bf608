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
import pandas as pd

#: Entry kinds. EXPIRY entries only make grid points; the others are evidence of their own domain.
EXPIRY, FEVER, SBP, MAP, FLOW, DEVICE, VASO, DOSE, DEATH, ICE, CAPD = range(11)
#: ICANS term items get kinds from here on, in rules.ICANS_TERM_ITEMS order.
TERM_KIND0 = 11


#: Up to this many words, :meth:`Parts.label_codes` codes them in plain Python (same codes).
_SMALL = 64


@dataclass
class Parts:
    """Entries collected before sorting; ``labels`` is the shared list that ``label`` indexes."""

    labels: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def label_codes(self, words: np.ndarray) -> np.ndarray:
        """Strings -> indices into ``labels`` (a Python loop over the distinct words only)."""
        words = np.asarray(words, dtype=object)
        if len(words) <= _SMALL and all(type(w) is str for w in words):  # a few texts: no pandas round trip
            first = dict.fromkeys(words)  # distinct words in order of appearance, as pd.factorize
            uniques = list(first)
            first.update(zip(uniques, range(len(uniques)), strict=True))
            inverse = np.array([first[w] for w in words], dtype=np.intp)
        else:
            inverse, uniques = pd.factorize(pd.Series(words).astype(str))
        table = np.array([self._index.setdefault(w, len(self._index)) for w in uniques], dtype=np.int32)
        self.labels[:] = sorted(self._index, key=self._index.__getitem__)
        return table[inverse] if len(uniques) else np.zeros(0, dtype=np.int32)

    def add(self, code: np.ndarray, time: np.ndarray, kind: int, *, tie: np.ndarray | float = 0.0,
            value: np.ndarray | float = np.nan, label: np.ndarray | int = -1,
            end: np.ndarray | float = np.nan) -> None:
        finite = np.isfinite(np.asarray(time, dtype=np.float64))
        if not finite.all():  # an infinite stop or expiry is never reached: no grid point for it
            keep = lambda a: a[finite] if np.ndim(a) else a  # noqa: E731
            code, time, tie, value, label, end = map(keep, (code, time, tie, value, label, end))
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
        order = sort_order(arrays["code"], arrays["time"], arrays["kind"], arrays.pop("tie"))
        return Stream(**{c: a[order] for c, a in arrays.items()}, labels=list(self.labels))


def sort_order(code: np.ndarray, time: np.ndarray, kind: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """The order by (code, time), and by ``tie`` among entries of one kind at one time (worst last).

    An exact three-key lexsort of millions of entries is the slowest step, so: one stable sort of a
    float key ``code * width + time`` (each part arrives sorted, so timsort merges runs), then an exact
    re-sort of just the runs of equal keys that need one (distinct times that rounded together, or two
    entries of one kind at one time). ``width`` leaves a factor-2 margin so rounding never crosses
    patients; different keys are therefore already in exact (code, time) order.
    """
    if len(code) == 0:
        return np.zeros(0, dtype=np.int64)
    offset = time - time.min()
    width = 2.0 ** (np.ceil(np.log2(offset.max() + 1.0)) + 1)
    key = code * width + offset
    order = np.argsort(key, kind="stable")
    key = key[order]
    tied = key[1:] == key[:-1]
    pairs = np.flatnonzero(tied)
    t, k = time[order[pairs]], kind[order[pairs]]
    t_next, k_next = time[order[pairs + 1]], kind[order[pairs + 1]]
    needs = pairs[(t != t_next) | (k == k_next)]
    if not len(needs):
        return order
    # Expand each flagged pair to its whole run of equal keys: [start of run, end of run].
    starts = np.flatnonzero(np.r_[True, ~tied])
    ends = np.r_[starts[1:], len(key)]
    runs = np.unique(np.searchsorted(starts, needs, side="right") - 1)
    lengths = ends[runs] - starts[runs]
    positions = np.repeat(starts[runs] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    run = np.repeat(np.arange(len(runs)), lengths)
    entries = order[positions]
    order[positions] = entries[np.lexsort((tie[entries], time[entries], run))]
    return order


@dataclass
class Stream:
    code: np.ndarray
    time: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    label: np.ndarray
    end: np.ndarray
    labels: list[str]
    grid: np.ndarray = field(init=False)  # entry index of each grid point
    gcode: np.ndarray = field(init=False)  # patient code of each grid point
    gtime: np.ndarray = field(init=False)  # time of each grid point
    entry_grid: np.ndarray = field(init=False)
    gfirst: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.code)
        last_of_run = np.ones(n, dtype=bool)
        if n:
            last_of_run[:-1] = (self.code[1:] != self.code[:-1]) | (self.time[1:] != self.time[:-1])
        self.grid = np.flatnonzero(last_of_run)
        self.gcode, self.gtime = self.code[self.grid], self.time[self.grid]
        # Grid point of each entry: the end of its (patient, time) run.
        self.entry_grid = np.cumsum(last_of_run) - last_of_run
        # First entry of each grid point's patient: an entry before it belongs to another patient.
        first = np.ones(len(self.grid), dtype=bool)
        first[1:] = self.gcode[1:] != self.gcode[:-1]
        starts = np.r_[0, self.grid[:-1] + 1][first] if len(self.grid) else np.zeros(0, dtype=np.int64)
        self.gfirst = np.repeat(starts, np.diff(np.r_[np.flatnonzero(first), len(self.grid)]))
        self._cache: dict[int, np.ndarray] = {}

    def latest_kind(self, kind: int, hold: float = np.inf) -> np.ndarray:
        """``latest(self.kind == kind, hold)``, with the hold-free scan cached per kind."""
        if kind not in self._cache:
            self._cache[kind] = self._scan(np.flatnonzero(self.kind == kind))
        return self._in_force(self._cache[kind], hold)

    def latest(self, mask: np.ndarray, hold: float = np.inf) -> np.ndarray:
        """At each grid point: the index of the latest entry with ``mask`` of the same patient whose
        time t0 satisfies ``grid time < t0 + hold`` (held over [t0, t0 + hold)), else -1. The sum is the
        same float as the row's EXPIRY entry, so the value lapses exactly at that grid point."""
        return self._in_force(self._scan(np.flatnonzero(mask)), hold)

    def _scan(self, positions: np.ndarray) -> np.ndarray:
        """Latest of ``positions`` (ascending entry indices) at or before each grid point, any patient.
        Works on the grid (smaller than the stream): the last entry per grid point, then a running max."""
        latest = np.full(len(self.grid), -1, dtype=np.int64)
        if len(positions):
            g = self.entry_grid[positions]
            last = np.ones(len(g), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            latest[g[last]] = positions[last]
            np.maximum.accumulate(latest, out=latest)
        return latest

    def _in_force(self, j: np.ndarray, hold: float) -> np.ndarray:
        ok = j >= self.gfirst  # also rejects -1
        if np.isfinite(hold):
            ok &= self.gtime < self.time[np.maximum(j, 0)] + hold
        return np.where(ok, j, -1)

    def take(self, column: np.ndarray, j: np.ndarray, default: float) -> np.ndarray:
        """``column[j]`` where j >= 0, else ``default``."""
        return np.where(j >= 0, column[np.maximum(j, 0)], default)
