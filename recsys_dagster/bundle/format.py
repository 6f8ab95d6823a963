"""The bundle format: what a model version is on disk, and how a reader verifies it.

Shared by the promotion gate (writer) and serving (reader); imports neither dagster nor
torch. A bundle is a directory `models/<version>/` of plain files (no pickle) and a
`manifest.json` that lists every file with its sha256 and size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_dagster.contract import MODELS, PROMOTED
from recsys_dagster.lake import Lake, LakeError

FORMAT_VERSION = 1

# Every bundle written now has exactly these files besides manifest.json.
BUNDLE_FILES: tuple[str, ...] = (
    "user_tower.onnx",
    "item_index.faiss",
    "items.parquet",
    "item_embeddings.npy",
    "user_histories.parquet",
    "user_seen.parquet",
    "popular.json",
)
# Files that bundles written before they existed lack (same format version): a reader takes
# such a bundle and reads the missing file as empty (`user_seen.parquet`: no seen-sets, so
# serving excludes only the stored history and the request's items).
OPTIONAL_FILES: frozenset[str] = frozenset({"user_seen.parquet"})
REQUIRED_FILES: tuple[str, ...] = tuple(f for f in BUNDLE_FILES if f not in OPTIONAL_FILES)
# The ranking stage (serving/ranker.py): a bundle carries all three or none (two-tower only).
RANKER_FILES: tuple[str, ...] = ("ranker.onnx", "ranker.json", "ranker_items.npz")


def bundle_files(directory: str | Path) -> tuple[str, ...]:
    """The files a bundle directory is made of: `BUNDLE_FILES`, plus `RANKER_FILES` when
    it has a ranker. BundleError for a partial ranker."""
    d = Path(directory)
    present = [name for name in RANKER_FILES if (d / name).is_file()]
    if present and len(present) != len(RANKER_FILES):
        raise BundleError(f"{d} has only {present} of the ranker files {list(RANKER_FILES)}")
    return (*BUNDLE_FILES, *RANKER_FILES) if present else BUNDLE_FILES


MANIFEST = "manifest.json"
POINTER_KEY = f"{PROMOTED}/manifest.json"
HISTORY_KEY = f"{PROMOTED}/history.jsonl"


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or does not match its manifest."""


def bundle_prefix(version: str) -> str:
    return f"{MODELS}/{version}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest; `raw` keeps every field (metrics, gate decision, ...)."""

    version: str
    files: dict[str, dict[str, Any]]  # name -> {"sha256": str, "size": int}
    embedding_dim: int
    index_type: str
    raw: dict[str, Any]

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any]) -> Manifest:
        raw = data if isinstance(data, dict) else json.loads(data)
        try:
            files = raw["files"]
            missing = [f for f in REQUIRED_FILES if f not in files]
            if missing:
                raise BundleError(f"manifest of {raw.get('version')!r} lacks files: {missing}")
            for name, meta in files.items():
                if not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("size"), int):
                    raise BundleError(f"manifest entry for {name!r} needs sha256 and size")
            return cls(
                version=str(raw["version"]),
                files=files,
                embedding_dim=int(raw["embedding_dim"]),
                index_type=str(raw["index_type"]),
                raw=raw,
            )
        except KeyError as exc:
            raise BundleError(f"manifest lacks field {exc.args[0]!r}") from exc


def describe_files(directory: str | Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every bundle file in a local directory (all must exist)."""
    d = Path(directory)
    out: dict[str, dict[str, Any]] = {}
    for name in bundle_files(d):
        p = d / name
        if not p.is_file():
            raise BundleError(f"bundle file missing: {p}")
        out[name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def verify_local(directory: str | Path, manifest: Manifest) -> None:
    """Raise BundleError unless every file in `directory` matches the manifest."""
    d = Path(directory)
    for name, meta in manifest.files.items():
        p = d / name
        if not p.is_file():
            raise BundleError(f"{manifest.version}: {name} is missing")
        size = p.stat().st_size
        if size != meta["size"]:
            raise BundleError(f"{manifest.version}: {name} has {size} bytes, manifest says {meta['size']}")
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise BundleError(f"{manifest.version}: {name} sha256 {digest[:12]}... does not match manifest")


def read_pointer(lake: Lake) -> dict[str, Any] | None:
    """The promoted pointer, or None when nothing was ever promoted."""
    if not lake.exists(POINTER_KEY):
        return None
    return lake.read_json(POINTER_KEY)


def fetch_bundle(lake: Lake, version: str, dest: str | Path) -> Manifest:
    """Copy `models/<version>/` into `dest` and verify it; the manifest is returned.

    Files are checked against the manifest in the lake, so a torn or tampered bundle is
    refused here rather than half-loaded.
    """
    prefix = bundle_prefix(version)
    try:
        manifest = Manifest.parse(lake.get_bytes(f"{prefix}/{MANIFEST}"))
    except LakeError as exc:
        raise BundleError(f"bundle {version!r} has no manifest in {lake.uri}") from exc
    if manifest.version != version:
        raise BundleError(f"manifest at {prefix} names version {manifest.version!r}")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for name in manifest.files:
        try:
            data = lake.get_bytes(f"{prefix}/{name}")
        except LakeError as exc:
            raise BundleError(f"{version}: {name} is missing from the lake") from exc
        (out / name).write_bytes(data)
    (out / MANIFEST).write_text(json.dumps(manifest.raw, indent=2, sort_keys=True))
    verify_local(out, manifest)
    return manifest
