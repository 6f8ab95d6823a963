"""Dagster resources, built from the settings that definitions.py read once."""

from recsys_dagster.resources.compute import ComputeResource
from recsys_dagster.resources.lake import LakeResource
from recsys_dagster.resources.mlflow import MlflowResource
from recsys_dagster.resources.spark import SparkResource
from recsys_dagster.settings import Settings


def build_resources(s: Settings) -> dict:
    return {
        "lake": LakeResource(uri=s.lake_uri, endpoint_url=s.s3_endpoint_url, region_name=s.s3_region),
        "spark": SparkResource(master=s.spark_master, driver_memory=s.spark_driver_memory),
        "mlflow": MlflowResource(
            tracking_uri=s.mlflow_tracking_uri,
            artifact_root=str(s.mlflow_artifact_root),
            registered_model=s.mlflow_model_name,
            ui_url=s.mlflow_ui_url,
        ),
        "compute": ComputeResource(device=s.device, checkpoint_root=str(s.checkpoint_root)),
    }


__all__ = ["ComputeResource", "LakeResource", "MlflowResource", "SparkResource", "build_resources"]
