"""The engine on a synthetic bundle: vectors, re-ranking, filters and every fallback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import make_bundle_dir

from recsys_dagster.bundle.format import BundleError
from recsys_dagster.serving.engine import Engine
from recsys_dagster.serving.rerank import Filters, category_matches

N_CLUSTERS = 8


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle_dir(tmp_path_factory.mktemp("bundle"), n_items=500, dim=16, seed=0, n_clusters=N_CLUSTERS)


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine.from_dir(bundle_dir, "v-test")


def cluster_of(item_id: str) -> int:
    return int(item_id[1:]) % N_CLUSTERS


def test_loads_bundle(engine: Engine):
    assert (engine.version, engine.n_items, engine.dim) == ("v-test", 500, 16)


def test_user_vectors_are_normalized_and_report_unknown(engine: Engine):
    vec, unknown = engine.user_vectors(
        [["i1", "nope", "i9"], [], ["i2"] * 40], ["mobile", None, "weird"], [3, None, 23]
    )
    assert vec.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert unknown == [["nope"], [], []]
    with pytest.raises(ValueError, match="hour"):
        engine.user_vectors([["i1"]], None, [24])


def test_history_is_truncated_to_last_l(engine: Engine):
    long = [f"i{8 * j}" for j in range(30)]  # cluster 0
    a, _ = engine.user_vectors([long], None, [5])
    b, _ = engine.user_vectors([long[-engine.history_len :]], None, [5])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_realtime_history_pulls_toward_its_cluster(engine: Engine):
    for target in (2, 5):
        recent = [f"i{target + N_CLUSTERS * j}" for j in range(5)]
        rec = engine.recommend("u0", recent_items=recent, k=10, diversity_cap=None, hour=0)
        assert rec.source == "realtime" and rec.fallback is None
        clusters = Counter(cluster_of(i["item_id"]) for i in rec.items)
        assert clusters[target] == 10, clusters
        assert not set(recent) & {i["item_id"] for i in rec.items}  # seen removed


def test_stored_history_is_used_and_seen_removed(engine: Engine):
    history = engine.stored_history("u3")
    assert history
    rec = engine.recommend("u3", k=10, diversity_cap=None, hour=0)
    assert rec.source == "stored_history" and rec.fallback is None and rec.model_version == "v-test"
    ids = [i["item_id"] for i in rec.items]
    assert len(ids) == 10 and not set(ids) & set(history)
    assert all(cluster_of(i) == 3 for i in ids)
    scores = [i["score"] for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    kept = engine.recommend("u3", k=50, exclude_seen=False, diversity_cap=None, hour=0)
    assert set(history) & {i["item_id"] for i in kept.items}


def test_only_active_items_are_returned(engine: Engine):
    inactive = set(engine.catalog.item_id[~engine.catalog.active])
    assert inactive
    rec = engine.recommend("u3", k=60, diversity_cap=None, hour=0)
    assert not inactive & {i["item_id"] for i in rec.items}


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"user_id": "never-seen"}, "unknown_user"),
        ({"user_id": "u9"}, "empty_history"),  # the factory gives u9 an empty history
        ({"user_id": "u1", "recent_items": ["nope", "nada"]}, "unknown_items"),
    ],
)
def test_fallbacks_to_popularity(engine: Engine, kwargs, reason):
    rec = engine.recommend(k=10, diversity_cap=None, **kwargs)
    assert rec.fallback == reason and rec.source == "popularity"
    expected = list(engine.catalog.item_id[engine.catalog.popular_rows])
    if reason == "unknown_items":
        assert rec.unknown_items == ["nope", "nada"]
        seen = set(engine.stored_history("u1"))
        expected = [i for i in expected if i not in seen]
    assert [i["item_id"] for i in rec.items] == expected[:10]


def test_new_user_with_recent_items_is_realtime(engine: Engine):
    rec = engine.recommend("brand-new", recent_items=["i4", "ghost"], k=5, hour=1)
    assert rec.fallback is None and rec.source == "realtime" and rec.unknown_items == ["ghost"]


def test_filters(engine: Engine):
    cat = engine.catalog.category_path[2]  # cluster 2's leaf path
    prefix = cat.rsplit(" > ", 1)[0]
    f = Filters(
        category_prefix=prefix, price_min=20, price_max=150, conditions=frozenset({"new", "used"}), location="Berlin"
    )
    rec = engine.recommend("u3", k=10, filters=f, diversity_cap=None, hour=0)
    assert rec.items
    for item in rec.items:
        assert category_matches(item["category_path"], prefix)
        assert 20 <= item["price"] <= 150 and item["condition"] in {"new", "used"} and item["location"] == "Berlin"


def test_category_prefix_matches_whole_segments():
    assert category_matches("Electronics > Phones > Apple", "Electronics > Phones")
    assert category_matches("Electronics > Phones", "Electronics > Phones")
    assert not category_matches("Electronics > Phonesx > Apple", "Electronics > Phones")
    with pytest.raises(ValueError, match="price_min"):
        Filters(price_min=10, price_max=1)


def test_too_few_candidates_are_topped_up_from_popularity(engine: Engine):
    # Only cluster 6's category: u3's vector (cluster 3) finds some candidates in 500, then popularity fills in.
    cat = engine.catalog.category_path[6]
    engine_small = Engine(
        version="small",
        session=engine.session,
        index=engine.index,
        catalog=engine.catalog,
        embeddings=engine.embeddings,
        histories=engine.histories,
        candidates=20,
    )
    rec = engine_small.recommend("u3", k=10, filters=Filters(category_prefix=cat), diversity_cap=None, hour=0)
    assert len(rec.items) == 10 and all(i["category_path"] == cat for i in rec.items)
    if rec.fallback is None:
        assert rec.topped_up > 0
    else:
        assert rec.fallback == "no_candidates" and rec.source == "popularity"


def test_no_candidates_when_filters_exclude_everything_nearby(engine: Engine):
    rec = engine.recommend("u3", k=5, filters=Filters(location="Atlantis"), hour=0)
    assert rec.fallback == "no_candidates" and rec.items == []


def test_diversity_cap(engine: Engine):
    rec = engine.recommend("u3", k=10, diversity_cap=2, hour=0)
    leaves = Counter(i["category_path"] for i in rec.items)
    assert len(rec.items) == 10 and max(leaves.values()) <= 2
    uncapped = engine.recommend("u3", k=10, diversity_cap=None, hour=0)
    assert max(Counter(i["category_path"] for i in uncapped.items).values()) > 2


def test_popularity_penalty_changes_ranking(engine: Engine):
    plain = engine.recommend("u3", k=20, diversity_cap=None, hour=0)
    penalised = engine.recommend("u3", k=20, diversity_cap=None, popularity_penalty=5.0, hour=0)
    pop = engine.catalog.popularity_norm
    mean_pop = lambda rec: np.mean([pop[engine.catalog.row_of[i["item_id"]]] for i in rec.items])  # noqa: E731
    assert mean_pop(penalised) < mean_pop(plain)


def test_similar(engine: Engine):
    items = engine.similar("i5", k=5)
    assert len(items) == 5 and "i5" not in {i["item_id"] for i in items}
    assert all(cluster_of(i["item_id"]) == 5 for i in items)
    with pytest.raises(KeyError):
        engine.similar("nope")


def test_bad_arguments(engine: Engine):
    with pytest.raises(ValueError):
        engine.recommend("u3", k=0)
    with pytest.raises(ValueError):
        engine.recommend("u3", diversity_cap=0)


def test_from_dir_refuses_incomplete_or_inconsistent_bundle(tmp_path: Path, bundle_dir: Path):
    import shutil

    broken = tmp_path / "b"
    shutil.copytree(bundle_dir, broken)
    (broken / "popular.json").unlink()
    with pytest.raises(BundleError, match="popular.json"):
        Engine.from_dir(broken)
    shutil.copy(bundle_dir / "popular.json", broken / "popular.json")
    np.save(broken / "item_embeddings.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(BundleError, match="shape"):
        Engine.from_dir(broken)
    np.save(broken / "item_embeddings.npy", np.load(bundle_dir / "item_embeddings.npy"))
    (broken / "user_tower.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError):
        Engine.from_dir(broken)


def test_index_params_are_applied(tmp_path: Path):
    import faiss

    def hnsw(emb, rows):
        index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(emb.shape[1], 8, faiss.METRIC_INNER_PRODUCT))
        index.add_with_ids(emb[rows], rows.astype(np.int64))
        return index

    d = make_bundle_dir(
        tmp_path, n_items=200, dim=8, build_index=hnsw, index_type="hnsw", index_params={"efSearch": 77}
    )
    engine = Engine.from_dir(d)
    assert faiss.downcast_index(faiss.downcast_index(engine.index).index).hnsw.efSearch == 77
    assert json.loads((d / "index.json").read_text())["params"] == {"efSearch": 77}
    assert engine.recommend("u1", k=5, hour=0).items
