"""The engine on a synthetic bundle: vectors, re-ranking, filters and every fallback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import make_bundle_dir

from recsys_dagster.bundle.format import BundleError
from recsys_dagster.serving.catalog import CatalogError, SeenSets
from recsys_dagster.serving.engine import UNKNOWN_DEVICE, UNKNOWN_HOUR, Engine
from recsys_dagster.serving.rerank import Filters, category_matches, diversify

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
    for bad in (24, -1, 3.5, "3", True):
        with pytest.raises(ValueError, match="hour"):
            engine.user_vectors([["i1"]], None, [bad])
        with pytest.raises(ValueError, match="hour"):
            engine.recommend("u3", hour=bad)


def _tower(engine: Engine, history: list[str], device: int, hour: int) -> np.ndarray:
    rows = [engine.catalog.row_of[i] for i in history]
    feeds = {
        "history_emb": engine.embeddings[rows][None],
        "history_mask": np.ones((1, len(rows)), np.float32),
        "device": np.array([device], np.int64),
        "hour": np.array([hour], np.int64),
    }
    return engine.session.run(["user_vec"], feeds)[0]


def test_missing_device_and_hour_are_the_unknown_context(engine: Engine):
    history = ["i1", "i9", "i17"]
    vec, _ = engine.user_vectors([history, history], [None, "phablet"], None)
    unknown = _tower(engine, history, UNKNOWN_DEVICE, UNKNOWN_HOUR)
    np.testing.assert_allclose(vec, np.vstack([unknown, unknown]), atol=1e-6)
    assert (UNKNOWN_DEVICE, UNKNOWN_HOUR) == (3, 24)
    assert not np.allclose(_tower(engine, history, 0, 3), unknown, atol=1e-3)


def _freeze_clock(monkeypatch, hour: int) -> None:
    """Every clock a module could read says `hour`:00 UTC on 2026-10-21."""
    import datetime as dt
    import time

    import recsys_dagster.serving.catalog as catalog_module
    import recsys_dagster.serving.engine as engine_module
    import recsys_dagster.serving.rerank as rerank_module

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            t = cls(2026, 10, 21, hour, 7, tzinfo=dt.UTC)
            return t if tz is None else t.astimezone(tz)

        @classmethod
        def utcnow(cls):
            return cls(2026, 10, 21, hour, 7)

    stamp = Frozen.now(dt.UTC).timestamp()
    monkeypatch.setattr(dt, "datetime", Frozen)
    monkeypatch.setattr(time, "time", lambda: stamp)
    monkeypatch.setattr(time, "time_ns", lambda: int(stamp * 1e9))
    monkeypatch.setattr(time, "localtime", lambda secs=None: time.gmtime(stamp if secs is None else secs))
    for module in (engine_module, rerank_module, catalog_module):
        if hasattr(module, "datetime"):
            monkeypatch.setattr(module, "datetime", Frozen)


def test_answer_does_not_depend_on_the_wall_clock(engine: Engine, monkeypatch):
    history = ["i1", "i9", "i17", "i25"]
    answers = []
    for hour in (3, 15):
        _freeze_clock(monkeypatch, hour)
        vec, _ = engine.user_vectors([history], ["mobile"], None)
        stored = engine.recommend("u3", k=20)
        realtime = engine.recommend("anon", recent_items=history, k=20, device="desktop")
        answers.append((vec, stored.items, realtime.items))
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
    assert answers[0][1:] == answers[1][1:]
    # ...while the hour does matter when the request gives it.
    assert not np.allclose(engine.user_vectors([history], ["mobile"], [3])[0], answers[0][0], atol=1e-3)
    assert not np.allclose(engine.user_vectors([history], ["mobile"], [15])[0], answers[0][0], atol=1e-3)


def test_recent_items_are_oldest_first_and_deduplicated_like_training(engine: Engine):
    order = [f"i{8 * j}" for j in range(25)]  # 25 distinct items of cluster 0, oldest first
    a, _ = engine.user_vectors([order], None, [5])
    b, _ = engine.user_vectors([order[-engine.history_len :]], None, [5])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # A repeated item counts once, at its most recent position (spark/training.py:_last_distinct).
    repeated = [order[0], *order[1:5], order[0], order[2]]
    c, _ = engine.user_vectors([repeated], None, [5])
    d, _ = engine.user_vectors([[order[1], order[3], order[4], order[0], order[2]]], None, [5])
    np.testing.assert_allclose(c, d, atol=1e-6)


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
        seen = set(engine.catalog.item_id[engine.seen_rows("u1")])
        assert set(engine.stored_history("u1")) < seen  # the seen-set reaches past the stored history
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


# --- seen-sets ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heavy_engine(tmp_path_factory) -> Engine:
    """4 clusters of 750 items; every user with a history has 300 seen items of their cluster."""
    d = make_bundle_dir(tmp_path_factory.mktemp("heavy"), n_items=3000, dim=16, n_clusters=4, seen_per_user=300)
    return Engine.from_dir(d, "v-heavy")


def test_a_known_users_whole_seen_set_is_excluded(heavy_engine: Engine):
    eng = heavy_engine
    seen = eng.seen.rows_for("u1")
    history = eng.stored_history("u1")
    assert len(seen) == 300 and len(history) <= 20
    # Most recent first: the stored history (oldest first) reversed, then older items.
    assert list(eng.catalog.item_id[seen[: len(history)]]) == history[::-1]
    seen_ids = set(eng.catalog.item_id[seen])
    rec = eng.recommend("u1", k=50, diversity_cap=None, hour=9)
    assert rec.fallback is None and len(rec.items) == 50
    assert not seen_ids & {i["item_id"] for i in rec.items}
    # Without the exclusion the nearest items include seen ones beyond the stored history,
    # which the history-only exclusion used to return.
    kept = {i["item_id"] for i in eng.recommend("u1", k=50, exclude_seen=False, diversity_cap=None, hour=9).items}
    assert kept & (seen_ids - set(history))
    # recent_items of a known user are excluded too, beside the seen-set.
    recent = [f"i{2 + 4 * j}" for j in range(5)]  # cluster 2
    rt = eng.recommend("u1", recent_items=recent, k=50, diversity_cap=None, hour=9)
    assert rt.source == "realtime" and not (seen_ids | set(recent)) & {i["item_id"] for i in rt.items}
    # An unknown user has no seen-set: only the request's items are excluded.
    assert eng.seen.rows_for("nobody").size == 0 and eng.seen_rows("nobody", recent).size == 5


def test_seen_sets_are_flat_arrays(heavy_engine: Engine):
    s = heavy_engine.seen
    assert s.rows.dtype == np.int32 and s.starts.dtype == np.int64 and s.lengths.dtype == np.int64
    assert s.starts.shape == s.lengths.shape == (s.n_users,) and int(s.lengths.sum()) == s.rows.size
    assert s.n_users == 200 and s.rows.size == 180 * 300  # 20 users have an empty history and no seen items
    assert s.users.to_pylist() == sorted(s.users.to_pylist())
    ends = np.sort(s.starts + s.lengths)
    assert (np.sort(s.starts)[1:] >= ends[:-1]).all()  # one slice per user, no overlap


def test_seen_sets_from_table_drop_unknown_items_and_refuse_duplicate_users():
    import pyarrow as pa

    ids = np.array(["a", "b", "c"], dtype=object)
    table = pa.table(
        {
            "user_id": pa.array(["z", "m", None, "q"], pa.string()),
            "seen": pa.array([["c", "ghost", "a"], None, ["b"], ["b", None]], pa.list_(pa.string())),
        }
    )
    s = SeenSets.from_table(table, ids)
    assert s.users.to_pylist() == ["m", "q", "z"]
    assert s.rows_for("z").tolist() == [2, 0] and s.rows_for("m").tolist() == [] and s.rows_for("q").tolist() == [1]
    one_by_one = SeenSets.from_batches(table.to_batches(max_chunksize=1), ids)  # as a Parquet file is read
    assert [one_by_one.rows_for(u).tolist() for u in "mqz"] == [[], [1], [2, 0]]
    assert s.rows_for("").size == 0 and s.rows_for("zz").size == 0 and s.rows_for("a").size == 0
    assert SeenSets.empty().rows_for("z").size == 0
    with pytest.raises(CatalogError, match="more than one row"):
        SeenSets.from_table(pa.concat_tables([table, table]), ids)
    with pytest.raises(CatalogError, match="seen"):
        SeenSets.from_table(table.drop_columns(["seen"]), ids)


def test_a_bundle_without_user_seen_loads_with_empty_seen_sets(tmp_path: Path):
    d = make_bundle_dir(tmp_path / "old", n_items=300, dim=8, write_seen=False)
    assert not (d / "user_seen.parquet").exists()
    eng = Engine.from_dir(d, "v-old")
    assert eng.seen.n_users == 0
    history = eng.stored_history("u3")
    assert set(eng.catalog.item_id[eng.seen_rows("u3")]) == set(history)  # the stored history, as before
    rec = eng.recommend("u3", k=10, diversity_cap=None)
    assert rec.fallback is None and len(rec.items) == 10 and not set(history) & {i["item_id"] for i in rec.items}


def test_a_bundle_whose_manifest_lists_user_seen_needs_it(tmp_path: Path):
    from bundle_factory import manifest_for

    d = make_bundle_dir(tmp_path / "b", n_items=200, dim=8)
    (d / "manifest.json").write_text(json.dumps(manifest_for(d, "v-new")))
    assert Engine.from_dir(d).seen.n_users == 200
    (d / "user_seen.parquet").unlink()
    with pytest.raises(BundleError, match="user_seen.parquet"):
        Engine.from_dir(d)


def test_a_tower_without_the_unknown_hour_row_is_refused(tmp_path: Path):
    from bundle_factory import user_tower_onnx

    d = make_bundle_dir(tmp_path / "b", n_items=200, dim=8)
    (d / "user_tower.onnx").write_bytes(user_tower_onnx(8, n_hours=24))
    with pytest.raises(BundleError, match="fails on a sample input"):
        Engine.from_dir(d)


def test_assembling_a_week_without_user_seen_is_refused(local_lake, tmp_path: Path):
    import pyarrow as pa

    from recsys_dagster.bundle.assemble import assemble_bundle_dir

    week = "2026-10-19"
    local_lake.write_partition(
        f"training/week={week}/user_histories",
        pa.table({"user_id": ["u1"], "history": pa.array([["i1"]], pa.list_(pa.string()))}),
    )
    with pytest.raises(ValueError, match="user_seen is missing.*re-run training_examples"):
        assemble_bundle_dir(local_lake, week, tmp_path / "bundle", stage="ship")


# --- diversity --------------------------------------------------------------------------------

N_GENRES = 18


@pytest.fixture(scope="module")
def genre_engine(tmp_path_factory) -> Engine:
    """A one-level category tree: 18 genres of 200 items each."""
    d = make_bundle_dir(
        tmp_path_factory.mktemp("genres"),
        n_items=200 * N_GENRES,
        dim=16,
        n_clusters=N_GENRES,
        category_of_cluster=lambda c: f"Genre{c:02d}",
    )
    return Engine.from_dir(d, "v-genres")


def _head_and_tail(leaves: list[str], cap: int) -> tuple[list[str], list[str]]:
    counts = Counter(leaves)
    h = sum(min(cap, n) for n in counts.values())
    return leaves[:h], leaves[h:]


def test_diversity_cap_relaxes_to_fill_k_on_a_one_level_tree(genre_engine: Engine):
    cat = genre_engine.catalog
    assert len(set(cat.category_path)) == N_GENRES and all(" > " not in p for p in cat.category_path)
    rows = np.flatnonzero(cat.active)
    scores = np.linspace(1.0, 0.0, rows.size)
    strict, _ = diversify(cat, rows, scores, 100, 3, relax=False)
    assert len(strict) == 3 * N_GENRES == 54  # what the cap alone gave
    filled, filled_scores = diversify(cat, rows, scores, 100, 3)
    assert len(filled) == 100 and len(set(filled)) == 100 and filled[:54] == strict
    # The rest are the best capped-out candidates, in score order.
    capped_out = [r for r in rows.tolist() if r not in set(strict)]
    assert filled[54:] == capped_out[:46] and filled_scores[54:] == sorted(filled_scores[54:], reverse=True)

    rec = genre_engine.recommend("u5", k=100, diversity_cap=3, hour=12)
    assert rec.fallback is None and rec.topped_up == 0 and len(rec.items) == 100
    leaves = [i["category_path"] for i in rec.items]
    head, tail = _head_and_tail(leaves, 3)
    assert max(Counter(head).values()) <= 3 and len(head) < 100  # the cap shapes the head...
    assert all(Counter(head)[leaf] == 3 for leaf in tail)  # ...the fill comes from capped-out genres
    tail_scores = [i["score"] for i in rec.items[len(head) :]]
    assert tail_scores == sorted(tail_scores, reverse=True)
    assert len({i["item_id"] for i in rec.items}) == 100
    uncapped = genre_engine.recommend("u5", k=100, diversity_cap=None, hour=12)
    assert len(uncapped.items) == 100 and max(Counter(leaves).values()) < max(
        Counter(i["category_path"] for i in uncapped.items).values()
    )


def test_popularity_top_up_also_relaxes_the_cap(genre_engine: Engine):
    # Unknown user: popularity answers; 18 genres x cap 3 would stop at 54.
    rec = genre_engine.recommend("stranger", k=100, diversity_cap=3)
    assert rec.fallback == "unknown_user" and len(rec.items) == 100
    head, tail = _head_and_tail([i["category_path"] for i in rec.items], 3)
    assert len(head) == 54 and all(Counter(head)[leaf] == 3 for leaf in tail)
    # With a filter that leaves fewer than k candidates in total, all of them come back.
    few = genre_engine.recommend("stranger", k=100, diversity_cap=3, filters=Filters(category_prefix="Genre03"))
    cat = genre_engine.catalog
    genre03 = [cat.item_id[r] for r in cat.popular_rows if cat.category_path[r] == "Genre03"]
    assert 3 < len(genre03) < 100 and [i["item_id"] for i in few.items] == genre03


def test_a_seen_set_larger_than_the_candidate_depth_still_gets_model_answers(heavy_engine: Engine):
    """The search goes deeper by the excluded items: with 300 seen items and a candidate
    depth of 60, the user still gets k=50 model answers, none of them seen."""
    eng = heavy_engine
    depth = eng.candidates
    eng.candidates = 60
    try:
        rec = eng.recommend("u1", k=50, diversity_cap=None, hour=9)
    finally:
        eng.candidates = depth
    seen_ids = set(eng.catalog.item_id[eng.seen.rows_for("u1")])
    assert rec.fallback is None and rec.topped_up == 0 and len(rec.items) == 50
    assert not seen_ids & {i["item_id"] for i in rec.items}
