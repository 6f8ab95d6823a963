"""`make demo`: synthetic data into the local lake, then every daily and weekly partition
through the real Dagster jobs on the local instance ($DAGSTER_HOME), so the UI shows the
runs, materializations and check results afterwards."""

from __future__ import annotations

import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

from recsys_dagster import settings


def _ensure_instance() -> None:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.recsys_home() / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        repo_cfg = Path(__file__).resolve().parent.parent / "dagster.yaml"
        if repo_cfg.exists():
            shutil.copy(repo_cfg, cfg)
        else:
            cfg.write_text("telemetry:\n  enabled: false\n")


def demo_weeks(start: date, days: int) -> list[str]:
    """Weekly partitions whose whole week lies inside the generated days."""
    from recsys_dagster.jobs.partitions import WEEKLY

    last_day = start + timedelta(days=days - 1)
    weeks = []
    for key in WEEKLY.get_partition_keys():
        monday = date.fromisoformat(key)
        if monday >= start and monday + timedelta(days=6) <= last_day:
            weeks.append(key)
    return weeks


def _step(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_demo(
    *,
    start_date: date,
    days: int,
    users: int,
    items: int,
    seed: int,
    fault_rate: float,
    train_weeks: int | None = None,
    epochs: int | None = None,
    skip_generate: bool = False,
) -> dict:
    os.environ.setdefault("RECSYS_START_DATE", start_date.isoformat())
    if os.environ["RECSYS_START_DATE"] != start_date.isoformat():
        raise ValueError(
            f"RECSYS_START_DATE={os.environ['RECSYS_START_DATE']} but the demo starts on {start_date}: "
            "partitions would not line up with the data"
        )
    _ensure_instance()

    from dagster import DagsterInstance

    from recsys_dagster.datagen import GeneratorConfig, generate
    from recsys_dagster.definitions import defs
    from recsys_dagster.lake import Lake

    lake = Lake.from_uri(settings.lake_uri())
    t0 = time.time()
    if not skip_generate:
        _step(f"generating {days} days of marketplace data ({users} users, {items} items) into {lake.uri}")
        summary = generate(
            lake,
            GeneratorConfig(start_date=start_date, days=days, users=users, items=items, seed=seed, fault_rate=fault_rate),
        ).to_dict()
        _step(f"landing data written in {time.time() - t0:.1f} s: {summary.get('totals', {})}")

    instance = DagsterInstance.get()
    # Asset logs (epochs, decisions) yes; Dagster's per-step debug events no.
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    daily = defs.resolve_job_def("daily_ingest")
    day_keys = [(start_date + timedelta(days=i)).isoformat() for i in range(days)]
    t1 = time.time()
    for dt in day_keys:
        result = daily.execute_in_process(partition_key=dt, instance=instance, run_config=quiet, raise_on_error=True)
        if not result.success:
            raise RuntimeError(f"daily run for {dt} failed")
        _step(f"daily_ingest {dt} ok (run {result.run_id[:8]})")
    _step(f"{len(day_keys)} daily partitions in {time.time() - t1:.0f} s")

    weeks = demo_weeks(start_date, days)
    if train_weeks is not None:
        weeks = weeks[-train_weeks:]
    weekly = defs.resolve_job_def("weekly_training")
    run_config: dict = dict(quiet)
    if epochs is not None:
        run_config["ops"] = {"two_tower_model": {"config": {"epochs": epochs}}}
    for week in weeks:
        t2 = time.time()
        result = weekly.execute_in_process(partition_key=week, instance=instance, run_config=run_config, raise_on_error=True)
        if not result.success:
            raise RuntimeError(f"weekly run for {week} failed")
        _step(f"weekly_training {week} ok in {time.time() - t2:.0f} s (run {result.run_id[:8]})")

    from recsys_dagster.bundle.promote import format_status, status

    print()
    print(format_status(status(lake)))
    print()
    print(f"lake:            {lake.uri}")
    print(f"dagster home:    {os.environ['DAGSTER_HOME']}   (make ui, then http://127.0.0.1:3000)")
    print(f"mlflow store:    {settings.mlflow_tracking_uri()}")
    print("serve it:        make serve, then POST http://127.0.0.1:8000/recommendations")
    return {"days": day_keys, "weeks": weeks, "seconds": time.time() - t0}
