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
from recsys_dagster.ml.model import UNKNOWN_DEVICE, UNKNOWN_HOUR

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
    device: np.ndarray  # [N] index in DEVICE_TYPES, UNKNOWN_DEVICE when missing or invalid
    hour: np.ndarray  # [N] 0..23, UNKNOWN_HOUR when missing or invalid
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
    device = _device_index(table.column("device_type"))
    hour = _hour_index(table.column("hour"))
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


def _device_index(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Index in DEVICE_TYPES; a null or a value outside it is UNKNOWN_DEVICE."""
    idx = pc.index_in(pc.cast(col, pa.string()), value_set=pa.array(DEVICE_TYPES, pa.string()))
    return pc.fill_null(idx, UNKNOWN_DEVICE).to_numpy(zero_copy_only=False).astype(np.int64)


def _hour_index(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Hours 0..23 as they are; a null, fractional or out-of-range hour is UNKNOWN_HOUR."""
    h = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    valid = np.isfinite(h) & (h >= 0) & (h <= 23) & (h == np.floor(h))
    return np.where(valid, np.nan_to_num(h), UNKNOWN_HOUR).astype(np.int64)


def drop_context(
    device: np.ndarray, hour: np.ndarray, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Context dropout: each of device and hour independently becomes its unknown index
    with probability `p` (new arrays; the inputs are not changed)."""
    if p <= 0:
        return device, hour
    n = len(device)
    device = np.where(rng.random(n) < p, UNKNOWN_DEVICE, device).astype(np.int64)
    hour = np.where(rng.random(n) < p, UNKNOWN_HOUR, hour).astype(np.int64)
    return device, hour


def iterate_batches(
    ex: Examples,
    batch_size: int,
    device: torch.device,
    shuffle: bool = True,
    seed: int = 0,
    context_dropout: float = 0.0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield dicts of tensors on `device`. The permutation and the context dropout (see
    `drop_context`) come from `seed` alone, so an epoch is reproducible after a resume
    without restoring iterator state, on any device."""
    if not 0.0 <= context_dropout <= 1.0:
        raise ValueError(f"context_dropout must be in [0, 1], got {context_dropout}")
    n = len(ex)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    pin = device.type == "cuda"
    for lo in range(0, n, batch_size):
        rows = order[lo : lo + batch_size]
        arrays = {f.name: getattr(ex, f.name)[rows] for f in fields(ex)}
        arrays["device"], arrays["hour"] = drop_context(arrays["device"], arrays["hour"], context_dropout, rng)
        batch = {}
        for name, a in arrays.items():
            t = torch.from_numpy(np.ascontiguousarray(a))
            if pin:
                t = t.pin_memory()
            batch[name] = t.to(device, non_blocking=pin)
        yield batch
