"""Weekly two-tower training (PyTorch, GPU when present), tracked and registered in MLflow."""

import io
import json
import shutil
import tempfile
import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from recsys_dagster import settings
from recsys_dagster.assets.common import md_kv
from recsys_dagster.bundle.assemble import artifact_prefix
from recsys_dagster.contract import TRAINING, week_prefix
from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.resources.compute import ComputeResource
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

TRAINING_POOL = "training"


class TwoTowerConfig(Config):
    dim: int = 64
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 3e-3
    temperature: float = 0.05
    id_dropout: float = 0.3
    history_len: int = 20
    patience: int = 2
    seed: int = 42
    resume: bool = True


def _local_checkpoint_dir(week: str) -> Path:
    # Kept on local disk between attempts so a crashed run resumes; removed on success.
    return settings.recsys_home() / "checkpoints" / f"week={week}"


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
    import torch

    from recsys_dagster.ml import tracking
    from recsys_dagster.ml.export import export_user_tower, verify_onnx
    from recsys_dagster.ml.train import TrainConfig, train_two_tower

    week = context.partition_key
    the_lake = lake.get_lake()
    base = week_prefix(TRAINING, week)
    train = the_lake.read_parquet(f"{base}/train")
    validation = the_lake.read_parquet(f"{base}/validation")
    items = the_lake.read_parquet(f"{base}/items")
    cfg = TrainConfig(
        dim=config.dim,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        temperature=config.temperature,
        id_dropout=config.id_dropout,
        history_len=config.history_len,
        patience=config.patience,
        seed=config.seed,
        device=compute.resolve(),
        amp=compute.amp,
    )
    mlflow.activate()
    ckpt = _local_checkpoint_dir(week)
    t0 = time.time()
    with tracking.start_run(
        run_name=f"week-{week}",
        tags={"week": week, "dagster_run_id": context.run_id, "partition": week},
    ) as run:
        tracking.log_params({**cfg.__dict__, "week": week, "train_rows": train.num_rows, "items": items.num_rows})

        def on_epoch(epoch: int, metrics: dict) -> None:
            tracking.log_epoch_metrics(epoch, metrics)
            context.log.info(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

        result = train_two_tower(train, validation, items, cfg, ckpt, on_epoch=on_epoch, resume=config.resume)
        final = result.final_metrics
        tracking.log_epoch_metrics(result.epochs_run, {k: v for k, v in final.items() if isinstance(v, (int, float))})
        run_id, model_version = tracking.log_model_and_register(result.model, name=mlflow.registered_model)
        url = tracking.run_url(run_id)

        with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
            onnx_path = export_user_tower(result.model, Path(tmp) / "user_tower.onnx")
            onnx_diff = verify_onnx(result.model, onnx_path)
            buf = io.BytesIO()
            torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, buf)
            summary = {
                "week": week,
                "dim": cfg.dim,
                "history_len": cfg.history_len,
                "id_dropout": cfg.id_dropout,
                "temperature": cfg.temperature,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "device": result.device,
                "examples_per_s": result.examples_per_s,
                "load_seconds": result.load_seconds,
                "compute_seconds": result.compute_seconds,
                "final_metrics": final,
                "history": result.history,
                "mlflow_run_id": run_id,
                "mlflow_model_version": model_version,
                "onnx_max_abs_diff": onnx_diff,
            }
            prefix = artifact_prefix(week, "model")
            the_lake.replace_prefix(
                prefix,
                {
                    "user_tower.onnx": onnx_path.read_bytes(),
                    "weights.pt": buf.getvalue(),
                    "features.json": result.features.to_json().encode(),
                    "train_summary.json": json.dumps(summary, indent=2, default=float).encode(),
                },
            )
        tracking.log_epoch_metrics(result.epochs_run, {"onnx_max_abs_diff": onnx_diff})
    shutil.rmtree(ckpt, ignore_errors=True)

    recall = float(final.get("val_recall@20", 0.0))
    pop = float(final.get("val_recall@20_popularity", 0.0))
    return MaterializeResult(
        metadata={
            "mlflow_run": MetadataValue.url(url),
            "mlflow_run_id": run.info.run_id,
            "registered_model": f"{mlflow.registered_model} v{model_version}",
            "val_recall@20": recall,
            "val_recall@20_popularity": pop,
            "val_recall@20_lift": round(recall / pop, 4) if pop > 0 else 0.0,
            "val_ndcg@20": float(final.get("val_ndcg@20", 0.0)),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "device": result.device,
            "examples_per_s": round(result.examples_per_s, 1),
            "train_seconds": round(time.time() - t0, 1),
            "onnx_max_abs_diff": float(onnx_diff),
            "per_epoch": md_kv(
                {h.get("epoch", i): ", ".join(f"{k}={v:.4f}" for k, v in h.items() if isinstance(v, float)) for i, h in enumerate(result.history)},
                "epoch",
                "metrics",
            ),
            "path": MetadataValue.path(f"{the_lake.uri}/{artifact_prefix(week, 'model')}"),
        }
    )
