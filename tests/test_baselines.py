"""The evaluation's baselines on hand-computed examples, and the evaluation's seen-set
exclusion end to end (every system, on a synthetic bundle served by the real Engine)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from bundle_factory import make_bundle_dir

from recsys_dagster.ml.baselines import (
    DAY_US,
    EASE,
    BaselineConfig,
    Interactions,
    ItemKNN,
    Profiles,
    RankingTask,
    choose_recent_window,
    cooccurrence_counts,
    ease_weights,
    recent_popularity,
    run_baselines,
)
from recsys_dagster.ml.metrics import rank_topk

# --- data structures ------------------------------------------------------------------


def interactions(rows: list[tuple[int, int, int, int]], n_users: int, n_items: int) -> Interactions:
    """(user, item, time µs, session) tuples."""
    u, i, t, s = (np.array(c, dtype=np.int64) for c in zip(*rows)) if rows else [np.empty(0, np.int64)] * 4
    return Interactions(u, i, t, s, n_users, n_items)


def test_profiles_order_items_by_last_positive_and_cut_to_latest():
    inter = interactions([(0, 2, 5, 0), (0, 1, 3, 0), (0, 2, 9, 1), (1, 1, 1, 2), (1, 0, 2, 2)], 3, 3)
    p = inter.profiles()
    assert p.indptr.tolist() == [0, 2, 4, 4]  # user 2 has no positive
    assert p.row(0).tolist() == [1, 2]  # item 2 last at t=9, after item 1 at t=3
    assert p.row(1).tolist() == [1, 0]
    assert p.latest(1).indices.tolist() == [2, 0]
    assert p.take(np.array([1, 2, 0])).indices.tolist() == [1, 0, 1, 2]
    assert inter.before(3).profiles().indptr.tolist() == [0, 0, 2, 2]
    assert inter.sessions().to_pylist() == [[1, 2], [2], [1, 0]]
    with pytest.raises(ValueError, match="items must be"):
        interactions([(0, 3, 0, 0)], 1, 3)


def test_cooccurrence_counts_are_xtx_whatever_the_budget():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 12
    x = (rng.random((n_users, n_items)) < 0.3).astype(np.int64)
    x[:, 0] = 1  # one heavy item: more pairs than the smallest budget below
    profiles = Profiles.from_histories([np.flatnonzero(r) for r in x], n_items)
    for budget in (5, 50, 10_000):
        dense = np.zeros((n_items, n_items))
        seen_rows = []
        for r, c, v in cooccurrence_counts(profiles, pair_budget=budget):
            dense[r, c] = v
            seen_rows.append(np.unique(r))
        assert np.array_equal(dense, x.T @ x), budget
        rows = np.concatenate(seen_rows)
        assert len(rows) == len(np.unique(rows))  # each row in exactly one block


def test_a_shared_score_vector_ranks_like_per_user_scores():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n_items = int(rng.integers(1, 60))
        columns = np.sort(rng.choice(n_items, int(rng.integers(1, n_items + 1)), replace=False))
        n_users = int(rng.integers(1, 30))
        seen = [rng.choice(len(columns), int(rng.integers(0, len(columns) + 1)), replace=False) for _ in range(n_users)]
        task = RankingTask(np.arange(n_users), columns, seen, [np.array([0])] * n_users, n_items)
        vector = rng.integers(0, 5, n_items).astype(np.float64)  # many ties
        k = int(rng.integers(1, 12))
        shared = task.topk(vector, k)
        assert np.array_equal(shared, task.topk(lambda users: np.broadcast_to(vector, (len(users), n_items)), k))
        for r in range(n_users):
            assert not set(shared[r].tolist()) & set(seen[r].tolist())
    with pytest.raises(ValueError, match="finite"):
        task.topk(np.full(n_items, np.nan), 3)


# --- popularity ---------------------------------------------------------------------------


def test_recent_popularity_counts_the_window_and_breaks_ties_by_all_time():
    day = DAY_US
    items = np.array([0, 0, 0, 1, 1, 2, 3])
    times = np.array([1, 2, 3, 9, 9, 9, 11]) * day  # item 3 is at/after the end: never counted
    one_day = recent_popularity(items, times, 4, end_us=10 * day, days=1)
    # Recent: item 1 twice, item 2 once; item 0 none in the last day but 3 overall.
    assert np.argsort(-one_day, kind="stable").tolist() == [1, 2, 0, 3]
    assert one_day[1] == pytest.approx(2 + 2 / 4) and one_day[3] == 0
    everything = recent_popularity(items, times, 4, end_us=10 * day, days=0)
    assert np.argsort(-everything, kind="stable").tolist() == [0, 1, 2, 3]


def recent_window_data() -> tuple[Interactions, RankingTask]:
    """40 items, validation from day 10. Items 0-24: 4 positives each on day 1 (old hits);
    items 25-34: 2 each on day 9.5 (last-day noise); item 39: 3 on day 5. The validation
    users all touch item 39: only a 7-day window ranks it in the top 20."""
    rows = []
    user = 0
    for item in range(25):
        rows += [(user, item, 1 * DAY_US, user) for _ in range(4)]
    for item in range(25, 35):
        rows += [(user, item, int(9.5 * DAY_US), user) for _ in range(2)]
    rows += [(user, 39, 5 * DAY_US, user) for _ in range(3)]
    inter = interactions(rows, n_users=6, n_items=40)
    task = RankingTask(
        users=np.arange(1, 6),
        columns=np.arange(40),
        seen=[np.empty(0, np.int64)] * 5,
        targets=[np.array([39])] * 5,
        n_items=40,
    )
    return inter, task


def test_recent_window_choice_picks_the_window_best_on_validation():
    inter, task = recent_window_data()
    days, scores = choose_recent_window(inter, task, validation_start_us=10 * DAY_US, windows=(1, 3, 7, 14, 0))
    assert days == 7
    assert scores == {"1d": 0.0, "3d": 0.0, "7d": 1.0, "14d": 0.0, "all": 0.0}
    # Equal scores: the first window of the grid wins.
    days, _ = choose_recent_window(inter, task, validation_start_us=10 * DAY_US, windows=(14, 0))
    assert days == 14


# --- item-kNN -------------------------------------------------------------------------------


def test_item_knn_neighbours_and_recency_weighted_ranking():
    # users: {0,1,2}, {0,1}, {1,2}, {3,4}. Users per item: 2, 3, 2, 1, 1.
    knn = ItemKNN(neighbours=2, recency_decay=0.4).fit(Profiles.from_histories([[0, 1, 2], [0, 1], [1, 2], [3, 4]], 5))
    s01, s02, s12 = 2 / math.sqrt(2 * 3), 1 / math.sqrt(2 * 2), 2 / math.sqrt(3 * 2)
    items, sims = knn.neighbours_of(0)
    assert items.tolist() == [1, 2] and sims.tolist() == pytest.approx([s01, s02])
    items, sims = knn.neighbours_of(1)
    assert items.tolist() == [0, 2] and sims.tolist() == pytest.approx([s01, s12])  # tie: lower item first
    assert knn.neighbours_of(3)[0].tolist() == [4]
    assert ItemKNN(neighbours=1).fit(Profiles.from_histories([[0, 1, 2], [0, 1], [1, 2]], 3)).neighbours_of(1)[
        0
    ].tolist() == [0]

    scores = knn.score([[0], [3, 0]])
    assert scores[0].tolist() == pytest.approx([0, s01, s02, 0, 0])
    # History [3, 0], oldest first: item 0 weighs 1, item 3 weighs 0.4.
    assert scores[1].tolist() == pytest.approx([0, s01, s02, 0, 0.4])
    top = rank_topk(scores, 3, exclude=[np.array([0]), np.array([0, 3])])
    assert top.tolist() == [[1, 2, 3], [1, 2, 4]]
    # A fallback popularity orders what has no similarity, and ranks for an empty history.
    pop = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    with_pop = knn.score([[0], []], fallback=pop)
    assert rank_topk(with_pop, 4, exclude=[np.array([0]), np.array([])]).tolist() == [[1, 2, 3, 4], [0, 1, 2, 3]]
    with pytest.raises(RuntimeError, match="before fit"):
        ItemKNN().score([[0]])


# --- EASE ------------------------------------------------------------------------------------


def test_ease_closed_form_on_a_4x4_example():
    # X: users {0,1}, {0,1}, {2,3}, {2}. G = XᵀX = [[2,2,0,0],[2,2,0,0],[0,0,2,1],[0,0,1,1]].
    # λ = 1: P = (G + I)⁻¹ = blockdiag([[3,-2],[-2,3]] / 5, [[2,-1],[-1,3]] / 5);
    # B_ij = -P_ij / P_jj (i != j), diag(B) = 0.
    expected = np.array(
        [
            [0, 2 / 3, 0, 0],
            [2 / 3, 0, 0, 0],
            [0, 0, 0, 1 / 3],
            [0, 0, 1 / 2, 0],
        ]
    )
    gram = np.array([[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 2, 1], [0, 0, 1, 1]], dtype=np.float64)
    assert ease_weights(gram.copy(), 1.0) == pytest.approx(expected)
    model = EASE(1.0).fit(Profiles.from_histories([[0, 1], [0, 1], [2, 3], [2]], 4), pair_budget=1)
    assert model.weights == pytest.approx(expected)
    scores = model.score([[2], [3], [0, 2]])
    assert scores[0].tolist() == pytest.approx([0, 0, 0, 1 / 3])
    assert scores[1].tolist() == pytest.approx([0, 0, 1 / 2, 0])
    assert scores[2].tolist() == pytest.approx([0, 2 / 3, 0, 1 / 3])
    with pytest.raises(ValueError, match="lambda"):
        EASE(0.0)


def test_ease_models_only_items_with_a_positive():
    model = EASE(1.0).fit(Profiles.from_histories([[0, 2], [0, 2], [2]], 4))
    assert model.items.tolist() == [0, 2]
    scores = model.score([[0], []], fallback=np.array([1.0, 4.0, 3.0, 2.0]))
    top = rank_topk(scores, 3, exclude=[np.array([0]), np.array([])])
    assert top[0, 0] == 2  # the modelled neighbour first; unmodelled items 1 and 3 after it
    assert scores[0, 1] < scores[0, 2] and scores[0, 3] < scores[0, 2]
    assert top[1].tolist() == [1, 2, 3]  # empty history: the fallback ranking


# --- all baselines together ---------------------------------------------------------------------


def small_world() -> tuple[Interactions, RankingTask, RankingTask]:
    """6 users in two taste groups over 8 items; validation from day 10, test from day 12."""
    rows = []
    for u in range(6):
        group = [0, 1, 2, 3] if u < 3 else [4, 5, 6, 7]
        for k, item in enumerate(group[:3]):
            rows.append((u, item, (2 + k) * DAY_US + u, u))
        rows.append((u, group[3], 10 * DAY_US + u, 100 + u))  # a validation-window positive
    inter = interactions(rows, 6, 8)
    val = RankingTask(
        users=np.arange(6),
        columns=np.arange(8),
        seen=[np.array([0, 1, 2]) if u < 3 else np.array([4, 5, 6]) for u in range(6)],
        targets=[np.array([3]) if u < 3 else np.array([7]) for u in range(6)],
        n_items=8,
    )
    test = RankingTask(
        users=np.arange(6),
        columns=np.arange(8),
        seen=[np.array([0, 1, 2, 3]) if u < 3 else np.array([4, 5, 6, 7]) for u in range(6)],
        targets=[np.array([4]) if u < 3 else np.array([0]) for u in range(6)],
        n_items=8,
    )
    return inter, val, test


def test_run_baselines_reports_choices_and_skips_ease_above_the_limit():
    inter, val, test = small_world()
    cfg = BaselineConfig(ease_lambdas=(1.0, 10.0))
    windows = dict(validation_start_us=10 * DAY_US, test_start_us=12 * DAY_US)
    run = run_baselines(inter, **windows, validation=val, test=test, k=4, cfg=cfg)
    assert list(run.tops) == ["popularity", "recent_popularity", "cooccurrence", "item_knn", "ease"]
    for name, top in run.tops.items():
        assert top.shape == (6, 4), name
        for r in range(6):  # the seen items are never ranked, whatever the system
            assert not set(top[r].tolist()) & set(test.seen[r].tolist()), name
    assert run.info["recent_popularity"]["window"] in {"1d", "3d", "7d", "14d", "all"}
    assert set(run.info["recent_popularity"]["validation_recall@20"]) == {"1d", "3d", "7d", "14d", "all"}
    assert run.info["ease"]["lambda"] in (1.0, 10.0) and run.info["ease"]["items"] == 8
    assert set(run.info["ease"]["validation_recall@20"]) == {"1", "10"}

    capped = run_baselines(inter, **windows, validation=val, test=test, k=4, cfg=BaselineConfig(ease_max_items=7))
    assert "ease" not in capped.tops
    assert capped.info["ease"] == {"skipped": "EASE needs an items x items inverse; 8 items > limit 7"}
    with pytest.raises(ValueError, match="at or after the test window"):
        run_baselines(
            inter, validation_start_us=10 * DAY_US, test_start_us=10 * DAY_US, validation=val, test=test, k=4, cfg=cfg
        )


def test_baseline_config_validation():
    with pytest.raises(ValueError):
        BaselineConfig(recent_windows_days=())
    with pytest.raises(ValueError):
        BaselineConfig(ease_lambdas=(0.0,))
    with pytest.raises(ValueError):
        BaselineConfig(knn_neighbours=0)


# --- the evaluation's seen set, end to end --------------------------------------------------------

T0 = datetime(2026, 10, 5, tzinfo=UTC)
VAL_START = T0 + timedelta(days=8)
TEST_START = T0 + timedelta(days=10)


def split_rows(rows: list[tuple[str, str, datetime, str]], history_len: int = 20) -> pa.Table:
    """Contract-shaped split rows (the columns the evaluation reads) from (user, item, time,
    session); `history` is the user's last distinct items strictly before the row."""
    by_user: dict[str, list[tuple[datetime, str]]] = {}
    out = {k: [] for k in ("user_id", "item_id", "timestamp", "session_id", "history", "device_type", "hour")}
    for user, item, ts, session in sorted(rows, key=lambda r: (r[0], r[2])):
        before = [i for t, i in by_user.get(user, []) if t < ts]
        history = list(dict.fromkeys(reversed(before)))[:history_len][::-1]
        by_user.setdefault(user, []).append((ts, item))
        for k, v in zip(out, (user, item, ts, session, history, "mobile", ts.hour)):
            out[k].append(v)
    return pa.table(
        {
            "user_id": pa.array(out["user_id"], pa.string()),
            "item_id": pa.array(out["item_id"], pa.string()),
            "timestamp": pa.array(out["timestamp"], pa.timestamp("us", tz="UTC")),
            "session_id": pa.array(out["session_id"], pa.string()),
            "history": pa.array(out["history"], pa.list_(pa.string())),
            "device_type": pa.array(out["device_type"], pa.string()),
            "hour": pa.array(out["hour"], pa.int32()),
        }
    )


def test_evaluation_excludes_everything_seen_before_the_test_window(tmp_path):
    from recsys_dagster.ml.evaluate import evaluate
    from recsys_dagster.serving.engine import Engine

    bundle = make_bundle_dir(tmp_path / "b", n_items=200, dim=8, n_clusters=4, inactive_fraction=0.0, n_popular=200)
    engine = Engine.from_dir(bundle, version="candidate")
    items = pq.read_table(bundle / "items.parquet")
    rng = np.random.default_rng(0)
    train, validation, test = [], [], []
    history_of: dict[str, list[str]] = {}
    for u in range(24):
        user = f"v{u}"
        pool = [f"i{r}" for r in rng.permutation(np.arange(u % 4, 200, 4))]  # the user's cluster
        # 30 train positives: more than the 20 a history keeps, so older seen items lie outside it.
        for k, item in enumerate(pool[:30]):
            train.append((user, item, T0 + timedelta(hours=5 * k), f"s{u}-{k // 5}"))
        for k, item in enumerate(pool[30:32]):
            validation.append((user, item, VAL_START + timedelta(hours=3 + k), f"sv{u}"))
        # Test: two items seen long ago (train) and two new ones.
        for k, item in enumerate([pool[0], pool[1], pool[32], pool[33]]):
            test.append((user, item, TEST_START + timedelta(hours=2 + k), f"st{u}"))
        history_of[user] = pool[:32]
    report = evaluate(
        engine,
        train=split_rows(train),
        validation=split_rows(train + validation).filter(pc.greater_equal(pc.field("timestamp"), pa.scalar(VAL_START))),
        test=split_rows(train + validation + test).filter(
            pc.greater_equal(pc.field("timestamp"), pa.scalar(TEST_START))
        ),
        items=items,
        validation_start=VAL_START,
        test_start=TEST_START,
        cfg=BaselineConfig(ease_max_items=100),
    )
    assert report.n_users == 24 and report.validation_users == 24
    systems = {"candidate", "two_tower_exact", "popularity", "recent_popularity", "cooccurrence", "item_knn"}
    assert set(report.topk) == systems
    # 128 items had a positive before the test window (24 users x 32, from 4 clusters of 50).
    n_modelled = len({i for u in history_of.values() for i in u})
    assert report.baselines["ease"] == {
        "skipped": f"EASE needs an items x items inverse; {n_modelled} items > limit 100"
    }
    users = report.per_user.column("user_id").to_pylist()
    assert report.per_user.column("n_seen").to_pylist() == [32] * 24
    assert report.per_user.column("n_targets").to_pylist() == [2] * 24  # the seen test items are not targets
    for system, top in report.topk.items():
        assert f"{system}.recall@20" in report.per_user.column_names
        for r, user in enumerate(users):
            shown = {report.ranked_ids[c] for c in top[r] if c >= 0}
            assert not shown & set(history_of[user]), (system, user)
            assert (top[r] >= 0).sum() == top.shape[1], (system, user)  # excluded, not left empty
    # The test is meaningful: the exact search would rank the user's older items first.
    vecs, _ = engine.user_vectors([history_of[users[0]][-20:]], ["mobile"], [0])
    col = {x: c for c, x in enumerate(report.ranked_ids.tolist())}
    active_emb = engine.embeddings[[engine.catalog.row_of[x] for x in report.ranked_ids]]
    unexcluded = rank_topk(vecs @ active_emb.T, 20)[0]
    older = {col[x] for x in history_of[users[0]][:12]}  # outside the last-20 history
    assert set(unexcluded.tolist()) & older
    md = report.markdown()
    assert "| item_knn |" in md and "skipped: EASE needs" in md and "| new_users |" not in md
    assert "| returning_users | candidate |" in md
