"""The weekly training job (sessions window -> promoted or refused model), its schedule,
and the rollback job."""

from dagster import (
    AssetSelection,
    Config,
    OpExecutionContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from recsys_dagster.jobs.partitions import WEEKLY
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource

WEEKLY_ASSETS = (
    "training_examples",
    "two_tower_model",
    "item_embeddings",
    "faiss_index",
    "ranker",
    "model_evaluation",
    "deployment",
)

weekly_job = define_asset_job(
    "weekly_training",
    selection=AssetSelection.assets(*WEEKLY_ASSETS),
    partitions_def=WEEKLY,
    description="Train on the week's window, index, fit the ranker, evaluate against champion and baselines, "
    "and promote if the gate passes.",
)

# Monday 03:00 UTC, for the week that just ended (the last complete weekly partition).
weekly_schedule = build_schedule_from_partitioned_job(weekly_job, day_of_week=1, hour_of_day=3, minute_of_hour=0)


class RollbackConfig(Config):
    to_version: str | None = Field(
        default=None, description="Version to serve (default: the one promoted before the current)."
    )
    reason: str = Field(default="rollback from the Dagster UI", description="Recorded in promoted/history.jsonl.")


@op(description="Flip promoted/manifest.json back to an earlier verified bundle and move the MLflow alias.")
def rollback_op(
    context: OpExecutionContext, config: RollbackConfig, lake: LakeResource, mlflow: MlflowResource
) -> None:
    from recsys_dagster.bundle.promote import rollback
    from recsys_dagster.ml.tracking import move_champion_alias

    pointer = rollback(lake.get_lake(), config.to_version, reason=config.reason, actor="dagster")
    moved = move_champion_alias(mlflow.store(), pointer.get("mlflow_model_version"))
    context.log.info(f"promoted version is now {pointer['version']}; MLflow champion alias: {moved}")


@job(description="Roll the served model back (to `to_version`, or the one promoted before the current).")
def rollback_job():
    rollback_op()
