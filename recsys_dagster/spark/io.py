"""Staging between the lake and Spark.

Spark here has no s3a:// connector, so an S3 lake is staged through a local directory:
prefixes are downloaded before reading and Spark's output is uploaded after writing.
A local lake is read in place; its writes still go through `Lake.upload_dir` so that the
partition is replaced atomically, like every other lake write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from recsys_dagster.lake import Lake


def _has_parquet(lake: Lake, prefix: str) -> bool:
    return any(k.endswith(".parquet") for k in lake.list_keys(prefix))


def read_lake_parquet(spark: SparkSession, lake: Lake, prefixes: list[str], staging_dir: Path) -> DataFrame | None:
    """One DataFrame over the Parquet files of `prefixes`; missing or empty ones are skipped.

    Returns None when no prefix holds data. For an S3 lake each prefix is downloaded into
    its own subdirectory of `staging_dir` (so two partitions never overwrite each other).
    """
    present = [p.strip("/") for p in prefixes if _has_parquet(lake, p)]
    if not present:
        return None
    if lake.is_local:
        paths = [str(lake.local_path(p)) for p in present]
    else:
        paths = []
        for i, prefix in enumerate(present):
            dest = Path(staging_dir) / "read" / f"{i:03d}"
            if dest.exists():
                shutil.rmtree(dest)
            lake.download_prefix(prefix, dest)
            paths.append(str(dest))
    # Only *.parquet: the lake may hold other files beside the data (e.g. a summary JSON).
    return spark.read.option("pathGlobFilter", "*.parquet").option("recursiveFileLookup", "true").parquet(*paths)


def write_lake_parquet(df: DataFrame, lake: Lake, prefix: str, staging_dir: Path, num_files: int = 1) -> int:
    """Write `df` as the whole new content of lake partition `prefix`; returns the file count.

    Timestamps are written as INT64 micros (not Spark's default INT96) so pyarrow readers
    see `timestamp[us, tz=UTC]`, as the contracts require.
    """
    if num_files < 1:
        raise ValueError(f"num_files must be >= 1, got {num_files}")
    df.sparkSession.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    out = Path(staging_dir) / "write"
    if out.exists():
        shutil.rmtree(out)
    df.coalesce(num_files).write.mode("overwrite").option("compression", "zstd").parquet(str(out))
    return lake.upload_dir(out, prefix, suffix=".parquet")
