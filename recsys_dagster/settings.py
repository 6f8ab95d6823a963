"""Process-wide defaults read from the environment (no dagster import).

Everything the embedded default needs lives under RECSYS_HOME (default ./.recsys):
the lake, the Dagster instance, the MLflow store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path


def recsys_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("RECSYS_HOME", ".recsys")).expanduser().resolve()


def lake_uri(env: Mapping[str, str] | None = None) -> str:
    """RECSYS_LAKE_URI, else the embedded default under RECSYS_HOME (one rule for the
    pipeline, the CLI and serving)."""
    env = os.environ if env is None else env
    return env.get("RECSYS_LAKE_URI") or f"file://{recsys_home(env) / 'lake'}"


def mlflow_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{recsys_home() / 'mlflow.db'}"


def start_date() -> date:
    """First daily partition; the demo data starts here."""
    return date.fromisoformat(os.environ.get("RECSYS_START_DATE", "2026-10-05"))


def training_window_days() -> int:
    return int(os.environ.get("RECSYS_TRAINING_WINDOW_DAYS", "28"))


def apply_quiet_defaults() -> None:
    """Telemetry off and Spark on loopback unless the user said otherwise."""
    for key, value in {
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }.items():
        os.environ.setdefault(key, value)
