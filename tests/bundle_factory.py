"""A realistic synthetic bundle, built without torch, for serving tests and the benchmark.

Items fall into clusters (one leaf category each, a few leaves per top-level category) whose
embeddings sit around a cluster centre, so "a history in cluster c pulls recommendations
towards c" is something a test can check. The user tower is an ONNX graph written with
`onnx.helper` that implements the contract: masked mean of `history_emb` plus a small
context term (device and hour embedding tables, each with its "unknown" row: device 3,
hour 24), L2-normalized, dynamic B and L.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

from recsys_dagster.bundle.format import (
    FORMAT_VERSION,
    MANIFEST,
    POINTER_KEY,
    REQUIRED_FILES,
    bundle_prefix,
    describe_files,
    sha256_file,
)
from recsys_dagster.contract import CATEGORY_SEPARATOR, CONDITIONS, DEVICE_TYPES
from recsys_dagster.lake import Lake

CITIES = ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Leipzig")
TOP_CATEGORIES = ("Electronics", "Fashion", "Home", "Sports")
SUBCATEGORIES = ("Phones", "Laptops", "Shoes", "Jackets", "Kitchen", "Garden", "Bikes", "Outdoor")
LEAVES = ("Apple", "Samsung", "Other")


def cluster_categories(n_clusters: int) -> list[str]:
    """One distinct leaf `category_path` per cluster (two clusters per top category)."""
    out = []
    for c in range(n_clusters):
        top = TOP_CATEGORIES[(c // 2) % len(TOP_CATEGORIES)]
        sub = SUBCATEGORIES[c % len(SUBCATEGORIES)]
        leaf = f"{LEAVES[c % len(LEAVES)]}{c}"
        out.append(CATEGORY_SEPARATOR.join((top, sub, leaf)))
    return out


def user_tower_onnx(dim: int, seed: int = 0, context_scale: float = 0.05, n_hours: int = 25) -> bytes:
    """The contract's user tower as an ONNX model (opset 17); `n_hours=24` builds one
    without the unknown hour row (as no tower should be)."""
    rng = np.random.default_rng(seed + 1)
    device_table = (rng.normal(size=(len(DEVICE_TYPES) + 1, dim)) * context_scale).astype(np.float32)
    hour_table = (rng.normal(size=(n_hours, dim)) * context_scale).astype(np.float32)
    inits = [
        numpy_helper.from_array(device_table, "device_table"),
        numpy_helper.from_array(hour_table, "hour_table"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["history_mask", "axis_last"], ["mask3"]),
        helper.make_node("Mul", ["history_emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["history_mask", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["denom"]),
        helper.make_node("Div", ["summed", "denom"], ["mean"]),
        helper.make_node("Gather", ["device_table", "device"], ["dev_vec"], axis=0),
        helper.make_node("Gather", ["hour_table", "hour"], ["hour_vec"], axis=0),
        helper.make_node("Add", ["dev_vec", "hour_vec"], ["ctx"]),
        helper.make_node("Add", ["mean", "ctx"], ["raw"]),
        helper.make_node("Mul", ["raw", "raw"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis_last"], ["sqsum"], keepdims=1),
        helper.make_node("Sqrt", ["sqsum"], ["norm"]),
        helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
        helper.make_node("Div", ["raw", "safe_norm"], ["user_vec"]),
    ]
    graph = helper.make_graph(
        nodes,
        "user_tower",
        inputs=[
            helper.make_tensor_value_info("history_emb", TensorProto.FLOAT, ["B", "L", dim]),
            helper.make_tensor_value_info("history_mask", TensorProto.FLOAT, ["B", "L"]),
            helper.make_tensor_value_info("device", TensorProto.INT64, ["B"]),
            helper.make_tensor_value_info("hour", TensorProto.INT64, ["B"]),
        ],
        outputs=[helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bundle_factory")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def flat_index(embeddings: np.ndarray, rows: np.ndarray) -> faiss.Index:
    """Exact inner-product search over `rows`, ids = rows."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(embeddings.shape[1]))
    index.add_with_ids(embeddings[rows], rows.astype(np.int64))
    return index


def make_bundle_dir(
    path: str | Path,
    n_items: int = 500,
    dim: int = 16,
    seed: int = 0,
    *,
    n_clusters: int = 8,
    n_users: int = 200,
    history_len: int = 20,
    inactive_fraction: float = 0.05,
    n_popular: int = 200,
    build_index: Callable[[np.ndarray, np.ndarray], faiss.Index] = flat_index,
    index_type: str = "flat",
    index_params: dict[str, Any] | None = None,
    seen_per_user: int = 30,
    write_seen: bool = True,
    category_of_cluster: Callable[[int], str] | None = None,
    context_scale: float = 0.05,
) -> Path:
    """Write the bundle files (`BUNDLE_FILES`, no manifest) into `path`; returns the directory.

    Item `i` belongs to cluster `i % n_clusters`; user `u<j>` has a history drawn from
    cluster `j % n_clusters` (users with `j % 10 == 9` have an empty history). A user's
    seen-set (`user_seen.parquet`, most recent first) is the history reversed, then more
    items of the same cluster, up to `seen_per_user` (at least the history); users with an
    empty history have none. `write_seen=False` leaves `user_seen.parquet` out, like a
    bundle written before it existed. `category_of_cluster` replaces the three-level leaf
    paths of `cluster_categories`. `index.json` is written beside them with
    `index_params` (efSearch / nprobe).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    cluster = np.arange(n_items) % n_clusters
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = centres[cluster] + 0.35 * rng.normal(size=(n_items, dim)).astype(np.float32) / np.sqrt(dim)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)

    paths = (
        [category_of_cluster(c) for c in range(n_clusters)] if category_of_cluster else cluster_categories(n_clusters)
    )
    cats = np.array(paths, dtype=object)[cluster]
    ids = np.char.add("i", np.arange(n_items).astype(str)).astype(object)
    active = rng.random(n_items) >= inactive_fraction
    price = np.round(rng.gamma(2.0, 60.0, size=n_items), 2)
    condition = np.array(CONDITIONS, dtype=object)[rng.integers(0, len(CONDITIONS), n_items)]
    location = np.array(CITIES, dtype=object)[rng.integers(0, len(CITIES), n_items)]
    recent = np.round(rng.pareto(1.5, size=n_items) * 3, 3)
    leaf_names = [c.split(CATEGORY_SEPARATOR)[-1] for c in cats[: min(n_items, n_clusters)]]
    titles = np.char.add(
        np.char.add(np.array(leaf_names, dtype=str)[cluster % len(leaf_names)], " item "), ids.astype(str)
    )
    created = datetime(2026, 10, 1, tzinfo=UTC)
    items = pa.table(
        {
            "item_id": pa.array(ids, pa.string()),
            "title": pa.array(titles.astype(object), pa.string()),
            "description": pa.array(np.full(n_items, "good condition", dtype=object), pa.string()),
            "category_path": pa.array(cats, pa.string()),
            "price": pa.array(price, pa.float64()),
            "currency": pa.array(np.full(n_items, "EUR", dtype=object), pa.string()),
            "brand": pa.array(np.full(n_items, "acme", dtype=object), pa.string()),
            "location": pa.array(location, pa.string()),
            "condition": pa.array(condition, pa.string()),
            "image_url": pa.array(np.char.add("https://img.example/", ids.astype(str)).astype(object), pa.string()),
            "created_at": pa.array(np.full(n_items, created), pa.timestamp("us", tz="UTC")),
            "active": pa.array(active, pa.bool_()),
            "train_count": pa.array(rng.integers(0, 50, n_items), pa.int64()),
            "recent_count": pa.array(recent, pa.float64()),
        }
    )
    pq.write_table(items, out / "items.parquet")
    np.save(out / "item_embeddings.npy", emb, allow_pickle=False)
    (out / "user_tower.onnx").write_bytes(user_tower_onnx(dim, seed, context_scale=context_scale))

    active_rows = np.flatnonzero(active)
    faiss.write_index(build_index(emb, active_rows), str(out / "item_index.faiss"))
    (out / "index.json").write_text(
        json.dumps({"type": index_type, "params": index_params or {}, "n_indexed": int(active_rows.size)})
    )

    users, histories, seen = [], [], []
    seen_rng = np.random.default_rng([seed, 1])  # its own stream: histories stay as they were
    for j in range(n_users):
        users.append(f"u{j}")
        if j % 10 == 9:
            histories.append([])
            seen.append([])
            continue
        pool = np.arange(j % n_clusters, n_items, n_clusters)  # cluster c = rows c, c + n, ...; O(pool), not O(items)
        take = rng.choice(pool, size=min(len(pool), int(rng.integers(3, history_len + 1))), replace=False)
        histories.append([ids[r] for r in take])
        rest = np.setdiff1d(pool, take)
        more = seen_rng.choice(rest, size=min(len(rest), max(0, seen_per_user - len(take))), replace=False)
        seen.append([ids[r] for r in take[::-1]] + [ids[r] for r in more])
    pq.write_table(
        pa.table({"user_id": pa.array(users, pa.string()), "history": pa.array(histories, pa.list_(pa.string()))}),
        out / "user_histories.parquet",
    )
    if write_seen:
        pq.write_table(
            pa.table({"user_id": pa.array(users, pa.string()), "seen": pa.array(seen, pa.list_(pa.string()))}),
            out / "user_seen.parquet",
        )

    top = active_rows[np.argsort(-recent[active_rows], kind="stable")][:n_popular]
    popular = {"items": [{"item_id": ids[r], "score": float(recent[r])} for r in top]}
    (out / "popular.json").write_text(json.dumps(popular))
    return out


def manifest_for(
    src_dir: str | Path, version: str, *, history_len: int = 20, index_type: str = "flat"
) -> dict[str, Any]:
    src = Path(src_dir)
    dim = int(np.load(src / "item_embeddings.npy", mmap_mode="r").shape[1])
    extra = json.loads((src / "index.json").read_text()) if (src / "index.json").is_file() else {}
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "embedding_dim": dim,
        "index_type": extra.get("type", index_type),
        "index_params": extra.get("params", {}),
        "history_len": history_len,
        "files": _describe(src),
    }


def _describe(src: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of the bundle files in `src`; one written before `user_seen.parquet`
    existed is described without it."""
    if (src / "user_seen.parquet").is_file():
        return describe_files(src)
    return {name: {"sha256": sha256_file(src / name), "size": (src / name).stat().st_size} for name in REQUIRED_FILES}


def write_and_promote(lake: Lake, version: str, src_dir: str | Path, *, promote: bool = True) -> dict[str, Any]:
    """Write `models/<version>/` (files, then manifest) and flip `promoted/manifest.json`.
    A source without `user_seen.parquet` gives a bundle without it (an older bundle)."""
    src = Path(src_dir)
    manifest = manifest_for(src, version)
    prefix = bundle_prefix(version)
    for name in manifest["files"]:
        lake.put_bytes(f"{prefix}/{name}", (src / name).read_bytes())
    lake.write_json(f"{prefix}/{MANIFEST}", manifest)
    if promote:
        lake.write_json(POINTER_KEY, {**manifest, "promoted_at": datetime.now(UTC).isoformat()})
    return manifest


def add_ranker(
    path: str | Path,
    *,
    seed: int = 0,
    n_clusters: int = 8,
    neighbours: int = 20,
    train_users: int = 300,
    trees: int = 60,
    cfg_overrides: dict[str, Any] | None = None,
) -> Path:
    """Add a ranking stage (`RANKER_FILES`) to a bundle written by `make_bundle_dir`.

    Item statistics are synthetic but shaped like the pipeline's: item-kNN and co-occurrence
    neighbours within an item's cluster, popularity windows from `recent_count`. The model is
    a real LightGBM LambdaRank fitted on features from `candidate_features` (the serving
    path) for users whose targets are popular items of their own cluster, then exported by
    the pipeline's `to_onnx`."""
    from recsys_dagster.ml.ranker import RankData, RankerConfig, fit_fixed, make_spec, to_onnx
    from recsys_dagster.serving.engine import Engine
    from recsys_dagster.serving.ranker import ItemStats, candidate_features

    out = Path(path)
    rng = np.random.default_rng([seed, 7])
    items = pq.read_table(out / "items.parquet")
    n = items.num_rows
    cluster = np.arange(n) % n_clusters
    recent = items.column("recent_count").to_numpy()
    cfg = RankerConfig(neighbours=neighbours, **(cfg_overrides or {}))

    def neighbour_csr(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        per_cluster = -(-n // n_clusters)
        offsets = rng.integers(0, per_cluster, size=(n, k))
        cols = np.minimum(cluster[:, None] + n_clusters * offsets, n - 1 - ((n - 1 - cluster[:, None]) % n_clusters))
        data = -np.sort(-rng.random((n, k)), axis=1).astype(np.float32)
        return np.arange(0, n * k + 1, k, dtype=np.int64), cols.reshape(-1).astype(np.int32), data.reshape(-1)

    knn = neighbour_csr(neighbours)
    cooc = neighbour_csr(max(1, neighbours // 2))
    paths = items.column("category_path").to_pylist()
    leaf_names = sorted(set(paths))
    leaf = np.array([leaf_names.index(p) for p in paths], dtype=np.int32) if n <= 100_000 else cluster.astype(np.int32)
    windows = np.array(cfg.windows_days, dtype=np.float64)
    counts = np.floor(recent[:, None] * windows[None, :] / windows[-1] + rng.random((n, len(windows)))).astype(
        np.float32
    )
    active = items.column("active").to_numpy(zero_copy_only=False)
    stats = ItemStats(
        window_counts=counts,
        total=items.column("train_count").to_numpy().astype(np.float32),
        age_days=rng.uniform(0, 60, n).astype(np.float32),
        leaf=leaf,
        top=(cluster // 2).astype(np.int32),
        brand=np.zeros(n, np.int32),
        price_log=np.log1p(items.column("price").to_numpy()).astype(np.float32),
        knn_indptr=knn[0],
        knn_indices=knn[1],
        knn_data=knn[2],
        cooc_indptr=cooc[0],
        cooc_indices=cooc[1],
        cooc_data=cooc[2],
        trending_rows=np.flatnonzero(active)[np.argsort(-recent[active], kind="stable")].astype(np.int64),
        trending_scores=np.sort(recent[active])[::-1].astype(np.float32),
    )
    stats.validate(n)
    spec = make_spec(
        cfg,
        trending_days=1,
        cut_us=1_790_000_000_000_000,
        trained_on=["synthetic"],
        trees=trees,
        refit=False,
        tower_run_id="synthetic",
    )

    engine = Engine.from_dir(out)
    users = [u for u, h in engine.histories.items() if h][:train_users]
    feats, labels, groups = [], [], []
    for user in users:
        vec, _ = engine.user_vectors([engine.histories[user]])
        excluded = engine.seen_rows(user)
        _, ann = engine.search(vec, spec.depth["two_tower"] + len(excluded))
        cands = candidate_features(
            stats,
            spec,
            user_vec=vec[0],
            embeddings=engine.embeddings,
            ann_rows=ann[0],
            profile=engine.profile_rows(user),
            keep=lambda r, excluded=excluded: active[r] & ~np.isin(r, excluded),
        )
        if len(cands.rows) < 2:
            continue
        home = np.bincount(cluster[engine.profile_rows(user)], minlength=n_clusters).argmax()
        weight = np.where(cluster[cands.rows] == home, 1.0 + recent[cands.rows], 0.0)
        chosen = (
            rng.choice(
                len(cands.rows),
                size=min(3, int((weight > 0).sum())),
                replace=False,
                p=None if weight.sum() == 0 else weight / weight.sum(),
            )
            if weight.sum() > 0
            else []
        )
        label = np.zeros(len(cands.rows), np.int32)
        label[np.asarray(chosen, dtype=np.int64)] = 1
        feats.append(cands.features)
        labels.append(label)
        groups.append(len(cands.rows))
    data = RankData(
        features=np.concatenate(feats),
        labels=np.concatenate(labels),
        groups=np.array(groups, dtype=np.int64),
        query_users=users[: len(groups)],
        pool_recall=1.0,
        n_queries=len(groups),
    )
    booster = fit_fixed(data, cfg, spec.feature_names, trees)
    (out / "ranker.onnx").write_bytes(to_onnx(booster, len(spec.feature_names)))
    (out / "ranker.json").write_text(spec.to_json())
    stats.save(out / "ranker_items.npz")
    return out
