"""MLflow tracking and registry (called directly; dagster-mlflow is legacy)."""


import os

from dagster import ConfigurableResource


class MlflowResource(ConfigurableResource):
    tracking_uri: str
    experiment: str = "recsys-two-tower"
    registered_model: str = "recsys-two-tower"
    ui_url: str = "http://127.0.0.1:5000"

    def activate(self) -> None:
        """Point the mlflow client (and the ml.tracking helpers) at this store."""
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        os.environ["MLFLOW_UI_URL"] = self.ui_url
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
