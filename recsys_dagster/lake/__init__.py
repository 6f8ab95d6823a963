"""Lake storage (local directory or S3), with no dagster import."""

from recsys_dagster.lake.store import DEFAULT_LAKE_URI, Lake, LakeError, LocalBackend, S3Backend

__all__ = ["DEFAULT_LAKE_URI", "Lake", "LakeError", "LocalBackend", "S3Backend"]
