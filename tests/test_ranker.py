"""The ranking stage: candidate sources, features, LambdaRank training, the ONNX export and
its parity with LightGBM, item statistics, and serving with a ranker in the bundle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys_dagster.bundle.format import BundleError, describe_files
from recsys_dagster.ml.baselines import DAY_US, Interactions
from recsys_dagster.ml.ranker import (
    RankData,
    RankerConfig,
    _top_k_csr,
    fit_fixed,
    fit_lambdarank,
    item_stats,
    make_spec,
    onnx_parity,
    to_onnx,
)
from recsys_dagster.serving.engine import Engine
from recsys_dagster.serving.ranker import (
    ABSENT_RANK,
    ItemStats,
    RankerError,
    RankerModel,
    RankerSpec,
    _neighbour_scores,
    candidate_features,
    feature_names,
)
from recsys_dagster.serving.rerank import Filters
from tests.bundle_factory import add_ranker, make_bundle_dir

CUT = 1_790_000_000_000_000


def _spec(**depth) -> RankerSpec:
    cfg = RankerConfig(**{f"depth_{k}": v for k, v in depth.items()})
    return make_spec(
        cfg, trending_days=1, cut_us=CUT, trained_on=["validation"], trees=1, refit=False, tower_run_id="t"
    )


def _stats(n: int = 10) -> ItemStats:
    """Item i's neighbours are i+1 and i+2 (wrapping), with similarity 1.0 and 0.5."""
    rows = np.arange(n)
    knn_idx = np.stack([(rows + 1) % n, (rows + 2) % n], axis=1).reshape(-1).astype(np.int32)
    data = np.tile([1.0, 0.5], n).astype(np.float32)
    ptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    return ItemStats(
        window_counts=np.tile(np.arange(n, dtype=np.float32)[:, None], (1, 4)),
        total=np.arange(n, dtype=np.float32) * 2,
        age_days=np.full(n, 3.0, np.float32),
        leaf=(rows % 3).astype(np.int32),
        top=np.zeros(n, np.int32),
        brand=np.where(rows % 2 == 0, 0, -1).astype(np.int32),
        price_log=np.log1p(rows * 10.0).astype(np.float32),
        knn_indptr=ptr,
        knn_indices=knn_idx,
        knn_data=data,
        cooc_indptr=np.zeros(n + 1, np.int64),
        cooc_indices=np.zeros(0, np.int32),
        cooc_data=np.zeros(0, np.float32),
        trending_rows=rows[::-1].astype(np.int64).copy(),
        trending_scores=rows[::-1].astype(np.float32).copy(),
    )


def test_neighbour_scores_weigh_recent_profile_items_more():
    s = _stats()
    items, scores = _neighbour_scores(s.knn_indptr, s.knn_indices, s.knn_data, np.array([0, 5]), 0.5)
    got = dict(zip(items.tolist(), scores.tolist()))
    # Item 5 (latest) weighs 1: 6 -> 1.0, 7 -> 0.5; item 0 weighs 0.5: 1 -> 0.5, 2 -> 0.25.
    assert got == pytest.approx({1: 0.5, 2: 0.25, 6: 1.0, 7: 0.5})
    empty_items, _ = _neighbour_scores(s.knn_indptr, s.knn_indices, s.knn_data, np.array([], np.int64), 0.5)
    assert len(empty_items) == 0


def test_candidates_are_the_union_of_every_source_and_respect_keep():
    s = _stats()
    spec = _spec(two_tower=3, item_knn=2, cooccurrence=2, trending=2)
    emb = np.eye(10, dtype=np.float32)
    excluded = np.array([6, 9])

    def keep(rows):
        return ~np.isin(rows, excluded)

    c = candidate_features(
        s,
        spec,
        user_vec=emb[3],
        embeddings=emb,
        ann_rows=np.array([3, 6, 4, -1, 2]),
        profile=np.array([0, 5]),
        keep=keep,
    )
    # ANN 3, 4, 2 (6 excluded); kNN of the profile 7 (1.0 * .8^0 * .5), 1, ...; trending 8 (9 excluded).
    assert not set(c.rows.tolist()) & {6, 9}
    assert c.rows.tolist()[:3] == [3, 4, 2]
    assert {7, 8} <= set(c.rows.tolist()) and len(set(c.rows.tolist())) == len(c.rows)
    f = dict(zip(feature_names(spec.windows_days), c.features[c.rows.tolist().index(3)]))
    assert f["tower_score"] == pytest.approx(1.0) and f["tower_rank"] == 1
    assert f["trending_rank"] == ABSENT_RANK and f["n_sources"] >= 1
    assert f["pop_1d"] == pytest.approx(np.log1p(3)) and f["pop_all"] == pytest.approx(np.log1p(6))
    assert f["affinity_leaf"] == pytest.approx(0.5)  # items 0 and 5 have leaves 0 and 2; item 3 leaf 0
    assert f["user_profile_items"] == pytest.approx(np.log1p(2))
    assert np.isfinite(c.features).all()


def test_spec_refuses_features_this_code_does_not_build():
    spec = _spec()
    bad = spec.to_dict() | {"feature_names": spec.feature_names[:-1]}
    with pytest.raises(RankerError, match="features"):
        RankerSpec.from_dict(bad)


def test_item_stats_count_only_positives_before_the_cut():
    # Items 0..3; positives at days -10, -2, -0.5 before the cut, and one after it.
    t = np.array([CUT - 10 * DAY_US, CUT - 2 * DAY_US, CUT - DAY_US // 2, CUT + 1, CUT - DAY_US // 2])
    positives = Interactions(
        user=np.array([0, 0, 1, 1, 2]),
        item=np.array([0, 1, 1, 2, 2]),
        time=t,
        session=np.array([0, 0, 1, 1, 2]),
        n_users=3,
        n_items=4,
    )
    items = pa.table(
        {
            "item_id": ["a", "b", "c", "d"],
            "category_path": ["A > x", "A > y", None, "B > x"],
            "brand": ["k", None, "k", "m"],
            "price": [10.0, None, 5.0, 1.0],
            "first_seen": pa.array([CUT - 20 * DAY_US, CUT - DAY_US, None, CUT + DAY_US], pa.timestamp("us", tz="UTC")),
        }
    )
    cfg = RankerConfig(windows_days=(1, 3, 28), neighbours=5)
    s = item_stats(positives, items, cut_us=CUT, trending_days=1, cfg=cfg)
    assert s.total.tolist() == [1, 2, 1, 0]  # item 2's positive after the cut is not counted
    assert s.window_counts[:, 0].tolist() == [0, 1, 1, 0]
    assert s.window_counts[:, 1].tolist() == [0, 2, 1, 0]
    assert s.age_days.tolist() == pytest.approx([20.0, 1.0, -1.0, 0.0])  # listed after the cut: age 0
    assert s.leaf[0] == s.leaf[3] != s.leaf[1] and s.leaf[2] == -1
    assert s.top[0] == s.top[1] != s.top[3] and s.brand[0] == s.brand[2] and s.brand[1] == -1
    assert np.isnan(s.price_log[1]) and s.price_log[0] == pytest.approx(np.log1p(10.0))
    assert s.trending_rows.tolist() == [1, 2, 0]  # last day first, then all-time counts; item 3 never
    # Users 0 and 1 both have item 1: item-kNN links 0-1 and 1-2 (not 2-3: after the cut).
    s.validate(4)
    neighbours = {i: s.knn_indices[s.knn_indptr[i] : s.knn_indptr[i + 1]].tolist() for i in range(4)}
    assert neighbours[1] and 3 not in neighbours[2]


def test_top_k_csr_keeps_the_best_per_row():
    ptr, idx, val = _top_k_csr(np.array([0, 3, 4]), np.array([5, 6, 7, 1]), np.array([0.1, 0.9, 0.5, 0.3]), 2)
    assert ptr.tolist() == [0, 2, 3] and idx.tolist() == [6, 7, 1] and val.tolist() == pytest.approx([0.9, 0.5, 0.3])


def test_item_stats_round_trip_and_refuse_a_broken_csr(tmp_path):
    s = _stats()
    s.save(tmp_path / "r.npz")
    back = ItemStats.load(tmp_path / "r.npz", 10)
    assert np.array_equal(back.knn_indices, s.knn_indices)
    with pytest.raises(RankerError, match="10 rows|11 rows|rows"):
        ItemStats.load(tmp_path / "r.npz", 11)
    broken = ItemStats(**{**s.__dict__, "knn_indices": s.knn_indices + 100})
    broken.save(tmp_path / "b.npz")
    with pytest.raises(RankerError, match="outside"):
        ItemStats.load(tmp_path / "b.npz", 10)


def _ranking_data(n_queries: int = 80, per_query: int = 40, seed: int = 0) -> RankData:
    """Queries whose positives have a high feature 0 and a value of feature 1 at a float32
    boundary (many equal values: a threshold between them must not flip in float32)."""
    rng = np.random.default_rng(seed)
    names = feature_names((1, 3, 7, 28))
    x = rng.random((n_queries * per_query, len(names))).astype(np.float32)
    x[:, 1] = np.float32(0.1) * rng.integers(0, 3, len(x))
    score = x[:, 0] + (x[:, 1] > np.float32(0.1)) * 0.5 + rng.normal(0, 0.2, len(x))
    labels = np.zeros(len(x), np.int32)
    for q in range(n_queries):
        block = slice(q * per_query, (q + 1) * per_query)
        labels[block][np.argsort(-score[block])[:3]] = 1
    return RankData(x, labels, np.full(n_queries, per_query), [f"u{q}" for q in range(n_queries)], 1.0, n_queries)


def test_lambdarank_learns_and_the_onnx_export_scores_exactly_as_lightgbm():
    data = _ranking_data()
    names = feature_names((1, 3, 7, 28))
    fit = fit_lambdarank(data, RankerConfig(max_trees=60, min_data_in_leaf=5, tune_seconds=0), names)
    assert len(fit.trials) == 1 and fit.params["min_data_in_leaf"] == 5  # no search: the configured values
    assert 1 <= fit.best_iteration <= 60 and fit.holdout_ndcg_at_20 > 0.5
    model = to_onnx(fit.booster, len(names))
    assert onnx_parity(fit.booster, model, data.features) < 1e-5
    # Also on values exactly at the float32 boundaries the trees split on.
    probe = np.repeat(data.features[:50], 3, axis=0)
    probe[:, 1] = np.tile(np.float32([0.1, 0.2, np.nextafter(np.float32(0.1), np.float32(1))]), 50)
    ranker = RankerModel.from_bytes(model, len(names))
    assert np.abs(ranker.score(probe) - fit.booster.predict(probe)).max() < 1e-5
    # The learned order beats a random one on fresh queries.
    fresh = _ranking_data(seed=1)
    s = ranker.score(fresh.features).reshape(len(fresh.groups), -1)
    top3 = np.argsort(-s, axis=1)[:, :3]
    hits = np.take_along_axis(fresh.labels.reshape(len(fresh.groups), -1), top3, axis=1).mean()
    assert hits > 0.4  # random: 3 / 40


def test_the_search_starts_from_the_configured_values_and_keeps_the_best():
    data = _ranking_data()
    names = feature_names((1, 3, 7, 28))
    cfg = RankerConfig(max_trees=40, min_data_in_leaf=5, tune_seconds=30, tune_trials=4)
    fit = fit_lambdarank(data, cfg, names)
    assert len(fit.trials) == 4
    first = fit.trials[0]
    assert (first["num_leaves"], first["learning_rate"], first["min_data_in_leaf"]) == (31, 0.05, 5)
    assert fit.holdout_ndcg_at_20 == max(t["holdout_ndcg@20"] for t in fit.trials)
    assert set(fit.params) == {"num_leaves", "learning_rate", "min_data_in_leaf", "feature_fraction"}
    assert fit.booster.num_trees() == fit.best_iteration


def test_lambdarank_refuses_too_few_queries_with_a_target():
    data = _ranking_data(n_queries=5)
    with pytest.raises(ValueError, match="too few"):
        fit_lambdarank(data, RankerConfig(), feature_names((1, 3, 7, 28)))


def test_ranker_model_refuses_a_model_of_another_width():
    booster = fit_fixed(_ranking_data(), RankerConfig(min_data_in_leaf=5), feature_names((1, 3, 7, 28)), 5)
    with pytest.raises(RankerError, match="features"):
        RankerModel.from_bytes(to_onnx(booster, 22), 21)


@pytest.fixture(scope="module")
def ranked_bundle(tmp_path_factory):
    path = make_bundle_dir(tmp_path_factory.mktemp("ranked") / "b", n_items=400, dim=8, n_clusters=4)
    return add_ranker(path, n_clusters=4, train_users=150, trees=30)


def test_serving_answers_through_the_ranker(ranked_bundle):
    engine = Engine.from_dir(ranked_bundle, version="v1")
    assert engine.ranker is not None and engine.ranker.spec.trained_on == ["synthetic"]
    rec = engine.recommend("u1", k=10, diversity_cap=None)
    assert rec.fallback is None and len(rec.items) == 10
    seen = set(engine.catalog.item_id[engine.seen_rows("u1")].tolist())
    assert not seen & {i["item_id"] for i in rec.items}
    scores = [i["score"] for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    # Filters hold for every candidate source.
    cheap = engine.recommend("u1", k=10, filters=Filters(price_max=50.0))
    assert all(i["price"] <= 50.0 for i in cheap.items)
    # The same bundle without its ranker answers from the index alone, differently.
    plain = engine.without_ranker().recommend("u1", k=10, diversity_cap=None)
    assert [i["item_id"] for i in plain.items] != [i["item_id"] for i in rec.items]


def test_recommend_and_the_offline_evaluation_rank_the_same(ranked_bundle):
    """Parity: `/recommendations` and the evaluation's path (`Engine.rank` over a block of
    users, as `ml/evaluate.py` calls it) give the same items and scores for a stored user."""
    engine = Engine.from_dir(ranked_bundle, version="v1")
    active = np.asarray(engine.catalog.active, dtype=bool)
    for user in ("u1", "u2", "u5"):
        history = engine.histories[user]
        excluded = engine.seen_rows(user)
        vecs, _ = engine.user_vectors([history, engine.histories["u3"]])
        scores, rows = engine.search(vecs, engine.ann_depth(len(excluded)))
        top, top_scores = engine.rank(
            vecs[0],
            scores[0],
            rows[0],
            profile=engine.profile_rows(user),
            keep=lambda r: active[r] & ~np.isin(r, excluded),
        )
        rec = engine.recommend(user, k=20, diversity_cap=None)
        assert [i["item_id"] for i in rec.items] == engine.catalog.item_id[top[:20]].tolist()
        assert [i["score"] for i in rec.items] == pytest.approx(top_scores[:20], abs=1e-5)


def test_a_partial_ranker_is_refused_and_the_manifest_lists_ranker_files(ranked_bundle, tmp_path):
    import shutil

    assert {"ranker.onnx", "ranker.json", "ranker_items.npz"} <= set(describe_files(ranked_bundle))
    partial = tmp_path / "partial"
    shutil.copytree(ranked_bundle, partial)
    (partial / "ranker.onnx").unlink()
    with pytest.raises(BundleError, match="ranker files"):
        Engine.from_dir(partial)
    with pytest.raises(BundleError, match="ranker files"):
        describe_files(partial)
    bad = tmp_path / "bad"
    shutil.copytree(ranked_bundle, bad)
    (bad / "ranker.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError):
        Engine.from_dir(bad)
