"""Training the ranking stage (LightGBM LambdaRank) and the item statistics it reads.

The ranker is fitted on the validation window's queries, with every candidate source and
feature built only from positives before that window (`ItemStats` at the validation cut)
and the two-tower model trained on the train split. The gated version then ranks the test
window from statistics at the test cut; the production refit (`RankerConfig.refit`) is
fitted on the validation and the test queries with the early-stopped number of trees, and
ships statistics over the whole window. Features come from `serving/ranker.py`, the same
function serving calls per request; the model is exported to ONNX (no pickle).

No torch, no dagster: the `ranker` asset is a thin adapter over `fit_ranker`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dagster.contract import CATEGORY_SEPARATOR
from recsys_dagster.ml.baselines import DAY_US, CooccurrenceModel, Interactions, ItemKNN, recent_popularity
from recsys_dagster.records import Record
from recsys_dagster.serving.ranker import (
    RANKER_INPUT,
    SOURCES,
    ItemStats,
    RankerModel,
    RankerSpec,
    candidate_features,
    feature_names,
)
from recsys_dagster.settings import documented

USER_BLOCK = 256


@dataclass(frozen=True)
class RankerConfig:
    """How the ranking stage builds candidates and is trained."""

    windows_days: tuple[int, ...] = documented(
        (1, 3, 7, 28), "Item popularity windows (days before the cut) the ranker sees as features."
    )
    trending_days: tuple[int, ...] = documented(
        (1, 3, 7, 14, 0), "Windows tried for the trending source on validation (0 = all data)."
    )
    depth_two_tower: int = documented(100, "Candidates from the two-tower ANN per request.")
    depth_item_knn: int = documented(100, "Candidates from item-kNN neighbours of the user's profile.")
    depth_cooccurrence: int = documented(50, "Candidates from session co-occurrence neighbours.")
    depth_trending: int = documented(50, "Candidates from the trending items.")
    profile_items: int = documented(50, "Latest distinct items of a user that the item-item sources use.")
    neighbours: int = documented(50, "Neighbours kept per item for item-kNN and co-occurrence (bundle size).")
    recency_decay: float = documented(0.8, "Weight of a profile item relative to the next newer one.")
    num_leaves: int = documented(31, "LightGBM leaves per tree.")
    learning_rate: float = documented(0.05, "LightGBM learning rate.")
    max_trees: int = documented(
        150,
        "Most boosting rounds; early stopping on held-out validation users picks fewer. Bounds the serving cost: "
        "scoring ~300 candidates takes ~2 us per candidate per 100 trees on one core.",
    )
    early_stopping: int = documented(30, "Rounds without NDCG@20 gain on the held-out users before stopping.")
    min_data_in_leaf: int = documented(50, "LightGBM min_data_in_leaf.")
    holdout_share: float = documented(
        0.2, "Share of validation users held out to choose the number of trees and the tuned settings."
    )
    tune_seconds: float = documented(
        20.0,
        "Time budget of the Optuna search (num_leaves, learning_rate, min_data_in_leaf, feature_fraction) on the "
        "held-out validation users; the configured values are the first trial. 0 = no search.",
    )
    tune_trials: int = documented(30, "Most Optuna trials within the time budget.")
    refit: bool = documented(
        True,
        "Ship a refit: the ranker on the validation and test queries and item statistics over the whole "
        "window. Off: ship exactly the gated ranker.",
    )
    seed: int = documented(7, "Seed of the holdout split and LightGBM.")

    def __post_init__(self) -> None:
        if not self.windows_days or any(d < 1 for d in self.windows_days):
            raise ValueError(f"windows_days must be non-empty and >= 1, got {self.windows_days}")
        if not self.trending_days or any(d < 0 for d in self.trending_days):
            raise ValueError(f"trending_days must be non-empty and >= 0, got {self.trending_days}")
        depths = (self.depth_two_tower, self.depth_item_knn, self.depth_cooccurrence, self.depth_trending)
        if min(depths) < 1 or self.profile_items < 1 or self.neighbours < 1:
            raise ValueError("depths, profile_items and neighbours must be >= 1")
        if not 0 < self.holdout_share < 1:
            raise ValueError(f"holdout_share must be in (0, 1), got {self.holdout_share}")
        if not 0 < self.recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {self.recency_decay}")
        if self.tune_seconds < 0 or self.tune_trials < 1:
            raise ValueError("tune_seconds must be >= 0 and tune_trials >= 1")

    def depth(self) -> dict[str, int]:
        values = (self.depth_two_tower, self.depth_item_knn, self.depth_cooccurrence, self.depth_trending)
        return dict(zip(SOURCES, values))


# --- item statistics ---------------------------------------------------------------------


def _codes(values: list[str | None]) -> np.ndarray:
    """int32 codes of the distinct non-empty values (sorted), -1 for null or empty."""
    present = sorted({v for v in values if v})
    code = {v: i for i, v in enumerate(present)}
    return np.array([code.get(v, -1) if v else -1 for v in values], dtype=np.int32)


def _top_k_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Each row's `k` largest entries, best first (ties: lower column)."""
    n = len(indptr) - 1
    row = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    order = np.lexsort((indices, -data, row))
    row, col, val = row[order], indices[order], data[order]
    rank = np.arange(len(row)) - indptr[row]
    keep = rank < k
    counts = np.bincount(row[keep], minlength=n)
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return new_ptr, col[keep].astype(np.int32), val[keep].astype(np.float32)


def item_stats(
    positives: Interactions, items: pa.Table, *, cut_us: int, trending_days: int, cfg: RankerConfig
) -> ItemStats:
    """The ranker's per-item statistics from the positives strictly before `cut_us`.
    `items` is the bundle's items table (row order = item index of `positives`)."""
    before = positives.before(cut_us)
    n = positives.n_items
    if items.num_rows != n:
        raise ValueError(f"items table has {items.num_rows} rows, the positives index {n} items")
    counts = np.zeros((n, len(cfg.windows_days)), dtype=np.float32)
    for j, days in enumerate(cfg.windows_days):
        recent = before.time >= cut_us - days * DAY_US
        counts[:, j] = np.bincount(before.item[recent], minlength=n)
    total = np.bincount(before.item, minlength=n).astype(np.float32)

    first = items.column("first_seen")
    first_us = pc.cast(pc.cast(first, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
    first_us = np.asarray(pc.fill_null(pa.array(first_us), -1).to_numpy(zero_copy_only=False), dtype=np.float64)
    known = pc.is_valid(first).to_numpy(zero_copy_only=False)
    age = np.where(known, np.maximum(0.0, (cut_us - first_us) / DAY_US), -1.0).astype(np.float32)

    paths = [p or "" for p in items.column("category_path").to_pylist()]
    leaf = _codes([p.rsplit(CATEGORY_SEPARATOR, 1)[-1].strip() if p else None for p in paths])
    top = _codes([p.split(CATEGORY_SEPARATOR, 1)[0].strip() if p else None for p in paths])
    brand = _codes(items.column("brand").to_pylist()) if "brand" in items.column_names else np.full(n, -1, np.int32)
    price = items.column("price").cast(pa.float64()).fill_null(float("nan")).to_numpy(zero_copy_only=False)
    price_log = np.where(np.isfinite(price) & (price >= 0), np.log1p(np.abs(price)), np.nan).astype(np.float32)

    profiles = before.profiles().latest(max(cfg.profile_items, 1) * 4)
    knn = ItemKNN(cfg.neighbours, cfg.recency_decay).fit(profiles)
    cooc = CooccurrenceModel(cfg.recency_decay).fit(before.sessions(), n_items=n)
    cooc_ptr, cooc_idx, cooc_val = _top_k_csr(cooc.indptr, cooc.indices, cooc.data, cfg.neighbours)

    trending = recent_popularity(before.item, before.time, n, end_us=cut_us, days=trending_days)
    with_positive = np.flatnonzero(total > 0)
    trending_rows = with_positive[np.lexsort((with_positive, -trending[with_positive]))]
    return ItemStats(
        window_counts=counts,
        total=total,
        age_days=age,
        leaf=leaf,
        top=top,
        brand=brand,
        price_log=price_log,
        knn_indptr=knn.indptr.astype(np.int64),
        knn_indices=knn.indices.astype(np.int32),
        knn_data=knn.data.astype(np.float32),
        cooc_indptr=cooc_ptr,
        cooc_indices=cooc_idx,
        cooc_data=cooc_val,
        trending_rows=trending_rows.astype(np.int64),
        trending_scores=trending[trending_rows].astype(np.float32),
    )


def choose_trending_days(
    before: Interactions, *, cut_us: int, queries: RankQueries, windows: tuple[int, ...], depth: int
) -> tuple[int, dict[str, float]]:
    """The window whose trending list (its `depth` best unseen items) holds the most of the
    queries' targets; every window's share. The first of equals wins."""
    shares: dict[str, float] = {}
    best, best_share = windows[0], -1.0
    total_targets = sum(len(t) for t in queries.targets) or 1
    for days in windows:
        score = recent_popularity(before.item, before.time, before.n_items, end_us=cut_us, days=days)
        order = np.lexsort((np.arange(len(score)), -score))
        hits = 0
        for seen, targets in zip(queries.seen, queries.targets):
            top = order[: depth + len(seen)]
            top = top[~np.isin(top, seen)][:depth]
            hits += int(np.isin(targets, top).sum())
        share = hits / total_targets
        shares["all" if days == 0 else f"{days}d"] = share
        if share > best_share:
            best, best_share = days, share
    return best, shares


# --- queries, candidates and features ----------------------------------------------------


@dataclass
class RankQueries:
    """One query per user of a window, as item rows: the tower's inputs, the profile
    (every distinct item before the window, oldest first), the seen rows (excluded) and the
    targets."""

    user_ids: list[str]
    histories: list[list[str]]
    devices: list[str | None]
    hours: list[int]
    profiles: list[np.ndarray]
    seen: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class RankData:
    features: np.ndarray  # float32 [n_rows, n_features]
    labels: np.ndarray  # int32 [n_rows]
    groups: np.ndarray  # int64 rows per query (queries with no candidate dropped)
    query_users: list[str]  # the user of each group
    pool_recall: float  # share of all targets that some source proposed
    n_queries: int


def candidate_rows(engine, stats: ItemStats, spec: RankerSpec, queries: RankQueries):
    """Per query: the candidates (rows, features) from every source, as serving builds them.
    `engine` is the two-tower Engine (its tower, embeddings and index)."""
    active = np.asarray(engine.catalog.active, dtype=bool)
    for start in range(0, len(queries), USER_BLOCK):
        sl = slice(start, min(len(queries), start + USER_BLOCK))
        vecs, _ = engine.user_vectors(queries.histories[sl], queries.devices[sl], queries.hours[sl])
        seen = queries.seen[sl]
        depth = spec.depth["two_tower"] + max((len(s) for s in seen), default=0)
        _, ann = engine.search(vecs, depth)
        for i in range(sl.stop - sl.start):
            excluded = seen[i]

            def keep(rows: np.ndarray, excluded: np.ndarray = excluded) -> np.ndarray:
                return active[rows] & ~np.isin(rows, excluded)

            yield candidate_features(
                stats,
                spec,
                user_vec=vecs[i],
                embeddings=engine.embeddings,
                ann_rows=ann[i],
                profile=queries.profiles[start + i],
                keep=keep,
            )


def rank_data(engine, stats: ItemStats, spec: RankerSpec, queries: RankQueries) -> RankData:
    feats, labels, groups, users = [], [], [], []
    found = total = 0
    for q, cands in enumerate(candidate_rows(engine, stats, spec, queries)):
        label = np.isin(cands.rows, queries.targets[q]).astype(np.int32)
        found += int(label.sum())
        total += len(queries.targets[q])
        if len(cands.rows) == 0:
            continue
        feats.append(cands.features)
        labels.append(label)
        groups.append(len(cands.rows))
        users.append(queries.user_ids[q])
    n_features = len(spec.feature_names)
    return RankData(
        features=np.concatenate(feats) if feats else np.zeros((0, n_features), np.float32),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int32),
        groups=np.array(groups, dtype=np.int64),
        query_users=users,
        pool_recall=found / total if total else 0.0,
        n_queries=len(queries),
    )


# --- training and export -------------------------------------------------------------------


TUNED = ("num_leaves", "learning_rate", "min_data_in_leaf", "feature_fraction")


def _params(cfg: RankerConfig, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [20],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": 0.9,
        **(tuned or {}),
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 50,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbose": -1,
    }


def _select_groups(data: RankData, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = np.concatenate([[0], np.cumsum(data.groups)[:-1]])
    rows = np.concatenate([np.arange(starts[g], starts[g] + data.groups[g]) for g in chosen]) if len(chosen) else []
    rows = np.asarray(rows, dtype=np.int64)
    return data.features[rows], data.labels[rows], data.groups[chosen]


def _with_positive(data: RankData) -> np.ndarray:
    """Groups with at least one positive: the only ones LambdaRank learns from."""
    ends = np.cumsum(data.groups)
    positives = np.add.reduceat(data.labels, ends - data.groups) if len(data.groups) else np.zeros(0)
    return np.flatnonzero(positives > 0)


def _holdout(users: list[str], share: float, seed: int) -> np.ndarray:
    """A stable pseudo-random subset of users (by a hash of the id, not Python's salted hash)."""
    import zlib

    return np.array([(zlib.crc32(f"{seed}:{u}".encode()) % 10_000) < share * 10_000 for u in users], dtype=bool)


@dataclass(frozen=True)
class FitResult:
    booster: Any  # lightgbm.Booster
    best_iteration: int
    holdout_ndcg_at_20: float
    train_seconds: float
    queries: int
    params: dict[str, Any]  # the tuned settings (`TUNED`) the model was fitted with
    trials: list[dict[str, Any]]  # every Optuna trial: settings, trees, holdout NDCG@20


def _search(fit_set, hold_set, cfg: RankerConfig) -> tuple[dict[str, Any], int, float, list[dict[str, Any]]]:
    """Optuna TPE over `TUNED` within `cfg.tune_seconds`, each trial early-stopped on the
    held-out users; the configured values are the first trial, so the search can only keep
    or improve the holdout NDCG@20. Returns the best settings, trees, NDCG and the trials."""
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.enqueue_trial(
        {"num_leaves": cfg.num_leaves, "learning_rate": cfg.learning_rate, "min_data_in_leaf": cfg.min_data_in_leaf}
        | {"feature_fraction": 0.9}
    )

    def objective(trial) -> float:
        tuned = {
            "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 400, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        }
        probe = lgb.train(
            _params(cfg, tuned),
            fit_set,
            num_boost_round=cfg.max_trees,
            valid_sets=[hold_set],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )
        trial.set_user_attr("trees", max(1, int(probe.best_iteration or cfg.max_trees)))
        return float(probe.best_score["valid_0"]["ndcg@20"])

    budget = None if cfg.tune_seconds == 0 else cfg.tune_seconds
    study.optimize(objective, n_trials=1 if budget is None else cfg.tune_trials, timeout=budget)
    trials = [
        {**t.params, "trees": t.user_attrs.get("trees"), "holdout_ndcg@20": t.value}
        for t in study.trials
        if t.value is not None
    ]
    best = study.best_trial
    return dict(best.params), int(best.user_attrs["trees"]), float(best.value), trials


def fit_lambdarank(data: RankData, cfg: RankerConfig, names: list[str]) -> FitResult:
    """Early stopping on held-out users picks the number of trees (and the Optuna search,
    within its time budget, the tuned settings); the model returned is refitted on every
    query with those."""
    import lightgbm as lgb

    groups = _with_positive(data)
    if len(groups) < 10:
        raise ValueError(f"only {len(groups)} validation queries have a target among their candidates: too few")
    held = _holdout([data.query_users[g] for g in groups], cfg.holdout_share, cfg.seed)
    if held.all() or not held.any():
        held[: max(1, len(held) // 5)] = True
        held[max(1, len(held) // 5) :] = False
    start = time.perf_counter()
    x_fit, y_fit, g_fit = _select_groups(data, groups[~held])
    x_hold, y_hold, g_hold = _select_groups(data, groups[held])
    # feature_pre_filter off: the search varies min_data_in_leaf, which a pre-filtered
    # Dataset cannot follow (LightGBM would rebuild it on every trial, noisily).
    dataset_params = {"feature_pre_filter": False}
    fit_set = lgb.Dataset(x_fit, y_fit, group=g_fit, feature_name=names, free_raw_data=False, params=dataset_params)
    hold_set = lgb.Dataset(x_hold, y_hold, group=g_hold, reference=fit_set, free_raw_data=False, params=dataset_params)
    tuned, best, holdout_ndcg, trials = _search(fit_set, hold_set, cfg)
    booster = fit_fixed(data, cfg, names, best, groups, tuned)
    return FitResult(booster, best, holdout_ndcg, time.perf_counter() - start, len(groups), tuned, trials)


def fit_fixed(
    data: RankData,
    cfg: RankerConfig,
    names: list[str],
    trees: int,
    groups: np.ndarray | None = None,
    tuned: dict[str, Any] | None = None,
):
    import lightgbm as lgb

    groups = _with_positive(data) if groups is None else groups
    x, y, g = _select_groups(data, groups)
    return lgb.train(_params(cfg, tuned), lgb.Dataset(x, y, group=g, feature_name=names), num_boost_round=trees)


def concat(a: RankData, b: RankData) -> RankData:
    return RankData(
        features=np.concatenate([a.features, b.features]),
        labels=np.concatenate([a.labels, b.labels]),
        groups=np.concatenate([a.groups, b.groups]),
        query_users=[*a.query_users, *b.query_users],
        pool_recall=float("nan"),
        n_queries=a.n_queries + b.n_queries,
    )


def to_onnx(booster, n_features: int) -> bytes:
    """The booster as an ONNX TreeEnsembleRegressor (input `features` float32 [n, F],
    output `score` [n, 1]): the sum of every tree's leaf value.

    LightGBM compares a feature, read as a double, with a double threshold; ONNX compares
    float32 with float32. Each threshold is rounded *down* to the largest float32 not above
    it, so that for every float32 feature value both take the same branch (rounding to
    nearest, as generic converters do, flips values that sit between the two)."""
    import onnx
    from onnx import TensorProto, helper

    dump = booster.dump_model()
    if dump.get("num_class", 1) != 1 or dump.get("num_tree_per_iteration", 1) != 1:
        raise ValueError("only single-output LightGBM models can be exported")
    nodes: dict[str, list] = {k: [] for k in ("tree", "node", "feature", "value", "mode", "true", "false", "missing")}
    targets: dict[str, list] = {"tree": [], "node": [], "weight": []}

    for t, tree in enumerate(dump["tree_info"]):
        counter = [0]

        def visit(node: dict, t: int = t, counter: list = counter) -> int:
            node_id = counter[0]
            counter[0] += 1
            slot = len(nodes["tree"])
            for key in nodes:
                nodes[key].append(None)
            nodes["tree"][slot], nodes["node"][slot] = t, node_id
            if "leaf_value" in node:
                nodes["feature"][slot], nodes["value"][slot], nodes["mode"][slot] = 0, 0.0, "LEAF"
                nodes["true"][slot] = nodes["false"][slot] = nodes["missing"][slot] = 0
                targets["tree"].append(t)
                targets["node"].append(node_id)
                targets["weight"].append(float(node["leaf_value"]))
                return node_id
            if node.get("decision_type") != "<=":
                raise ValueError(f"cannot export split {node.get('decision_type')!r} (categorical features?)")
            threshold = float(node["threshold"])
            low = np.float32(threshold)
            if float(low) > threshold:
                low = np.nextafter(low, np.float32(-np.inf))
            nodes["feature"][slot], nodes["value"][slot], nodes["mode"][slot] = (
                int(node["split_feature"]),
                float(low),
                "BRANCH_LEQ",
            )
            nodes["missing"][slot] = int(bool(node.get("default_left", True)))
            nodes["true"][slot] = visit(node["left_child"])
            nodes["false"][slot] = visit(node["right_child"])
            return node_id

        visit(tree["tree_structure"])

    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [RANKER_INPUT],
        ["score"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[0.0],
        nodes_treeids=nodes["tree"],
        nodes_nodeids=nodes["node"],
        nodes_featureids=nodes["feature"],
        nodes_values=nodes["value"],
        nodes_modes=nodes["mode"],
        nodes_truenodeids=nodes["true"],
        nodes_falsenodeids=nodes["false"],
        nodes_missing_value_tracks_true=nodes["missing"],
        target_treeids=targets["tree"],
        target_nodeids=targets["node"],
        target_ids=[0] * len(targets["tree"]),
        target_weights=targets["weight"],
    )
    graph = helper.make_graph(
        [ensemble],
        "ranker",
        [helper.make_tensor_value_info(RANKER_INPUT, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)], producer_name="recsys"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_parity(booster, onnx_model: bytes, features: np.ndarray) -> float:
    """Largest absolute difference between LightGBM's and the exported model's scores."""
    if len(features) == 0:
        return 0.0
    sample = features[: min(len(features), 20_000)]
    expected = booster.predict(sample, num_threads=1)
    got = RankerModel.from_bytes(onnx_model, features.shape[1]).score(sample)
    return float(np.max(np.abs(expected - got)))


def importance(booster, names: list[str]) -> dict[str, float]:
    gain = booster.feature_importance(importance_type="gain")
    total = float(gain.sum()) or 1.0
    return {n: round(float(g) / total, 4) for n, g in sorted(zip(names, gain), key=lambda x: -x[1])}


def iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def make_spec(
    cfg: RankerConfig,
    *,
    trending_days: int,
    cut_us: int,
    trained_on: list[str],
    trees: int,
    refit: bool,
    tower_run_id: str,
) -> RankerSpec:
    return RankerSpec(
        feature_names=feature_names(cfg.windows_days),
        windows_days=list(cfg.windows_days),
        trending_days=trending_days,
        depth=cfg.depth(),
        profile_items=cfg.profile_items,
        recency_decay=cfg.recency_decay,
        stats_cut=iso(cut_us),
        trained_on=trained_on,
        n_trees=trees,
        refit=refit,
        tower_run_id=tower_run_id,
    )


@dataclass(frozen=True)
class RankerReport(Record):
    """`artifacts/week=W/ranker/report.json`: how the week's ranker was fitted."""

    best_iteration: int
    holdout_ndcg_at_20: float
    validation_queries: int
    validation_pool_recall: float  # share of validation targets some source proposed
    test_queries: int
    test_pool_recall: float
    trending_days: int
    trending_choice: dict[str, float]
    onnx_max_abs_diff: float  # LightGBM vs the exported ONNX model, on the training features
    onnx_max_abs_diff_refit: float
    refit: bool
    feature_importance: dict[str, float]
    tuned_params: dict[str, Any]  # what the Optuna search chose (the configured values when it did not run)
    tuning_trials: list[dict[str, Any]]  # every trial: settings, trees, holdout NDCG@20
    seconds: dict[str, float] = field(default_factory=dict)
