"""One place that builds the SparkSession, so tests, assets and benchmarks agree on settings."""

from __future__ import annotations

from recsys_dagster.settings import DEFAULT_SPARK_DRIVER_MEMORY, DEFAULT_SPARK_MASTER


def get_spark(
    master: str = DEFAULT_SPARK_MASTER,
    app_name: str = "recsys",
    shuffle_partitions: int | None = None,
    driver_memory: str = DEFAULT_SPARK_DRIVER_MEMORY,
    extra_conf: dict[str, str] | None = None,
):
    """A SparkSession (getOrCreate). The caller passes every setting; SPARK_LOCAL_IP for the
    JVM comes from `settings.apply_quiet_defaults()`."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions or (8 if master.startswith("local") else 200)))
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.bindAddress", "127.0.0.1" if master.startswith("local") else "0.0.0.0")
    )
    for k, v in (extra_conf or {}).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
