"""Full-ranking offline metrics, vectorised over users (numpy only).

Every user is scored against the whole catalog (no sampled candidates, which inflate
metrics), seen items are masked, and the metrics are per user so that systems can be
compared with a paired bootstrap on the same users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _row_col_pairs(lists: Sequence[np.ndarray], n_rows: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a ragged per-row list of column indices into (row, col) arrays."""
    if len(lists) != n_rows:
        raise ValueError(f"{what} has {len(lists)} rows, expected {n_rows}")
    arrays = [np.asarray(a, dtype=np.int64).reshape(-1) for a in lists]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=n_rows)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    cols = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    return rows, cols


def rank_topk(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per-row top-k column indices by descending score, [n_rows, k] int64.

    `exclude[i]` (seen items) are never returned for row i. Slots that cannot be filled
    (fewer than k columns left, or only -inf scores) hold -1. Ties break by lower column.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-d [n_users, n_items], got shape {s.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_rows, n_cols = s.shape
    if exclude is not None:
        rows, cols = _row_col_pairs(exclude, n_rows, "exclude")
        if len(cols) and (cols.min() < 0 or cols.max() >= n_cols):
            raise ValueError(f"exclude holds column indices outside [0, {n_cols})")
        s = s.astype(np.float64, copy=True)
        s[rows, cols] = -np.inf
    kk = min(k, n_cols)
    if kk < n_cols:
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        part_scores = np.take_along_axis(s, part, axis=1)
        # argpartition keeps an arbitrary subset of the items tied at the k-th score; rows
        # where such a tie spills past k are re-ranked in full so lower columns win.
        boundary = part_scores.min(axis=1, keepdims=True)
        spill = (s == boundary).sum(axis=1) > (part_scores == boundary).sum(axis=1)
        fix = np.flatnonzero(spill & np.isfinite(boundary[:, 0]))
        if len(fix):
            cols = np.broadcast_to(np.arange(n_cols), (len(fix), n_cols))
            part[fix] = np.lexsort((cols, -s[fix]), axis=1)[:, :kk]
            part_scores[fix] = np.take_along_axis(s[fix], part[fix], axis=1)
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
        part_scores = np.take_along_axis(s, part, axis=1)
    # lexsort: last key is primary -> by score descending, then column ascending.
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    top[np.isneginf(top_scores)] = -1
    if kk < k:
        top = np.concatenate([top, np.full((n_rows, k - kk), -1, np.int64)], axis=1)
    return top


def per_user_metrics(
    topk: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = (10, 20, 50)
) -> dict[str, np.ndarray]:
    """recall@k, precision@k, ndcg@k, hit@k for each k, and mrr (within max(ks)), per user.

    Binary relevance; duplicate targets count once. recall@k = hits / |targets|, so a user
    with more targets than k cannot reach 1. Every user must have at least one target:
    a user without one has no defined recall and must be filtered out by the caller.
    """
    top = np.asarray(topk)
    if top.ndim != 2:
        raise ValueError(f"topk must be 2-d [n_users, K], got shape {top.shape}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    n_users, width = top.shape
    if ks[-1] > width:
        raise ValueError(f"topk has {width} columns but metrics@{ks[-1]} were asked")
    top = top[:, : ks[-1]].astype(np.int64)
    rows, cols = _row_col_pairs(targets, n_users, "targets")
    if len(cols) and cols.min() < 0:
        raise ValueError("targets hold negative item indices")
    # Encode (user, item) pairs as one int64 key so membership is a single np.isin.
    base = int(max(top.max(initial=0), cols.max(initial=0))) + 1
    target_keys = np.unique(rows * base + cols)
    n_rel = np.bincount(target_keys // base, minlength=n_users)
    if (n_rel == 0).any():
        empty = np.flatnonzero(n_rel == 0)
        raise ValueError(f"{len(empty)} users have no targets (e.g. row {int(empty[0])}); drop them first")
    user = np.arange(n_users, dtype=np.int64)[:, None]
    hits = (top >= 0) & np.isin(user * base + top, target_keys)
    # A duplicated recommendation must not count twice.
    if (top.shape[1] > 1) and _has_duplicates(top):
        hits &= _first_occurrence(top)

    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    out: dict[str, np.ndarray] = {}
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * discount, axis=1)
    ideal_cum = np.cumsum(discount)
    for k in ks:
        h = cum_hits[:, k - 1].astype(np.float64)
        idcg = ideal_cum[np.minimum(n_rel, k) - 1]
        out[f"recall@{k}"] = h / n_rel
        out[f"precision@{k}"] = h / k
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / idcg
        out[f"hit@{k}"] = (h > 0).astype(np.float64)
    any_hit = hits.any(axis=1)
    first = np.argmax(hits, axis=1)
    out["mrr"] = np.where(any_hit, 1.0 / (first + 1), 0.0)
    return out


def _has_duplicates(top: np.ndarray) -> bool:
    srt = np.sort(top, axis=1)
    return bool(((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any())


def _first_occurrence(top: np.ndarray) -> np.ndarray:
    """Mask of entries that are the first occurrence of their value in their row."""
    order = np.argsort(top, axis=1, kind="stable")
    srt = np.take_along_axis(top, order, axis=1)
    first_sorted = np.ones_like(srt, dtype=bool)
    first_sorted[:, 1:] = srt[:, 1:] != srt[:, :-1]
    mask = np.empty_like(first_sorted)
    np.put_along_axis(mask, order, first_sorted, axis=1)
    return mask


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-user metric, plus `n_users`."""
    if not per_user:
        raise ValueError("no metrics to summarize")
    sizes = {len(v) for v in per_user.values()}
    if len(sizes) != 1:
        raise ValueError(f"per-user metric arrays differ in length: {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("no users to summarize")
    out = {name: float(np.mean(v)) for name, v in per_user.items()}
    out["n_users"] = float(n)
    return out


def coverage_at_k(topk: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Fraction of the `n_items` catalog (active items) recommended to anyone in the top k."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    top = np.asarray(topk)[:, :k] if k is not None else np.asarray(topk)
    shown = np.unique(top[top >= 0])
    if len(shown) and shown.max() >= n_items:
        raise ValueError(f"topk holds item {int(shown.max())} outside the catalog of {n_items}")
    return len(shown) / n_items


def popularity_percentiles(popularity: np.ndarray) -> np.ndarray:
    """Per-item popularity percentile in [0, 1] (least popular 0, most popular 1; ties share
    their average rank)."""
    pop = np.asarray(popularity, dtype=np.float64)
    if pop.ndim != 1 or len(pop) == 0:
        raise ValueError("popularity must be a non-empty 1-d array")
    if len(pop) == 1:
        return np.ones(1)
    values, inverse, counts = np.unique(pop, return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    avg_rank = start + (counts - 1) / 2.0
    return avg_rank[inverse] / (len(pop) - 1)


def popularity_bias(topk: np.ndarray, popularity: np.ndarray) -> float:
    """Mean popularity percentile (0..1) of the recommended items; 0.5 is popularity-neutral."""
    top = np.asarray(topk)
    valid = top[top >= 0]
    if len(valid) == 0:
        raise ValueError("topk holds no recommendations")
    pct = popularity_percentiles(popularity)
    if valid.max() >= len(pct):
        raise ValueError(f"topk holds item {int(valid.max())} outside popularity of length {len(pct)}")
    return float(pct[valid].mean())


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    max_cells: int = 20_000_000,
) -> dict[str, float | int | bool]:
    """Mean of a - b over users and its percentile bootstrap CI (users resampled jointly).

    Resamples run in blocks of at most `max_cells` indices, so memory stays bounded for
    large user counts while each block is one vectorised gather.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be 1-d and paired (same users), got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError("no users to compare")
    if not (0 < alpha < 1) or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must be finite")
    d = x - y
    n = len(d)
    rng = np.random.default_rng(seed)
    block = max(1, max_cells // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {
        "mean_diff": float(d.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "alpha": alpha,
        "n_boot": n_boot,
        "n_users": n,
        "significant": bool(low > 0 or high < 0),
    }
