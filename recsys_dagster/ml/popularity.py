"""Time-aware item features of the item tower: how often an item was a positive in the
days before a given day, and how old it was then.

Real logs are dominated by what is trending; an item tower that sees only id and content
cannot tell last month's hit from today's. `ItemClock` answers "counts in the w days before
day d" for any (item, day) pair from the positives sorted once, so every training example
reads the popularity *as of its own day* (no look-ahead), and the catalog is embedded with
the popularity as of the cut its vectors are used from.

numpy only; the unit of time is the UTC day (examples of one day share features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY_US = 86_400_000_000
# Windows (days before the example's day) whose log counts the item tower reads, plus age.
WINDOWS_DAYS = (1, 7, 28)
N_TIME_FEATURES = len(WINDOWS_DAYS) + 1
_NO_AGE = -1.0  # first_seen unknown


def day_of(us: np.ndarray | int) -> np.ndarray:
    """UTC day number of microsecond timestamps."""
    return np.floor_divide(np.asarray(us, dtype=np.int64), DAY_US)


def first_seen_days(items: pa.Table) -> np.ndarray:
    """float64 [items.num_rows]: the `first_seen` day of each row (fractional), NaN when null."""
    if "first_seen" not in items.column_names:
        return np.full(items.num_rows, np.nan)
    us = pc.cast(pc.cast(items.column("first_seen"), pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.float64) / DAY_US


def first_seen_by_index(index: np.ndarray, items: pa.Table, n_ids: int) -> np.ndarray:
    """float64 [n_ids]: `first_seen_days` of `items` placed at each row's id index (`index`,
    0 = unknown, left out); NaN where no row or no first_seen."""
    first = np.full(n_ids, np.nan)
    known = index > 0
    first[index[known]] = first_seen_days(items)[known]
    return first


@dataclass(frozen=True)
class ItemClock:
    """Positives keyed `item * span + day`, sorted, and each item's first_seen day."""

    keys: np.ndarray  # int64, sorted
    first_day: np.ndarray  # float64 [n_items], NaN = unknown
    day0: int
    span: int

    @classmethod
    def fit(cls, item: np.ndarray, ts_us: np.ndarray, first_day: np.ndarray) -> ItemClock:
        """`item`: item index per positive (0 = unknown, ignored); `ts_us`: its time;
        `first_day`: per item index, the day it was first seen (NaN unknown)."""
        item, days = np.asarray(item, dtype=np.int64), day_of(ts_us)
        keep = item > 0
        item, days = item[keep], days[keep]
        day0 = int(days.min()) - max(WINDOWS_DAYS) - 1 if len(days) else 0
        # Room for any query day up to ~3 years past the data without keys overlapping.
        span = int(days.max() - day0 + 1200) if len(days) else 1200
        return cls(np.sort(item * span + (days - day0)), np.asarray(first_day, dtype=np.float64), day0, span)

    def _count(self, item: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Positives of `item` on days in [lo, hi)."""
        base = item * self.span
        lo = np.clip(lo - self.day0, 0, self.span - 1)
        hi = np.clip(hi - self.day0, 0, self.span - 1)
        return np.searchsorted(self.keys, base + hi) - np.searchsorted(self.keys, base + lo)

    def features(self, item: np.ndarray, day: np.ndarray, first_day: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, N_TIME_FEATURES]: log1p of the item's positives in each window of
        `WINDOWS_DAYS` before `day` (that day excluded), and log1p of its age in days on
        `day` (-1 when unknown). Item 0 (padding / unknown) has no positives; its age comes
        from `first_day` (per row) when given, as for a catalog item the model never saw."""
        item = np.asarray(item, dtype=np.int64)
        day = np.broadcast_to(np.asarray(day, dtype=np.int64), item.shape)
        out = np.empty((len(item), N_TIME_FEATURES), dtype=np.float32)
        for j, w in enumerate(WINDOWS_DAYS):
            out[:, j] = np.log1p(np.where(item > 0, self._count(item, day - w, day), 0))
        if first_day is None:
            first_day = np.where(item > 0, self.first_day[np.clip(item, 0, len(self.first_day) - 1)], np.nan)
        age = np.maximum(day - np.nan_to_num(first_day), 0.0)
        out[:, -1] = np.where(np.isfinite(first_day), np.log1p(age), _NO_AGE)
        return out
