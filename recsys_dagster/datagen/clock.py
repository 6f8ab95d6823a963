"""Time helpers: epoch milliseconds <-> ISO-8601 strings, vectorised, and the
Central European offset (+01:00 / +02:00) that clients in local time report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

MS_PER_S = 1_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000

# Share of sessions by UTC hour: quiet at night, a lunch bump, the evening peak
# (20-22h local) and a tail before midnight, so that some sessions cross it.
HOURLY_WEIGHTS = np.array(
    [3.5, 2, 1, 0.6, 0.5, 0.6, 1.5, 3, 4.5, 5, 5.5, 6.5, 7, 6.5, 6, 6, 6.5, 7.5, 9, 10, 10, 9.5, 8, 6],
    dtype=np.float64,
)
HOURLY_WEIGHTS /= HOURLY_WEIGHTS.sum()


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * MS_PER_S)


def _last_sunday_ms(year: int, month: int) -> int:
    """01:00 UTC on the last Sunday of `month`: when the EU switches clocks."""
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    last -= timedelta(days=(last.weekday() - 6) % 7)
    return day_start_ms(last) + MS_PER_H


def cet_offset_minutes(ts_ms: np.ndarray) -> np.ndarray:
    """UTC offset of Central European (summer) time at each instant: 60 or 120."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    out = np.full(ts_ms.shape, 60, dtype=np.int64)
    if ts_ms.size == 0:
        return out
    years = ts_ms.astype("datetime64[ms]").astype("datetime64[Y]").astype(np.int64) + 1970
    for y in np.unique(years):
        start, end = _last_sunday_ms(int(y), 3), _last_sunday_ms(int(y), 10)
        out[(years == y) & (ts_ms >= start) & (ts_ms < end)] = 120
    return out


def iso_ms(ts_ms: np.ndarray, offset_min: np.ndarray | None = None) -> list[str]:
    """ISO-8601 with milliseconds: `...Z`, or local time with `+HH:MM` where offset > 0."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    if offset_min is None:
        offset_min = np.zeros(ts_ms.shape, dtype=np.int64)
    local = (ts_ms + offset_min * 60_000).astype("datetime64[ms]")
    text = np.datetime_as_string(local, unit="ms")
    suffix = {int(m): ("Z" if m == 0 else f"+{m // 60:02d}:{m % 60:02d}") for m in np.unique(offset_min)}
    return [t + suffix[int(m)] for t, m in zip(text.tolist(), offset_min.tolist())]


def iso_s(ts_ms: np.ndarray) -> list[str]:
    """ISO-8601 in UTC, whole seconds: `2026-10-05T14:03:22Z`."""
    text = np.datetime_as_string(np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]"), unit="s")
    return [t + "Z" for t in text.tolist()]
