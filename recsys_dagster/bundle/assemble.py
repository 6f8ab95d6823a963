"""Assemble a week's artifacts into a local bundle directory (`format.BUNDLE_FILES`).

The offline evaluation scores the candidate from this directory exactly as serving
would, and the promotion gate writes it to `models/<version>/` when it passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_dagster.contract import ARTIFACTS, TRAINING, week_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.records import Record

POPULAR_TOP_N = 1000


def artifact_prefix(week: str, kind: str) -> str:
    """`model`, `embeddings` or `index` artifacts of a week."""
    return f"{week_prefix(ARTIFACTS, week)}/{kind}"


def trending_json(items: pa.Table, rows: np.ndarray, scores: np.ndarray, top_n: int = POPULAR_TOP_N) -> dict:
    """The ranker's trending order (statistics at its cut), active items only, best first."""
    ids = items.column("item_id").to_pylist()
    active = np.asarray(items.column("active").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    keep = active[rows]
    rows, scores = rows[keep][:top_n], scores[keep][:top_n]
    return {"items": [{"item_id": ids[r], "score": float(s)} for r, s in zip(rows.tolist(), scores.tolist())]}


def popular_json(items: pa.Table, top_n: int = POPULAR_TOP_N) -> dict:
    """Active items by recent weighted popularity (train split only), best first."""
    active = items.filter(pc.equal(items.column("active"), True))
    score = pc.fill_null(active.column("recent_count"), 0.0)
    order = pc.sort_indices(
        pa.table({"s": score, "t": pc.fill_null(active.column("train_count"), 0)}),
        sort_keys=[("s", "descending"), ("t", "descending")],
    )
    top = active.take(order[:top_n])
    return {
        "items": [
            {"item_id": i, "score": float(s or 0.0)}
            for i, s in zip(top.column("item_id").to_pylist(), top.column("recent_count").to_pylist())
        ]
    }


@dataclass(frozen=True)
class BundleMeta(Record):
    """What the manifest carries about a week's model and index, from its artifacts."""

    embedding_dim: int
    history_len: int
    index_type: str
    index_params: dict[str, Any]
    index_recall_at_10: float
    n_items: int
    n_active_items: int
    n_users_with_history: int
    n_users_with_seen: int
    ranker: dict[str, Any] | None = None  # the bundle's `RankerSpec` (None: two-tower only)
    refit: bool = False  # the towers are the production refit (the whole window)


STAGES = ("two_tower", "eval", "ship")


def assemble_bundle_dir(lake: Lake, week: str, dest: Path, *, stage: str) -> BundleMeta:
    """Write the bundle files of `week` into `dest` (and `index.json`); returns the model
    and index facts the manifest carries. A week whose training output predates
    `user_seen/` is refused: re-run its training examples.

    `stage` says which system: "two_tower" (the gated towers and their index, no ranker:
    what the ranker is fitted over), "eval" (the gated towers with the gated ranker and its
    statistics at the test cut: what the evaluation scores), "ship" (what is deployed: the
    refit towers and ranker when the week was refit, else the gated ones). A week without
    a ranker artifact assembles without one."""
    from recsys_dagster.ml.artifacts import SUMMARY, USER_TOWER, TrainSummary
    from recsys_dagster.ml.index import IndexReport
    from recsys_dagster.serving.ranker import RANKER_FILES, RANKER_SPEC, RANKER_STATS, ItemStats, RankerSpec

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    refit = stage == "ship" and lake.exists(f"{artifact_prefix(week, 'index_refit')}/index.json")
    suffix = "_refit" if refit else ""

    training = week_prefix(TRAINING, week)
    if not lake.has_data(f"{training}/user_seen"):
        raise ValueError(
            f"week {week}: {training}/user_seen is missing (training examples written before seen-sets); "
            "re-run training_examples for this week"
        )
    dest.mkdir(parents=True, exist_ok=True)
    model, emb, index = (artifact_prefix(week, f"{k}{suffix}") for k in ("model", "embeddings", "index"))
    (dest / "user_tower.onnx").write_bytes(lake.get_bytes(f"{model}/{USER_TOWER}"))
    (dest / "items.parquet").write_bytes(lake.get_bytes(f"{emb}/items.parquet"))
    (dest / "item_embeddings.npy").write_bytes(lake.get_bytes(f"{emb}/item_embeddings.npy"))
    (dest / "item_index.faiss").write_bytes(lake.get_bytes(f"{index}/item_index.faiss"))
    index_json = lake.get_bytes(f"{index}/index.json")
    report = IndexReport.from_json(index_json)
    (dest / "index.json").write_bytes(index_json)
    histories = lake.read_parquet(f"{training}/user_histories", columns=["user_id", "history"])
    pq.write_table(histories, dest / "user_histories.parquet", compression="zstd")
    seen = lake.read_parquet(f"{training}/user_seen", columns=["user_id", "seen"])
    pq.write_table(seen, dest / "user_seen.parquet", compression="zstd")
    items = pq.read_table(dest / "items.parquet")
    (dest / "popular.json").write_text(json.dumps(popular_json(items)))
    spec = None
    ranker_dir = f"{artifact_prefix(week, 'ranker')}/{stage}"
    if stage != "two_tower" and lake.exists(f"{ranker_dir}/{RANKER_SPEC}"):
        for name in RANKER_FILES:
            (dest / name).write_bytes(lake.get_bytes(f"{ranker_dir}/{name}"))
        ranker_spec = RankerSpec.from_json((dest / RANKER_SPEC).read_bytes())
        tower = TrainSummary.from_json(lake.get_bytes(f"{model}/{SUMMARY}")).mlflow_run_id
        if ranker_spec.tower_run_id != tower:
            raise ValueError(
                f"week {week}: the ranker was fitted over two-tower run {ranker_spec.tower_run_id}, but the week's "
                f"model is run {tower}: re-materialize `ranker` (and `model_evaluation`) for this week"
            )
        spec = ranker_spec.to_dict()
        # The fallback for users without history follows the ranker's trending source:
        # counted up to the statistics' cut, not only over the train split.
        stats = ItemStats.load(dest / RANKER_STATS, items.num_rows)
        if len(stats.trending_rows):
            (dest / "popular.json").write_text(
                json.dumps(trending_json(items, stats.trending_rows, stats.trending_scores))
            )
    summary = TrainSummary.from_json(lake.get_bytes(f"{model}/{SUMMARY}"))
    if report.k != 10:
        raise ValueError(f"week {week}: index.json measured recall@{report.k}; the gate needs recall@10")
    return BundleMeta(
        embedding_dim=summary.dim,
        history_len=summary.history_len,
        index_type=report.kind,
        index_params=dict(report.params),
        index_recall_at_10=float(report.recall),
        n_items=items.num_rows,
        n_active_items=int(pc.sum(pc.cast(items.column("active"), pa.int64())).as_py() or 0),
        n_users_with_history=histories.num_rows,
        n_users_with_seen=seen.num_rows,
        ranker=spec,
        refit=refit,
    )
