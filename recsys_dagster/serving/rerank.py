"""Pure re-ranking and filtering over candidate rows of a `Catalog`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_dagster.contract import CATEGORY_SEPARATOR
from recsys_dagster.serving.catalog import Catalog


@dataclass(frozen=True)
class Filters:
    """Constraints on the returned items; None means "no constraint"."""

    category_prefix: str | None = None  # whole path segments: "Electronics > Phones"
    price_min: float | None = None
    price_max: float | None = None
    conditions: frozenset[str] | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min {self.price_min} > price_max {self.price_max}")
        if self.conditions is not None and not isinstance(self.conditions, frozenset):
            object.__setattr__(self, "conditions", frozenset(self.conditions))

    @property
    def empty(self) -> bool:
        return (
            self.category_prefix is None
            and self.price_min is None
            and self.price_max is None
            and self.conditions is None
            and self.location is None
        )


def category_matches(path: str, prefix: str) -> bool:
    """Prefix match on whole segments: "A > B" matches "A > B" and "A > B > C", not "A > Bc"."""
    return path == prefix or path.startswith(prefix + CATEGORY_SEPARATOR)


def keep_mask(catalog: Catalog, rows: np.ndarray, filters: Filters | None, exclude: np.ndarray | None) -> np.ndarray:
    """Which `rows` survive: active, not in `exclude` (seen rows), and matching `filters`."""
    mask = catalog.active[rows].copy()
    if exclude is not None and exclude.size:
        mask &= ~np.isin(rows, exclude)
    if filters is None or filters.empty:
        return mask
    if filters.price_min is not None:
        mask &= catalog.price[rows] >= filters.price_min
    if filters.price_max is not None:
        mask &= catalog.price[rows] <= filters.price_max
    if filters.conditions is not None:
        mask &= np.isin(catalog.condition[rows], list(filters.conditions))
    if filters.location is not None:
        mask &= catalog.location[rows] == filters.location
    if filters.category_prefix is not None:
        prefix = filters.category_prefix.strip()
        paths = catalog.category_path
        mask &= np.fromiter((category_matches(paths[r], prefix) for r in rows), dtype=bool, count=len(rows))
    return mask


def apply_popularity_penalty(
    catalog: Catalog, rows: np.ndarray, scores: np.ndarray, penalty: float
) -> tuple[np.ndarray, np.ndarray]:
    """score - penalty * normalised log1p(popularity), re-sorted (stable) best first."""
    if penalty <= 0 or rows.size == 0:
        return rows, scores
    adjusted = scores - penalty * catalog.popularity_norm[rows]
    order = np.argsort(-adjusted, kind="stable")
    return rows[order], adjusted[order]


def diversify(
    catalog: Catalog,
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    cap: int | None,
    counts: dict[int, int] | None = None,
    relax: bool = True,
) -> tuple[list[int], list[float]]:
    """Top-k with at most `cap` items per leaf category, in the given (score) order.

    When the cap leaves fewer than k items and `relax` is true, the capped-out candidates
    fill the rest in score order, after the capped picks: the cap shapes the head of the
    list but never makes it shorter than k while candidates remain (a one-level tree of
    18 genres with cap 3 would otherwise stop at 54). `counts` (leaf -> items already
    taken) is updated, so a popularity top-up continues the same cap.
    """
    if cap is None:
        return rows[:k].tolist(), scores[:k].tolist()
    counts = {} if counts is None else counts
    n = len(rows)
    if n == 0:
        return [], []
    # Vectorised: each row's place among earlier rows of its leaf, plus what the leaf
    # already holds, decides whether the cap lets it in (a Python loop over hundreds of
    # candidates cost more than the ranker's features).
    leaves = catalog.leaf[rows]
    distinct, inverse = np.unique(leaves, return_inverse=True)
    held = np.array([counts.get(leaf, 0) for leaf in distinct.tolist()], dtype=np.int64)[inverse]
    order = np.argsort(inverse, kind="stable")
    group_start = np.r_[True, inverse[order][1:] != inverse[order][:-1]]
    start_at = np.maximum.accumulate(np.where(group_start, np.arange(n), 0))
    earlier = np.empty(n, dtype=np.int64)
    earlier[order] = np.arange(n) - start_at
    within = held + earlier < cap
    picked = np.flatnonzero(within)[:k]
    if relax and len(picked) < k:
        # Every candidate was in view: the capped-out ones fill the rest, best first.
        picked = np.concatenate([picked, np.flatnonzero(~within)[: k - len(picked)]])
    for leaf in leaves[picked].tolist():
        counts[leaf] = counts.get(leaf, 0) + 1
    return rows[picked].tolist(), scores[picked].tolist()


def leaf_counts(catalog: Catalog, rows: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for leaf in catalog.leaf[np.asarray(rows, dtype=np.int64)].tolist():
        counts[leaf] = counts.get(leaf, 0) + 1
    return counts
