"""Spark as a resource: local[*] by default, a cluster through `master`."""

from dagster import ConfigurableResource
from pydantic import Field

from recsys_dagster.settings import DEFAULT_SPARK_DRIVER_MEMORY, DEFAULT_SPARK_MASTER
from recsys_dagster.spark.session import get_spark


class SparkResource(ConfigurableResource):
    master: str = Field(
        default=DEFAULT_SPARK_MASTER, description="Spark master URL (local[*], spark://host:7077, ...)."
    )
    driver_memory: str = Field(default=DEFAULT_SPARK_DRIVER_MEMORY, description="spark.driver.memory")
    shuffle_partitions: int | None = Field(default=None, description="Default: 8 locally, 200 on a cluster.")

    def get_session(self):
        # getOrCreate: one JVM per run process, shared by every asset in the run.
        return get_spark(
            master=self.master,
            app_name="recsys-dagster",
            shuffle_partitions=self.shuffle_partitions,
            driver_memory=self.driver_memory,
        )
