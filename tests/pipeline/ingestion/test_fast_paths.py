"""The fast paths of ingest read exactly what the general ones read (issue 14): each is compared with
the general reading on inputs built to find the cases where they could part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.ingestion.checks import RowChecks
from pipeline.ingestion.measurements import _patient_rows
from pipeline.ingestion.text import INFINITY, _parse_censored_python, parse_censored
from pipeline.ingestion.times import _timestamp_seconds, epoch_seconds, patient_time_runs

CANONICAL = "2024-01-03T12:00:00"


def _general_seconds(texts: list[str | None]) -> np.ndarray:
    """What ingest read before the fast path: every value through pandas' ISO 8601 parser."""
    text = pd.Series(texts, dtype="str").str.strip()
    return epoch_seconds(pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True))


def _mutants(rng: np.random.Generator, n: int) -> list[str]:
    """The canonical stamp with one to three characters changed: 19 bytes, mostly not a valid stamp."""
    alphabet = list("0123456789-: TZ+.")
    out = []
    for _ in range(n):
        chars = list(CANONICAL)
        for _ in range(rng.integers(1, 4)):
            chars[rng.integers(0, 19)] = alphabet[rng.integers(0, len(alphabet))]
        out.append("".join(chars))
    return out


def test_plain_iso_fast_path_reads_what_pandas_reads() -> None:
    rng = np.random.default_rng(14)
    stamps = np.datetime64("1990-01-01T00:00:00") + rng.integers(0, 60 * 365 * 86400, 3000).astype("timedelta64[s]")
    clean = list(np.datetime_as_string(stamps, unit="s"))
    spaced = [t.replace("T", " ") for t in clean[:500]]
    odd = _mutants(rng, 4000) + ["0001-01-01T00:00:00", "9999-12-31T23:59:59", "1677-09-21T00:12:43",
                                 "2262-04-12T00:00:00", "2024-02-29T12:00:00", "2023-02-29T12:00:00",
                                 " 2024-01-03T12:00:0", "2024-01-03T12:00+02", None, "", "  "]
    # Clean chunks take the fast path whole; chunks with odd rows fall back in part or whole.
    chunks = [clean[:1000], spaced, clean[1000:] + odd[:50], odd[50:]]
    column = pa.chunked_array([pa.array(c, pa.string()) for c in chunks])
    got = _timestamp_seconds(column).seconds
    want = _general_seconds([t for c in chunks for t in c])
    np.testing.assert_array_equal(got, want)  # NaN where both fail
    assert np.isfinite(got).sum() > 3500


@pytest.mark.parametrize("seed", range(6))
def test_patient_time_runs_is_a_stable_lexsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in (1, 2, 17, 500, 20_000):
        patient = rng.integers(0, max(1, n // 10), n)
        hours = [rng.normal(0, 100, n), rng.integers(-3, 3, n).astype(float),  # many exact ties
                 np.where(rng.random(n) < 0.5, 3.0e38, rng.normal(0, 1e-9, n)),  # a span no key resolves
                 np.round(rng.normal(0, 1e4, n) * 3600) / 3600, np.zeros(n) * -1.0][seed % 5]
        if seed == 5:  # already in order: no sort
            patient, hours = np.sort(patient), np.zeros(n)
        order, same = patient_time_runs(patient, hours)
        want = np.lexsort((hours, patient))
        np.testing.assert_array_equal(order, want)
        p, h = patient[want], hours[want]
        np.testing.assert_array_equal(same[1:], (p[1:] == p[:-1]) & (h[1:] == h[:-1]))
        assert not same[:1].any()


def test_censored_values_read_as_the_python_expression_reads_them() -> None:
    rng = np.random.default_rng(3)
    numbers = [repr(x) for x in rng.normal(0, 1e3, 2000)] + [f"{x:.17g}" for x in rng.random(2000)]
    numbers += ["1e400", "-0", ".5", "5.", "1e-400", "00012", "1E5", "+3"]
    signs = ["<", "<=", ">", ">=", "≤", "≥", "< ", "<\t", "<\u00a0", "<\x0b", "= ", ""]
    texts = [signs[i % len(signs)] + n for i, n in enumerate(numbers)]
    texts += ["<١٥", "<1.5\n", "inf", "-Infinity", "INF", "<inf", "hemolyzed", "<", "<=x", " < 2 ", "<<2"]
    column = pa.array(texts)
    rows = np.ones(len(texts), dtype=bool)
    got_v, got_c = np.full(len(texts), np.nan), np.zeros(len(texts), np.int8)
    parse_censored(column, rows, got_v, got_c)
    want_v, want_c = np.full(len(texts), np.nan), np.zeros(len(texts), np.int8)
    _parse_censored_python(column, np.arange(len(texts)), want_v, want_c)
    text = column.to_pandas()
    infinite = text.str.fullmatch(INFINITY).fillna(False).to_numpy(bool)
    want_v[infinite] = np.where(text[infinite].str.startswith("-"), -np.inf, np.inf)
    np.testing.assert_array_equal(got_v.view(np.int64)[~np.isnan(got_v)], want_v.view(np.int64)[~np.isnan(want_v)])
    np.testing.assert_array_equal(np.isnan(got_v), np.isnan(want_v))
    np.testing.assert_array_equal(got_c, want_c)
    assert (got_c > 0).sum() > 1500


def test_patient_ids_found_fast_or_after_trimming() -> None:
    patients = pd.DataFrame({"patient_id": pd.array(["P1", "P2", "P3"], dtype="string")})
    texts = ["P2", " P1", "P3 ", "", None, "  ", "P9", "p1", "P1", "\u00a0P2"]
    column = pa.chunked_array([pa.array(texts[:4]), pa.array(texts[4:])])
    checks = RowChecks(len(texts))
    rows = _patient_rows(column, patients, checks)
    np.testing.assert_array_equal(rows, [1, 0, 2, -1, -1, -1, -1, -1, 0, 1])
    np.testing.assert_array_equal(checks.codes, [0, 0, 0, 1, 1, 1, 2, 2, 0, 0])
