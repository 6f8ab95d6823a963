"""The lake on both backends: the local filesystem and S3 (moto's server over HTTP)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from recsys_dagster.lake import Lake, LakeError, S3Backend


def test_bytes_json_and_listing(any_lake: Lake):
    any_lake.put_bytes("a/b/c.bin", b"xyz")
    any_lake.write_json("a/meta.json", {"k": 1})
    assert any_lake.get_bytes("a/b/c.bin") == b"xyz"
    assert any_lake.read_json("a/meta.json") == {"k": 1}
    assert any_lake.list_keys("a") == ["a/b/c.bin", "a/meta.json"]
    assert any_lake.exists("a/meta.json") and not any_lake.exists("a/nope.json")
    with pytest.raises(LakeError, match="no such key"):
        any_lake.get_bytes("a/nope.json")


def test_partitions_parquet_and_idempotent_replace(any_lake: Lake):
    t = pa.table({"x": [1, 2, 3]})
    any_lake.write_partition("events/dt=2026-10-05", t)
    any_lake.write_partition("events/dt=2026-10-06", t)
    any_lake.write_partition("events/dt=2026-10-05", t)  # re-run: replaces, never duplicates
    assert any_lake.list_partitions("events") == ["2026-10-05", "2026-10-06"]
    assert any_lake.read_parquet("events/dt=2026-10-05").num_rows == 3
    assert any_lake.read_parquet("events").num_rows == 6
    assert len(any_lake.list_keys("events/dt=2026-10-05")) == 1
    with pytest.raises(LakeError, match="no parquet data"):
        any_lake.read_parquet("events/dt=2030-01-01")


def test_jsonl_gz_and_append(any_lake: Lake):
    n = any_lake.write_jsonl_gz("landing/x.jsonl.gz", [{"a": 1}, "not json but kept as a line"])
    assert n == 2
    assert list(any_lake.iter_jsonl_gz_lines("landing/x.jsonl.gz")) == ['{"a":1}', "not json but kept as a line"]
    any_lake.append_jsonl("h/history.jsonl", {"i": 1})
    any_lake.append_jsonl("h/history.jsonl", {"i": 2})
    assert [r["i"] for r in any_lake.read_jsonl("h/history.jsonl")] == [1, 2]


def test_hidden_files_are_invisible_and_bad_keys_refused(local_lake: Lake):
    root = local_lake.local_path()
    (root / "d").mkdir(parents=True)
    (root / "d" / ".part.tmp").write_bytes(b"half")  # an in-flight write
    (root / "d" / "_SUCCESS").write_bytes(b"")
    local_lake.put_bytes("d/real.parquet", b"1")
    assert local_lake.list_keys("d") == ["d/real.parquet"]
    with pytest.raises(LakeError, match="invalid lake key"):
        local_lake.put_bytes("../escape", b"x")


def test_local_writes_leave_no_temporary_files(local_lake: Lake):
    local_lake.write_partition("p/dt=1", pa.table({"x": [1]}))
    local_lake.write_partition("p/dt=1", pa.table({"x": [2]}))
    leftovers = [p.name for p in local_lake.local_path().rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_unsupported_uri_and_missing_bucket():
    with pytest.raises(LakeError, match="unsupported"):
        Lake.from_uri("gs://bucket/x")
    with pytest.raises(LakeError, match="needs a bucket"):
        Lake.from_uri("s3:///x")


class _Flaky:
    """A real boto3 client that answers SlowDown / 503 a few times before passing through."""

    def __init__(self, client, failures: int):
        self._client = client
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name):
        real = getattr(self._client, name)
        if name not in ("put_object", "get_object"):
            return real

        def call(**kwargs):
            self.calls += 1
            if self.failures > 0:
                self.failures -= 1
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "reduce your rate"}}, name)
            return real(**kwargs)

        return call


def test_s3_transient_errors_are_retried(s3_lake: Lake):
    backend = s3_lake.backend
    assert isinstance(backend, S3Backend)
    flaky = _Flaky(backend.client, failures=3)
    lake = Lake(S3Backend(backend.bucket, backend.prefix, client=flaky, max_attempts=5))
    lake.put_bytes("r/x.bin", b"ok")
    assert lake.get_bytes("r/x.bin") == b"ok"
    assert flaky.calls == 5  # 3 refused + 1 put + 1 get

    hopeless = Lake(
        S3Backend(backend.bucket, backend.prefix, client=_Flaky(backend.client, failures=10), max_attempts=3)
    )
    with pytest.raises(ClientError, match="SlowDown"):
        hopeless.put_bytes("r/y.bin", b"no")


def test_s3_permanent_errors_are_not_retried(s3_lake: Lake):
    backend = s3_lake.backend
    missing = Lake(S3Backend("no-such-bucket-here", "x", client=backend.client, max_attempts=5))
    with pytest.raises(ClientError):
        missing.put_bytes("k", b"v")
