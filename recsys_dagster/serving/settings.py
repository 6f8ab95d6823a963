"""Serving configuration from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recsys_dagster import settings as recsys_settings
from recsys_dagster.settings import env_float, env_int


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
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = recsys_settings.effective_env(env)
        default = cls()
        return cls(
            lake_uri=recsys_settings.lake_uri(env),
            s3_endpoint_url=env.get("RECSYS_S3_ENDPOINT_URL") or None,
            cache_dir=Path(env.get("RECSYS_SERVING_CACHE") or recsys_settings.recsys_home(env) / "serving_cache"),
            poll_seconds=env_float(env, "RECSYS_POLL_SECONDS", default.poll_seconds, 0.05),
            api_key=env.get("RECSYS_API_KEY") or None,
            candidates=env_int(env, "RECSYS_CANDIDATES", default.candidates, 1),
            max_k=env_int(env, "RECSYS_MAX_K", default.max_k, 1),
            max_recent_items=env_int(env, "RECSYS_MAX_RECENT_ITEMS", default.max_recent_items, 1),
            threads=env_int(env, "RECSYS_SERVING_THREADS", default.threads, 1),
        )
