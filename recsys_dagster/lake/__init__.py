"""Lake storage (local directory or S3), with no dagster import."""

from recsys_dagster.lake.store import Lake, LakeError, LocalBackend, S3Backend

__all__ = ["Lake", "LakeError", "LocalBackend", "S3Backend"]
