"""Tier 2: the weekly assets, their checks, the gate and the rollback job, in process on a
real temporary Dagster instance, with MLflow on a temporary SQLite store."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from recsys_dagster.assets import deployment, evaluation, index, ingest, model, sessions, training
from recsys_dagster.checks.asset_checks import DAILY_CHECKS
from recsys_dagster.datagen import GeneratorConfig, generate
from recsys_dagster.resources import ComputeResource, LakeResource, MlflowResource, SparkResource

pytestmark = pytest.mark.spark

START = date(2026, 10, 5)
WEEK = "2026-10-12"
MODEL = "shop-recs"  # not the default name: every MLflow call must follow the resource
ALL = [
    ingest.raw_events,
    ingest.raw_catalog,
    ingest.catalog,
    ingest.events,
    sessions.sessions,
    training.training_examples,
    model.two_tower_model,
    index.item_embeddings,
    index.faiss_index,
    evaluation.model_evaluation,
    deployment.deployment,
    *DAILY_CHECKS,
    *training.TRAINING_CHECKS,
    *index.INDEX_CHECKS,
]
WEEKLY = ["training_examples", "two_tower_model", "item_embeddings", "faiss_index", "model_evaluation", "deployment"]


@pytest.fixture(scope="module")
def weekly_run(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("weekly")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSYS_HOME", str(home))
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{home / 'lake'}")
    generate(lake, GeneratorConfig(start_date=START, days=14, users=250, items=300, seed=11))
    resources = {
        "lake": LakeResource(uri=lake.uri),
        "spark": SparkResource(master="local[2]"),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_root=str(home / "mlartifacts"),
            registered_model=MODEL,
        ),
        "compute": ComputeResource(device="auto", checkpoint_root=str(home / "checkpoints")),
    }
    instance = DagsterInstance.ephemeral()
    for i in range(14):
        dt = (START + timedelta(days=i)).isoformat()
        assert materialize(
            ALL, partition_key=dt, resources=resources, instance=instance, selection=["catalog", "events", "sessions"]
        ).success
    result = materialize(
        ALL,
        partition_key=WEEK,
        resources=resources,
        instance=instance,
        selection=WEEKLY,
        run_config={"ops": {"two_tower_model": {"config": {"epochs": 3}}}},
    )
    yield lake, instance, resources, result
    mp.undo()


def _meta(result, asset: str) -> dict:
    for ev in result.get_asset_materialization_events():
        if ev.asset_key == AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in ev.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def test_every_weekly_asset_and_check(weekly_run):
    _lake, _instance, _res, result = weekly_run
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    checks.pop("training_examples_negative_mix")  # a warning on a catalog this small
    assert checks == {
        "training_examples_no_leakage": True,
        "training_examples_negatives_disjoint": True,
        "training_examples_counts": True,
        "item_embeddings_valid": True,
        "faiss_index_recall": True,
    }
    ex = _meta(result, "training_examples")
    assert min(ex["train_rows"], ex["validation_rows"], ex["test_rows"]) > 0
    assert {"negatives_popular", "negatives_uniform", "negatives_hard"} <= set(ex)


def test_model_metadata_links_mlflow_and_beats_popularity(weekly_run):
    *_, result = weekly_run
    m = _meta(result, "two_tower_model")
    assert m["mlflow_run"].startswith("http") and "/runs/" in m["mlflow_run"]
    # (This tiny catalog makes popularity strong on validation; the demo-size quality bar
    # is asserted by the e2e test on the held-out test window.)
    assert 0.0 < m["val_recall@20"] <= 1.0 and m["val_recall@20_popularity"] >= 0.0
    assert m["per_epoch"]
    assert m["onnx_max_abs_diff"] < 1e-4
    assert m["device"] == "cpu"
    assert m["registered_model"].startswith(f"{MODEL} v")


def test_index_and_evaluation_metadata(weekly_run):
    *_, result = weekly_run
    idx = _meta(result, "faiss_index")
    assert idx["index_type"] == "flat" and idx["recall@10_vs_exact"] >= 0.95
    ev = _meta(result, "model_evaluation")
    assert ev["candidate/recall@20"] > ev["popularity/recall@20"]
    assert ev["champion_version"] == "none"
    assert "| candidate |" in ev["report"]


def test_first_model_is_promoted_and_rollback_job_refuses_without_history(weekly_run):
    lake, instance, resources, result = weekly_run
    d = _meta(result, "deployment")
    assert d["promoted"] is True and d["week"] == WEEK
    assert d["mlflow_champion"].startswith(f"{MODEL} v")
    from recsys_dagster.bundle.format import read_pointer

    pointer = read_pointer(lake)
    assert pointer["week"] == WEEK
    rules = {r["name"]: r for r in pointer["gate"]["rules"]}
    assert (
        rules["no_regression_vs_champion"]["passed"] and "no champion" in rules["no_regression_vs_champion"]["detail"]
    )

    # Only one version was ever promoted: the rollback job fails with a clear reason and
    # leaves the pointer alone.
    from recsys_dagster.jobs.weekly import rollback_job

    out = rollback_job.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
    assert not out.success
    assert read_pointer(lake)["week"] == WEEK
