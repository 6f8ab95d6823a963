"""Spark as a resource: local[*] by default, a cluster through `master`."""


from dagster import ConfigurableResource

from recsys_dagster.spark.session import get_spark


class SparkResource(ConfigurableResource):
    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int | None = None

    def get_session(self):
        # getOrCreate: one JVM per run process, shared by every asset in the run.
        return get_spark(
            master=self.master,
            app_name="recsys-dagster",
            shuffle_partitions=self.shuffle_partitions,
            extra_conf={"spark.driver.memory": self.driver_memory},
        )
