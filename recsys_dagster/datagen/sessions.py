"""One day of browsing, vectorised: sessions with a drifting intent, item choice by
today's interest x user fit, and the view -> click -> favourite -> contact -> purchase funnel.

A view comes from one of three places, as in a marketplace app: the buyer's own search or
category browsing (intent), the home feed of what is hot right now (global), or an item they
looked at before (re-opened from favourites or history).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_dagster.contract import DEVICE_TYPES
from recsys_dagster.datagen.catalog import Catalog
from recsys_dagster.datagen.clock import HOURLY_WEIGHTS, MS_PER_H
from recsys_dagster.datagen.dynamics import World
from recsys_dagster.datagen.taxonomy import LEAVES, NEARBY_KM, city_distance_km, subtree_ids
from recsys_dagster.datagen.users import Users, sample_leaves, tilted_cdf

MEAN_VIEWS_PER_SESSION = 6.5
MAX_VIEWS_PER_SESSION = 60
MEAN_DWELL_S = 50.0
DRIFT_P = 0.06  # per view: the intent moves (to a sibling leaf or another interest)
NULL_SESSION_ID_P = 0.04  # old clients send no session id
REFERRER_P = 0.3
# Where views come from (the rest: intent). A session often opens on a remembered item.
P_FEED = 0.15
P_REVIEW, P_REVIEW_FIRST = 0.14, 0.35
FEED_ZIPF_S, FEED_ZIPF_OFFSET = 1.4, 6.0  # feed share of the item ranked r ~ (r + offset) ** -s
P_MISSION = 0.7  # a session's intent: the category of a remembered item (else long-term taste)
INTENT_SHARPNESS = 1.4  # >1: buyers agree more on the best items of a category (less browsing noise)
FAMILY_BONUS = 2.2  # logit bonus of the buyer's favourite brand/model
REVIEW_ENGAGEMENT = 1.3  # a re-opened item is more likely to go down the funnel
_REFERRERS = ("google", "newsletter", "facebook", "direct", "push")

# Funnel: P(click | view), P(favourite | click), P(contact | click), P(purchase | contact).
P_CLICK, P_FAVOURITE, P_CONTACT, P_PURCHASE = 0.30, 0.22, 0.14, 0.30
# Where in the dwell on an item each funnel step (in EVENT_TYPES order) happens.
_STEP_FRACTION = np.array([0.0, 0.15, 0.4, 0.6, 0.85])


@dataclass
class DayEvents:
    """Events in time order. `session_key` holds the client session id (None = null)."""

    user: np.ndarray
    item: np.ndarray
    event_type: np.ndarray  # index in EVENT_TYPES
    ts_ms: np.ndarray
    device: np.ndarray  # index in DEVICE_TYPES
    session_key: np.ndarray  # object: str | None
    referrer: np.ndarray  # object: str | None
    n_sessions: int = 0

    def __len__(self) -> int:
        return len(self.ts_ms)

    def take(self, idx: np.ndarray) -> DayEvents:
        return DayEvents(
            self.user[idx],
            self.item[idx],
            self.event_type[idx],
            self.ts_ms[idx],
            self.device[idx],
            self.session_key[idx],
            self.referrer[idx],
            self.n_sessions,
        )

    @staticmethod
    def concat(parts: list[DayEvents]) -> DayEvents:
        fields = ("user", "item", "event_type", "ts_ms", "device", "session_key", "referrer")
        cols = [np.concatenate([getattr(p, f) for p in parts]) for f in fields]
        return DayEvents(*cols, n_sessions=sum(p.n_sessions for p in parts))


_DIST = city_distance_km()
_CITY_FIT = np.where(_DIST == 0, 1.2, np.where(_DIST < NEARBY_KM, 0.5, 0.0))
_BULKY = np.array([2.0 if leaf.bulky else 1.0 for leaf in LEAVES])
_SUBTREE = subtree_ids()


def _siblings(leaf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random other leaf under the same level-2 parent (the leaf itself if it has none)."""
    out = leaf.copy()
    for s in np.unique(_SUBTREE[leaf]):
        members = np.flatnonzero(_SUBTREE == s)
        rows = np.flatnonzero(_SUBTREE[leaf] == s)
        out[rows] = members[rng.integers(len(members), size=len(rows))]
    return out


def _choose_items(
    rng: np.random.Generator,
    users: Users,
    catalog: Catalog,
    snapshot: np.ndarray,
    base: np.ndarray,
    user: np.ndarray,
    leaf: np.ndarray,
    ts: np.ndarray,
) -> np.ndarray:
    """Per view, an item of its leaf by Gumbel-max over today's interest (`base`, aligned with
    `snapshot`) + city, price and brand fit.

    Only items already listed at the view's time qualify. A view whose leaf has none falls
    back to any listed item by interest; -1 where nothing at all is listed yet.
    """
    chosen = np.full(len(user), -1, dtype=np.int64)
    if len(snapshot) == 0:
        return chosen
    item_leaf = catalog.leaf[snapshot]
    order = np.argsort(item_leaf, kind="stable")
    bounds = np.searchsorted(item_leaf[order], np.arange(len(LEAVES) + 1))
    for lf in np.unique(leaf):
        ev = np.flatnonzero(leaf == lf)
        cols = order[bounds[lf] : bounds[lf + 1]]
        if len(cols) == 0:
            continue
        items = snapshot[cols]
        u = user[ev]
        logits = (
            base[cols][None, :]
            + _BULKY[lf] * _CITY_FIT[users.city[u][:, None], catalog.city[items][None, :]]
            - 0.5
            * users.price_sensitivity[u][:, None]
            * (catalog.price_z[items][None, :] - users.price_z[u][:, None]) ** 2
            + FAMILY_BONUS * (catalog.family[items][None, :] == users.family[u, lf][:, None])
        )
        logits = np.where(catalog.created_ms[items][None, :] <= ts[ev][:, None], INTENT_SHARPNESS * logits, -np.inf)
        logits += rng.gumbel(size=logits.shape)
        best = np.argmax(logits, axis=1)
        ok = np.isfinite(logits[np.arange(len(ev)), best])
        chosen[ev[ok]] = items[best[ok]]
    missing = np.flatnonzero(chosen < 0)
    if len(missing):
        listed = catalog.created_ms[snapshot][None, :] <= ts[missing][:, None]
        logits = np.where(listed, base[None, :], -np.inf) + rng.gumbel(size=listed.shape)
        best = np.argmax(logits, axis=1)
        ok = listed[np.arange(len(missing)), best]
        chosen[missing[ok]] = snapshot[best[ok]]
    return chosen


def _feed_items(
    rng: np.random.Generator, catalog: Catalog, snapshot: np.ndarray, hot: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Per view, an item of the home feed: Zipf over the rank of today's global interest `hot`
    (aligned with `snapshot`), so the head's share stays put while who is in it drifts; -1
    where the draw was not listed yet at the view's time."""
    if len(snapshot) == 0 or len(ts) == 0:
        return np.full(len(ts), -1, dtype=np.int64)
    by_rank = snapshot[np.argsort(-hot, kind="stable")]
    cdf = np.cumsum((np.arange(len(snapshot)) + FEED_ZIPF_OFFSET) ** -FEED_ZIPF_S)
    pick = np.minimum(np.searchsorted(cdf, rng.random(len(ts)) * cdf[-1]), len(snapshot) - 1)
    items = by_rank[pick]
    return np.where(catalog.created_ms[items] <= ts, items, -1)


def simulate_day(
    rng: np.random.Generator,
    users: Users,
    catalog: Catalog,
    snapshot: np.ndarray,
    world: World,
    day: int,
    day_start: int,
    day_tag: str,
) -> DayEvents:
    """Sessions starting on the day (their events may run past midnight)."""
    n_sess_per_user = rng.poisson(users.activity * world.activity_mult)
    s_user = np.repeat(np.arange(users.n), n_sess_per_user)
    n_sess = len(s_user)
    hour = rng.choice(24, size=n_sess, p=HOURLY_WEIGHTS)
    s_start = day_start + hour * MS_PER_H + (rng.random(n_sess) * MS_PER_H).astype(np.int64)
    preferred = rng.random(n_sess) < 0.8
    s_device = np.where(preferred, users.device[s_user], rng.integers(len(DEVICE_TYPES), size=n_sess))
    s_key = np.array(
        [
            None if rng.random() < NULL_SESSION_ID_P else f"s-{day_tag}-{rng.integers(1 << 40):010x}"
            for _ in range(n_sess)
        ],
        dtype=object,
    )

    n_views = np.minimum(rng.geometric(1.0 / MEAN_VIEWS_PER_SESSION, size=n_sess), MAX_VIEWS_PER_SESSION)
    v_sess = np.repeat(np.arange(n_sess), n_views)
    first = np.repeat(np.cumsum(n_views) - n_views, n_views)
    pos = np.arange(len(v_sess)) - first
    v_user = s_user[v_sess]

    # Dwell on each item; now and then a pause (a call, a coffee) that stays under the
    # 30 min inactivity gap, so a session stays one session.
    dwell = rng.exponential(MEAN_DWELL_S * 1000, size=len(v_sess))
    dwell += np.where(rng.random(len(v_sess)) < 0.03, rng.uniform(2, 20, len(v_sess)) * 60_000, 0.0)
    dwell = dwell.astype(np.int64) + 2_000
    since_start = np.cumsum(dwell) - dwell
    v_ts = s_start[v_sess] + since_start - since_start[first]

    in_snapshot = np.zeros(catalog.n, dtype=bool)
    in_snapshot[snapshot] = True
    interest = world.item_log_interest(catalog, snapshot, day, day_start)
    cdf = tilted_cdf(users, world.leaf_log)

    # Intent: drawn at session start, often the category of something the buyer looked at
    # lately (a mission over days), drifting now and then to a sibling or another interest.
    remembered = world.pick_remembered(rng, s_user, in_snapshot, engagement=0.0)
    mission = (remembered >= 0) & (rng.random(n_sess) < P_MISSION)
    s_intent = np.where(mission, catalog.leaf[np.maximum(remembered, 0)], sample_leaves(rng, cdf, s_user))
    drift = (pos > 0) & (rng.random(len(v_sess)) < DRIFT_P)
    to_sibling = rng.random(len(v_sess)) < 0.5
    candidate = np.where(to_sibling, _siblings(s_intent[v_sess], rng), sample_leaves(rng, cdf, v_user))
    candidate = np.where(pos == 0, s_intent[v_sess], candidate)
    anchor = np.maximum.accumulate(np.where((pos == 0) | drift, np.arange(len(v_sess)), 0))
    v_leaf = candidate[anchor]

    # Where each view comes from: the home feed (what is hot today), a re-opened remembered
    # item, or else the intent (also when the feed's pick is not listed yet or nothing is remembered).
    source = rng.random(len(v_sess))
    v_item = np.full(len(v_sess), -1, dtype=np.int64)
    feed_rows = np.flatnonzero(source < P_FEED)
    hot = interest + world.leaf_log[catalog.leaf[snapshot]]
    v_item[feed_rows] = _feed_items(rng, catalog, snapshot, hot, v_ts[feed_rows])
    p_review = np.where(pos == 0, P_REVIEW_FIRST, P_REVIEW)
    review_rows = np.flatnonzero((source >= P_FEED) & (source < P_FEED + p_review))
    v_item[review_rows] = world.pick_remembered(rng, v_user[review_rows], in_snapshot)
    reviewed = np.zeros(len(v_sess), dtype=bool)
    reviewed[review_rows] = v_item[review_rows] >= 0
    rest = np.flatnonzero(v_item < 0)
    v_item[rest] = _choose_items(rng, users, catalog, snapshot, interest, v_user[rest], v_leaf[rest], v_ts[rest])

    # An empty marketplace (tiny configs, everything sold) has nothing to view yet.
    listed = np.flatnonzero(v_item >= 0)
    v_sess, v_user, v_ts, v_item = v_sess[listed], v_user[listed], v_ts[listed], v_item[listed]
    dwell, pos, reviewed = dwell[listed], pos[listed], reviewed[listed]

    # Funnel, more likely deeper on items of the user's own interests and on re-opened ones.
    fit = np.clip(0.6 + 2.0 * users.interest[v_user, catalog.leaf[v_item]], 0.6, 1.6)
    fit *= np.where(reviewed, REVIEW_ENGAGEMENT, 1.0)
    r = rng.random((4, len(v_sess)))
    click = r[0] < P_CLICK * fit
    fav = click & (r[1] < P_FAVOURITE)
    contact = click & (r[2] < P_CONTACT * fit)
    purchase = contact & (r[3] < P_PURCHASE)
    steps = [np.ones(len(v_sess), dtype=bool), click, fav, contact, purchase]

    idx = np.concatenate([np.flatnonzero(m) for m in steps])
    etype = np.concatenate([np.full(int(m.sum()), k, dtype=np.int64) for k, m in enumerate(steps)])
    frac = _STEP_FRACTION[etype] + np.where(etype > 0, rng.uniform(0, 0.1, len(idx)), 0.0)
    ts = v_ts[idx] + (dwell[idx] * frac).astype(np.int64)
    sess = v_sess[idx]
    is_first = (etype == 0) & (pos[idx] == 0)
    desktop = s_device[sess] == DEVICE_TYPES.index("desktop")
    referrers = np.array(_REFERRERS, dtype=object)[rng.integers(len(_REFERRERS), size=len(idx))]
    ref = np.where(is_first & desktop & (rng.random(len(idx)) < REFERRER_P), referrers, None)
    order = np.lexsort((etype, ts))
    return DayEvents(
        user=s_user[sess][order],
        item=v_item[idx][order],
        event_type=etype[order],
        ts_ms=ts[order],
        device=s_device[sess][order],
        session_key=s_key[sess][order],
        referrer=ref.astype(object)[order],
        n_sessions=n_sess,
    )
