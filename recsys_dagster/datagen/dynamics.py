"""What changes from day to day: the temporal dynamics real logs have and a static world lacks.

- Listings are hottest when new and fade with age; some get a burst of interest for a few
  days (featured on the home page, a price drop, shared around).
- Categories drift: seasons (skis rise in autumn, bikes fade), weekends (pick-up items),
  and a slow random walk per category.
- Users come and go in streaks (a mission over a few days, then quiet), and remember what
  they looked at: they re-open items and return to those categories.

Together these make "popular over the last days" a better guess than "popular ever", as in
real marketplaces (bench/baselines_on_demo.py measures it), while personal history
(item-kNN) still beats both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from recsys_dagster.contract import EVENT_TYPES, EVENT_WEIGHTS
from recsys_dagster.datagen.catalog import Catalog
from recsys_dagster.datagen.clock import MS_PER_DAY
from recsys_dagster.datagen.taxonomy import LEAVES

# A listing's interest x (FLOOR + (1 - FLOOR) * exp(-age / TAU)): most of it in the first days.
AGE_TAU_DAYS = 3.0
AGE_FLOOR = 0.5
# Bursts: some new listings are featured, and now and then an older one takes off.
P_FEATURED_NEW = 0.10
FEATURED_DAYS = (1, 3)
P_BURST_PER_DAY = 0.006
BURST_DAYS = (2, 5)
BURST_LOG_BOOST = (1.0, 2.2)
# Category drift: seasonal peaks (day of year, log amplitude), weekend pick-ups, a random walk.
SEASONS: dict[str, tuple[int, float]] = {
    "Sports > Winter": (355, 1.0),
    "Fashion > Women > Jackets": (320, 0.6),
    "Fashion > Men > Jackets": (320, 0.6),
    "Kids > Toys": (350, 0.6),
    "Electronics > Gaming": (350, 0.4),
    "Vehicles > Bikes": (130, 0.7),
    "Vehicles > Motorcycles": (120, 0.7),
    "Sports > Outdoor": (170, 0.6),
    "Home > Garden": (110, 0.6),
}
WEEKEND_BULKY_LOG = 0.3
LEAF_WALK_PHI, LEAF_WALK_SIGMA = 0.85, 0.35  # AR(1) in log space, stationary sigma
# Sessions per weekday (Mon..Sun): Sunday evening is a marketplace's peak.
WEEKDAY_ACTIVITY = np.array([0.95, 0.9, 0.92, 0.95, 0.93, 1.08, 1.27])
# A user's activity streaks: AR(1) of the log session rate, stationary sigma.
STREAK_PHI, STREAK_SIGMA = 0.65, 0.9
MEMORY = 24  # items a user remembers (most recent, distinct)
MEMORY_RECENCY = 0.85  # weight of the k-th most recent remembered item: RECENCY ** k

_EVENT_W = np.array([EVENT_WEIGHTS[t] for t in EVENT_TYPES], dtype=np.float64)
_BULKY = np.array([leaf.bulky for leaf in LEAVES])


def _season_peaks() -> tuple[np.ndarray, np.ndarray]:
    peak = np.zeros(len(LEAVES))
    amp = np.zeros(len(LEAVES))
    for i, leaf in enumerate(LEAVES):
        for prefix, (p, a) in SEASONS.items():
            if leaf.path.startswith(prefix):
                peak[i], amp[i] = p, a
    return peak, amp


_PEAK, _AMP = _season_peaks()


def age_log_factor(age_days: np.ndarray) -> np.ndarray:
    """Log of a listing's interest by age (0 when new, log(FLOOR) long after)."""
    return np.log(AGE_FLOOR + (1.0 - AGE_FLOOR) * np.exp(-np.maximum(age_days, 0.0) / AGE_TAU_DAYS))


@dataclass
class World:
    """The day-to-day state of the marketplace, advanced by `start_day` and `remember`."""

    leaf_walk: np.ndarray  # [n_leaves] random-walk log interest
    streak: np.ndarray  # [n_users] log activity multiplier
    burst_until: np.ndarray  # [catalog capacity] last day index of the item's burst (-1 none)
    burst_log: np.ndarray  # [catalog capacity] log interest boost while it lasts
    memory: np.ndarray  # [n_users, MEMORY] item rows, most recent last, -1 empty
    memory_w: np.ndarray  # [n_users, MEMORY] strongest event weight on each remembered item
    # Today's values, set by start_day:
    leaf_log: np.ndarray  # [n_leaves] category interest today (log multiplier)
    activity_mult: np.ndarray  # [n_users] sessions multiplier today

    @staticmethod
    def create(rng: np.random.Generator, n_users: int, capacity: int) -> World:
        n_leaves = len(LEAVES)
        return World(
            leaf_walk=rng.normal(0.0, LEAF_WALK_SIGMA, n_leaves),
            streak=rng.normal(0.0, STREAK_SIGMA, n_users),
            burst_until=np.full(capacity, -1, dtype=np.int64),
            burst_log=np.zeros(capacity),
            memory=np.full((n_users, MEMORY), -1, dtype=np.int64),
            memory_w=np.zeros((n_users, MEMORY)),
            leaf_log=np.zeros(n_leaves),
            activity_mult=np.ones(n_users),
        )

    def start_day(
        self, rng: np.random.Generator, day: int, today: date, snapshot: np.ndarray, new_rows: np.ndarray
    ) -> None:
        """Advance the walks, start today's bursts, and set today's category and user multipliers."""
        eps = np.sqrt(1.0 - LEAF_WALK_PHI**2) * LEAF_WALK_SIGMA
        self.leaf_walk = LEAF_WALK_PHI * self.leaf_walk + rng.normal(0.0, eps, len(self.leaf_walk))
        doy = today.timetuple().tm_yday
        season = _AMP * np.cos(2 * np.pi * (doy - _PEAK) / 365.0)
        weekend = today.weekday() >= 5
        self.leaf_log = self.leaf_walk + season + (WEEKEND_BULKY_LOG * _BULKY if weekend else 0.0)

        eps = np.sqrt(1.0 - STREAK_PHI**2) * STREAK_SIGMA
        self.streak = STREAK_PHI * self.streak + rng.normal(0.0, eps, len(self.streak))
        # Mean-one multiplier, so streaks reshuffle activity without changing the volume.
        self.activity_mult = WEEKDAY_ACTIVITY[today.weekday()] * np.exp(self.streak - STREAK_SIGMA**2 / 2)

        featured = new_rows[rng.random(len(new_rows)) < P_FEATURED_NEW]
        self._burst(rng, featured, day, FEATURED_DAYS)
        calm = snapshot[self.burst_until[snapshot] < day]
        self._burst(rng, calm[rng.random(len(calm)) < P_BURST_PER_DAY], day, BURST_DAYS)

    def _burst(self, rng: np.random.Generator, rows: np.ndarray, day: int, days: tuple[int, int]) -> None:
        self.burst_until[rows] = day + rng.integers(days[0], days[1] + 1, len(rows)) - 1
        self.burst_log[rows] = rng.uniform(*BURST_LOG_BOOST, len(rows))

    def item_log_interest(self, catalog: Catalog, rows: np.ndarray, day: int, day_start: int) -> np.ndarray:
        """Today's log interest of listings `rows`: appeal, age, burst (category excluded)."""
        age = (day_start + MS_PER_DAY // 2 - catalog.created_ms[rows]) / MS_PER_DAY
        burst = np.where(self.burst_until[rows] >= day, self.burst_log[rows], 0.0)
        return catalog.log_appeal[rows] + age_log_factor(age) + burst

    def remember(self, user: np.ndarray, item: np.ndarray, event_type: np.ndarray, ts_ms: np.ndarray) -> None:
        """Push the day's touched items into each user's memory (distinct, most recent last)."""
        if len(user) == 0:
            return
        order = np.lexsort((ts_ms, user))
        u_sorted, it_sorted = user[order], item[order]
        w_sorted = _EVENT_W[event_type[order]]
        cuts = np.flatnonzero(np.diff(u_sorted)) + 1
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(order)].tolist()):
            u = int(u_sorted[lo])
            kept: dict[int, float] = {}
            for it, w in zip(self.memory[u].tolist(), self.memory_w[u].tolist()):
                if it >= 0:
                    kept[it] = w
            for it, w in zip(it_sorted[lo:hi].tolist(), w_sorted[lo:hi].tolist()):
                kept[it] = max(kept.pop(it, 0.0), w)  # re-touched: moves to the most recent end
            last = list(kept.items())[-MEMORY:]
            self.memory[u] = -1
            self.memory_w[u] = 0.0
            self.memory[u, MEMORY - len(last) :] = [it for it, _ in last]
            self.memory_w[u, MEMORY - len(last) :] = [w for _, w in last]

    def pick_remembered(
        self, rng: np.random.Generator, user: np.ndarray, available: np.ndarray, engagement: float = 1.0
    ) -> np.ndarray:
        """Per row, a remembered item of that user still for sale: recent ones first and, by
        `engagement`, those they went further with (favourite, contact); -1 where the user
        remembers none. `available` is a bool mask over catalog rows."""
        mem = self.memory[user]
        ok = (mem >= 0) & available[np.maximum(mem, 0)]
        recency = np.log(MEMORY_RECENCY) * np.arange(MEMORY - 1, -1, -1)
        logits = recency[None, :] + engagement * np.log(self.memory_w[user] + 1.0) + rng.gumbel(size=mem.shape)
        logits = np.where(ok, logits, -np.inf)
        best = np.argmax(logits, axis=1)
        picked = mem[np.arange(len(user)), best]
        return np.where(ok[np.arange(len(user)), best], picked, -1)
