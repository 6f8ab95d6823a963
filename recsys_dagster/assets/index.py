"""Catalog embeddings from the item tower, and the FAISS index over the active items."""

import io

import numpy as np
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from recsys_dagster.bundle.assemble import artifact_prefix
from recsys_dagster.bundle.gate import MIN_INDEX_RECALL
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.resources.lake import LakeResource

INDEX_FILE = "item_index.faiss"
INDEX_REPORT = "index.json"


def variants(lake, week: str) -> list[str]:
    """The week's models: "" (gated, what the evaluation scores) and "_refit" (what ships)
    when the two-tower model was refit. Embeddings and index are built for each."""
    from recsys_dagster.ml.artifacts import SUMMARY

    return ["", "_refit"] if lake.exists(f"{artifact_prefix(week, 'model_refit')}/{SUMMARY}") else [""]


def load_embeddings(lake, week: str, variant: str = "") -> tuple:
    import pyarrow.parquet as pq

    prefix = artifact_prefix(week, f"embeddings{variant}")
    items = pq.read_table(io.BytesIO(lake.get_bytes(f"{prefix}/items.parquet")))
    emb = np.load(io.BytesIO(lake.get_bytes(f"{prefix}/item_embeddings.npy")), allow_pickle=False)
    return items, emb


def _active_rows(items) -> np.ndarray:
    return np.flatnonzero(np.asarray(items.column("active").to_numpy(zero_copy_only=False), dtype=bool))


@asset(
    partitions_def=WEEKLY,
    deps=["two_tower_model"],
    group_name="model",
    kinds={"pytorch", "numpy"},
    description="The item tower over the whole catalog of the window, cold items included "
    "(their vectors come from content alone). Time-aware: the gated model's vectors carry popularity as of "
    "the test window's first day (what the evaluation scores), the refit's as of the day after the window.",
)
def item_embeddings(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    from recsys_dagster.bundle.embeddings import embed_week

    week = context.partition_key
    the_lake = lake.get_lake()
    items = the_lake.read_parquet(f"{week_prefix(TRAINING, week)}/items")
    built = variants(the_lake, week)
    for variant in built:
        emb, npy = embed_week(the_lake, week, items, variant)
        the_lake.replace_prefix(
            artifact_prefix(week, f"embeddings{variant}"),
            {"items.parquet": the_lake.table_to_parquet_bytes(items), "item_embeddings.npy": npy},
        )
    if "_refit" not in built:
        the_lake.delete_prefix(artifact_prefix(week, "embeddings_refit"))

    prefix = artifact_prefix(week, "embeddings")
    train_count = np.nan_to_num(items.column("train_count").to_numpy(zero_copy_only=False).astype(float))
    return MaterializeResult(
        metadata={
            "dagster/row_count": int(emb.shape[0]),
            "dim": int(emb.shape[1]),
            "active_items": int(len(_active_rows(items))),
            "cold_items": int((train_count == 0).sum()),
            "refit": "_refit" in built,
            "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        }
    )


@asset_check(
    asset="item_embeddings",
    blocking=True,
    partitions_def=WEEKLY,
    description="One finite, unit-norm vector per catalog item.",
)
def item_embeddings_valid(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    the_lake = lake.get_lake()
    meta: dict = {}
    passed = True
    for variant in variants(the_lake, context.partition_key):
        items, emb = load_embeddings(the_lake, context.partition_key, variant)
        ids = items.column("item_id").to_pylist()
        finite = bool(np.isfinite(emb).all())
        norms = np.linalg.norm(emb, axis=1) if emb.ndim == 2 else np.array([])
        bad_norm = int((np.abs(norms - 1.0) > 1e-3).sum())
        one_per_item = emb.ndim == 2 and emb.shape[0] == len(ids) == len(set(ids))
        passed = passed and finite and bad_norm == 0 and one_per_item
        name = variant.strip("_") or "gated"
        meta.update(
            {
                f"{name}/rows": int(emb.shape[0]),
                f"{name}/items": len(ids),
                f"{name}/distinct_items": len(set(ids)),
                f"{name}/all_finite": finite,
                f"{name}/not_unit_norm": bad_norm,
            }
        )
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, metadata=meta)


@asset(
    partitions_def=WEEKLY,
    deps=["item_embeddings"],
    group_name="model",
    kinds={"faiss"},
    description="FAISS index over the active items (ids = rows of items.parquet). Exact inner product "
    "below ~100k items, HNSW up to ~5M, IVF-PQ above; built on GPU when one is present.",
)
def faiss_index(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    from recsys_dagster.ml.index import build_and_report, index_to_bytes

    week = context.partition_key
    the_lake = lake.get_lake()
    built = variants(the_lake, week)
    for variant in built:
        items, emb = load_embeddings(the_lake, week, variant)
        rows = _active_rows(items)
        if len(rows) == 0:
            raise ValueError(f"week {week}: no active items to index")
        n_queries = min(1000, max(100, len(rows)))
        index, built_report = build_and_report(
            emb[rows], rows.astype(np.int64), n_queries=n_queries, target_recall=MIN_INDEX_RECALL
        )
        the_lake.replace_prefix(
            artifact_prefix(week, f"index{variant}"),
            {INDEX_FILE: index_to_bytes(index), INDEX_REPORT: built_report.to_json().encode()},
        )
        if variant == "":
            report = built_report
    if "_refit" not in built:
        the_lake.delete_prefix(artifact_prefix(week, "index_refit"))
    prefix = artifact_prefix(week, "index")
    return MaterializeResult(
        metadata={
            "index_type": report.kind,
            "params": MetadataValue.json(report.params),
            "n_indexed": report.n_items,
            "recall@10_vs_exact": float(report.recall),
            "build_seconds": float(report.build_seconds),
            "built_on": report.device,
            "refit_index_recall@10_vs_exact": float(built_report.recall),
            "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        }
    )


@asset_check(
    asset="faiss_index",
    blocking=True,
    partitions_def=WEEKLY,
    description=f"recall@10 of the index against exact search on fresh sampled queries is at least {MIN_INDEX_RECALL}.",
)
def faiss_index_recall(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    from recsys_dagster.ml.index import (
        IndexReport,
        apply_search_params,
        index_from_bytes,
        recall_vs_exact,
        sample_queries,
    )

    week = context.partition_key
    the_lake = lake.get_lake()
    meta: dict = {"threshold": MIN_INDEX_RECALL}
    passed = True
    for variant in variants(the_lake, week):
        items, emb = load_embeddings(the_lake, week, variant)
        rows = _active_rows(items)
        prefix = artifact_prefix(week, f"index{variant}")
        report = IndexReport.from_json(the_lake.get_bytes(f"{prefix}/{INDEX_REPORT}"))
        index = index_from_bytes(the_lake.get_bytes(f"{prefix}/{INDEX_FILE}"))
        apply_search_params(index, report.spec)
        # Fresh queries (another seed than the build's), so the check is not the build's own figure.
        queries = sample_queries(emb[rows], n=min(1000, max(100, len(rows))), seed=12345)
        recall = recall_vs_exact(index, emb[rows], rows.astype(np.int64), queries, k=10)
        passed = passed and recall >= MIN_INDEX_RECALL and index.ntotal == len(rows)
        name = "recall@10" if variant == "" else "refit/recall@10"
        meta.update({name: round(float(recall), 5)})
        if variant == "":
            meta.update({"ntotal": int(index.ntotal), "active_items": int(len(rows)), "index_type": report.kind})
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR, metadata=meta)


INDEX_CHECKS = [item_embeddings_valid, faiss_index_recall]
