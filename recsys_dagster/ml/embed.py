"""Item embeddings for a whole items table, cold items included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recsys_dagster.ml.features import ItemFeatures
from recsys_dagster.ml.model import ITEM_FEATURES, TwoTower


@torch.no_grad()
def item_embeddings(
    model: TwoTower, features: ItemFeatures, items: pa.Table, time: np.ndarray | None = None, batch: int = 8192
) -> np.ndarray:
    """float32 [items.num_rows, dim], L2-normalized, row i = items row i; `time` [rows,
    N_TIME_FEATURES]: the rows' time features when the tower is time-aware.

    Eval mode (no id dropout); an id unknown to `features` maps to index 0, whose id
    embedding is the zero padding vector, so the item is embedded from its content."""
    arrays = features.encode(items).as_dict()
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        out = np.zeros((items.num_rows, model.dim), dtype=np.float32)
        for lo in range(0, items.num_rows, batch):
            f = {k: torch.from_numpy(arrays[k][lo : lo + batch]).to(dev) for k in ITEM_FEATURES}
            t = None if time is None else torch.from_numpy(time[lo : lo + batch]).to(dev)
            out[lo : lo + batch] = model.item_tower(f, t).float().cpu().numpy()
    finally:
        model.train(was)
    # Re-normalize in float32 so consumers can rely on unit norms to ~1e-6.
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
