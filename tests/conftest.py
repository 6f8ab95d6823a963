"""Shared fixtures: telemetry off, a temporary local lake, a real moto S3 server over HTTP,
and one local Spark session for the whole run (a JVM start costs seconds)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

for _k, _v in {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Tests never read a project file a user left in the checkout (tests that need one set it).
    "RECSYS_CONFIG": "/nonexistent/recsys.toml",
}.items():
    os.environ.setdefault(_k, _v)

from recsys_dagster.lake import Lake  # noqa: E402


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    return Lake.from_uri(f"file://{tmp_path / 'lake'}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server as a real process on loopback; stopped by its PID."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3_lake(moto_server) -> Lake:
    """A fresh bucket on the moto server, as a lake under a prefix."""
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return Lake.from_uri(f"s3://{bucket}/recsys", endpoint_url=moto_server)


@pytest.fixture(params=["local", "s3"])
def any_lake(request, tmp_path: Path) -> Lake:
    if request.param == "local":
        return Lake.from_uri(f"file://{tmp_path / 'lake'}")
    return request.getfixturevalue("s3_lake")


@pytest.fixture(scope="session")
def spark():
    from recsys_dagster.spark.session import get_spark

    session = get_spark(master="local[2]", app_name="recsys-tests")
    yield session
    session.stop()
