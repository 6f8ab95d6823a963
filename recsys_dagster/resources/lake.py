"""The lake as a Dagster resource: `file://` by default, `s3://bucket/prefix` through dagster-aws."""

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from recsys_dagster.lake import Lake


class LakeResource(ConfigurableResource):
    """Root of every dataset. `endpoint_url` points S3 at MinIO or a local S3 server."""

    uri: str
    endpoint_url: str | None = None
    region_name: str | None = None

    _lake: Lake | None = PrivateAttr(default=None)

    def get_lake(self) -> Lake:
        if self._lake is None:
            client = None
            if self.uri.startswith(("s3://", "s3a://")):
                from dagster_aws.s3 import S3Resource

                client = S3Resource(
                    endpoint_url=self.endpoint_url or None,
                    region_name=self.region_name or None,
                    max_attempts=5,
                ).get_client()
            self._lake = Lake.from_uri(
                self.uri, endpoint_url=self.endpoint_url, region_name=self.region_name, s3_client=client
            )
        return self._lake
