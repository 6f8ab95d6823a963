"""Tier 3: the whole loop through the command line, as a user runs it.

`recsys demo` on a small data set (real Dagster instance on disk, Spark local, MLflow on
SQLite), then a deliberately worse candidate through `dagster asset materialize`, a
backfill of an older week, `recsys status`, `recsys rollback`, and the serving app over
the promoted bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEEKS = ("2026-10-12", "2026-10-19")
WEEKLY_SELECTION = "two_tower_model,item_embeddings,faiss_index,ranker,model_evaluation,deployment"


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECSYS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster_home"),
        RECSYS_LAKE_URI=f"file://{home / 'lake'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        RECSYS_START_DATE="2026-10-05",
    )
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e")
    env = _env(home)
    (home / "dagster_home").mkdir()
    (home / "dagster_home" / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    # The full default demo (what `make demo` runs): smaller data sets are refused, honestly,
    # with insufficient_evidence or by the strongest baseline.
    proc = _run([str(BIN / "recsys"), "demo"], env)
    return home, env, proc.stdout


def _status(env) -> dict:
    return json.loads(_run([str(BIN / "recsys"), "status", "--json"], env).stdout)


def test_demo_promotes_a_bundle(demo):
    home, env, out = demo
    assert "demo finished in" in out
    st = _status(env)
    assert st["consistent"], st["problems"]
    promoted = st["promoted"]
    assert promoted["week"] == WEEKS[-1]
    assert promoted["gate"]["promote"] is True
    assert {f for f in promoted["files"]} >= {"user_tower.onnx", "item_index.faiss", "items.parquet"}
    # Every daily partition was materialized, and the weekly artefacts exist for both weeks.
    lake = home / "lake"
    assert len(list((lake / "sessions").glob("dt=*"))) == 21
    for week in WEEKS:
        assert (lake / "evaluation" / f"week={week}" / "metrics.json").is_file()
    # Both weeks pass the gate: the multi-stage system beats every baseline on Recall@20
    # and NDCG@10 (the bootstrap's lower bound above zero), and what ships is the refit.
    assert [h["week"] for h in st["history"] if h["action"] == "promote"] == list(WEEKS)
    for week in WEEKS:
        metrics = json.loads((lake / "evaluation" / f"week={week}" / "metrics.json").read_text())
        systems = metrics["systems"]
        for baseline in ("popularity", "recent_popularity", "cooccurrence", "item_knn", "ease"):
            for metric in ("recall@20", "ndcg@10"):
                assert systems["candidate"][metric] > systems[baseline][metric], (week, baseline, metric)
        assert systems["candidate"]["recall@20"] > systems["two_tower"]["recall@20"]
    rules = {r["name"]: r for r in promoted["gate"]["rules"]}
    assert rules["beats_strongest_baseline"]["value"] > 0 and rules["beats_strongest_baseline_ndcg@10"]["value"] > 0
    assert {"ranker.onnx", "ranker.json", "ranker_items.npz"} <= set(promoted["files"])
    refit = promoted["refit"]
    assert refit["towers"] and refit["ranker"]
    assert refit["gated_ranker"]["trained_on"] == ["validation"]
    assert refit["shipped_ranker"]["trained_on"] == ["validation", "test"]


def test_backfill_reruns_days_idempotently(demo):
    home, env, _ = demo
    import pyarrow.parquet as pq

    def rows() -> list[int]:
        return [pq.read_table(home / "lake" / "events" / f"dt=2026-10-0{d}").num_rows for d in (5, 6)]

    before = rows()
    out = _run(
        [str(BIN / "recsys"), "backfill", "--job", "daily_ingest", "--from", "2026-10-05", "--to", "2026-10-06"], env
    ).stdout
    assert "backfilled 2 partition(s)" in out
    assert rows() == before
    # The same days as one single-run backfill through Dagster's own CLI.
    _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "recsys_dagster.definitions",
            "--select",
            "catalog,events,sessions",
            "--partition-range",
            "2026-10-05...2026-10-06",
        ],
        env,
    )
    assert rows() == before


def test_dagster_instance_recorded_runs_and_checks(demo):
    home, env, _ = demo
    code = (
        "from dagster import DagsterInstance, AssetKey\n"
        "i = DagsterInstance.get()\n"
        "runs = i.get_runs()\n"
        "print(len(runs), sum(r.is_success for r in runs))\n"
        "e = i.get_latest_materialization_event(AssetKey('deployment'))\n"
        "print(e.asset_materialization.metadata['promoted'].value)\n"
    )
    out = _run([sys.executable, "-c", code], env).stdout.split()
    # The demo ingests the 21 days as one single-run backfill, then one run per week.
    assert int(out[0]) >= 1 + len(WEEKS) and int(out[1]) == int(out[0])
    assert out[2] == "True"


def test_mlflow_has_runs_and_champion_alias(demo):
    _home, env, _ = demo
    code = (
        "from mlflow import MlflowClient\n"
        "c = MlflowClient()\n"
        "v = c.get_model_version_by_alias('recsys-two-tower', 'champion')\n"
        "print(v.version, len(c.search_model_versions(\"name='recsys-two-tower'\")))\n"
    )
    version, n = _run([sys.executable, "-c", code], env).stdout.split()
    st = _status(env)
    assert version == str(st["promoted"]["mlflow_model_version"])
    assert int(n) == len(WEEKS)


def test_worse_candidate_is_refused_then_rollback(demo):
    _home, env, _ = demo
    before = _status(env)["promoted"]["version"]
    # A model trained for zero epochs, through the Dagster CLI, for the latest week.
    cfg = json.dumps({"ops": {"two_tower_model": {"config": {"epochs": 0}}}})
    _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "recsys_dagster.definitions",
            "--select",
            WEEKLY_SELECTION,
            "--partition",
            WEEKS[-1],
            "--config-json",
            cfg,
        ],
        env,
    )
    st = _status(env)
    assert st["promoted"]["version"] == before, "a worse model must not be promoted"
    refusal = [h for h in st["history"] if h["action"] == "refuse"][-1]
    # An untrained tower still gets the ranker's other sources: it is refused for losing to
    # the champion (and to the strongest baseline, when it does).
    assert any(r.startswith("no_regression_vs_champion") for r in refusal["reasons"]), refusal["reasons"]
    text = _run([str(BIN / "recsys"), "status"], env).stdout
    assert "refuse" in text and "no_regression_vs_champion" in text

    # Backfilling an older week evaluates it but never promotes it over the newer champion.
    _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "recsys_dagster.definitions",
            "--select",
            WEEKLY_SELECTION,
            "--partition",
            WEEKS[0],
        ],
        env,
    )
    st = _status(env)
    assert st["promoted"]["version"] == before
    refusal = [h for h in st["history"] if h["action"] == "refuse"][-1]
    assert refusal["week"] == WEEKS[0]
    assert any(r.startswith("newer_than_champion") for r in refusal["reasons"])

    # Both weeks were promoted: a rollback returns to the first week's version; a second
    # one has nowhere to go (nothing was promoted before it) and says so.
    out = _run([str(BIN / "recsys"), "rollback", "--reason", "e2e test"], env).stdout
    st = _status(env)
    assert st["promoted"]["week"] == WEEKS[0] and st["history"][-1]["action"] == "rollback"
    assert "MLflow alias 'champion' -> recsys-two-tower v" in out
    proc = subprocess.run(
        [str(BIN / "recsys"), "rollback", "--reason", "e2e test"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "nothing to roll back to" in proc.stderr
    assert _status(env)["promoted"]["week"] == WEEKS[0]


def test_serving_answers_from_the_promoted_bundle(demo, monkeypatch):
    home, env, _ = demo
    from fastapi.testclient import TestClient

    from recsys_dagster.serving.app import create_app
    from recsys_dagster.serving.settings import Settings

    monkeypatch.setenv("RECSYS_LAKE_URI", env["RECSYS_LAKE_URI"])
    monkeypatch.setenv("RECSYS_SERVING_CACHE", str(home / "serving-cache"))
    app = create_app(Settings.from_env(), poll=False)
    app.state.store.reload_now()
    with TestClient(app) as client:
        assert client.get("/ready").status_code == 200
        import pyarrow.parquet as pq

        version = client.get("/version").json()
        bundle = home / "lake" / "models" / _status(env)["promoted"]["version"]
        users = pq.read_table(bundle / "user_histories.parquet").column("user_id").to_pylist()
        items = pq.read_table(bundle / "items.parquet").column("item_id").to_pylist()
        known = client.post("/recommendations", json={"user_id": users[0], "k": 10}).json()
        assert known["fallback"] is None and len(known["items"]) == 10, known
        assert known["model_version"] == _status(env)["promoted"]["version"], version
        new = client.post("/recommendations", json={"user_id": "never-seen", "k": 5}).json()
        assert new["fallback"]["reason"] == "unknown_user" and len(new["items"]) == 5
        rt = client.post("/recommendations", json={"user_id": "anon", "recent_items": items[:3], "k": 5}).json()
        assert rt["source"] == "realtime" and not {i["item_id"] for i in rt["items"]} & set(items[:3])


def test_readme_range_backfill_then_train_until_a_date_sees_every_check(demo):
    """The README's path: one `--partition-range` run over every day, then `recsys train
    --until` (no partition key by hand). The gate finds every day's check result."""
    _home, env, _ = demo
    before = _status(env)["promoted"]["version"]
    _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "recsys_dagster.definitions",
            "--select",
            "catalog,events,sessions",
            "--partition-range",
            "2026-10-05...2026-10-25",
        ],
        env,
    )
    out = _run([str(BIN / "recsys"), "train", "--until", "2026-10-27"], env).stdout
    assert f"training week(s) {WEEKS[-1]}" in out
    st = _status(env)
    decision = [h for h in st["history"] if h.get("week") == WEEKS[-1] and h["action"] in ("decision", "refuse")][-1]
    rules = {r["name"]: r for r in decision["gate"]["rules"]}
    upstream = rules["upstream_checks"]
    assert upstream["passed"], upstream["detail"]
    assert upstream["value"] == "27/27"  # 6 weekly checks + the sessions suite of 21 days
    # Every reason given is a failed rule, and every failed rule is a reason.
    failed = {name for name, r in rules.items() if not r["passed"]}
    assert {r.split(":")[0] for r in decision.get("reasons", [])} == failed
    # The retrained last week is newer than the champion (the first week, after the rollback above) and replaces it.
    assert not failed and st["promoted"]["week"] == WEEKS[-1] and st["promoted"]["version"] != before

    # Now there is a previous version: roll back to it; the MLflow alias follows.
    out = _run([str(BIN / "recsys"), "rollback", "--reason", "e2e test"], env).stdout
    st = _status(env)
    assert st["promoted"]["version"] == before and st["history"][-1]["action"] == "rollback"
    assert "MLflow alias 'champion' -> recsys-two-tower v" in out


def test_train_until_a_date_before_the_first_week_says_why(demo):
    _home, env, _ = demo
    proc = subprocess.run(
        [str(BIN / "recsys"), "train", "--until", "2026-10-10"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no complete training week ends on or before 2026-10-10" in proc.stderr
