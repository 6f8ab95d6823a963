"""Tier 2: the weekly assets, their checks, the gate and the rollback job, in process on a
real temporary Dagster instance, with MLflow on a temporary SQLite store."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from recsys_dagster.assets import deployment, evaluation, index, ingest, model, ranker, sessions, training
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
    ranker.ranker,
    evaluation.model_evaluation,
    deployment.deployment,
    *DAILY_CHECKS,
    *training.TRAINING_CHECKS,
    *index.INDEX_CHECKS,
    *ranker.RANKER_CHECKS,
]
WEEKLY = [
    "training_examples",
    "two_tower_model",
    "item_embeddings",
    "faiss_index",
    "ranker",
    "model_evaluation",
    "deployment",
]


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
        "ranker_export_parity": True,
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


SYSTEMS = (
    "candidate",
    "two_tower",
    "two_tower_exact",
    "popularity",
    "recent_popularity",
    "cooccurrence",
    "item_knn",
    "ease",
)


def _evaluation(lake):
    from recsys_dagster.ml.evaluate import EvaluationRecord

    return EvaluationRecord.from_dict(lake.read_json(f"evaluation/week={WEEK}/metrics.json"))


def _per_user(lake):
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(lake.get_bytes(f"evaluation/week={WEEK}/per_user.parquet")))


def test_index_and_evaluation_metadata(weekly_run):
    lake, _instance, resources, result = weekly_run
    idx = _meta(result, "faiss_index")
    assert idx["index_type"] == "flat" and idx["recall@10_vs_exact"] >= 0.95
    ev = _meta(result, "model_evaluation")
    record = _evaluation(lake)
    # Every system, every metric, in the UI (plotted numbers) and in the markdown table.
    for system in SYSTEMS:
        for metric in ("recall@10", "recall@20", "recall@50", "ndcg@10", "mrr", "coverage@10"):
            assert ev[f"{system}/{metric}"] == pytest.approx(record.systems[system][metric], abs=1e-5)
        assert f"| {system} |" in ev["report"]
    assert ev["champion_version"] == "none"
    assert ev["test_users"] == record.n_users and ev["validation_users"] == record.validation_users > 0
    # Parameters chosen on validation are reported; 300 items is far below EASE's limit.
    assert record.baselines["recent_popularity"]["window"] == ev["recent_popularity_window"]
    assert ev["ease"] == f"lambda={record.baselines['ease']['lambda']:g}"
    strongest = max(record.gated_baselines(), key=lambda s: record.systems[s]["recall@20"])
    assert ev["strongest_baseline"] == strongest
    assert {"new_users", "returning_users", "warm_items"} <= set(record.segments)
    per_user = _per_user(lake)
    assert per_user.num_rows == record.n_users
    assert {f"{s}.recall@20" for s in SYSTEMS} <= set(per_user.column_names)
    # The candidate's MLflow run holds the test metrics and the evaluation table.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=resources["mlflow"].tracking_uri)
    run = client.get_run(record.mlflow_run_id)
    assert run.data.metrics["test_ease_recall_at_20"] == pytest.approx(record.systems["ease"]["recall@20"])
    artifacts = [a.path for a in client.list_artifacts(record.mlflow_run_id, "evaluation")]
    assert artifacts == [f"evaluation/week={WEEK}.md"]
    ranker_files = {a.path for a in client.list_artifacts(record.mlflow_run_id, "ranker")}
    assert {"ranker/ranker_eval.txt", "ranker/ranker_ship.txt", "ranker/report.json"} <= ranker_files
    assert run.data.metrics["ranker_best_iteration"] >= 1


def test_ranker_metadata_and_lake_files(weekly_run):
    lake, _instance, _res, result = weekly_run
    from recsys_dagster.bundle.ranker import ranker_prefix, read_report
    from recsys_dagster.serving.ranker import RANKER_FILES, RankerSpec

    m = _meta(result, "ranker")
    report = read_report(lake, WEEK)
    assert m["trees"] == report.best_iteration >= 1
    assert 0 < m["candidate_pool_recall/test"] <= 1 and m["refit"] is True
    assert report.onnx_max_abs_diff < 1e-4 and report.onnx_max_abs_diff_refit < 1e-4
    gated = RankerSpec.from_json(lake.get_bytes(f"{ranker_prefix(WEEK, 'eval')}/ranker.json"))
    shipped = RankerSpec.from_json(lake.get_bytes(f"{ranker_prefix(WEEK, 'ship')}/ranker.json"))
    assert gated.trained_on == ["validation"] and not gated.refit
    assert shipped.trained_on == ["validation", "test"] and shipped.refit
    assert shipped.stats_cut > gated.stats_cut  # the refit counts the test window too
    for variant in ("eval", "ship"):
        assert all(lake.exists(f"{ranker_prefix(WEEK, variant)}/{name}") for name in RANKER_FILES)


def test_towers_are_refit_on_the_whole_window_and_the_refit_is_what_ships(weekly_run, tmp_path):
    lake, _instance, _res, result = weekly_run
    from recsys_dagster.bundle.assemble import artifact_prefix, assemble_bundle_dir
    from recsys_dagster.ml.artifacts import TrainSummary

    m = _meta(result, "two_tower_model")
    gated = TrainSummary.from_json(lake.get_bytes(f"{artifact_prefix(WEEK, 'model')}/train_summary.json"))
    refit = TrainSummary.from_json(lake.get_bytes(f"{artifact_prefix(WEEK, 'model_refit')}/train_summary.json"))
    assert m["refit"] is True and m["refit_epochs"] == refit.epochs_run == gated.best_epoch >= 1
    assert refit.final_metrics["train_examples"] > gated.final_metrics["train_examples"]
    for kind in ("embeddings_refit", "index_refit"):
        assert lake.has_data(artifact_prefix(WEEK, kind))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert "refit/recall@10" in checks["faiss_index_recall"].metadata
    shipped = assemble_bundle_dir(lake, WEEK, tmp_path / "ship", stage="ship")
    evaluated = assemble_bundle_dir(lake, WEEK, tmp_path / "eval", stage="eval")
    assert shipped.refit and not evaluated.refit
    assert shipped.ranker["refit"] and not evaluated.ranker["refit"]
    assert (tmp_path / "ship" / "user_tower.onnx").read_bytes() != (tmp_path / "eval" / "user_tower.onnx").read_bytes()


def test_gate_refuses_with_its_true_reasons_and_rollback_refuses_without_history(weekly_run):
    """250 users over two weeks give fewer test users than the gate's 200: the honest gate
    refuses, whatever the model, and says why; the other rules are judged on their own."""
    lake, instance, resources, result = weekly_run
    from recsys_dagster.bundle.format import read_pointer
    from recsys_dagster.bundle.gate import GateConfig, paired_bootstrap_ci
    from recsys_dagster.bundle.promote import status

    record = _evaluation(lake)
    d = _meta(result, "deployment")
    assert d["promoted"] is False and d["week"] == WEEK
    assert d["test_users"] == record.n_users < GateConfig().min_test_users
    assert read_pointer(lake) is None  # production untouched

    refusal = [e for e in status(lake)["history"] if e["action"] == "refuse"][-1]
    rules = {r["name"]: r for r in refusal["gate"]["rules"]}
    assert f"enough_evidence: insufficient_evidence: {record.n_users} test users < 200" in refusal["reasons"]
    assert "insufficient_evidence" in d["reasons"] and "| enough_evidence |" in d["decision"]
    # The baseline rule's verdict is the paired bootstrap over the stored per-user recall.
    per_user = _per_user(lake)
    strongest = max(record.gated_baselines(), key=lambda s: record.systems[s]["recall@20"])
    diff = per_user.column("candidate.recall@20").to_numpy() - per_user.column(f"{strongest}.recall@20").to_numpy()
    _, low, _ = paired_bootstrap_ci(diff, n_boot=GateConfig().n_boot, seed=GateConfig().seed)
    baseline_rule = rules["beats_strongest_baseline"]
    assert baseline_rule["passed"] is (low > 0.0) and baseline_rule["value"] == pytest.approx(low)
    assert f"strongest baseline {strongest}" in baseline_rule["detail"]
    # Every other rule passes here: the refusal's reasons are exactly the failed rules.
    compared = ("enough_evidence", "beats_strongest_baseline", "beats_strongest_baseline_ndcg@10")
    assert all(r["passed"] for name, r in rules.items() if name not in compared)
    assert rules["no_regression_vs_champion"]["detail"] == "no champion: first model"
    assert refusal["reasons"] == [f"{r['name']}: {r['detail']}" for r in rules.values() if not r["passed"]]

    # Nothing was ever promoted: the rollback job fails with a clear reason and leaves the
    # pointer alone.
    from recsys_dagster.jobs.weekly import rollback_job

    out = rollback_job.execute_in_process(instance=instance, resources=resources, raise_on_error=False)
    assert not out.success
    assert read_pointer(lake) is None


def test_a_ranker_fitted_over_another_tower_is_refused(weekly_run, tmp_path):
    """Re-materializing the towers without the ranker leaves a ranker fitted over the old
    tower's scores: assembling it (for the evaluation or the release) fails and says what to do."""
    lake, *_ = weekly_run
    import json

    from recsys_dagster.bundle.assemble import assemble_bundle_dir
    from recsys_dagster.bundle.ranker import ranker_prefix

    key = f"{ranker_prefix(WEEK, 'eval')}/ranker.json"
    original = lake.get_bytes(key)
    lake.put_bytes(key, json.dumps({**json.loads(original), "tower_run_id": "an-older-run"}).encode())
    try:
        with pytest.raises(ValueError, match="re-materialize `ranker`"):
            assemble_bundle_dir(lake, WEEK, tmp_path / "eval", stage="eval")
    finally:
        lake.put_bytes(key, original)
    assert assemble_bundle_dir(lake, WEEK, tmp_path / "again", stage="eval").ranker is not None
