"""MLflow tracking and registry (called directly; dagster-mlflow is legacy)."""

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from recsys_dagster.ml.tracking import TrackingStore
from recsys_dagster.settings import DEFAULT_MLFLOW_UI_URL, DEFAULT_MODEL_NAME


class MlflowResource(ConfigurableResource):
    tracking_uri: str = Field(description="MLflow tracking and registry URI.")
    artifact_root: str = Field(description="Folder (or URI path) where new experiments keep artifacts.")
    registered_model: str = Field(default=DEFAULT_MODEL_NAME, description="Registered model that carries `champion`.")
    ui_url: str = Field(default=DEFAULT_MLFLOW_UI_URL, description="Base of the run links shown in the Dagster UI.")

    def store(self) -> TrackingStore:
        return TrackingStore(
            tracking_uri=self.tracking_uri,
            artifact_root=Path(self.artifact_root),
            ui_url=self.ui_url,
            model_name=self.registered_model,
        )
