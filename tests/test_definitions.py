"""Snapshot of the code location's wiring: what `recsys_dagster.definitions.defs` holds.

The literals below are the current definitions; a test fails when an asset, check, job,
schedule, sensor or resource is added, removed or renamed, so wiring changes are deliberate
(update the literal in the same change). The slow tests load the project through `dg`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Definitions

REPO_ROOT = Path(__file__).resolve().parents[1]

ASSET_KEYS = [
    "catalog",
    "deployment",
    "events",
    "faiss_index",
    "item_embeddings",
    "model_evaluation",
    "ranker",
    "raw_catalog",
    "raw_events",
    "sessions",
    "training_examples",
    "two_tower_model",
]
ASSET_CHECK_KEYS = [
    ("catalog", "catalog_expectations"),
    ("events", "events_expectations"),
    ("events", "events_quarantine_rate"),
    ("faiss_index", "faiss_index_recall"),
    ("item_embeddings", "item_embeddings_valid"),
    ("ranker", "ranker_export_parity"),
    ("sessions", "sessions_expectations"),
    ("training_examples", "training_examples_counts"),
    ("training_examples", "training_examples_negative_mix"),
    ("training_examples", "training_examples_negatives_disjoint"),
    ("training_examples", "training_examples_no_leakage"),
]
JOB_NAMES = ["daily_ingest", "rollback_job", "weekly_training"]
SCHEDULE_NAMES = ["daily_ingest_schedule", "weekly_training_schedule"]
SENSOR_NAMES = ["landing_sensor"]
RESOURCE_KEYS = ["compute", "lake", "mlflow", "spark"]


@pytest.fixture(scope="module")
def defs() -> Definitions:
    from recsys_dagster.definitions import defs

    return defs


def test_definitions_load(defs):
    Definitions.validate_loadable(defs)


def test_asset_keys(defs):
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert sorted(k.to_user_string() for k in keys) == ASSET_KEYS


def test_asset_check_keys(defs):
    checks = defs.resolve_asset_graph().asset_check_keys
    assert sorted((c.asset_key.to_user_string(), c.name) for c in checks) == ASSET_CHECK_KEYS


def test_job_names(defs):
    # Dagster adds implicit jobs (`__ASSET_JOB`); only the declared ones are wiring.
    names = [j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    assert sorted(names) == JOB_NAMES


def test_schedule_names(defs):
    assert sorted(s.name for s in defs.schedules or []) == SCHEDULE_NAMES


def test_sensor_names(defs):
    assert sorted(s.name for s in defs.sensors or []) == SENSOR_NAMES


def test_resource_keys(defs):
    assert sorted(defs.resources or {}) == RESOURCE_KEYS


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the venv's `dg` from the repo root against a throwaway Dagster instance."""
    dg = Path(sys.executable).parent / "dg"
    assert dg.exists(), f"{dg} missing: install the `dev` extra (dagster-dg-cli)"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # dg warns when the active venv is not the project's .venv; this is the one running.
        "VIRTUAL_ENV": sys.prefix,
    }
    proc = subprocess.run([str(dg), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dg {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_dg_check_defs(tmp_path):
    proc = _dg(tmp_path, "check", "defs")
    assert "All definitions loaded successfully." in proc.stdout


@pytest.mark.slow
def test_dg_list_defs_json(tmp_path):
    listed = json.loads(_dg(tmp_path, "list", "defs", "--json").stdout)
    assert sorted(a["asset_key"] for a in listed["assets"]) == ASSET_KEYS
    assert sorted((c["asset_key"], c["name"]) for c in listed["asset_checks"]) == ASSET_CHECK_KEYS
    assert sorted(j["name"] for j in listed["jobs"]) == JOB_NAMES
    assert sorted(s["name"] for s in listed["schedules"]) == SCHEDULE_NAMES
    assert sorted(s["name"] for s in listed["sensors"]) == SENSOR_NAMES
    assert sorted(r["name"] for r in listed["resources"]) == RESOURCE_KEYS


def test_per_partition_check_lookup_survives_dagster_upgrades():
    """The gate reads check results per partition through Dagster internals (no public API
    yet); this fails loudly if an upgrade moves or changes them."""
    from dagster import (
        AssetCheckResult,
        DagsterInstance,
        StaticPartitionsDefinition,
        asset,
        asset_check,
        materialize,
    )

    from recsys_dagster.assets.deployment import latest_check_passed

    parts = StaticPartitionsDefinition(["a", "b"])

    @asset(partitions_def=parts)
    def thing():
        return None

    @asset_check(asset=thing, blocking=True, partitions_def=parts)
    def thing_ok(context):
        return AssetCheckResult(passed=context.partition_key == "a")

    instance = DagsterInstance.ephemeral()
    for key in ("a", "b"):
        materialize([thing, thing_ok], partition_key=key, instance=instance, raise_on_error=False)
    check_key = thing_ok.check_key
    assert latest_check_passed(instance, check_key, "a") is True
    assert latest_check_passed(instance, check_key, "b") is False
    assert latest_check_passed(DagsterInstance.ephemeral(), check_key, "a") is False


def test_run_config_is_derived_from_the_plain_dataclasses():
    """One place per default: each run-config class has exactly the plain dataclass's
    defaults, and every field carries a description for the UI."""
    import dataclasses

    from recsys_dagster.assets.deployment import GateSettings
    from recsys_dagster.assets.model import TwoTowerConfig
    from recsys_dagster.assets.ranker import RankerSettings
    from recsys_dagster.assets.sessions import SessionsConfig
    from recsys_dagster.assets.training import TrainingExamplesConfig
    from recsys_dagster.bundle.gate import GateConfig
    from recsys_dagster.jobs.weekly import RollbackConfig
    from recsys_dagster.ml.ranker import RankerConfig
    from recsys_dagster.ml.train import TrainConfig
    from recsys_dagster.spark.examples import ExampleConfig
    from recsys_dagster.spark.sessionize import SessionizeConfig

    pairs = [
        (TwoTowerConfig, TrainConfig, {"device", "amp", "history_len", "keep_last"}),
        (TrainingExamplesConfig, ExampleConfig, {"window_days", "weights"}),
        (SessionsConfig, SessionizeConfig, set()),
        (GateSettings, GateConfig, {"min_index_recall"}),
        (RankerSettings, RankerConfig, {"windows_days", "trending_days"}),
    ]
    for derived, plain, excluded in pairs:
        fields = {f.name: f.default for f in dataclasses.fields(plain) if f.name not in excluded}
        assert {k: v.default for k, v in derived.model_fields.items()} == fields, derived.__name__
        assert all(v.description for v in derived.model_fields.values()), derived.__name__
    assert all(v.description for v in RollbackConfig.model_fields.values())
    # A run-config value reaches the plain dataclass.
    from recsys_dagster.assets.common import to_plain

    assert to_plain(TwoTowerConfig(epochs=0), TrainConfig, device="cpu", amp=False, history_len=20).epochs == 0


def test_gate_counts_a_window_day_that_was_never_ingested(tmp_path):
    import pyarrow as pa
    from dagster import DagsterInstance

    from recsys_dagster.assets.deployment import WEEKLY_CHECKS, upstream_checks
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(f"file://{tmp_path / 'lake'}")
    days = [f"2026-10-{d}" for d in range(12, 19)]
    for day in days:
        if day != "2026-10-15":  # never ingested (an empty day would have a partition)
            lake.write_partition(f"sessions/dt={day}", pa.table({"session_id": pa.array([], pa.string())}))
    got = upstream_checks(DagsterInstance.ephemeral(), lake, "2026-10-12", window_days=14, first_day="2026-10-08")
    assert got["sessions_ingested[2026-10-15]"] is False
    assert {f"sessions_expectations[{d}]" for d in days if d != "2026-10-15"} <= set(got)
    # Days before the first partition are not part of the project; 10-08..10-11 were never ingested.
    assert not any("2026-10-07" in k for k in got) and got["sessions_ingested[2026-10-08]"] is False
    assert len(got) == len(WEEKLY_CHECKS) + 6 + 1 + 4
