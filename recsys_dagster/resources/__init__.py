"""Dagster resources; `build_resources()` reads the environment once, for definitions.py."""


from dagster import EnvVar

from recsys_dagster import settings
from recsys_dagster.resources.compute import ComputeResource
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource
from recsys_dagster.resources.spark import SparkResource


def build_resources() -> dict:
    import os

    # EnvVar keeps the value out of the UI's config and re-reads it in each run process;
    # the embedded defaults apply when the variables are not set at all.
    os.environ.setdefault("RECSYS_LAKE_URI", settings.lake_uri())
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri())
    os.environ.setdefault("RECSYS_SPARK_MASTER", "local[*]")
    os.environ.setdefault("RECSYS_DEVICE", "auto")
    return {
        "lake": LakeResource(
            uri=EnvVar("RECSYS_LAKE_URI"),
            endpoint_url=os.environ.get("RECSYS_S3_ENDPOINT_URL") or None,
        ),
        "spark": SparkResource(master=EnvVar("RECSYS_SPARK_MASTER")),
        "mlflow": MlflowResource(
            tracking_uri=EnvVar("MLFLOW_TRACKING_URI"),
            ui_url=os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
        ),
        "compute": ComputeResource(device=EnvVar("RECSYS_DEVICE")),
    }


__all__ = ["ComputeResource", "LakeResource", "MlflowResource", "SparkResource", "build_resources"]
