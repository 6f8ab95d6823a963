"""Training splits as columnar numpy arrays, and a seeded batch iterator over them.

All id -> index mapping is vectorised (pandas Index lookups over flattened list columns);
the training loop only slices arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys_dagster.contract import DEVICE_TYPES
from recsys_dagster.ml.features import ItemFeatures

UNKNOWN_DEVICE = len(DEVICE_TYPES)
REQUIRED = ("user_id", "item_id", "weight", "timestamp", "device_type", "hour", "history", "negatives")


class DataError(ValueError):
    """A training split violates the training contract."""


@dataclass
class Examples:
    """One split, row-aligned int64/float32 arrays (index 0 = padding / unknown item)."""

    history: np.ndarray  # [N, L] item indices, oldest first, left-padded with 0
    positive: np.ndarray  # [N]
    negatives: np.ndarray  # [N, K], 0-padded
    weight: np.ndarray  # [N] float32
    device: np.ndarray  # [N]
    hour: np.ndarray  # [N]
    user: np.ndarray  # [N] user codes (within this split)
    ts: np.ndarray  # [N] int64 microseconds

    def __len__(self) -> int:
        return len(self.positive)

    def take(self, rows: np.ndarray) -> Examples:
        return Examples(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _list_matrix(col: pa.ChunkedArray | pa.Array, features: ItemFeatures, width: int, keep_last: bool) -> np.ndarray:
    """list<str> -> [N, width] item indices; keeps the last (`keep_last`, left-padded) or
    the first `width` entries (right-padded). Null lists are empty."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    arr = pc.fill_null(arr, pa.scalar([], arr.type)) if arr.null_count else arr
    offsets = arr.offsets.to_numpy().astype(np.int64)
    start, end = offsets[:-1], offsets[1:]
    flat = features.item_index(pc.fill_null(arr.values.cast(pa.string()), "").to_numpy(zero_copy_only=False))
    out = np.zeros((len(start), width), dtype=np.int64)
    if not len(flat) or width == 0:
        return out
    j = np.arange(width)
    src = (end[:, None] - width + j) if keep_last else (start[:, None] + j)
    valid = (src >= start[:, None]) & (src < end[:, None])
    out[valid] = flat[src[valid]]
    return out


def encode_examples(table: pa.Table, features: ItemFeatures, history_len: int) -> Examples:
    """Map one split (CONTRACTS `training`) onto item indices of `features`.

    A positive whose item is not in the items table breaks the contract (items/ holds every
    item of the window) and raises; unknown history/negative items become padding (0)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(f"training split lacks columns {missing}")
    pos_ids = table.column("item_id").to_numpy()
    positive = features.item_index(pos_ids)
    unknown = positive == 0
    if unknown.any():
        sample = list(dict.fromkeys(pos_ids[unknown].tolist()))[:5]
        raise DataError(f"{int(unknown.sum())} positives are not in the items table, e.g. {sample}")
    neg_lens = pc.list_value_length(table.column("negatives")).to_numpy(zero_copy_only=False)
    k = int(np.nan_to_num(neg_lens.astype(float)).max()) if len(neg_lens) else 0
    weight = table.column("weight").to_numpy().astype(np.float32)
    if not np.isfinite(weight).all() or (weight < 0).any():
        raise DataError("weights must be finite and >= 0")
    device = np.asarray(
        _index_of(table.column("device_type").to_numpy(zero_copy_only=False), DEVICE_TYPES), dtype=np.int64
    )
    hour = table.column("hour").to_numpy(zero_copy_only=False)
    hour = np.clip(np.nan_to_num(hour.astype(float), nan=0), 0, 23).astype(np.int64)
    users = table.column("user_id").to_numpy(zero_copy_only=False)
    _, user_codes = np.unique(users.astype(str), return_inverse=True)
    ts = pc.cast(table.column("timestamp"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return Examples(
        history=_list_matrix(table.column("history"), features, history_len, keep_last=True),
        positive=positive,
        negatives=_list_matrix(table.column("negatives"), features, k, keep_last=False),
        weight=weight,
        device=device,
        hour=hour,
        user=user_codes.astype(np.int64),
        ts=ts.astype(np.int64),
    )


def _index_of(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    lookup = {v: i for i, v in enumerate(vocab)}
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    return np.array([lookup.get(u, UNKNOWN_DEVICE) for u in uniques], dtype=np.int64)[codes]


def iterate_batches(
    ex: Examples,
    batch_size: int,
    device: torch.device,
    shuffle: bool = True,
    seed: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield dicts of tensors on `device`. The permutation comes from `seed` alone, so an
    epoch is reproducible after a resume without restoring iterator state."""
    n = len(ex)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for lo in range(0, n, batch_size):
        rows = order[lo : lo + batch_size]
        batch = {}
        for f in fields(ex):
            t = torch.from_numpy(np.ascontiguousarray(getattr(ex, f.name)[rows]))
            if pin:
                t = t.pin_memory()
            batch[f.name] = t.to(device, non_blocking=pin)
        yield batch


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
    words = ["phone", "sofa", "bike", "dress", "lamp", "guitar", "camera", "boots", "table", "watch", "drill", "stroller"]
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
                pa.array(np.arange(0, negs.size + 1, n_negatives, dtype=np.int32)), pa.array(item_ids[negs.ravel()], pa.string())
            ),
        }
    )
    is_val = j >= per_user
    train, val = table.filter(pa.array(~is_val)), table.filter(pa.array(is_val))
    counts = np.bincount(pos[~is_val], minlength=n_items)
    items = items.append_column("train_count", pa.array(counts.astype(np.int64)))
    return train, val, items
