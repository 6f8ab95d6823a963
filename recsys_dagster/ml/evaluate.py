"""Full-ranking offline evaluation on the held-out test window.

Every system is scored on exactly the same users and targets, over the whole active
catalog (no sampled candidates): the candidate through the serving path (ONNX user tower
+ the built index) and by exact search (to separate model quality from index loss), the
current champion through its own bundle, a popularity baseline and a session
co-occurrence baseline. No torch here: the candidate is read from its bundle files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_dagster.ml.baselines import CooccurrenceModel
from recsys_dagster.ml.metrics import coverage_at_k, per_user_metrics, popularity_bias, rank_topk, summarize
from recsys_dagster.records import Record

KS = (10, 20, 50)
DEPTH = max(KS)
# Metrics shown per system (the per-user vectors keep all of them).
HEADLINE = ("recall@10", "recall@20", "recall@50", "ndcg@10", "mrr", "hit@10")
USER_BLOCK = 1024


@dataclass
class Queries:
    """One query per test user: the history at the start of the test window, and the
    distinct active items the user then interacted with (minus what was in the history)."""

    user_ids: list[str]
    histories: list[list[str]]
    devices: list[str | None]
    hours: list[int]
    targets: list[list[str]]

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def new_user(self) -> np.ndarray:
        return np.array([len(h) == 0 for h in self.histories])


@dataclass
class Report:
    n_users: int
    n_items: int
    systems: dict[str, dict[str, float]]
    segments: dict[str, dict[str, dict[str, float]]]
    per_user: pa.Table

    def to_dict(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items, "systems": self.systems, "segments": self.segments}

    def markdown(self) -> str:
        cols = [*HEADLINE, "coverage@10", "popularity_bias@10"]
        lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, m in self.systems.items():
            lines.append(f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in cols) + " |")
        if self.segments:
            lines += ["", "| segment | system | users | recall@20 |", "|---|---|---|---|"]
            for seg, by_system in self.segments.items():
                for name, m in by_system.items():
                    lines.append(f"| {seg} | {name} | {int(m['n_users'])} | {m['recall@20']:.4f} |")
        return "\n".join(lines)


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """`evaluation/week=W/metrics.json`: the week's offline evaluation, as the gate reads it."""

    week: str
    n_users: int
    n_items: int
    systems: dict[str, dict[str, float]]  # system -> metric -> value
    segments: dict[str, dict[str, dict[str, float]]]  # segment -> system -> metric -> value
    champion_version: str | None  # the promoted version it was compared with
    mlflow_run_id: str
    mlflow_model_version: str
    training_window: dict[str, Any]  # {"window": [first, last], "splits": {split: [first, last]}}


def build_queries(test: pa.Table, active_item_ids: set[str]) -> Queries:
    """Group test rows by user. The history of a user's earliest test row is everything the
    user did before the test window (histories are strictly before their row)."""
    if test.num_rows == 0:
        raise ValueError("the test split is empty: nothing to evaluate on")
    order = pc.sort_indices(test, sort_keys=[("user_id", "ascending"), ("timestamp", "ascending")])
    t = test.take(order)
    users = t.column("user_id").to_pylist()
    items = t.column("item_id").to_pylist()
    hist = t.column("history").to_pylist()
    devices = t.column("device_type").to_pylist()
    hours = t.column("hour").to_pylist()
    q = Queries([], [], [], [], [])
    i = 0
    n = len(users)
    while i < n:
        j = i
        while j < n and users[j] == users[i]:
            j += 1
        history = list(hist[i] or [])
        seen = set(history)
        targets = list(dict.fromkeys(x for x in items[i:j] if x in active_item_ids and x not in seen))
        if targets:
            q.user_ids.append(users[i])
            q.histories.append(history)
            q.devices.append(devices[i])
            q.hours.append(int(hours[i]))
            q.targets.append(targets)
        i = j
    if not q.user_ids:
        raise ValueError("no test user has a target among the active items")
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


def _index_path(engine, queries: Queries, seen: list[np.ndarray], universe: Universe) -> np.ndarray:
    """The serving path: ONNX user tower, FAISS candidates, seen items removed; a user with
    no usable history gets the bundle's popularity ranking, as serving answers them."""
    vecs, _ = engine.user_vectors(queries.histories, queries.devices, queries.hours)
    depth = DEPTH + max((len(h) for h in queries.histories), default=0) + 10
    _, rows = engine.search(vecs, depth)
    ids = engine.catalog.item_id
    popular = [ids[r] for r in engine.catalog.popular_rows[:depth]]
    ranked = [
        [ids[r] for r in row if r >= 0] if _has_known(engine, h) else popular for row, h in zip(rows, queries.histories)
    ]
    return _topk_from_ids(ranked, universe, seen)


def _has_known(engine, history: list[str]) -> bool:
    return any(x in engine.catalog.row_of for x in history)


def _blockwise(score_block: Callable[[slice], np.ndarray], n_users: int, seen: list[np.ndarray]) -> np.ndarray:
    out = []
    for start in range(0, n_users, USER_BLOCK):
        sl = slice(start, min(n_users, start + USER_BLOCK))
        out.append(rank_topk(score_block(sl), DEPTH, exclude=seen[sl]))
    return np.vstack(out)


def _system_metrics(topk: np.ndarray, targets: list[np.ndarray], universe: Universe) -> tuple[dict, dict]:
    per_user = per_user_metrics(topk, targets, ks=KS)
    summary = summarize(per_user)
    summary["coverage@10"] = coverage_at_k(topk, universe.n, k=10)
    summary["popularity_bias@10"] = popularity_bias(topk[:, :10], universe.popularity)
    return summary, per_user


def evaluate(
    candidate,
    queries: Queries,
    *,
    train_sessions: list[list[str]],
    items: pa.Table,
    champion=None,
) -> Report:
    """Score candidate (index + exact), champion, popularity and co-occurrence on `queries`.

    `candidate` and `champion` are serving Engines; `items` is the candidate's items
    table, whose `train_count` (train split only: nothing from the test window) is the
    popularity signal.
    """
    item_ids = np.asarray(candidate.catalog.item_id, dtype=object)
    if items.column("item_id").to_pylist() != item_ids.tolist():
        raise ValueError("items table and candidate bundle disagree on item rows")
    popularity = np.nan_to_num(items.column("train_count").to_numpy(zero_copy_only=False).astype(np.float64))
    universe = Universe(item_ids, np.asarray(candidate.catalog.active, dtype=bool), popularity)
    n = len(queries)
    seen = [universe.cols(h) for h in queries.histories]
    targets = [universe.cols(t) for t in queries.targets]

    tops: dict[str, np.ndarray] = {}
    tops["candidate"] = _index_path(candidate, queries, seen, universe)
    vecs, _ = candidate.user_vectors(queries.histories, queries.devices, queries.hours)
    active_emb = candidate.embeddings[universe.rows]
    exact = _blockwise(lambda sl: vecs[sl] @ active_emb.T, n, seen)
    cold_start = np.array([not _has_known(candidate, h) for h in queries.histories])
    exact[cold_start] = tops["candidate"][cold_start]  # same popularity fallback as serving
    tops["candidate_exact"] = exact
    if champion is not None:
        tops["champion"] = _index_path(champion, queries, seen, universe)
    pop = universe.popularity
    tops["popularity"] = _blockwise(lambda sl: np.broadcast_to(pop, (sl.stop - sl.start, universe.n)).copy(), n, seen)

    all_col = {x: i for i, x in enumerate(item_ids.tolist())}
    cooc = CooccurrenceModel().fit(
        [[all_col[x] for x in s if x in all_col] for s in train_sessions], n_items=len(item_ids), window=20
    )
    hist_rows = [np.array([all_col[x] for x in h if x in all_col], dtype=np.int64) for h in queries.histories]
    tops["cooccurrence"] = _blockwise(lambda sl: cooc.score(hist_rows[sl])[:, universe.rows], n, seen)

    systems: dict[str, dict[str, float]] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for name, top in tops.items():
        systems[name], vectors[name] = _system_metrics(top, targets, universe)

    segments = _segments(tops, targets, queries, universe)
    columns: dict[str, Any] = {
        "user_id": queries.user_ids,
        "new_user": queries.new_user,
        "n_targets": [len(t) for t in targets],
    }
    for name, v in vectors.items():
        for metric in ("recall@20", "ndcg@10", "mrr"):
            columns[f"{name}.{metric}"] = v[metric]
    return Report(
        n_users=n,
        n_items=universe.n,
        systems=systems,
        segments=segments,
        per_user=pa.table(columns),
    )


def _segments(tops: dict[str, np.ndarray], targets: list[np.ndarray], queries: Queries, universe: Universe) -> dict:
    """recall@20 for new vs returning users, and over cold vs warm target items."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    new = queries.new_user
    for seg, mask in (("new_users", new), ("returning_users", ~new)):
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        out[seg] = {
            name: {
                "n_users": float(len(idx)),
                "recall@20": float(per_user_metrics(top[idx], [targets[i] for i in idx], ks=(20,))["recall@20"].mean()),
            }
            for name, top in tops.items()
        }
    cold_items = universe.popularity == 0
    for seg, want_cold in (("cold_items", True), ("warm_items", False)):
        sub = [t[cold_items[t] == want_cold] for t in targets]
        idx = np.array([i for i, t in enumerate(sub) if len(t)], dtype=np.int64)
        if len(idx) == 0:
            continue
        out[seg] = {
            name: {
                "n_users": float(len(idx)),
                "recall@20": float(per_user_metrics(top[idx], [sub[i] for i in idx], ks=(20,))["recall@20"].mean()),
            }
            for name, top in tops.items()
        }
    return out


def train_sessions_from(train: pa.Table) -> list[list[str]]:
    """Item lists per session of the train split, in time order (for co-occurrence)."""
    order = pc.sort_indices(train, sort_keys=[("session_id", "ascending"), ("timestamp", "ascending")])
    t = train.select(["session_id", "item_id"]).take(order)
    sessions: dict[str, list[str]] = {}
    for s, i in zip(t.column("session_id").to_pylist(), t.column("item_id").to_pylist()):
        sessions.setdefault(s, []).append(i)
    return list(sessions.values())
