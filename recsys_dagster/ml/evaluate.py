"""Full-ranking offline evaluation on the held-out test window.

Every system is scored on exactly the same users and targets, over the whole active
catalog (no sampled candidates), with the same exclusion: everything the user had a
positive on before the test window (the train and validation splits), not only the
user's last-L history. Systems: the candidate through the serving path (ONNX user tower
+ the built index) and by exact search (to separate model quality from index loss), the
current champion through its own bundle, and the baselines of `ml/baselines.py`
(popularity, recent popularity, session co-occurrence, item-kNN, EASE), fitted on the
positives before the test window with their parameters chosen on the validation window.
No torch here: the candidate is read from its bundle files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dagster.ml.baselines import (
    BASELINES,
    SCORE_CELLS,
    BaselineConfig,
    Interactions,
    RankingTask,
    run_baselines,
)
from recsys_dagster.ml.metrics import coverage_at_k, per_user_metrics, popularity_bias, rank_topk, summarize
from recsys_dagster.records import Record

KS = (10, 20, 50)
DEPTH = max(KS)
# Metrics shown per system and per segment (the per-user vectors keep all of them).
HEADLINE = ("recall@10", "recall@20", "recall@50", "ndcg@10", "mrr", "hit@10")
# Catalog-level metrics of a system (not defined per user).
CATALOG_METRICS = ("coverage@10", "popularity_bias@10")
# Per-user columns of `per_user.parquet`, `<system>.<metric>` for every system.
PER_USER_METRICS = ("recall@20", "ndcg@10", "mrr")
USER_BLOCK = 1024
# What the seen sets and the baselines read from the splits before the test window.
PRIOR_COLUMNS = ["user_id", "item_id", "timestamp", "session_id"]


@dataclass
class Queries:
    """One query per user of an evaluated window: the history at its start (the tower's
    input), everything the user had a positive on before it (`seen`, excluded from every
    ranking), and the distinct active items the user then touched that are not seen."""

    user_ids: list[str]
    histories: list[list[str]]
    devices: list[str | None]
    hours: list[int]
    targets: list[list[str]]
    seen: list[list[str]]

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def new_user(self) -> np.ndarray:
        """No positive before the window."""
        return np.array([len(s) == 0 for s in self.seen], dtype=bool)


@dataclass
class Report:
    n_users: int
    n_items: int
    systems: dict[str, dict[str, float]]
    segments: dict[str, dict[str, dict[str, float]]]
    per_user: pa.Table
    validation_users: int
    baselines: dict[str, dict[str, Any]]
    topk: dict[str, np.ndarray]  # system -> [n_users, DEPTH] columns of `ranked_ids` (-1 = none)
    ranked_ids: np.ndarray  # item id of each ranked column (the active items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "systems": self.systems,
            "segments": self.segments,
            "validation_users": self.validation_users,
            "baselines": self.baselines,
        }

    def markdown(self) -> str:
        return evaluation_markdown(self.to_dict())


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def evaluation_markdown(evaluation: dict[str, Any]) -> str:
    """The week's table: every system and metric, what each baseline chose (or why it was
    skipped), and every metric per segment. From `Report.to_dict()` or a metrics.json."""
    cols = [*HEADLINE, *CATALOG_METRICS]
    lines = [
        f"Test users: {evaluation['n_users']}, active items: {evaluation['n_items']}, "
        f"validation users: {evaluation['validation_users']}.",
        "",
        "| system | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, m in evaluation["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(m.get(c)) for c in cols) + " |")
    lines += ["", "| baseline | chosen on validation |", "|---|---|"]
    for name, info in evaluation["baselines"].items():
        lines.append(f"| {name} | {_baseline_note(info)} |")
    if evaluation["segments"]:
        header = "| segment | system | users | " + " | ".join(HEADLINE) + " |"
        lines += ["", header, "|---|---|---|" + "---|" * len(HEADLINE)]
        for seg, by_system in evaluation["segments"].items():
            for name, m in by_system.items():
                values = " | ".join(_cell(m.get(c)) for c in HEADLINE)
                lines.append(f"| {seg} | {name} | {int(m['n_users'])} | {values} |")
    return "\n".join(lines)


def _baseline_note(info: dict[str, Any]) -> str:
    if "skipped" in info:
        return f"skipped: {info['skipped']}"
    parts = []
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
        parts.append(f"{key}: {value}")
    return "; ".join(parts).replace("|", "\\|")


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """`evaluation/week=W/metrics.json`: the week's offline evaluation, as the gate reads it."""

    week: str
    n_users: int  # test users (with at least one target): the gate's evidence
    n_items: int
    systems: dict[str, dict[str, float]]  # system -> metric -> value
    segments: dict[str, dict[str, dict[str, float]]]  # segment -> system -> metric -> value
    validation_users: int  # the users the baselines' parameters were chosen on
    baselines: dict[str, dict[str, Any]]  # baseline -> what it chose, or {"skipped": reason}
    champion_version: str | None  # the promoted version it was compared with
    mlflow_run_id: str
    mlflow_model_version: str
    training_window: dict[str, Any]  # {"window": [first, last], "splits": {split: [first, last]}}

    def gated_baselines(self) -> list[str]:
        """The baselines that ran (skipped ones excluded); each must be among `systems`."""
        names = [name for name, info in self.baselines.items() if "skipped" not in info]
        missing = [name for name in names if name not in self.systems]
        if missing:
            raise ValueError(f"metrics.json lists baselines {missing} that have no metrics")
        return names

    def strongest_baseline(self) -> tuple[str, float]:
        """The gated baseline with the highest test recall@20 (the first of equals)."""
        names = self.gated_baselines()
        if not names:
            raise ValueError("the evaluation ran no baseline")
        best = max(names, key=lambda n: self.systems[n]["recall@20"])
        return best, float(self.systems[best]["recall@20"])

    def markdown(self) -> str:
        return evaluation_markdown(self.to_dict())


def seen_items(prior: pa.Table) -> dict[str, list[str]]:
    """user -> the distinct items of the user's positives in `prior`, oldest first by each
    item's latest positive (ties by item id): the order of serving's profile."""
    if prior.num_rows == 0:
        return {}
    last = (
        prior.select(["user_id", "item_id", "timestamp"])
        .group_by(["user_id", "item_id"])
        .aggregate([("timestamp", "max")])
    )
    order = pc.sort_indices(
        last, sort_keys=[("user_id", "ascending"), ("timestamp_max", "ascending"), ("item_id", "ascending")]
    )
    last = last.take(order)
    users = last.column("user_id").to_pylist()
    items = last.column("item_id").to_pylist()
    out: dict[str, list[str]] = {}
    for u, i in zip(users, items):
        out.setdefault(u, []).append(i)
    return out


def build_queries(rows: pa.Table, active_item_ids: set[str], prior: pa.Table, split: str = "test") -> Queries:
    """Group a window's rows by user. The history of a user's earliest row is what the user
    did before the window (histories are strictly before their row); `prior` holds every
    positive before the window, whose items (and the history's) are the user's seen set."""
    if rows.num_rows == 0:
        raise ValueError(f"the {split} split is empty: nothing to evaluate on")
    seen_of = seen_items(prior)
    order = pc.sort_indices(rows, sort_keys=[("user_id", "ascending"), ("timestamp", "ascending")])
    t = rows.select(["user_id", "item_id", "history", "device_type", "hour"]).take(order)
    users = t.column("user_id").to_pylist()
    items = t.column("item_id").to_pylist()
    hist = t.column("history").to_pylist()
    devices = t.column("device_type").to_pylist()
    hours = t.column("hour").to_pylist()
    q = Queries([], [], [], [], [], [])
    i = 0
    n = len(users)
    while i < n:
        j = i
        while j < n and users[j] == users[i]:
            j += 1
        history = list(hist[i] or [])
        seen = list(dict.fromkeys([*(seen_of.get(users[i]) or []), *history]))
        seen_set = set(seen)
        targets = list(dict.fromkeys(x for x in items[i:j] if x in active_item_ids and x not in seen_set))
        if targets:
            q.user_ids.append(users[i])
            q.histories.append(history)
            q.devices.append(devices[i])
            q.hours.append(int(hours[i]))
            q.targets.append(targets)
            q.seen.append(seen)
        i = j
    if not q.user_ids:
        raise ValueError(f"no {split} user has a target among the active items they had not seen before")
    return q


class Universe:
    """The ranked catalog: active items of the candidate, as columns 0..n-1."""

    def __init__(self, item_ids: np.ndarray, active: np.ndarray, popularity: np.ndarray):
        self.rows = np.flatnonzero(active)
        self.ids = item_ids[self.rows]
        self.col_of = {x: c for c, x in enumerate(self.ids.tolist())}
        self.popularity = popularity[self.rows].astype(np.float64)
        self.n = len(self.rows)

    def cols(self, ids: list[str]) -> np.ndarray:
        return np.array([self.col_of[x] for x in ids if x in self.col_of], dtype=np.int64)


def _topk_from_ids(ranked: list[list[str]], universe: Universe, seen: list[np.ndarray]) -> np.ndarray:
    """Ranked item ids (any catalog) -> universe columns, seen items removed, padded with -1."""
    out = np.full((len(ranked), DEPTH), -1, dtype=np.int64)
    for r, ids in enumerate(ranked):
        s = set(seen[r].tolist())
        cols = [c for c in (universe.col_of.get(x, -1) for x in ids) if c >= 0 and c not in s]
        cols = list(dict.fromkeys(cols))[:DEPTH]
        out[r, : len(cols)] = cols
    return out


def _has_known(engine, history: list[str]) -> bool:
    return any(x in engine.catalog.row_of for x in history)


def _user_blocks(n_users: int, width: int) -> list[slice]:
    block = max(1, min(USER_BLOCK, SCORE_CELLS // max(1, width)))
    return [slice(s, min(n_users, s + block)) for s in range(0, n_users, block)]


def _engine_topk(
    engine, queries: Queries, seen: list[np.ndarray], universe: Universe, *, exact: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The serving path: the ONNX user tower, FAISS candidates deep enough to survive the
    seen items, and the ranking stage over every candidate source when the bundle has one
    (`Engine.rank`, as `/recommendations` calls it, with each user's seen items as profile
    and exclusion). With `exact`, the tower's vectors against every active item (the
    index's loss). A user with no known history item gets the bundle's popularity ranking,
    as serving answers them."""
    n = len(queries)
    index_top = np.full((n, DEPTH), -1, dtype=np.int64)
    exact_top = np.full((n, DEPTH), -1, dtype=np.int64) if exact else None
    ids = engine.catalog.item_id
    active = np.asarray(engine.catalog.active, dtype=bool)
    active_emb = engine.embeddings[universe.rows] if exact else None
    for sl in _user_blocks(n, universe.n):
        histories = queries.histories[sl]
        vecs, _ = engine.user_vectors(histories, queries.devices[sl], queries.hours[sl])
        seen_rows = [np.array(engine.catalog.rows_of(s)[0], dtype=np.int64) for s in queries.seen[sl]]
        scores, rows = engine.search(vecs, engine.ann_depth(max((len(s) for s in seen_rows), default=0)))
        popular = [ids[r] for r in engine.catalog.popular_rows[: DEPTH + max((len(s) for s in seen[sl]), default=0)]]
        cold = np.array([not _has_known(engine, h) for h in histories], dtype=bool)
        ranked = []
        for i, excluded in enumerate(seen_rows):
            if cold[i]:
                ranked.append(popular)
                continue

            def keep(r: np.ndarray, excluded: np.ndarray = excluded) -> np.ndarray:
                return active[r] & ~np.isin(r, excluded)

            top, _ = engine.rank(vecs[i], scores[i], rows[i], profile=excluded, keep=keep)
            ranked.append([ids[r] for r in top[: DEPTH + len(excluded)]])
        index_top[sl] = _topk_from_ids(ranked, universe, seen[sl])
        if exact_top is not None:
            block = rank_topk(vecs @ active_emb.T, DEPTH, exclude=seen[sl])
            block[cold] = index_top[sl][cold]  # same popularity fallback as serving
            exact_top[sl] = block
    return index_top, exact_top


def _summary(top: np.ndarray, targets: list[np.ndarray]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    per_user = per_user_metrics(top, targets, ks=KS)
    return summarize(per_user), per_user


def _system_metrics(topk: np.ndarray, targets: list[np.ndarray], universe: Universe) -> tuple[dict, dict]:
    summary, per_user = _summary(topk, targets)
    summary["coverage@10"] = coverage_at_k(topk, universe.n, k=10)
    summary["popularity_bias@10"] = popularity_bias(topk[:, :10], universe.popularity)
    return summary, per_user


def _index_of(values: pa.ChunkedArray, vocabulary: pa.Array, what: str) -> np.ndarray:
    idx = pc.index_in(values, value_set=vocabulary)
    if idx.null_count or values.null_count:
        raise ValueError(f"{max(idx.null_count, values.null_count)} {what} are null or unknown")
    return np.asarray(idx.to_numpy(), dtype=np.int64)


def interactions_from(prior: pa.Table, users: pa.Array, item_ids: pa.Array) -> Interactions:
    """Positives (`PRIOR_COLUMNS`) as index arrays: users as rows of `users`, items as rows
    of `item_ids` (the candidate's items table), sessions numbered."""
    sessions = prior.column("session_id")
    return Interactions(
        user=_index_of(prior.column("user_id"), users, "positive users"),
        item=_index_of(prior.column("item_id"), item_ids, "positive items (missing from the items table)"),
        time=np.asarray(pc.cast(prior.column("timestamp"), pa.int64()).to_numpy(), dtype=np.int64),
        session=_index_of(sessions, pc.unique(sessions), "positive session ids"),
        n_users=len(users),
        n_items=len(item_ids),
    )


def _micros(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"window starts must be timezone-aware, got {t}")
    return int(round(t.timestamp() * 1_000_000))


def evaluate(
    candidate,
    *,
    train: pa.Table,
    validation: pa.Table,
    test: pa.Table,
    items: pa.Table,
    validation_start: datetime,
    test_start: datetime,
    champion=None,
    cfg: BaselineConfig | None = None,
) -> Report:
    """Score candidate (index + exact), champion and the baselines on the test users.

    `candidate` and `champion` are serving Engines; `train`, `validation`, `test` the
    week's splits (CONTRACTS `training`); `items` the candidate's items table, whose
    `train_count` (train split only) sorts items into cold and warm and measures
    popularity bias. The baselines fit on the train and validation positives (every
    positive before `test_start`), choosing their parameters on the validation window
    (starting at `validation_start`) from the train positives only.
    """
    cfg = cfg or BaselineConfig()
    item_ids = np.asarray(candidate.catalog.item_id, dtype=object)
    if items.column("item_id").to_pylist() != item_ids.tolist():
        raise ValueError("items table and candidate bundle disagree on item rows")
    popularity = np.nan_to_num(items.column("train_count").to_numpy(zero_copy_only=False).astype(np.float64))
    universe = Universe(item_ids, np.asarray(candidate.catalog.active, dtype=bool), popularity)
    active = set(universe.ids.tolist())
    before_validation = train.select(PRIOR_COLUMNS)
    before_test = pa.concat_tables([before_validation, validation.select(PRIOR_COLUMNS)])
    queries = build_queries(test, active, before_test, split="test")
    val_queries = build_queries(validation, active, before_validation, split="validation")

    users = pc.unique(pa.chunked_array([*before_test.column("user_id").chunks, *test.column("user_id").chunks]))
    row_of_user = {u: r for r, u in enumerate(users.to_pylist())}
    item_vocab = pa.array(item_ids.tolist(), pa.string())

    def task(q: Queries) -> RankingTask:
        return RankingTask(
            users=np.array([row_of_user[u] for u in q.user_ids], dtype=np.int64),
            columns=universe.rows.astype(np.int64),
            seen=[universe.cols(s) for s in q.seen],
            targets=[universe.cols(t) for t in q.targets],
            n_items=len(item_ids),
        )

    test_task = task(queries)
    seen, targets = test_task.seen, test_task.targets
    baselines = run_baselines(
        interactions_from(before_test, users, item_vocab),
        validation_start_us=_micros(validation_start),
        test_start_us=_micros(test_start),
        validation=task(val_queries),
        test=test_task,
        k=DEPTH,
        cfg=cfg,
    )

    tops: dict[str, np.ndarray] = {}
    if candidate.ranker is not None:
        tops["candidate"], _ = _engine_topk(candidate, queries, seen, universe, exact=False)
        tops["two_tower"], tops["two_tower_exact"] = _engine_topk(
            candidate.without_ranker(), queries, seen, universe, exact=True
        )
    else:
        tops["candidate"], tops["two_tower_exact"] = _engine_topk(candidate, queries, seen, universe, exact=True)
    if champion is not None:
        tops["champion"], _ = _engine_topk(champion, queries, seen, universe, exact=False)
    for name in BASELINES:
        if name in baselines.tops:
            tops[name] = baselines.tops[name]

    systems: dict[str, dict[str, float]] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for name, top in tops.items():
        systems[name], vectors[name] = _system_metrics(top, targets, universe)

    columns: dict[str, Any] = {
        "user_id": queries.user_ids,
        "new_user": queries.new_user,
        "n_targets": [len(t) for t in targets],
        "n_seen": [len(s) for s in queries.seen],
    }
    for name, v in vectors.items():
        for metric in PER_USER_METRICS:
            columns[f"{name}.{metric}"] = v[metric]
    return Report(
        n_users=len(queries),
        n_items=universe.n,
        systems=systems,
        segments=_segments(tops, targets, queries.new_user, universe.popularity == 0),
        per_user=pa.table(columns),
        validation_users=len(val_queries),
        baselines=baselines.info,
        topk=tops,
        ranked_ids=universe.ids,
    )


def _segment(tops: dict[str, np.ndarray], idx: np.ndarray, targets: list[np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for name, top in tops.items():
        summary, _ = _summary(top[idx], targets)
        out[name] = {"n_users": float(len(idx)), **{m: summary[m] for m in HEADLINE}}
    return out


def _segments(
    tops: dict[str, np.ndarray], targets: list[np.ndarray], new_user: np.ndarray, cold_items: np.ndarray
) -> dict[str, dict[str, dict[str, float]]]:
    """Every headline metric for new vs returning users, and over cold vs warm target
    items (no train positive vs some)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for seg, mask in (("new_users", new_user), ("returning_users", ~new_user)):
        idx = np.flatnonzero(mask)
        if len(idx):
            out[seg] = _segment(tops, idx, [targets[i] for i in idx])
    for seg, want_cold in (("cold_items", True), ("warm_items", False)):
        sub = [t[cold_items[t] == want_cold] for t in targets]
        idx = np.array([i for i, t in enumerate(sub) if len(t)], dtype=np.int64)
        if len(idx):
            out[seg] = _segment(tops, idx, [sub[i] for i in idx])
    return out
