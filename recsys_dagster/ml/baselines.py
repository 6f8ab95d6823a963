"""Baselines the two-tower model must beat: global popularity and session co-occurrence.

numpy (+ pyarrow for list arrays) only. The co-occurrence matrix is kept as CSR arrays
built with numpy, so no scipy dependency is added to the evaluation side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def popularity_scores(items_popularity: np.ndarray, n_users: int) -> np.ndarray:
    """[n_users, n_items] scores: every user gets the popularity vector.

    A read-only broadcast view (no n_users x n_items copy); `rank_topk` copies only when it
    has to mask seen items.
    """
    pop = np.asarray(items_popularity, dtype=np.float32)
    if pop.ndim != 1:
        raise ValueError(f"items_popularity must be 1-d, got shape {pop.shape}")
    if not np.isfinite(pop).all():
        raise ValueError("items_popularity contains NaN/inf")
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0, got {n_users}")
    return np.broadcast_to(pop, (n_users, len(pop)))


def _flatten_sessions(sessions: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(items, session offsets) from Python lists or an Arrow list<int> array."""
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    if isinstance(sessions, (pa.ListArray, pa.LargeListArray)):
        if sessions.null_count:
            raise ValueError(f"sessions hold {sessions.null_count} null lists")
        flat = sessions.flatten()
        if flat.null_count:
            raise ValueError(f"sessions hold {flat.null_count} null items")
        if not pa.types.is_integer(flat.type):
            raise ValueError(f"session items must be integer item indices, got {flat.type}")
        lengths = np.asarray(sessions.value_lengths(), dtype=np.int64)
        items = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sessions]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        items = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return items, offsets


class CooccurrenceModel:
    """Item-item co-occurrence within sessions, normalised by popularity (cosine).

    weight(i, j) = sessions with both i and j / sqrt(sessions with i * sessions with j):
    raw counts would just recommend popular items to everyone.
    """

    def __init__(self, recency_decay: float = 0.8) -> None:
        if not 0 < recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        self.recency_decay = recency_decay
        self.n_items = 0
        self.indptr = np.zeros(1, np.int64)
        self.indices = np.empty(0, np.int64)
        self.data = np.empty(0, np.float64)
        self.popularity = np.empty(0, np.float64)

    def fit(
        self,
        sessions_item_lists: Sequence[Sequence[int]] | pa.Array | pa.ChunkedArray,
        n_items: int,
        window: int | None = None,
    ) -> CooccurrenceModel:
        """Count pairs of distinct items in each session (once per session).

        `window` limits pairs to items at most that many positions apart, which bounds
        the work per session (all pairs are quadratic in session length).
        """
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        items, offsets = _flatten_sessions(sessions_item_lists)
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"session items must be indices in [0, {n_items})")
        n_sessions = len(offsets) - 1
        session_of = np.repeat(np.arange(n_sessions, dtype=np.int64), np.diff(offsets))

        # Popularity: sessions that contain the item (distinct per session).
        uniq = np.unique(session_of * n_items + items)
        self.popularity = np.bincount(uniq % n_items, minlength=n_items).astype(np.float64)

        # Each position pairs with the positions [lo, hi) of its session (window-clipped).
        pos = np.arange(len(items), dtype=np.int64)
        start, end = offsets[session_of], offsets[session_of + 1]
        lo = start if window is None else np.maximum(start, pos - window)
        hi = end if window is None else np.minimum(end, pos + window + 1)
        span = hi - lo
        left = np.repeat(pos, span)
        # Within-group ranks 0..span-1 without a Python loop.
        rank = np.arange(len(left), dtype=np.int64) - np.repeat(np.cumsum(span) - span, span)
        right = np.repeat(lo, span) + rank
        i, j = items[left], items[right]
        keep = i != j
        i, j, sess = i[keep], j[keep], session_of[left][keep]
        # Once per session: dedupe (session, i, j) before counting.
        pair = i * n_items + j
        order = np.lexsort((pair, sess))
        pair, sess = pair[order], sess[order]
        first = np.ones(len(pair), dtype=bool)
        first[1:] = (pair[1:] != pair[:-1]) | (sess[1:] != sess[:-1])
        pairs, counts = np.unique(pair[first], return_counts=True)
        row, col = pairs // n_items, pairs % n_items
        weight = counts / np.sqrt(self.popularity[row] * self.popularity[col])

        # np.unique sorted by row then column: CSR directly.
        self.n_items = n_items
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_items))]).astype(np.int64)
        self.indices = col.astype(np.int64)
        self.data = weight.astype(np.float64)
        return self

    def row(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """(co-occurring items, weights) of one item."""
        a, b = self.indptr[item], self.indptr[item + 1]
        return self.indices[a:b], self.data[a:b]

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[n_users, n_items] float32: recency-weighted sum of the history items' rows.

        Histories are oldest first; the latest item weighs 1, the one before
        `recency_decay`, and so on. Popularity is added scaled below half the smallest
        co-occurrence contribution of the batch: it never lifts an item without
        co-occurrence above one with, orders the rest (and gives users without any
        co-occurrence a popularity ranking).
        """
        if self.n_items == 0:
            raise RuntimeError("CooccurrenceModel.score called before fit")
        n_users, n = len(histories), self.n_items
        arrays = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=n_users)
        hist = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
        if len(hist) and (hist.min() < 0 or hist.max() >= n):
            raise ValueError(f"history items must be indices in [0, {n})")
        user = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
        age = np.repeat(np.cumsum(lengths), lengths) - 1 - np.arange(len(hist))  # 0 = latest
        w = self.recency_decay ** age.astype(np.float64)

        span = self.indptr[hist + 1] - self.indptr[hist]
        rank = np.arange(span.sum(), dtype=np.int64) - np.repeat(np.cumsum(span) - span, span)
        nz = np.repeat(self.indptr[hist], span) + rank
        contrib = np.repeat(w, span) * self.data[nz]
        flat = np.repeat(user, span) * n + self.indices[nz]
        scores = np.bincount(flat, weights=contrib, minlength=n_users * n).reshape(n_users, n)

        positive = contrib[contrib > 0]
        scale = 0.5 * positive.min() if len(positive) else 1.0
        top = self.popularity.max()
        if top > 0:
            scores += (self.popularity / top) * scale
        return scores.astype(np.float32)
