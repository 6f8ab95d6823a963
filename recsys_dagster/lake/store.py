"""The lake: one URI (`file://...` or `s3://bucket/prefix`) that roots every dataset.

Keys are relative, `/`-separated paths such as `events/dt=2026-10-05/part-0.parquet`.
Every write is atomic for readers: a local file is written beside its target and renamed;
an S3 object is a single PUT. Partition writes replace the partition (idempotent re-runs).
No dagster import here: serving uses this module too.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

T = TypeVar("T")

# Names a reader must skip: temporary files of in-flight writes and Spark's markers.
_HIDDEN_PREFIXES = (".", "_")


class LakeError(RuntimeError):
    """A lake operation failed for a reason the caller should see (missing key, bad URI)."""


def _visible(key: str) -> bool:
    return not any(part.startswith(_HIDDEN_PREFIXES) for part in key.split("/"))


def _clean_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(p in ("", ".", "..") for p in key.split("/")):
        raise LakeError(f"invalid lake key: {key!r}")
    return key


class LocalBackend:
    """A directory on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()

    @property
    def uri(self) -> str:
        return f"file://{self.root}"

    def path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise LakeError(f"no such key in lake {self.uri}: {key}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        if base.is_file():
            return [prefix.strip("/")]
        keys = [p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()]
        return sorted(k for k in keys if _visible(k))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        target = self.root / _clean_key(prefix)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def replace_prefix(self, prefix: str, files: dict[str, bytes]) -> None:
        """Write `files` (names relative to prefix) as the whole new content of `prefix`.

        Built in a hidden sibling directory, then swapped in by two renames, so a reader
        sees the old partition or the new one, never a half-written one.
        """
        target = self.root / _clean_key(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        staging = target.parent / f".{target.name}.{token}.new"
        staging.mkdir()
        try:
            for name, data in files.items():
                out = staging / _clean_key(name)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
            old = target.parent / f".{target.name}.{token}.old"
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


class S3Backend:
    """A bucket and prefix on S3 (or MinIO / moto through `endpoint_url`).

    Calls are retried with jittered backoff on throttling and transient network errors,
    on top of botocore's own retry mode.
    """

    _TRANSIENT_CODES = {
        "RequestTimeout",
        "RequestTimeoutException",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        max_attempts: int = 5,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_attempts = max_attempts
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region_name or "us-east-1",
                config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
            )
        self.client = client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _k(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _retry(self, fn: Callable[[], T]) -> T:
        from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in self._TRANSIENT_CODES or attempt == self.max_attempts:
                    raise
            except (BotoConnectionError, EndpointConnectionError, ReadTimeoutError):
                if attempt == self.max_attempts:
                    raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._k(key)
        self._retry(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data))

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        full = self._k(key)
        try:
            obj = self._retry(lambda: self.client.get_object(Bucket=self.bucket, Key=full))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise LakeError(f"no such key in lake {self.uri}: {key}") from exc
            raise
        return obj["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._k(key)
        try:
            self._retry(lambda: self.client.head_object(Bucket=self.bucket, Key=full))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list_keys(self, prefix: str = "") -> list[str]:
        p = prefix.strip("/")
        full = (f"{self.prefix}/{p}" if self.prefix else p) if p else self.prefix
        if full:
            full += "/"
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._retry(lambda: self.client.list_objects_v2(**kwargs))
            keys.extend(self._rel(o["Key"]) for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        return sorted(k for k in keys if _visible(k))

    def _all_keys(self, prefix: str) -> list[str]:
        # Including hidden ones, for deletes.
        full = self._k(prefix) + "/"
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys

    def delete(self, key: str) -> None:
        full = self._k(key)
        self._retry(lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def _delete_full(self, full_keys: list[str]) -> None:
        for i in range(0, len(full_keys), 1000):
            chunk = [{"Key": k} for k in full_keys[i : i + 1000]]
            self._retry(
                lambda chunk=chunk: self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                )
            )

    def delete_prefix(self, prefix: str) -> None:
        self._delete_full(self._all_keys(prefix))

    def replace_prefix(self, prefix: str, files: dict[str, bytes]) -> None:
        """New objects first (each one PUT), then the old ones not rewritten are removed.

        File names carry a fresh token, so a re-run never collides with the run it replaces.
        """
        base = self._k(prefix)
        old = set(self._all_keys(prefix))
        new: set[str] = set()
        for name, data in files.items():
            full = f"{base}/{_clean_key(name)}"
            self._retry(lambda full=full, data=data: self.client.put_object(Bucket=self.bucket, Key=full, Body=data))
            new.add(full)
        self._delete_full(sorted(old - new))


Backend = LocalBackend | S3Backend


class Lake:
    """Typed helpers (Parquet, JSON, JSONL.gz, partitions) over a storage backend."""

    def __init__(self, backend: Backend):
        self.backend = backend

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        s3_client: Any | None = None,
    ) -> Lake:
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            raw = uri[len("file://") :] if uri.startswith("file://") else uri
            return cls(LocalBackend(raw))
        if parsed.scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise LakeError(f"S3 lake URI needs a bucket: {uri!r}")
            return cls(
                S3Backend(
                    parsed.netloc,
                    parsed.path,
                    client=s3_client,
                    endpoint_url=endpoint_url,
                    region_name=region_name,
                )
            )
        raise LakeError(f"unsupported lake URI scheme {parsed.scheme!r} in {uri!r} (use file:// or s3://)")

    @property
    def uri(self) -> str:
        return self.backend.uri

    @property
    def is_local(self) -> bool:
        return isinstance(self.backend, LocalBackend)

    def local_path(self, key: str = "") -> Path:
        """Filesystem path of a key; only for a local lake."""
        if not isinstance(self.backend, LocalBackend):
            raise LakeError(f"{self.uri} is not a local lake")
        return self.backend.root / key.strip("/") if key.strip("/") else self.backend.root

    # raw bytes ------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        self.backend.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes:
        return self.backend.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.backend.exists(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return self.backend.list_keys(prefix)

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        self.backend.delete_prefix(prefix)

    def replace_prefix(self, prefix: str, files: dict[str, bytes]) -> None:
        self.backend.replace_prefix(prefix, files)

    def has_data(self, prefix: str) -> bool:
        return bool(self.list_keys(prefix))

    # partitions -----------------------------------------------------------------------
    def list_partitions(self, dataset: str, key: str = "dt") -> list[str]:
        """Values of `key=` directories directly under `dataset` that hold visible files."""
        marker = f"{key}="
        values: set[str] = set()
        root = dataset.strip("/") + "/"
        for k in self.list_keys(dataset):
            rest = k[len(root) :]
            head = rest.split("/", 1)[0]
            if head.startswith(marker) and "/" in rest:
                values.add(head[len(marker) :])
        return sorted(values)

    # JSON -----------------------------------------------------------------------------
    def write_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def append_jsonl(self, key: str, record: dict[str, Any]) -> None:
        """Append one line (read-modify-write: S3 has no append; the PUT stays atomic)."""
        old = self.get_bytes(key) if self.exists(key) else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        self.put_bytes(key, old + json.dumps(record, sort_keys=True, default=str).encode() + b"\n")

    def read_jsonl(self, key: str) -> list[dict[str, Any]]:
        if not self.exists(key):
            return []
        return [json.loads(line) for line in self.get_bytes(key).decode().splitlines() if line.strip()]

    # JSONL.gz (landing zone) ----------------------------------------------------------
    def write_jsonl_gz(self, key: str, records: Iterable[dict[str, Any] | str]) -> int:
        """Write records (dicts, or raw lines as producers may emit them) gzipped."""
        buf = io.BytesIO()
        n = 0
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            for rec in records:
                line = rec if isinstance(rec, str) else json.dumps(rec, separators=(",", ":"))
                gz.write(line.encode() + b"\n")
                n += 1
        self.put_bytes(key, buf.getvalue())
        return n

    def iter_jsonl_gz_lines(self, key: str) -> Iterator[str]:
        """Raw lines, undecoded as JSON: parsing belongs to validation."""
        data = gzip.decompress(self.get_bytes(key))
        for line in data.decode("utf-8", errors="replace").splitlines():
            if line.strip():
                yield line

    # Parquet --------------------------------------------------------------------------
    @staticmethod
    def table_to_parquet_bytes(table: pa.Table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()

    def write_parquet(self, key: str, table: pa.Table) -> None:
        self.put_bytes(key, self.table_to_parquet_bytes(table))

    def write_partition(self, prefix: str, table: pa.Table, *, rows_per_file: int = 1_000_000) -> int:
        """Replace the partition at `prefix` with `table` (idempotent re-runs). Returns files."""
        files: dict[str, bytes] = {}
        token = uuid.uuid4().hex[:8]
        n = max(1, -(-table.num_rows // rows_per_file))
        for i in range(n):
            part = table.slice(i * rows_per_file, rows_per_file)
            files[f"part-{token}-{i:05d}.parquet"] = self.table_to_parquet_bytes(part)
        self.replace_prefix(prefix, files)
        return n

    def read_parquet(self, prefix_or_key: str, columns: list[str] | None = None) -> pa.Table:
        """One Parquet file, or every visible `*.parquet` under a prefix, concatenated."""
        key = prefix_or_key.strip("/")
        keys = [key] if key.endswith(".parquet") else [k for k in self.list_keys(key) if k.endswith(".parquet")]
        if not keys:
            raise LakeError(f"no parquet data at {self.uri}/{key}")
        tables = [pq.read_table(io.BytesIO(self.get_bytes(k)), columns=columns) for k in keys]
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]

    # staging between the lake and local engines (Spark, FAISS, ONNX Runtime) -----------
    def download_prefix(self, prefix: str, local_dir: str | os.PathLike[str]) -> Path:
        """Copy every visible file under `prefix` into `local_dir`, keeping relative paths."""
        out = Path(local_dir)
        base = prefix.strip("/")
        for k in self.list_keys(base):
            rel = k[len(base) :].lstrip("/") if base else k
            dest = out / (rel or Path(k).name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.get_bytes(k))
        return out

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str, *, suffix: str | None = None) -> int:
        """Replace `prefix` with the visible files of a local directory (e.g. Spark output)."""
        root = Path(local_dir)
        files: dict[str, bytes] = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and _visible(rel) and (suffix is None or rel.endswith(suffix)):
                files[rel] = p.read_bytes()
        self.replace_prefix(prefix, files)
        return len(files)
