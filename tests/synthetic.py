"""Synthetic inputs with a planted structure, for tests and benchmarks (not the package).

Benchmarks import this as `tests.synthetic` (they put the repository root on sys.path).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa


def synthetic_tables(
    n_users: int = 300,
    n_items: int = 400,
    n_categories: int = 8,
    per_user: int = 12,
    val_per_user: int = 2,
    history_len: int = 20,
    n_negatives: int = 5,
    cold_items: int = 40,
    seed: int = 0,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(train, validation, items) in the CONTRACTS `training` shape with a planted
    structure: each user draws ~90% of positives from one favourite category, items of a
    category share title words, brand and price range. The last `cold_items` items are
    active but never interacted with. For tests and benchmarks; vectorised numpy."""
    rng = np.random.default_rng(seed)
    words = [
        "phone",
        "sofa",
        "bike",
        "dress",
        "lamp",
        "guitar",
        "camera",
        "boots",
        "table",
        "watch",
        "drill",
        "stroller",
    ]
    cat = np.arange(n_items) % n_categories
    item_ids = np.array([f"item{i:06d}" for i in range(n_items)], dtype=object)
    brand = np.array([f"brand{c}_{b}" for c, b in zip(cat, rng.integers(0, 3, n_items))], dtype=object)
    items = pa.table(
        {
            "item_id": item_ids,
            "title": [f"{words[c % len(words)]} {brand[i]} model {i}" for i, c in enumerate(cat)],
            "category_path": [f"Cat{c % 4} > Sub{c} > Leaf{c}" for c in cat],
            "category_l1": [f"Cat{c % 4}" for c in cat],
            "category_l2": [f"Sub{c}" for c in cat],
            "category_l3": [f"Leaf{c}" for c in cat],
            "price": np.round(np.exp(rng.normal(3 + cat % 5, 0.3)), 2),
            "brand": brand,
            "location": rng.choice(["Berlin", "Paris", "Madrid", "Rome"], n_items).astype(object),
            "condition": rng.choice(["new", "like_new", "used", "for_parts"], n_items).astype(object),
            "active": np.ones(n_items, dtype=bool),
        }
    )
    warm = n_items - cold_items
    fav = rng.integers(0, n_categories, n_users)
    S = per_user + val_per_user
    u = np.repeat(np.arange(n_users), S)
    j = np.tile(np.arange(S), n_users)
    in_fav = rng.random(len(u)) < 0.9
    # An item of category c: c + n_categories * k, restricted to the warm range.
    per_cat = warm // n_categories
    k = rng.integers(0, per_cat, len(u))
    pos = np.where(in_fav, fav[u] + n_categories * k, rng.integers(0, warm, len(u)))
    h_len = np.minimum(j, history_len)
    offsets = np.concatenate([[0], np.cumsum(h_len)]).astype(np.int32)
    row_of = np.repeat(np.arange(len(u)), h_len)
    within = np.arange(offsets[-1]) - offsets[:-1][row_of]
    hist_vals = item_ids[pos[row_of - h_len[row_of] + within]]
    negs = rng.integers(0, n_items, (len(u), n_negatives))
    ts = (np.datetime64("2026-10-05T00:00:00") + (j * 3600 + u).astype("timedelta64[s]")).astype("datetime64[us]")
    table = pa.table(
        {
            "user_id": np.array([f"user{x:05d}" for x in u], dtype=object),
            "session_id": np.array([f"s{x}_{y}" for x, y in zip(u, j)], dtype=object),
            "item_id": item_ids[pos],
            "weight": rng.choice([1.0, 2.0, 4.0], len(u)),
            "event_type": np.full(len(u), "click", dtype=object),
            "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "device_type": rng.choice(["mobile", "desktop", "tablet"], len(u)).astype(object),
            "hour": pa.array(rng.integers(0, 24, len(u)), pa.int32()),
            "history": pa.ListArray.from_arrays(pa.array(offsets), pa.array(hist_vals, pa.string())),
            "negatives": pa.ListArray.from_arrays(
                pa.array(np.arange(0, negs.size + 1, n_negatives, dtype=np.int32)),
                pa.array(item_ids[negs.ravel()], pa.string()),
            ),
        }
    )
    is_val = j >= per_user
    train, val = table.filter(pa.array(~is_val)), table.filter(pa.array(is_val))
    counts = np.bincount(pos[~is_val], minlength=n_items)
    items = items.append_column("train_count", pa.array(counts.astype(np.int64)))
    return train, val, items


def synthetic_clustered(n: int, dim: int, n_centers: int = 1000, spread: float = 0.3, seed: int = 0) -> np.ndarray:
    """Normalised Gaussian-mixture vectors: a stand-in for embeddings in tests and benches
    (uniform random vectors have no neighbourhood structure and make ANN look bad)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, n_centers, size=n)]
    x += (spread / math.sqrt(dim)) * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x
