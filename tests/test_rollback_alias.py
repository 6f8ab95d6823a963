"""Rollback moves the `champion` alias of the configured registered model (not the default
name), from the Dagster rollback job and from `recsys rollback`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance

from recsys_dagster.bundle.format import BUNDLE_FILES, read_pointer
from recsys_dagster.bundle.promote import new_version, promote, write_bundle
from recsys_dagster.lake import Lake
from recsys_dagster.ml.tracking import TrackingStore, champion_version, set_champion_alias
from recsys_dagster.settings import DEFAULT_MODEL_NAME

MODEL = "shop-recs"


def make_bundle(lake: Lake, tmp_path: Path, week: str, model_version: str) -> str:
    """A verified bundle of placeholder files whose manifest names its MLflow version."""
    version = new_version(week)
    src = tmp_path / f"src-{version}"
    src.mkdir()
    for name in BUNDLE_FILES:
        (src / name).write_bytes(f"{version}:{name}".encode())
    write_bundle(
        lake,
        version,
        src,
        {"week": week, "embedding_dim": 8, "index_type": "flat", "mlflow_model_version": model_version},
    )
    return version


def _registry(store: TrackingStore, names: list[str]) -> None:
    """Two versions of each registered model, champion on v2 (no model files needed)."""
    from mlflow import MlflowClient

    champion_version(store)  # points mlflow at the store
    client = MlflowClient()
    for name in names:
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, source=str(store.artifact_root / name))
        set_champion_alias(TrackingStore(store.tracking_uri, store.artifact_root, model_name=name), "2")


@pytest.fixture
def promoted_twice(tmp_path: Path):
    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    for week, model_version in (("2026-10-12", "1"), ("2026-10-19", "2")):
        promote(lake, make_bundle(lake, tmp_path, week, model_version), reason="gate passed")
    store = TrackingStore(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlartifacts", model_name=MODEL)
    _registry(store, [MODEL, DEFAULT_MODEL_NAME])
    return lake, store


def _default(store: TrackingStore) -> TrackingStore:
    return TrackingStore(store.tracking_uri, store.artifact_root, model_name=DEFAULT_MODEL_NAME)


def test_rollback_job_moves_the_configured_models_alias(promoted_twice):
    from recsys_dagster.jobs.weekly import rollback_job
    from recsys_dagster.resources import LakeResource, MlflowResource

    lake, store = promoted_twice
    resources = {
        "lake": LakeResource(uri=lake.uri),
        "mlflow": MlflowResource(
            tracking_uri=store.tracking_uri, artifact_root=str(store.artifact_root), registered_model=MODEL
        ),
    }
    out = rollback_job.execute_in_process(instance=DagsterInstance.ephemeral(), resources=resources)
    assert out.success
    assert read_pointer(lake)["mlflow_model_version"] == "1"
    assert champion_version(store) == "1"
    assert champion_version(_default(store)) == "2"  # the other model is untouched


@pytest.mark.slow
def test_cli_rollback_moves_the_configured_models_alias(promoted_twice, tmp_path: Path):
    lake, store = promoted_twice
    env = {
        **os.environ,
        "RECSYS_HOME": str(tmp_path),
        "RECSYS_LAKE_URI": lake.uri,
        "MLFLOW_TRACKING_URI": store.tracking_uri,
        "RECSYS_MLFLOW_MODEL": MODEL,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_dagster.cli", "rollback", "--reason", "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"MLflow alias 'champion' -> {MODEL} v1" in proc.stdout
    assert champion_version(store) == "1"
    assert champion_version(_default(store)) == "2"
