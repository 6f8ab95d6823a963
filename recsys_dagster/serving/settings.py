"""Serving configuration from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys_dagster import settings as recsys_settings


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    lake_uri: str = "file://./.recsys/lake"
    s3_endpoint_url: str | None = None
    cache_dir: Path = Path(".recsys/serving_cache")
    poll_seconds: float = 10.0
    api_key: str | None = None  # when set, every endpoint but /health and /metrics needs X-API-Key
    candidates: int = 500
    max_k: int = 100
    max_recent_items: int = 50
    threads: int = 1  # onnxruntime intra-op and faiss OpenMP threads per process

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            lake_uri=recsys_settings.lake_uri(env),
            s3_endpoint_url=env.get("RECSYS_S3_ENDPOINT_URL") or None,
            cache_dir=Path(env.get("RECSYS_SERVING_CACHE") or recsys_settings.recsys_home(env) / "serving_cache"),
            poll_seconds=_float(env, "RECSYS_POLL_SECONDS", 10.0, 0.05),
            api_key=env.get("RECSYS_API_KEY") or None,
            candidates=_int(env, "RECSYS_CANDIDATES", 500, 1),
            max_k=_int(env, "RECSYS_MAX_K", 100, 1),
            max_recent_items=_int(env, "RECSYS_MAX_RECENT_ITEMS", 50, 1),
            threads=_int(env, "RECSYS_SERVING_THREADS", 1, 1),
        )
