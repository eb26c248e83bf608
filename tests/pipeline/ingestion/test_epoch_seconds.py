"""``epoch_seconds`` reads UTC columns without ``dt.tz_localize`` (issue 14): the same seconds, bit for
bit, in every time unit, with missing anchors, and for other time zones (which keep the old path)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion.times import _EPOCH, epoch_seconds


def _reference(stamps: pd.Series) -> np.ndarray:
    return (stamps.dt.tz_localize(None).to_numpy() - _EPOCH) / np.timedelta64(1, "s")


moments = st.one_of(st.none(), st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(moments, max_size=6), unit=st.sampled_from(["s", "ms", "us", "ns"]),
       tz=st.sampled_from(["UTC", "Europe/Paris"]))
def test_same_seconds_as_tz_localize(values: list[dt.datetime | None], unit: str, tz: str) -> None:
    stamps = pd.Series(pd.to_datetime(values, utc=True)).dt.as_unit(unit).dt.tz_convert(tz)
    np.testing.assert_array_equal(epoch_seconds(stamps), _reference(stamps))


@pytest.mark.parametrize(("text", "utc"), [
    ("2023-04-04T09:48:00", dt.datetime(2023, 4, 4, 9, 48, tzinfo=dt.UTC)),
    ("2023-04-04T09:48:00.123456+02:00", dt.datetime(2023, 4, 4, 7, 48, 0, 123456, tzinfo=dt.UTC)),
])
def test_hand_built_anchor(text: str, utc: dt.datetime) -> None:
    stamps = pd.to_datetime(pd.Series([text, None]), format="ISO8601", utc=True)
    seconds = epoch_seconds(stamps)
    assert seconds[0] == pytest.approx(utc.timestamp(), abs=1e-6) and np.isnan(seconds[1])
