"""Follows `promoted/manifest.json`: fetch, verify, load beside the old engine, swap.

Requests read `store.engine` once and keep that object, so a swap never changes the bundle
under an in-flight request. A bundle that fails verification or loading is refused; the
engine already loaded keeps serving and the failure is reported (status, metrics).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys_dagster.bundle.format import BundleError, fetch_bundle, read_pointer
from recsys_dagster.lake import Lake
from recsys_dagster.serving.engine import Engine
from recsys_dagster.serving.metrics import Metrics

log = logging.getLogger("recsys.serving.store")

EngineLoader = Callable[[Path, str], Engine]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class BundleStore:
    def __init__(
        self,
        lake: Lake,
        cache_dir: Path,
        *,
        poll_seconds: float = 10.0,
        metrics: Metrics | None = None,
        loader: EngineLoader | None = None,
    ):
        self.lake = lake
        self.cache_dir = Path(cache_dir)
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        self.loader: EngineLoader = loader or (lambda path, version: Engine.from_dir(path, version))
        self._engine: Engine | None = None
        self._lock = threading.Lock()  # one reload at a time (poller and reload_now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: tuple[str, str] | None = None  # (version, promoted_at) not to retry
        self.last_error: str | None = None
        self.refused_version: str | None = None
        self.last_check: str | None = None
        self.loaded_at: str | None = None

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def status(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "version": engine.version if engine else None,
            "loaded_at": self.loaded_at,
            "refused_version": self.refused_version,
            "last_error": self.last_error,
            "last_check": self.last_check,
            "lake": self.lake.uri,
        }

    def reload_now(self) -> bool:
        """Check the pointer once; True when a new bundle was swapped in."""
        with self._lock:
            return self._check()

    def _check(self) -> bool:
        self.last_check = _now()
        try:
            pointer = read_pointer(self.lake)
        except Exception as exc:  # storage unreachable: keep serving, retry next poll
            self.last_error = f"cannot read the promoted pointer: {type(exc).__name__}: {exc}"
            log.warning(self.last_error)
            return False
        if pointer is None:
            return False
        version = str(pointer.get("version") or "")
        current = self._engine.version if self._engine else None
        if not version:
            self._refuse("", "", "promoted/manifest.json has no version")
            return False
        if version == current:
            return False
        key = (version, str(pointer.get("promoted_at", "")))
        if self._refused == key:
            return False
        started = time.perf_counter()
        staging = self.cache_dir / f".{version}.{uuid.uuid4().hex[:8]}"
        try:
            manifest = fetch_bundle(self.lake, version, staging)
            if pointer.get("files") and pointer["files"] != manifest.files:
                raise BundleError(f"{version}: promoted pointer and bundle manifest list different files")
            final = self.cache_dir / version
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            engine = self.loader(final, version)
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self._refuse(version, key[1], f"{type(exc).__name__}: {exc}")
            return False
        self._engine = engine  # the swap: one reference assignment
        self.loaded_at = _now()
        self.last_error = None
        self.refused_version = None
        self._refused = None
        if self.metrics:
            self.metrics.set_bundle(version)
            self.metrics.reloads.inc()
            self.metrics.bundle_load_seconds.set(time.perf_counter() - started)
        log.info("serving bundle %s (was %s)", version, current)
        self._prune(keep={version, current} - {None})
        return True

    def _refuse(self, version: str, promoted_at: str, error: str) -> None:
        self._refused = (version, promoted_at)
        self.refused_version = version or None
        self.last_error = error
        if self.metrics:
            self.metrics.reload_failures.inc()
        log.error("refused bundle %r: %s", version, error)

    def _prune(self, keep: set[str]) -> None:
        if not self.cache_dir.is_dir():
            return
        for p in self.cache_dir.iterdir():
            if p.is_dir() and not p.name.startswith(".") and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    # background polling ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="recsys-bundle-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reload_now()
            except Exception:  # never let the poller die; the error is in status()
                log.exception("bundle poll failed")
            self._stop.wait(self.poll_seconds)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
