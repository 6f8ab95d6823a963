"""The ranking stage of the multi-stage recommender, shared by the pipeline and serving.

Candidates come from four sources, each with its own score: the two-tower ANN (FAISS),
item-kNN and session co-occurrence neighbours of the user's profile (latest distinct items),
and trending items (recent popularity). A LightGBM LambdaRank model, exported to ONNX,
scores the union from the features below and orders it. numpy + onnxruntime only: the
pipeline trains on features from `candidate_features` and serving computes the same
function per request, so training, the offline evaluation and serving cannot drift apart.

Bundle files (CONTRACTS `ranker`): `ranker.onnx` (input `features` float32 [n, F], output
one score per row), `ranker.json` (`RankerSpec`), `ranker_items.npz` (`ItemStats`, plain
arrays, never unpickled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from recsys_dagster.bundle.format import RANKER_FILES
from recsys_dagster.records import Record

RANKER_MODEL, RANKER_SPEC, RANKER_STATS = RANKER_FILES
RANKER_INPUT = "features"

SOURCES: tuple[str, ...] = ("two_tower", "item_knn", "cooccurrence", "trending")
# A source that did not propose an item gives it this rank (its depth + 1 would vary with
# the configuration; a constant keeps the trees' thresholds meaningful).
ABSENT_RANK = 1000.0


def feature_names(windows_days: list[int] | tuple[int, ...]) -> list[str]:
    """The ranker's input columns, in order."""
    return [
        "tower_score",
        "tower_rank",
        "knn_score",
        "knn_rank",
        "cooc_score",
        "cooc_rank",
        "trending_rank",
        "n_sources",
        *[f"pop_{d}d" for d in windows_days],
        "pop_all",
        "trend",
        "item_age_days",
        "affinity_leaf",
        "affinity_top",
        "affinity_brand",
        "user_profile_items",
        "price_vs_user",
        "price_log",
    ]


class RankerError(RuntimeError):
    """Ranker files are missing, inconsistent, or do not fit the bundle."""


@dataclass(frozen=True)
class RankerSpec(Record):
    """`ranker.json`: how candidates and features are built, and what the model was fitted on."""

    feature_names: list[str]
    windows_days: list[int]  # popularity windows (days before the stats cut)
    trending_days: int  # the trending source's window, chosen on validation (0 = all)
    depth: dict[str, int]  # candidates per source
    profile_items: int  # latest distinct items of the user that item-kNN and co-occurrence use
    recency_decay: float  # weight of a profile item relative to the next newer one
    stats_cut: str  # ISO time: item statistics count positives strictly before it
    trained_on: list[str]  # the query windows the model was fitted on ("validation", "test")
    n_trees: int
    refit: bool  # True for the production refit (statistics and model over the whole window)
    # The MLflow run of the two-tower model whose ANN and scores it was fitted over ("" in
    # specs written before it was recorded: serving does not need it, assembly refuses them).
    tower_run_id: str = ""

    def __post_init__(self) -> None:
        if list(self.feature_names) != feature_names(self.windows_days):
            raise RankerError(
                f"ranker.json lists features {self.feature_names}; this code builds {feature_names(self.windows_days)}"
            )
        missing = [s for s in SOURCES if s not in self.depth]
        if missing:
            raise RankerError(f"ranker.json has no depth for sources {missing}")


@dataclass(frozen=True)
class ItemStats:
    """Per item row (the bundle's `items.parquet` order), as of `RankerSpec.stats_cut`."""

    window_counts: np.ndarray  # float32 [n_items, len(windows)]: positives in each window
    total: np.ndarray  # float32 [n_items]: every positive before the cut
    age_days: np.ndarray  # float32 [n_items]: days from first seen to the cut (-1 unknown)
    leaf: np.ndarray  # int32 codes of the category leaf (-1 unknown)
    top: np.ndarray  # int32 codes of the top-level category (-1 unknown)
    brand: np.ndarray  # int32 codes (-1 unknown)
    price_log: np.ndarray  # float32 log1p(price), NaN unknown
    knn_indptr: np.ndarray  # int64 [n_items + 1]: item-kNN neighbours (CSR, best first)
    knn_indices: np.ndarray  # int32
    knn_data: np.ndarray  # float32
    cooc_indptr: np.ndarray  # int64: session co-occurrence neighbours (CSR, best first)
    cooc_indices: np.ndarray
    cooc_data: np.ndarray
    trending_rows: np.ndarray  # int64: items by trending score, best first (every item with a positive)
    trending_scores: np.ndarray  # float32, aligned with trending_rows: positives in the trending window

    @property
    def n_items(self) -> int:
        return len(self.total)

    def item_columns(self, windows_days: list[int]) -> np.ndarray:
        """float32 [n_items, len(windows) + 4]: the features that depend on the item alone
        (log popularity per window, log total, trend, age, log price or -1), computed once
        per bundle so a request gathers them in one step."""
        key = ("item_columns", tuple(windows_days))
        cached = self.__dict__.get(key)  # frozen dataclass: cache beside the fields
        if cached is not None:
            return cached
        counts = np.log1p(self.window_counts.astype(np.float64))
        total = np.log1p(self.total.astype(np.float64))
        day = self.window_counts[:, 0].astype(np.float64) / max(1, windows_days[0])
        week = self.window_counts[:, -1].astype(np.float64) / max(1, windows_days[-1])
        price = np.nan_to_num(self.price_log.astype(np.float64), nan=-1.0)
        columns = np.column_stack(
            [counts, total, np.log1p(day) - np.log1p(week), self.age_days.astype(np.float64), price]
        ).astype(np.float32)
        self.__dict__[key] = columns
        return columns

    def save(self, path: Path) -> None:
        np.savez(path, **{name: getattr(self, name) for name in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path, n_items: int) -> ItemStats:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in cls.__dataclass_fields__ if name not in data.files]
            if missing:
                raise RankerError(f"{Path(path).name} lacks arrays {missing}")
            stats = cls(**{name: data[name] for name in cls.__dataclass_fields__})
        stats.validate(n_items)
        return stats

    def validate(self, n_items: int) -> None:
        per_item = ("total", "age_days", "leaf", "top", "brand", "price_log")
        wrong = [name for name in per_item if len(getattr(self, name)) != n_items]
        if wrong or self.window_counts.shape[0] != n_items:
            raise RankerError(f"ranker item statistics do not have {n_items} rows: {wrong or ['window_counts']}")
        for kind in ("knn", "cooc"):
            indptr, indices = getattr(self, f"{kind}_indptr"), getattr(self, f"{kind}_indices")
            if (
                len(indptr) != n_items + 1
                or indptr[-1] != len(indices)
                or len(getattr(self, f"{kind}_data")) != len(indices)
            ):
                raise RankerError(f"ranker {kind} neighbours are not a CSR over {n_items} items")
            if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
                raise RankerError(f"ranker {kind} neighbours point outside the {n_items} items")
        if len(self.trending_rows) and (self.trending_rows.min() < 0 or self.trending_rows.max() >= n_items):
            raise RankerError("ranker trending rows point outside the items")
        if len(self.trending_scores) != len(self.trending_rows):
            raise RankerError("ranker trending scores and rows differ in length")


def _neighbour_scores(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, profile: np.ndarray, decay: float
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) summed over the profile's neighbour lists, the latest profile item
    weighing 1, the one before `decay`, and so on."""
    if len(profile) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    starts, stops = indptr[profile], indptr[profile + 1]
    spans = stops - starts
    total = int(spans.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(spans)[:-1]]), spans) + np.arange(total)
    weight = np.repeat(decay ** np.arange(len(profile) - 1, -1, -1, dtype=np.float64), spans)
    items, inverse = np.unique(indices[offsets], return_inverse=True)
    scores = np.bincount(inverse, weights=weight * data[offsets], minlength=len(items))
    return items.astype(np.int64), scores


# Which of the given item rows may be recommended (active, not seen, matching the filters).
Keep = Callable[[np.ndarray], np.ndarray]


def _top(items: np.ndarray, scores: np.ndarray, keep: Keep, depth: int) -> np.ndarray:
    """The `depth` best kept items: score descending, then row ascending."""
    head = 4 * depth
    if len(items) > head:
        # A long profile has thousands of neighbours: order only those scoring at least the
        # head-th best (ties included, so the order is exact), the rest only if too few survive.
        bar = np.partition(scores, len(scores) - head)[len(scores) - head]
        top = scores >= bar
        order = np.lexsort((items[top], -scores[top]))
        best = items[top][order]
        best = best[keep(best)][:depth]
        if len(best) == depth:
            return best
    order = np.lexsort((items, -scores))
    items = items[order]
    return items[keep(items)][:depth] if len(items) else items


def _first_kept(rows: np.ndarray, keep: Keep, depth: int) -> np.ndarray:
    """The first `depth` kept rows of a long ranked list, read in growing chunks."""
    out: list[np.ndarray] = []
    found, start, chunk = 0, 0, max(64, 4 * depth)
    while found < depth and start < len(rows):
        part = rows[start : start + chunk]
        part = part[keep(part)]
        out.append(part)
        found += len(part)
        start += chunk
        chunk *= 2
    return np.concatenate(out)[:depth] if out else rows[:0]


@dataclass(frozen=True)
class Candidates:
    rows: np.ndarray  # int64 item rows, the union of the sources (ANN order first)
    features: np.ndarray  # float32 [len(rows), n_features]


def candidate_features(
    stats: ItemStats,
    spec: RankerSpec,
    *,
    user_vec: np.ndarray,
    embeddings: np.ndarray,
    ann_rows: np.ndarray,
    profile: np.ndarray,
    keep: Keep,
) -> Candidates:
    """The union of every source's candidates for one user, with the ranker's features.

    `user_vec` is the tower's user vector, `ann_rows` the index's answer for it (best first,
    -1 padding allowed), `profile` the user's distinct item rows, oldest first, and `keep`
    which item rows may be recommended (active, not seen, matching the request's filters):
    only those become candidates."""
    depth = spec.depth
    ann = ann_rows[ann_rows >= 0]
    ann = ann[keep(ann)][: depth["two_tower"]]
    prof = np.asarray(profile, dtype=np.int64)[-spec.profile_items :]
    knn_items, knn_scores = _neighbour_scores(
        stats.knn_indptr, stats.knn_indices, stats.knn_data, prof, spec.recency_decay
    )
    cooc_items, cooc_scores = _neighbour_scores(
        stats.cooc_indptr, stats.cooc_indices, stats.cooc_data, prof, spec.recency_decay
    )
    knn_top = _top(knn_items, knn_scores, keep, depth["item_knn"])
    cooc_top = _top(cooc_items, cooc_scores, keep, depth["cooccurrence"])
    trend_top = _first_kept(stats.trending_rows, keep, depth["trending"])

    # The union in first-seen order (ANN first), without a Python loop per candidate.
    union = np.concatenate([ann, knn_top, cooc_top, trend_top]).astype(np.int64, copy=False)
    distinct, first = np.unique(union, return_index=True)
    first_order = np.argsort(first, kind="stable")
    rows = distinct[first_order]
    n = len(rows)
    feats = np.zeros((n, len(spec.feature_names)), dtype=np.float32)
    if n == 0:
        return Candidates(rows, feats)
    position_of_sorted = np.empty(n, dtype=np.int64)
    position_of_sorted[first_order] = np.arange(n)

    def ranks_of(source_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rank = np.full(n, ABSENT_RANK, dtype=np.float64)
        rank[position_of_sorted[np.searchsorted(distinct, source_rows)]] = np.arange(1, len(source_rows) + 1)
        return rank, rank < ABSENT_RANK

    def lookup(items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        at = np.searchsorted(items, rows)
        at = np.minimum(at, max(len(items) - 1, 0))
        hit = (items[at] == rows) if len(items) else np.zeros(n, dtype=bool)
        return np.where(hit, scores[at] if len(items) else 0.0, 0.0)

    tower_rank, in_ann = ranks_of(ann)
    knn_rank, in_knn = ranks_of(knn_top)
    cooc_rank, in_cooc = ranks_of(cooc_top)
    trend_rank, in_trend = ranks_of(trend_top)
    per_item = stats.item_columns(spec.windows_days)[rows]
    if len(prof):
        leaf_share = _share(stats.leaf[prof], stats.leaf[rows])
        top_share = _share(stats.top[prof], stats.top[rows])
        brand_share = _share(stats.brand[prof], stats.brand[rows])
        prices = stats.price_log[prof]
        prices = prices[np.isfinite(prices)]
        user_price = float(prices.mean()) if len(prices) else np.nan
    else:
        leaf_share = top_share = brand_share = np.zeros(n)
        user_price = np.nan
    item_price = stats.price_log[rows].astype(np.float64)
    price_vs_user = np.where(np.isfinite(item_price) & np.isfinite(user_price), item_price - user_price, 0.0)

    request_columns = [
        embeddings[rows] @ np.asarray(user_vec, dtype=np.float32).reshape(-1),
        tower_rank,
        lookup(knn_items, knn_scores),
        knn_rank,
        lookup(cooc_items, cooc_scores),
        cooc_rank,
        trend_rank,
        in_ann.astype(np.float64) + in_knn + in_cooc + in_trend,
    ]
    for j, col in enumerate(request_columns):
        feats[:, j] = col
    # Popularity per window, total, trend, age: the item's own, gathered at once.
    at = len(request_columns)
    n_item = per_item.shape[1] - 1
    feats[:, at : at + n_item] = per_item[:, :n_item]
    at += n_item
    for j, col in enumerate(
        [leaf_share, top_share, brand_share, np.full(n, np.log1p(len(prof))), price_vs_user, per_item[:, -1]]
    ):
        feats[:, at + j] = col
    return Candidates(rows, feats)


def _share(profile_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
    """For each item, the share of profile items with the same (known) code."""
    known = profile_codes[profile_codes >= 0]
    if len(known) == 0:
        return np.zeros(len(item_codes))
    codes, counts = np.unique(known, return_counts=True)
    at = np.minimum(np.searchsorted(codes, item_codes), len(codes) - 1)
    hit = (codes[at] == item_codes) & (item_codes >= 0)
    return np.where(hit, counts[at] / len(profile_codes), 0.0)


class RankerModel:
    """The exported LambdaRank model: features -> one score per candidate (higher is better)."""

    def __init__(self, session: ort.InferenceSession, n_features: int):
        self.session = session
        self.n_features = n_features

    @classmethod
    def from_bytes(cls, model: bytes, n_features: int, threads: int = 1) -> RankerModel:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        inputs = sess.get_inputs()
        if [i.name for i in inputs] != [RANKER_INPUT] or inputs[0].shape[-1] not in (n_features, None):
            raise RankerError(
                f"{RANKER_MODEL} takes {[(i.name, i.shape) for i in inputs]}, "
                f"expected {RANKER_INPUT!r} with {n_features} features"
            )
        return cls(sess, n_features)

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float64)
        (out,) = self.session.run(None, {RANKER_INPUT: np.ascontiguousarray(features, dtype=np.float32)})[:1]
        return np.asarray(out, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class Ranker:
    """Everything the ranking stage of a bundle needs."""

    spec: RankerSpec
    stats: ItemStats
    model: RankerModel

    @classmethod
    def from_dir(cls, path: Path, n_items: int, threads: int = 1) -> Ranker | None:
        """The ranker of a bundle directory; None for a bundle without one (two-tower only)."""
        present = [name for name in RANKER_FILES if (path / name).is_file()]
        if not present:
            return None
        if len(present) != len(RANKER_FILES):
            raise RankerError(f"{path} has only {present} of the ranker files {list(RANKER_FILES)}")
        spec = RankerSpec.from_json((path / RANKER_SPEC).read_bytes())
        stats = ItemStats.load(path / RANKER_STATS, n_items)
        if stats.window_counts.shape[1] != len(spec.windows_days):
            raise RankerError("ranker_items.npz and ranker.json disagree on the popularity windows")
        model = RankerModel.from_bytes((path / RANKER_MODEL).read_bytes(), len(spec.feature_names), threads)
        stats.item_columns(spec.windows_days)  # at load, not on the first request
        return cls(spec, stats, model)

    def rank(
        self,
        *,
        user_vec: np.ndarray,
        embeddings: np.ndarray,
        ann_rows: np.ndarray,
        profile: np.ndarray,
        keep: Keep,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the candidates, best first (ties: earlier in the union)."""
        cands = candidate_features(
            self.stats,
            self.spec,
            user_vec=user_vec,
            embeddings=embeddings,
            ann_rows=ann_rows,
            profile=profile,
            keep=keep,
        )
        scores = self.model.score(cands.features)
        order = np.argsort(-scores, kind="stable")
        return cands.rows[order], scores[order]

    def describe(self) -> dict[str, Any]:
        return {"trained_on": self.spec.trained_on, "refit": self.spec.refit, "stats_cut": self.spec.stats_cut}
