"""Assemble a week's artifacts into a local bundle directory (the six bundle files).

The offline evaluation scores the candidate from this directory exactly as serving
would, and the promotion gate writes it to `models/<version>/` when it passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_dagster.contract import ARTIFACTS, TRAINING, week_prefix
from recsys_dagster.lake import Lake

POPULAR_TOP_N = 1000


def artifact_prefix(week: str, kind: str) -> str:
    """`model`, `embeddings` or `index` artifacts of a week."""
    return f"{week_prefix(ARTIFACTS, week)}/{kind}"


def popular_json(items: pa.Table, top_n: int = POPULAR_TOP_N) -> dict:
    """Active items by recent weighted popularity (train split only), best first."""
    active = items.filter(pc.equal(items.column("active"), True))
    score = pc.fill_null(active.column("recent_count"), 0.0)
    order = pc.sort_indices(pa.table({"s": score, "t": pc.fill_null(active.column("train_count"), 0)}), sort_keys=[("s", "descending"), ("t", "descending")])
    top = active.take(order[:top_n])
    return {
        "items": [
            {"item_id": i, "score": float(s or 0.0)}
            for i, s in zip(top.column("item_id").to_pylist(), top.column("recent_count").to_pylist())
        ]
    }


def assemble_bundle_dir(lake: Lake, week: str, dest: Path) -> dict:
    """Write the six bundle files of `week` into `dest`; returns the model/index metadata
    the manifest carries (embedding dim, index type and params, history length...)."""
    dest.mkdir(parents=True, exist_ok=True)
    model, emb, index = (artifact_prefix(week, k) for k in ("model", "embeddings", "index"))
    (dest / "user_tower.onnx").write_bytes(lake.get_bytes(f"{model}/user_tower.onnx"))
    (dest / "items.parquet").write_bytes(lake.get_bytes(f"{emb}/items.parquet"))
    (dest / "item_embeddings.npy").write_bytes(lake.get_bytes(f"{emb}/item_embeddings.npy"))
    (dest / "item_index.faiss").write_bytes(lake.get_bytes(f"{index}/item_index.faiss"))
    index_meta = lake.read_json(f"{index}/index.json")
    (dest / "index.json").write_text(json.dumps(index_meta))
    histories = lake.read_parquet(f"{week_prefix(TRAINING, week)}/user_histories", columns=["user_id", "history"])
    pq.write_table(histories, dest / "user_histories.parquet", compression="zstd")
    items = pq.read_table(dest / "items.parquet")
    (dest / "popular.json").write_text(json.dumps(popular_json(items)))
    summary = lake.read_json(f"{model}/train_summary.json")
    return {
        "embedding_dim": int(summary["dim"]),
        "history_len": int(summary["history_len"]),
        "index_type": str(index_meta["kind"]),
        "index_params": index_meta.get("params", {}),
        "index_recall_at_10": index_meta.get("recall_at_10"),
        "n_items": items.num_rows,
        "n_active_items": int(pc.sum(pc.cast(items.column("active"), pa.int64())).as_py() or 0),
        "n_users_with_history": histories.num_rows,
    }
