"""Project-wide settings, read once per process (no dagster import).

`Settings.from_env()` is the only reader of the pipeline's variables and of the project
file `recsys.toml` (path: RECSYS_CONFIG, default ./recsys.toml; an environment variable
wins over the file, the file over the built-in default). The result is passed into
resources and plain functions, which never look at the environment themselves.
Everything the embedded default needs lives under RECSYS_HOME (default ./.recsys): the
lake, the Dagster instance, the MLflow store, training checkpoints.

`documented(default, doc)` declares a dataclass field's default and its description in one
place; the Dagster `Config` classes are derived from those dataclasses (`assets/common.py`).
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

DEFAULT_START_DATE = "2026-10-05"
DEFAULT_TRAINING_WINDOW_DAYS = 28
DEFAULT_MODEL_NAME = "recsys-two-tower"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_SPARK_DRIVER_MEMORY = "4g"
DEFAULT_DEVICE = "auto"


def documented(default: Any, doc: str) -> Any:
    """A dataclass field with its default and the description the Dagster UI shows."""
    return field(default=default, metadata={"doc": doc})


# Keys of recsys.toml and the variable each one stands for.
PROJECT_KEYS: dict[str, str] = {
    "start_date": "RECSYS_START_DATE",
    "training_window_days": "RECSYS_TRAINING_WINDOW_DAYS",
    "lake_uri": "RECSYS_LAKE_URI",
    "s3_endpoint_url": "RECSYS_S3_ENDPOINT_URL",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "mlflow_ui_url": "MLFLOW_UI_URL",
    "mlflow_model_name": "RECSYS_MLFLOW_MODEL",
    "spark_master": "RECSYS_SPARK_MASTER",
    "spark_driver_memory": "RECSYS_SPARK_DRIVER_MEMORY",
    "device": "RECSYS_DEVICE",
}


def project_file(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("RECSYS_CONFIG") or "recsys.toml").expanduser().resolve()


def read_project_file(path: Path) -> dict[str, Any]:
    """The project file's settings ({} when there is none); unknown keys are an error."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(PROJECT_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {unknown}; known: {sorted(PROJECT_KEYS)}")
    return data


def write_project_file(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `updates` into the project file (created if missing); returns its settings."""
    values = {**read_project_file(path), **updates}
    unknown = sorted(set(values) - set(PROJECT_KEYS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(PROJECT_KEYS)}")
    lines = ["# recsys_dagster project settings: every command reads this file.", "# An environment variable wins."]
    for key in sorted(values):
        value = values[key]
        text = str(value).lower() if isinstance(value, bool) else value if isinstance(value, int) else None
        lines.append(f"{key} = {text if text is not None else json.dumps(str(value))}")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return values


def effective_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the project file's settings beneath it (a variable wins; an
    empty one, as compose files leave them, counts as unset)."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    from_file = read_project_file(project_file(env))
    return {**{PROJECT_KEYS[k]: str(v) for k, v in from_file.items()}, **env}


def recsys_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("RECSYS_HOME", ".recsys")).expanduser().resolve()


def lake_uri(env: Mapping[str, str] | None = None) -> str:
    """RECSYS_LAKE_URI, else the embedded default under RECSYS_HOME (one rule for the
    pipeline, the CLI and serving)."""
    env = os.environ if env is None else env
    return env.get("RECSYS_LAKE_URI") or f"file://{recsys_home(env) / 'lake'}"


def _env_number(env: Mapping[str, str], name: str, default: Any, minimum: Any, kind: type) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    return _env_number(env, name, default, minimum, int)


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    return _env_number(env, name, default, minimum, float)


def env_date(env: Mapping[str, str], name: str, default: str) -> date:
    raw = env.get(name) or default
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Where things live and the project's calendar. Variables in brackets."""

    home: Path  # [RECSYS_HOME] default ./.recsys
    lake_uri: str  # [RECSYS_LAKE_URI] default file://<home>/lake
    s3_endpoint_url: str | None  # [RECSYS_S3_ENDPOINT_URL] MinIO or a local S3 server
    s3_region: str  # [AWS_DEFAULT_REGION] default us-east-1
    mlflow_tracking_uri: str  # [MLFLOW_TRACKING_URI] default sqlite:///<home>/mlflow.db
    mlflow_ui_url: str  # [MLFLOW_UI_URL] base of the run links in the Dagster UI
    mlflow_model_name: str  # [RECSYS_MLFLOW_MODEL] the registered model
    spark_master: str  # [RECSYS_SPARK_MASTER] default local[*]
    spark_driver_memory: str  # [RECSYS_SPARK_DRIVER_MEMORY] default 4g
    device: str  # [RECSYS_DEVICE] auto | cpu | cuda[:N]
    start_date: date  # [RECSYS_START_DATE] first daily partition
    training_window_days: int  # [RECSYS_TRAINING_WINDOW_DAYS] days of sessions a week trains on

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """From the environment (default os.environ) over the project file."""
        env = effective_env(env)
        home = recsys_home(env)
        return cls(
            home=home,
            lake_uri=lake_uri(env),
            s3_endpoint_url=env.get("RECSYS_S3_ENDPOINT_URL") or None,
            s3_region=env.get("AWS_DEFAULT_REGION") or "us-east-1",
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            mlflow_ui_url=env.get("MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL,
            mlflow_model_name=env.get("RECSYS_MLFLOW_MODEL") or DEFAULT_MODEL_NAME,
            spark_master=env.get("RECSYS_SPARK_MASTER") or DEFAULT_SPARK_MASTER,
            spark_driver_memory=env.get("RECSYS_SPARK_DRIVER_MEMORY") or DEFAULT_SPARK_DRIVER_MEMORY,
            device=env.get("RECSYS_DEVICE") or DEFAULT_DEVICE,
            start_date=env_date(env, "RECSYS_START_DATE", DEFAULT_START_DATE),
            training_window_days=env_int(env, "RECSYS_TRAINING_WINDOW_DAYS", DEFAULT_TRAINING_WINDOW_DAYS, 5),
        )

    @property
    def checkpoint_root(self) -> Path:
        """Local disk that keeps training checkpoints between attempts of a run."""
        return self.home / "checkpoints"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlartifacts"


@functools.cache
def current() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings.from_env()


def apply_quiet_defaults() -> None:
    """Telemetry off and Spark on loopback unless the user said otherwise. The one place
    that writes the environment: child processes (the Spark JVM, GX) read these."""
    for key, value in {
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }.items():
        os.environ.setdefault(key, value)
