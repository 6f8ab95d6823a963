"""Offline metrics (hand-computed cases) and the popularity / co-occurrence baselines."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_dagster.ml.baselines import CooccurrenceModel, popularity_scores
from recsys_dagster.ml.metrics import (
    coverage_at_k,
    paired_bootstrap_ci,
    per_user_metrics,
    popularity_bias,
    popularity_percentiles,
    rank_topk,
    summarize,
)


def test_rank_topk_orders_masks_and_pads():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.8, 0.0]])
    assert rank_topk(scores, 2).tolist() == [[1, 2], [2, 0]]  # tie 0.4: lower column first
    assert rank_topk(scores, 2, exclude=[np.array([1]), np.array([2, 0])]).tolist() == [[2, 3], [1, 3]]
    # Asking for more than what is left after masking pads with -1.
    assert rank_topk(scores, 5, exclude=[np.array([0, 1]), np.array([])]).tolist() == [
        [2, 3, -1, -1, -1],
        [2, 0, 1, 3, -1],
    ]
    assert scores[0, 1] == 0.9  # input untouched
    with pytest.raises(ValueError, match="outside"):
        rank_topk(scores, 2, exclude=[np.array([4]), np.array([])])
    with pytest.raises(ValueError, match="rows"):
        rank_topk(scores, 2, exclude=[np.array([1])])
    with pytest.raises(ValueError, match="NaN"):
        rank_topk(np.array([[np.nan, 1.0]]), 1)


def test_rank_topk_breaks_ties_at_the_cut_by_lower_column():
    # Five items tied at the 2nd score: whichever argpartition keeps, the lower columns win.
    scores = np.array([[1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]])
    assert rank_topk(scores, 3).tolist() == [[1, 0, 2], [6, 1, 2]]
    assert rank_topk(scores, 3, exclude=[np.array([0]), np.array([1, 6])]).tolist() == [[1, 2, 3], [2, 3, 4]]
    rng = np.random.default_rng(1)
    ties = rng.integers(0, 4, (200, 300)).astype(np.float64)
    full = np.lexsort((np.broadcast_to(np.arange(300), ties.shape), -ties), axis=1)[:, :20]
    assert np.array_equal(rank_topk(ties, 20), full)


def test_rank_topk_matches_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 300))
    full = np.argsort(-scores, axis=1)[:, :20]
    assert np.array_equal(rank_topk(scores, 20), full)


def test_perfect_ranking_scores_one():
    topk = np.array([[3, 1, 7], [2, 9, 4]])
    m = per_user_metrics(topk, [np.array([1, 3]), np.array([2])], ks=(1, 2, 3))
    for name in ("recall@2", "ndcg@2", "ndcg@3", "hit@1", "mrr"):
        assert np.allclose(m[name], 1.0), name
    assert np.allclose(m["precision@2"], [1.0, 0.5])
    assert np.allclose(m["recall@1"], [0.5, 1.0])


def test_known_ranking_known_numbers():
    topk = np.array([[5, 3, 7, 1], [0, 1, 2, 4]])
    targets = [np.array([3, 1, 9, 3]), np.array([8])]  # duplicate target counts once
    m = per_user_metrics(topk, targets, ks=(2, 4))
    inv = lambda r: 1 / math.log2(r + 1)  # noqa: E731  discount of 1-based rank r
    assert m["recall@2"].tolist() == pytest.approx([1 / 3, 0.0])
    assert m["precision@2"].tolist() == pytest.approx([0.5, 0.0])
    assert m["ndcg@2"].tolist() == pytest.approx([inv(2) / (inv(1) + inv(2)), 0.0])
    assert m["recall@4"].tolist() == pytest.approx([2 / 3, 0.0])
    assert m["precision@4"].tolist() == pytest.approx([0.5, 0.0])
    assert m["ndcg@4"].tolist() == pytest.approx([(inv(2) + inv(4)) / (inv(1) + inv(2) + inv(3)), 0.0])
    assert m["hit@2"].tolist() == [1.0, 0.0]
    assert m["mrr"].tolist() == pytest.approx([0.5, 0.0])
    s = summarize(m)
    assert s["n_users"] == 2 and s["mrr"] == pytest.approx(0.25)


def test_mrr_is_within_the_largest_k_and_duplicates_count_once():
    m = per_user_metrics(np.array([[0, 1, 2, 6]]), [np.array([6])], ks=(2, 3))
    assert m["mrr"][0] == 0.0  # hit at rank 4 is beyond max(ks)=3
    m = per_user_metrics(np.array([[6, 6, -1]]), [np.array([6])], ks=(3,))
    assert m["precision@3"][0] == pytest.approx(1 / 3)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="no targets"):
        per_user_metrics(np.array([[0, 1]]), [np.array([], np.int64)], ks=(2,))
    with pytest.raises(ValueError, match="columns"):
        per_user_metrics(np.array([[0, 1]]), [np.array([1])], ks=(10,))
    with pytest.raises(ValueError, match="differ"):
        summarize({"a": np.ones(2), "b": np.ones(3)})


def test_coverage_and_popularity_bias():
    topk = np.array([[0, 1], [1, 2], [1, -1]])
    assert coverage_at_k(topk, 10) == pytest.approx(0.3)
    assert coverage_at_k(topk, 10, k=1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="outside"):
        coverage_at_k(np.array([[12]]), 10)
    assert popularity_percentiles(np.array([10, 20, 30, 40, 50])).tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert popularity_percentiles(np.array([5, 5, 1])).tolist() == [0.75, 0.75, 0.0]
    assert popularity_bias(np.array([[4, 3], [0, -1]]), np.array([10, 20, 30, 40, 50])) == pytest.approx(
        (1 + 0.75 + 0) / 3
    )


def test_bootstrap_ci_covers_truth_and_detects_large_difference():
    rng = np.random.default_rng(0)
    n = 2000
    base = rng.random(n)
    better = base + 0.1 + 0.2 * rng.standard_normal(n)
    ci = paired_bootstrap_ci(better, base, n_boot=2000, seed=1)
    assert ci["ci_low"] <= ci["mean_diff"] <= ci["ci_high"]
    assert ci["ci_low"] > 0 and ci["significant"]
    assert ci["ci_low"] < 0.1 < ci["ci_high"]
    # Coverage: over independent samples with a true difference of 0.05, ~95% of CIs hold it.
    covered = 0
    for rep in range(40):
        r = np.random.default_rng(100 + rep)
        a = r.random(300)
        b = a - 0.05 + 0.3 * r.standard_normal(300)
        c = paired_bootstrap_ci(a, b, n_boot=500, seed=rep, max_cells=30_000)  # exercises blocking
        covered += c["ci_low"] <= 0.05 <= c["ci_high"]
    assert covered >= 34
    same = paired_bootstrap_ci(base, base + 0.01 * rng.standard_normal(n), seed=2)
    assert same["ci_low"] < 0 < same["ci_high"] and not same["significant"]
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci(np.ones(3), np.ones(4))


def test_popularity_scores_are_a_shared_read_only_view():
    s = popularity_scores(np.array([1.0, 5.0, 3.0]), n_users=4)
    assert s.shape == (4, 3) and not s.flags.writeable
    assert rank_topk(s, 2, exclude=[[1], [], [], [0]]).tolist() == [[2, 0], [1, 2], [1, 2], [1, 2]]


def test_cooccurrence_counts_normalised_and_windowed():
    model = CooccurrenceModel().fit([[0, 1], [0, 1, 1], [0, 2]], n_items=4)
    assert model.popularity.tolist() == [3, 2, 1, 0]
    items, w = model.row(0)
    assert items.tolist() == [1, 2]
    assert w.tolist() == pytest.approx([2 / math.sqrt(3 * 2), 1 / math.sqrt(3 * 1)])
    assert model.row(3)[0].size == 0
    windowed = CooccurrenceModel().fit([[0, 1, 2, 3]], n_items=4, window=1)
    assert windowed.row(0)[0].tolist() == [1] and windowed.row(1)[0].tolist() == [0, 2]
    arrow = CooccurrenceModel().fit(pa.array([[0, 1], [0, 1, 1], [0, 2]], pa.list_(pa.int64())), n_items=4)
    assert np.array_equal(arrow.indices, model.indices) and np.allclose(arrow.data, model.data)
    with pytest.raises(ValueError, match="indices"):
        CooccurrenceModel().fit([[0, 7]], n_items=4)
    with pytest.raises(ValueError, match="null"):
        CooccurrenceModel().fit(pa.array([[0, None]], pa.list_(pa.int64())), n_items=4)
    with pytest.raises(RuntimeError, match="before fit"):
        CooccurrenceModel().score([np.array([0])])


def test_cooccurrence_scores_recency_and_fallback():
    model = CooccurrenceModel(recency_decay=0.5).fit([[0, 1], [2, 3], [0, 4], [0, 4], [5]], n_items=6)
    scores = model.score([np.array([1, 2]), np.array([], np.int64)])
    # Latest item (2) weighs 1, item 1 weighs 0.5: 3 (partner of 2) before 0 (partner of 1).
    assert scores[0, 3] > scores[0, 0] > 0
    # Items with no co-occurrence are ordered by popularity, below every co-occurring one.
    top = rank_topk(scores, 6, exclude=[np.array([1, 2]), np.array([])])
    assert top[0].tolist()[:2] == [3, 0] and top[0].tolist()[2] == 4
    assert top[1].tolist()[:2] == [0, 4]  # the empty history gets the popularity ranking


def test_cooccurrence_beats_popularity_on_session_structure():
    rng = np.random.default_rng(0)
    n_groups, group_size = 60, 10
    n_items = n_groups * group_size
    group_p = 1 / np.arange(1, n_groups + 1) ** 1.1
    group_p /= group_p.sum()

    def sessions(n: int) -> list[np.ndarray]:
        groups = rng.choice(n_groups, size=n, p=group_p)
        return [g * group_size + rng.choice(group_size, size=5, replace=False) for g in groups]

    train, test = sessions(4000), sessions(400)
    model = CooccurrenceModel().fit(train, n_items=n_items, window=3)
    histories = [s[:4] for s in test]
    targets = [s[4:] for s in test]
    seen = histories
    pop = np.bincount(np.concatenate(train), minlength=n_items).astype(np.float64)
    co = per_user_metrics(rank_topk(model.score(histories), 10, exclude=seen), targets, ks=(10,))
    po = per_user_metrics(rank_topk(popularity_scores(pop, len(test)), 10, exclude=seen), targets, ks=(10,))
    assert co["recall@10"].mean() > 0.9
    assert co["recall@10"].mean() > po["recall@10"].mean() + 0.3
    assert paired_bootstrap_ci(co["ndcg@10"], po["ndcg@10"])["ci_low"] > 0
