"""Buyers: persistent tastes that make the event log learnable (favourite categories and
brands, budget, home city, device) and a heavy-tailed activity level."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_dagster.contract import DEVICE_TYPES
from recsys_dagster.datagen.catalog import FAMILIES
from recsys_dagster.datagen.taxonomy import LEAVES, city_weights, leaf_weights, subtree_ids

DEVICE_P = np.array([0.62, 0.28, 0.10])
EXPLORE_SHARE = 0.06  # interest mass spread over all leaves, beyond the favourites
_APP_VERSIONS = ("5.12.0", "5.12.3", "5.13.1", "6.0.2")


@dataclass
class Users:
    interest: np.ndarray  # [n_users, n_leaves], rows sum to 1
    price_z: np.ndarray  # preferred price position within a category (<0 bargain hunter)
    price_sensitivity: np.ndarray  # how strongly price off the preference deters
    city: np.ndarray
    device: np.ndarray  # preferred device index in DEVICE_TYPES
    activity: np.ndarray  # mean sessions per day
    family: np.ndarray  # [n_users, n_leaves] favourite brand/model (catalog.family) per leaf
    local_offset: np.ndarray  # bool: the client reports local time (+01:00/+02:00), not Z
    app_version: list[str | None]  # mobile/tablet clients that send an `app_version` field

    @property
    def n(self) -> int:
        return self.interest.shape[0]


def make_users(rng: np.random.Generator, n: int) -> Users:
    n_leaves = len(LEAVES)
    sub = subtree_ids()
    n_sub = int(sub.max()) + 1
    lw = leaf_weights()
    sub_w = np.bincount(sub, weights=lw, minlength=n_sub)
    interest = np.empty((n, n_leaves))
    for u in range(n):
        # One to three favourite subtrees (e.g. Phones, Bikes), a few leaves in each,
        # sometimes a stray leaf elsewhere.
        k = 1 + int(rng.random() < 0.45) + int(rng.random() < 0.12)
        subs = rng.choice(n_sub, size=k, replace=False, p=sub_w / sub_w.sum())
        favs: list[int] = []
        for s in subs.tolist():
            leaves = np.flatnonzero(sub == s)
            m = int(rng.integers(1, min(3, len(leaves)) + 1))
            favs.extend(rng.choice(leaves, size=m, replace=False).tolist())
        if rng.random() < 0.3:
            favs.append(int(rng.choice(n_leaves, p=lw)))
        w = np.zeros(n_leaves)
        np.add.at(w, favs, rng.dirichlet(np.full(len(favs), 0.9)))
        interest[u] = (1 - EXPLORE_SHARE) * w + EXPLORE_SHARE * lw
    interest /= interest.sum(axis=1, keepdims=True)

    # Most users are rare visitors, a few come back many times a day.
    activity = np.minimum(np.exp(rng.normal(np.log(0.13), 1.3, n)), 5.0)
    has_app = rng.random(n) < 0.3
    versions = rng.integers(len(_APP_VERSIONS), size=n)
    return Users(
        interest=interest,
        price_z=rng.normal(0.0, 0.7, n),
        price_sensitivity=rng.uniform(0.2, 1.0, n),
        city=rng.choice(len(city_weights()), size=n, p=city_weights()),
        device=rng.choice(len(DEVICE_TYPES), size=n, p=DEVICE_P),
        activity=activity,
        family=(rng.random((n, n_leaves)) * FAMILIES[None, :]).astype(np.int64),
        local_offset=rng.random(n) < 0.15,
        app_version=[_APP_VERSIONS[v] if a else None for a, v in zip(has_app.tolist(), versions.tolist())],
    )


def sample_leaves(rng: np.random.Generator, cdf: np.ndarray, user_rows: np.ndarray) -> np.ndarray:
    """One leaf per row, drawn from that user's row of `cdf` (see `tilted_cdf`)."""
    u = rng.random(len(user_rows))
    return np.minimum((cdf[user_rows] < u[:, None]).sum(axis=1), cdf.shape[1] - 1)


def tilted_cdf(users: Users, leaf_log: np.ndarray) -> np.ndarray:
    """Row-wise cumulative of each user's interest reweighted by today's category interest
    (seasons, trends): `leaf_log` all zero gives their long-term taste."""
    w = users.interest * np.exp(leaf_log)[None, :]
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return cdf
