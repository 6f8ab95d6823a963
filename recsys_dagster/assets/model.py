"""Weekly two-tower training (PyTorch, GPU when present), tracked and registered in MLflow."""

import shutil

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from recsys_dagster.assets.common import config_from, md_kv, to_plain
from recsys_dagster.bundle.assemble import artifact_prefix
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.ml.train import TrainConfig
from recsys_dagster.resources.compute import ComputeResource
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource
from recsys_dagster.spark.examples import read_summary

TRAINING_POOL = "training"

# device and amp come from the compute resource, history_len from the examples (the model
# must read the histories the examples were built with, as serving will).
# keep_last is the refit's own setting.
TwoTowerConfig = config_from(TrainConfig, exclude=("device", "amp", "history_len", "keep_last"))


def _epoch_text(row: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))


@asset(
    partitions_def=WEEKLY,
    deps=["training_examples"],
    group_name="model",
    kinds={"pytorch", "mlflow"},
    pool=TRAINING_POOL,
    description="Two-tower model (user tower over recent history + context, item tower over id + content) "
    "trained with sampled softmax (in-batch with logQ correction + explicit negatives). CUDA + bf16 "
    "when a GPU is present. Checkpointed every epoch; resumes after a crash. Logged and registered in MLflow; "
    "the user tower is exported to ONNX for serving.",
)
def two_tower_model(
    context: AssetExecutionContext,
    config: TwoTowerConfig,
    lake: LakeResource,
    mlflow: MlflowResource,
    compute: ComputeResource,
) -> MaterializeResult:
    from recsys_dagster.ml.package import fit_week, refit_week

    week = context.partition_key
    the_lake = lake.get_lake()
    base = week_prefix(TRAINING, week)
    train = the_lake.read_parquet(f"{base}/train")
    validation = the_lake.read_parquet(f"{base}/validation")
    items = the_lake.read_parquet(f"{base}/items")
    _, examples = read_summary(the_lake, week)
    cfg = to_plain(config, TrainConfig, device=compute.resolve(), amp=compute.amp, history_len=examples.history_len)
    checkpoints = compute.checkpoint_dir(week)
    trained = fit_week(
        train,
        validation,
        items,
        cfg,
        week=week,
        store=mlflow.store(),
        checkpoint_dir=checkpoints,
        tags={"dagster_run_id": context.run_id},
        on_epoch=lambda epoch, row: context.log.info(f"epoch {epoch}: {_epoch_text(row)}"),
    )
    prefix = artifact_prefix(week, "model")
    the_lake.replace_prefix(prefix, trained.files)
    refit_prefix = artifact_prefix(week, "model_refit")
    refit_meta: dict = {"refit": cfg.refit}
    if cfg.refit:
        refit, refit_files = refit_week(
            [train, validation, the_lake.read_parquet(f"{base}/test")],
            items,
            trained.config,  # the search's settings when there was one
            trained.summary,
            week=week,
            store=mlflow.store(),
            checkpoint_dir=checkpoints / "refit",
            on_epoch=lambda epoch, row: context.log.info(f"refit epoch {epoch}: {_epoch_text(row)}"),
        )
        the_lake.replace_prefix(refit_prefix, refit_files)
        refit_meta.update(refit_epochs=refit.epochs_run, refit_onnx_max_abs_diff=float(refit.onnx_max_abs_diff))
    else:
        the_lake.delete_prefix(refit_prefix)  # an older refit of this week must not ship
    shutil.rmtree(checkpoints, ignore_errors=True)

    s = trained.summary
    recall = float(s.final_metrics["val_recall@20"])
    pop = float(s.final_metrics["val_recall@20_popularity"])
    return MaterializeResult(
        metadata={
            "mlflow_run": MetadataValue.url(trained.run_url),
            "mlflow_run_id": s.mlflow_run_id,
            "registered_model": f"{mlflow.registered_model} v{s.mlflow_model_version}",
            "val_recall@20": recall,
            "val_recall@20_popularity": pop,
            "val_recall@20_lift": round(recall / pop, 4) if pop > 0 else 0.0,
            "val_ndcg@20": float(s.final_metrics["val_ndcg@20"]),
            "epochs_run": s.epochs_run,
            "best_epoch": s.best_epoch,
            "device": s.device,
            "examples_per_s": round(s.examples_per_s, 1),
            "train_seconds": round(s.load_seconds + s.compute_seconds, 1),
            "onnx_max_abs_diff": float(s.onnx_max_abs_diff),
            **refit_meta,
            "per_epoch": md_kv({row["epoch"]: _epoch_text(row) for row in s.history}, "epoch", "metrics"),
            "path": MetadataValue.path(f"{the_lake.uri}/{prefix}"),
        }
    )
