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
    picked: list[int] = []
    capped_out: list[int] = []
    leaves = catalog.leaf[rows].tolist()
    for i, leaf in enumerate(leaves):
        if len(picked) >= k:
            break
        n = counts.get(leaf, 0)
        if n >= cap:
            capped_out.append(i)
            continue
        counts[leaf] = n + 1
        picked.append(i)
    if relax and len(picked) < k:
        # Every candidate was scanned: capped_out holds all the rest, best first.
        for i in capped_out[: k - len(picked)]:
            counts[leaves[i]] = counts.get(leaves[i], 0) + 1
            picked.append(i)
    return rows[picked].tolist(), scores[picked].tolist()


def leaf_counts(catalog: Catalog, rows: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for leaf in catalog.leaf[np.asarray(rows, dtype=np.int64)].tolist():
        counts[leaf] = counts.get(leaf, 0) + 1
    return counts
