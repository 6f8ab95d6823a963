"""Baselines the two-tower model must beat, fitted only on data before the window they rank.

numpy (+ pyarrow for list arrays) only: no scipy. Sparse item-item matrices are kept as CSR
arrays built with numpy, and every step that could grow with the data (item pairs, dense
score blocks) runs in chunks of a fixed budget, so memory stays bounded.

- `popularity`: positives per item, all of them before the window.
- `recent_popularity`: positives per item in the last N days before the window, N chosen
  from a small grid on the validation window (`choose_recent_window`).
- `cooccurrence`: item-item cosine over sessions (`CooccurrenceModel`).
- `item_knn`: item-item cosine over user histories, top-K neighbours per item (`ItemKNN`).
- `ease`: Steck's EASE (2019), closed form over an items x items inverse (`EASE`), run only
  when the catalog it models has at most `BaselineConfig.ease_max_items` items; lambda
  chosen on validation.

`run_baselines` fits each one on the positives before the validation window, chooses its
parameter there, refits on the positives before the test window and ranks the test users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_dagster.ml.metrics import per_user_metrics, rank_topk
from recsys_dagster.settings import documented

DAY_US = 86_400_000_000
# Dense scores materialised at once (users x items), and item pairs / gathered entries
# generated at once: the two budgets that bound memory whatever the data size.
SCORE_CELLS = 8_000_000
PAIR_BUDGET = 4_000_000
# Validation and the gate compare on this cut-off.
SELECT_K = 20
# The names of the systems `run_baselines` produces, in report order.
BASELINES = ("popularity", "recent_popularity", "cooccurrence", "item_knn", "ease")


@dataclass(frozen=True)
class BaselineConfig:
    """How the evaluation's baselines are fitted and chosen."""

    recent_windows_days: tuple[int, ...] = documented(
        (1, 3, 7, 14, 0), "Recent-popularity windows (days before the window) tried on validation; 0 = all data."
    )
    knn_neighbours: int = documented(100, "Item-kNN: most similar items kept per item (top-K).")
    recency_decay: float = documented(
        0.8, "Co-occurrence and item-kNN: weight of a history item relative to the next newer one."
    )
    max_profile_items: int = documented(
        200, "Latest distinct items per user that item-kNN, EASE and co-occurrence scoring use."
    )
    cooccurrence_window: int = documented(20, "Co-occurrence: pairs at most this many positions apart in a session.")
    ease_max_items: int = documented(
        20_000,
        "EASE runs only when the items it models (those in a user's latest max_profile_items) are at most "
        "this many: it inverts an items x items matrix (peak memory about 24 x N^2 bytes: 9.6 GB at 20,000).",
    )
    ease_lambdas: tuple[float, ...] = documented((1.0, 10.0, 100.0, 1000.0), "EASE L2 strengths tried on validation.")

    def __post_init__(self) -> None:
        if not self.recent_windows_days or any(d < 0 for d in self.recent_windows_days):
            raise ValueError(f"recent_windows_days must be non-empty and >= 0, got {self.recent_windows_days}")
        if self.knn_neighbours < 1:
            raise ValueError(f"knn_neighbours must be >= 1, got {self.knn_neighbours}")
        if not 0 < self.recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {self.recency_decay}")
        if self.max_profile_items < 1 or self.cooccurrence_window < 1:
            raise ValueError("max_profile_items and cooccurrence_window must be >= 1")
        if self.ease_max_items < 0:
            raise ValueError(f"ease_max_items must be >= 0, got {self.ease_max_items}")
        if not self.ease_lambdas or any(not lam > 0 for lam in self.ease_lambdas):
            raise ValueError(f"ease_lambdas must be non-empty and > 0, got {self.ease_lambdas}")


def window_label(days: int) -> str:
    return "all" if days == 0 else f"{days}d"


def ease_skip_reason(n_items: int, limit: int) -> str:
    return f"EASE needs an items x items inverse; {n_items} items > limit {limit}"


# --- data --------------------------------------------------------------------------------


def _expand(starts: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[i], starts[i] + spans[i]) without a Python loop."""
    spans = np.asarray(spans, dtype=np.int64)
    total = int(spans.sum())
    rank = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(spans) - spans, spans)
    return np.repeat(np.asarray(starts, dtype=np.int64), spans) + rank


def _chunks(work: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices of `work` whose sums stay within `budget` (at least one entry each)."""
    cum = np.cumsum(np.asarray(work, dtype=np.int64))
    start, n = 0, len(cum)
    while start < n:
        base = int(cum[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, base + budget, side="right")))
        yield slice(start, stop)
        start = stop


@dataclass(frozen=True)
class Profiles:
    """Each user's distinct items ordered by their last interaction, oldest first (CSR)."""

    indptr: np.ndarray  # int64 [n_users + 1]
    indices: np.ndarray  # int64 item indices
    n_items: int

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def take(self, users: np.ndarray) -> Profiles:
        """The profiles of `users` (rows), in that order."""
        users = np.asarray(users, dtype=np.int64)
        spans = self.indptr[users + 1] - self.indptr[users]
        indptr = np.concatenate([[0], np.cumsum(spans)]).astype(np.int64)
        return Profiles(indptr, self.indices[_expand(self.indptr[users], spans)], self.n_items)

    def latest(self, m: int) -> Profiles:
        """Each profile cut to its `m` latest items."""
        lengths = self.lengths
        if len(lengths) == 0 or lengths.max(initial=0) <= m:
            return self
        kept = np.minimum(lengths, m)
        indptr = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        return Profiles(indptr, self.indices[_expand(self.indptr[1:] - kept, kept)], self.n_items)

    @classmethod
    def from_histories(cls, histories: Sequence[Sequence[int]] | Profiles, n_items: int) -> Profiles:
        if isinstance(histories, Profiles):
            return histories
        arrays = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        indices = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
            raise ValueError(f"history items must be indices in [0, {n_items})")
        return cls(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), indices, n_items)


@dataclass(frozen=True)
class Interactions:
    """Positives as parallel int64 arrays: user row, item index, time (µs), session index."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    session: np.ndarray
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        n = len(self.user)
        if not (len(self.item) == len(self.time) == len(self.session) == n):
            raise ValueError("interaction arrays differ in length")
        if n and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise ValueError(f"users must be rows in [0, {self.n_users})")
        if n and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise ValueError(f"items must be indices in [0, {self.n_items})")

    def before(self, end_us: int) -> Interactions:
        keep = self.time < end_us
        return Interactions(
            self.user[keep], self.item[keep], self.time[keep], self.session[keep], self.n_users, self.n_items
        )

    def profiles(self) -> Profiles:
        """Distinct items per user, ordered by the user's last positive on each (then by item)."""
        key = self.user * self.n_items + self.item
        order = np.lexsort((self.time, key))
        key, time = key[order], self.time[order]
        last = np.ones(len(key), dtype=bool)
        last[:-1] = key[1:] != key[:-1]
        key, time = key[last], time[last]
        user, item = key // self.n_items, key % self.n_items
        order = np.lexsort((item, time, user))
        counts = np.bincount(user, minlength=self.n_users)
        return Profiles(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), item[order], self.n_items)

    def sessions(self) -> pa.ListArray:
        """Item lists per session, in time order (for co-occurrence)."""
        order = np.lexsort((self.time, self.session))
        session, item = self.session[order], self.item[order]
        starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]]) if len(session) else np.empty(0, np.int64)
        offsets = np.concatenate([starts, [len(session)]]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(item, pa.int64()))


# Scores for a ranking: a function of profile rows, or one vector every user shares.
Scorer = Callable[[np.ndarray], np.ndarray] | np.ndarray


@dataclass
class RankingTask:
    """Users to rank for: each user's profile row, the ranked columns (item index of each),
    and, in column positions, the items to exclude (seen) and the targets."""

    users: np.ndarray  # int64 profile rows
    columns: np.ndarray  # int64 item index of each ranked column
    seen: list[np.ndarray]
    targets: list[np.ndarray]
    n_items: int  # width of the scores a scorer returns (every item)

    def __len__(self) -> int:
        return len(self.users)

    def topk(self, scores: Scorer, k: int) -> np.ndarray:
        """[n_users, k] column positions by descending score (ties: lower column), seen
        excluded, -1 where nothing is left. `scores` is a function of profile rows giving
        [len(users), n_items] scores over every item (users go in blocks of bounded size),
        or one [n_items] vector every user shares (sorted once)."""
        if isinstance(scores, np.ndarray):
            return self._topk_shared(scores, k)
        block = max(1, SCORE_CELLS // max(1, self.n_items))
        out = np.full((len(self.users), k), -1, dtype=np.int64)
        for start in range(0, len(self.users), block):
            sl = slice(start, min(len(self.users), start + block))
            out[sl] = rank_topk(np.asarray(scores(self.users[sl]))[:, self.columns], k, exclude=self.seen[sl])
        return out

    def _topk_shared(self, vector: np.ndarray, k: int) -> np.ndarray:
        scores = np.asarray(vector, dtype=np.float64)
        if scores.shape != (self.n_items,) or not np.isfinite(scores).all():
            raise ValueError(f"a shared score vector must be finite with {self.n_items} entries, got {scores.shape}")
        s = scores[self.columns]
        order = np.lexsort((np.arange(len(s)), -s))  # rank_topk's order: score desc, then column
        position = np.empty(len(s), dtype=np.int64)
        position[order] = np.arange(len(s))
        n = len(self.users)
        seen_len = np.fromiter((len(x) for x in self.seen), dtype=np.int64, count=n)
        out = np.full((n, k), -1, dtype=np.int64)
        # A user needs at most k + |seen| leading columns; blocks of users stay within SCORE_CELLS.
        width = min(len(s), k + int(seen_len.max(initial=0)))
        block = max(1, SCORE_CELLS // max(1, width))
        for start in range(0, n, block):
            stop = min(n, start + block)
            rows = np.repeat(np.arange(stop - start), seen_len[start:stop])
            pos = position[np.concatenate(self.seen[start:stop]).astype(np.int64)] if len(rows) else rows
            hide = np.zeros((stop - start, width), dtype=bool)
            hide[rows[pos < width], pos[pos < width]] = True
            keep = ~hide
            rank = np.cumsum(keep, axis=1) - 1
            r, j = np.nonzero(keep & (rank < k))
            out[start + r, rank[r, j]] = order[j]
        return out

    def recall(self, scores: Scorer, k: int = SELECT_K) -> float:
        top = self.topk(scores, k)
        return float(per_user_metrics(top, self.targets, ks=(k,))[f"recall@{k}"].mean())


# --- popularity --------------------------------------------------------------------------


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


def recent_popularity(items: np.ndarray, times: np.ndarray, n_items: int, *, end_us: int, days: int) -> np.ndarray:
    """Positives per item in the `days` days before `end_us` (every positive before it when
    `days` is 0), ties broken by the count of every positive before `end_us`."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.int64)
    before = times < end_us
    total = np.bincount(items[before], minlength=n_items).astype(np.float64)
    recent = total if days == 0 else np.bincount(items[before & (times >= end_us - days * DAY_US)], minlength=n_items)
    # Counts are integers: a tie-break below 1 never reorders two different recent counts.
    return recent + total / (total.max(initial=0.0) + 1.0)


def choose_recent_window(
    interactions: Interactions, validation: RankingTask, *, validation_start_us: int, windows: Sequence[int]
) -> tuple[int, dict[str, float]]:
    """The window (days, 0 = all) whose recent popularity before the validation window has
    the best validation Recall@20 (the first of equals in `windows` order), and every score."""
    scores: dict[str, float] = {}
    best, best_recall = windows[0], -1.0
    for days in windows:
        pop = recent_popularity(
            interactions.item, interactions.time, interactions.n_items, end_us=validation_start_us, days=days
        )
        recall = validation.recall(pop)
        scores[window_label(days)] = recall
        if recall > best_recall:
            best, best_recall = days, recall
    return best, scores


# --- item-item models --------------------------------------------------------------------


def _recency_scores(
    sim_indptr: np.ndarray,
    sim_indices: np.ndarray,
    sim_data: np.ndarray,
    histories: Profiles,
    decay: float,
    n_items: int,
) -> tuple[np.ndarray, float]:
    """[n_users, n_items] float64: sum over each history of its items' similarity rows, the
    latest item weighing 1, the one before `decay`, and so on; and the smallest positive
    contribution (0.0 when none)."""
    n_users = histories.n_users
    scores = np.zeros((n_users, n_items), dtype=np.float64)
    hist = histories.indices
    lengths = histories.lengths
    age = np.repeat(histories.indptr[1:], lengths) - 1 - np.arange(len(hist))  # 0 = latest
    weight = decay ** age.astype(np.float64)
    span = sim_indptr[hist + 1] - sim_indptr[hist]
    work_per_user = np.bincount(np.repeat(np.arange(n_users), lengths), weights=span, minlength=n_users)
    smallest = np.inf
    for sl in _chunks(work_per_user.astype(np.int64), PAIR_BUDGET):
        a, b = histories.indptr[sl.start], histories.indptr[sl.stop]
        h, s = hist[a:b], span[a:b]
        local_user = np.repeat(np.repeat(np.arange(sl.stop - sl.start), lengths[sl]), s)
        nz = _expand(sim_indptr[h], s)
        contrib = np.repeat(weight[a:b], s) * sim_data[nz]
        flat = local_user * n_items + sim_indices[nz]
        scores[sl] = np.bincount(flat, weights=contrib, minlength=(sl.stop - sl.start) * n_items).reshape(-1, n_items)
        positive = contrib[contrib > 0]
        if len(positive):
            smallest = min(smallest, float(positive.min()))
    return scores, (0.0 if smallest == np.inf else smallest)


def _add_tiebreak(scores: np.ndarray, smallest: float, popularity: np.ndarray) -> np.ndarray:
    """Popularity scaled below half the smallest similarity contribution: it never lifts an
    item without similarity above one with, and orders the rest (an empty history gets
    the popularity ranking)."""
    top = float(popularity.max(initial=0.0))
    if top > 0:
        scores += (popularity / top) * (0.5 * smallest if smallest > 0 else 1.0)
    return scores


def cooccurrence_counts(
    profiles: Profiles, pair_budget: int = PAIR_BUDGET
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """XᵀX of the binary user x item matrix as (row, col, count) triplets, a block of rows
    at a time: each row in exactly one block, sorted by row then column, diagonal included.
    At most `pair_budget` item pairs exist at once; a row needing more is accumulated in a
    dense vector of n_items counts."""
    n = profiles.n_items
    lengths = profiles.lengths
    user_of = np.repeat(np.arange(profiles.n_users, dtype=np.int64), lengths)
    order = np.argsort(profiles.indices, kind="stable")
    t_item, t_user = profiles.indices[order], user_of[order]
    item_ptr = np.concatenate([[0], np.cumsum(np.bincount(profiles.indices, minlength=n))]).astype(np.int64)
    entry_work = lengths[t_user]  # pairs each (item, user) entry generates
    item_work = np.bincount(t_item, weights=entry_work, minlength=n).astype(np.int64)

    def pairs(ea: int, eb: int) -> tuple[np.ndarray, np.ndarray]:
        span = entry_work[ea:eb]
        cols = profiles.indices[_expand(profiles.indptr[t_user[ea:eb]], span)]
        return np.repeat(t_item[ea:eb], span), cols

    for block in _chunks(item_work, pair_budget):
        a, b = block.start, block.stop
        ea, eb = int(item_ptr[a]), int(item_ptr[b])
        if b - a == 1 and item_work[a] > pair_budget:  # one heavy item: dense row, entries in chunks
            row = np.zeros(n, dtype=np.int64)
            for sl in _chunks(entry_work[ea:eb], pair_budget):
                _, cols = pairs(ea + sl.start, ea + sl.stop)
                row += np.bincount(cols, minlength=n)
            cols = np.flatnonzero(row)
            yield np.full(len(cols), a, dtype=np.int64), cols, row[cols].astype(np.float64)
            continue
        rows, cols = pairs(ea, eb)
        keys, counts = np.unique((rows - a) * n + cols, return_counts=True)
        yield keys // n + a, keys % n, counts.astype(np.float64)


class ItemKNN:
    """Item-item cosine over user histories: sim(i, j) = users with both / sqrt(users with i
    x users with j), the top-K neighbours kept per item. A user scores an item by the
    recency-weighted sum of its similarities to the user's history."""

    def __init__(self, neighbours: int = 100, recency_decay: float = 0.8) -> None:
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        if not 0 < recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        self.neighbours = neighbours
        self.recency_decay = recency_decay
        self.n_items = 0
        self.indptr = np.zeros(1, np.int64)
        self.indices = np.empty(0, np.int64)
        self.data = np.empty(0, np.float64)

    def fit(self, profiles: Profiles, pair_budget: int = PAIR_BUDGET) -> ItemKNN:
        n = profiles.n_items
        users_of = np.bincount(profiles.indices, minlength=n).astype(np.float64)
        rows, cols, sims = [], [], []
        for r, c, count in cooccurrence_counts(profiles, pair_budget):
            off = r != c
            r, c, count = r[off], c[off], count[off]
            sim = count / np.sqrt(users_of[r] * users_of[c])
            order = np.lexsort((c, -sim, r))  # by row, then similarity descending, then column
            r, c, sim = r[order], c[order], sim[order]
            first = np.r_[True, r[1:] != r[:-1]] if len(r) else np.empty(0, bool)
            start = np.maximum.accumulate(np.where(first, np.arange(len(r)), 0)) if len(r) else np.empty(0, np.int64)
            keep = (np.arange(len(r)) - start) < self.neighbours
            rows.append(r[keep])
            cols.append(c[keep])
            sims.append(sim[keep])
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        self.n_items = n
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))]).astype(np.int64)
        self.indices = np.concatenate(cols).astype(np.int64) if cols else np.empty(0, np.int64)
        self.data = np.concatenate(sims) if sims else np.empty(0, np.float64)
        return self

    def neighbours_of(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour items, similarities) of one item, most similar first."""
        a, b = self.indptr[item], self.indptr[item + 1]
        return self.indices[a:b], self.data[a:b]

    def score(self, histories: Sequence[Sequence[int]] | Profiles, fallback: np.ndarray | None = None) -> np.ndarray:
        """[n_users, n_items] float64 (histories oldest first); `fallback` popularity orders
        the items without similarity (and ranks for an empty history)."""
        if self.n_items == 0:
            raise RuntimeError("ItemKNN.score called before fit")
        hist = Profiles.from_histories(histories, self.n_items)
        scores, smallest = _recency_scores(self.indptr, self.indices, self.data, hist, self.recency_decay, self.n_items)
        return scores if fallback is None else _add_tiebreak(scores, smallest, np.asarray(fallback, np.float64))


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's closed form: B = I − P·diagMat(1/diag(P)), P = (G + λI)⁻¹, so diag(B) = 0.
    Overwrites `gram` (one items x items copy less at peak)."""
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    g = np.asarray(gram, dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    del g
    diag = p.diagonal().copy()
    p /= -diag[None, :]
    p[np.diag_indices_from(p)] = 0.0
    return p


class EASE:
    """Steck (2019), "Embarrassingly Shallow Autoencoders": item-item weights B from the
    closed form over the items that have a positive; a user scores an item by the sum of
    B's rows over the user's history (binary)."""

    def __init__(self, lam: float) -> None:
        if not lam > 0:
            raise ValueError(f"lambda must be > 0, got {lam}")
        self.lam = lam
        self.items = np.empty(0, np.int64)  # modelled items (those with a positive)
        self.local = np.empty(0, np.int64)  # item index -> row of B, -1 when not modelled
        self.weights = np.empty((0, 0))
        self.n_items = 0

    @staticmethod
    def modelled_items(profiles: Profiles) -> int:
        return len(np.unique(profiles.indices))

    def fit(self, profiles: Profiles, pair_budget: int = PAIR_BUDGET) -> EASE:
        self.n_items = profiles.n_items
        self.items = np.unique(profiles.indices)
        self.local = np.full(profiles.n_items, -1, dtype=np.int64)
        self.local[self.items] = np.arange(len(self.items))
        compact = Profiles(profiles.indptr, self.local[profiles.indices], len(self.items))
        gram = np.zeros((len(self.items), len(self.items)), dtype=np.float64)
        for r, c, count in cooccurrence_counts(compact, pair_budget):
            gram[r, c] = count
        self.weights = ease_weights(gram, self.lam)
        return self

    def score(self, histories: Sequence[Sequence[int]] | Profiles, fallback: np.ndarray | None = None) -> np.ndarray:
        """[n_users, n_items] float64. Items EASE does not model rank below every modelled
        one; a user with an empty (or wholly unmodelled) history gets `fallback` scores."""
        if self.n_items == 0:
            raise RuntimeError("EASE.score called before fit")
        hist = Profiles.from_histories(histories, self.n_items)
        local = self.local[hist.indices]
        known = local >= 0
        user_of = np.repeat(np.arange(hist.n_users), hist.lengths)[known]
        local = local[known]
        m = len(self.items)
        out = np.full((hist.n_users, self.n_items), -1e30, dtype=np.float64)
        modelled = np.zeros((hist.n_users, m), dtype=np.float64)
        per_user = np.bincount(user_of, minlength=hist.n_users)
        starts = np.concatenate([[0], np.cumsum(per_user)])
        for sl in _chunks(per_user * max(1, m), max(SCORE_CELLS, m)):
            a, b = starts[sl.start], starts[sl.stop]
            if a == b:
                continue
            nonempty = np.flatnonzero(per_user[sl]) + sl.start
            modelled[nonempty] = np.add.reduceat(self.weights[local[a:b]], starts[nonempty] - a, axis=0)
        out[:, self.items] = modelled
        if fallback is not None:
            empty = per_user == 0
            out[empty] = np.asarray(fallback, dtype=np.float64)
        return out


# --- session co-occurrence -------------------------------------------------------------


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
        right = _expand(lo, span)
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

    def score(self, histories: Sequence[Sequence[int]] | Profiles) -> np.ndarray:
        """[n_users, n_items] float32: recency-weighted sum of the history items' rows.

        Histories are oldest first; the latest item weighs 1, the one before
        `recency_decay`, and so on. Popularity is added scaled below half the smallest
        co-occurrence contribution of the batch: it never lifts an item without
        co-occurrence above one with, orders the rest (and gives users without any
        co-occurrence a popularity ranking).
        """
        if self.n_items == 0:
            raise RuntimeError("CooccurrenceModel.score called before fit")
        hist = Profiles.from_histories(histories, self.n_items)
        scores, smallest = _recency_scores(self.indptr, self.indices, self.data, hist, self.recency_decay, self.n_items)
        return _add_tiebreak(scores, smallest, self.popularity).astype(np.float32)


# --- the evaluation's baselines ------------------------------------------------------------


@dataclass
class BaselineRun:
    """Each baseline's top-k on the test task (column positions), and what was chosen or
    skipped (`info[name]`: parameters, validation scores, or `{"skipped": reason}`)."""

    tops: dict[str, np.ndarray]
    info: dict[str, dict[str, Any]]


def run_baselines(
    before_test: Interactions,
    *,
    validation_start_us: int,
    test_start_us: int,
    validation: RankingTask,
    test: RankingTask,
    k: int,
    cfg: BaselineConfig,
) -> BaselineRun:
    """Fit every baseline on the positives before the validation window, choose its
    parameter there (Recall@20), refit on `before_test` (every positive before the test
    window) and rank the test users. Every baseline sees the same users, targets and
    seen-item exclusion (the tasks') as the candidate. A user without positives before the
    window gets the chosen recent popularity from item-kNN and EASE, and session
    popularity from co-occurrence."""
    if len(before_test.time) and before_test.time.max() >= test_start_us:
        raise ValueError("before_test holds positives at or after the test window's start")
    before_val = before_test.before(validation_start_us)
    prof_val = before_val.profiles().latest(cfg.max_profile_items)
    prof_test = before_test.profiles().latest(cfg.max_profile_items)
    tops: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}

    total = recent_popularity(before_test.item, before_test.time, before_test.n_items, end_us=test_start_us, days=0)
    tops["popularity"] = test.topk(total, k)
    info["popularity"] = {"positives": len(before_test.item)}

    days, by_window = choose_recent_window(
        before_val, validation, validation_start_us=validation_start_us, windows=cfg.recent_windows_days
    )
    recent = recent_popularity(before_test.item, before_test.time, before_test.n_items, end_us=test_start_us, days=days)
    tops["recent_popularity"] = test.topk(recent, k)
    info["recent_popularity"] = {
        "window_days": days,
        "window": window_label(days),
        f"validation_recall@{SELECT_K}": by_window,
    }

    cooc = CooccurrenceModel(cfg.recency_decay).fit(
        before_test.sessions(), n_items=before_test.n_items, window=cfg.cooccurrence_window
    )
    tops["cooccurrence"] = test.topk(lambda users: cooc.score(prof_test.take(users)), k)
    info["cooccurrence"] = {"window": cfg.cooccurrence_window, "recency_decay": cfg.recency_decay}

    knn = ItemKNN(cfg.knn_neighbours, cfg.recency_decay).fit(prof_test)
    tops["item_knn"] = test.topk(lambda users: knn.score(prof_test.take(users), fallback=recent), k)
    info["item_knn"] = {"neighbours": cfg.knn_neighbours, "recency_decay": cfg.recency_decay}

    n_ease = EASE.modelled_items(prof_test)
    if n_ease > cfg.ease_max_items:
        info["ease"] = {"skipped": ease_skip_reason(n_ease, cfg.ease_max_items)}
        return BaselineRun(tops, info)
    val_recent = recent_popularity(
        before_val.item, before_val.time, before_val.n_items, end_us=validation_start_us, days=days
    )
    by_lambda: dict[str, float] = {}
    best, best_recall = cfg.ease_lambdas[0], -1.0
    for lam in cfg.ease_lambdas:
        model = EASE(lam).fit(prof_val)
        recall = validation.recall(lambda users, m=model: m.score(prof_val.take(users), fallback=val_recent))
        by_lambda[f"{lam:g}"] = recall
        if recall > best_recall:
            best, best_recall = lam, recall
        del model
    ease = EASE(best).fit(prof_test)
    tops["ease"] = test.topk(lambda users: ease.score(prof_test.take(users), fallback=recent), k)
    info["ease"] = {"lambda": best, "items": n_ease, f"validation_recall@{SELECT_K}": by_lambda}
    return BaselineRun(tops, info)
