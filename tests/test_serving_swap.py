"""Hot swap: a new promoted bundle replaces the old one under load; a bad one is refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from bundle_factory import make_bundle_dir, write_and_promote
from fastapi.testclient import TestClient

from recsys_dagster.bundle.format import POINTER_KEY, bundle_prefix
from recsys_dagster.lake import Lake
from recsys_dagster.serving.app import create_app
from recsys_dagster.serving.settings import Settings
from recsys_dagster.serving.store import BundleStore

V1 = "w2026-10-19-20261021T030501Z"
V2 = "w2026-10-26-20261028T030501Z"
V3 = "w2026-11-02-20261104T030501Z"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {
        "v1": make_bundle_dir(base / "v1", n_items=300, dim=8, seed=1),
        "v2": make_bundle_dir(base / "v2", n_items=400, dim=8, seed=2),
    }


def test_promote_v2_while_requests_run(local_lake: Lake, tmp_path: Path, dirs):
    write_and_promote(local_lake, V1, dirs["v1"])
    app = create_app(Settings(lake_uri=local_lake.uri, cache_dir=tmp_path / "cache", poll_seconds=0.05))
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()
    with TestClient(app) as client:

        def hammer(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                loaded = bool(versions)  # read before sending: a 503 is only wrong after a load
                r = client.post("/recommendations", json={"user_id": f"u{(n + i) % 50}", "k": 5})
                if r.status_code == 503 and not loaded:
                    continue  # the poller has not loaded v1 yet
                if r.status_code != 200 or len(r.json()["items"]) != 5:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    versions.add(r.json()["model_version"])

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            _wait(lambda: V1 in versions)
            write_and_promote(local_lake, V2, dirs["v2"])
            _wait(lambda: V2 in versions)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert not failures, failures[:3]
        assert versions == {V1, V2}
        assert client.get("/version").json()["version"] == V2
        assert client.get("/version").json()["n_items"] == 400
        metrics = client.get("/metrics").text
        assert f'recsys_bundle_info{{version="{V2}"}} 1.0' in metrics and V1 not in metrics
        assert "recsys_bundle_reloads_total 2.0" in metrics
    # the old bundle's cache stays until the next swap; nothing older is kept
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [V1, V2]


def _wait(cond, timeout: float = 20.0) -> None:
    import time

    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_corrupted_bundle_is_refused_and_old_keeps_serving(local_lake: Lake, tmp_path: Path, dirs):
    write_and_promote(local_lake, V1, dirs["v1"])
    app = create_app(Settings(lake_uri=local_lake.uri, cache_dir=tmp_path / "cache", poll_seconds=3600), poll=False)
    store: BundleStore = app.state.store
    assert store.reload_now() is True
    with TestClient(app) as client:
        # v2 written and promoted, then one byte of items.parquet flipped after the manifest was written
        write_and_promote(local_lake, V2, dirs["v2"])
        key = f"{bundle_prefix(V2)}/items.parquet"
        data = bytearray(local_lake.get_bytes(key))
        data[len(data) // 2] ^= 0xFF
        local_lake.put_bytes(key, bytes(data))

        assert store.reload_now() is False
        assert store.reload_now() is False  # the same pointer is not fetched again
        r = client.post("/recommendations", json={"user_id": "u2"})
        assert r.status_code == 200 and r.json()["model_version"] == V1
        v = client.get("/version").json()
        assert v["version"] == V1 and v["refused_version"] == V2 and "sha256" in v["last_error"]
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["last_error"]
        metrics = client.get("/metrics").text
        assert "recsys_bundle_reload_failures_total 1.0" in metrics
        assert f'recsys_bundle_info{{version="{V1}"}} 1.0' in metrics
        assert not (tmp_path / "cache" / V2).exists()

        # a fixed re-promotion of v2 (new pointer) is accepted
        local_lake.put_bytes(key, (dirs["v2"] / "items.parquet").read_bytes())
        write_and_promote(local_lake, V2, dirs["v2"])
        assert store.reload_now() is True
        assert client.get("/version").json() == {
            **client.get("/version").json(),
            "version": V2,
            "refused_version": None,
            "last_error": None,
        }


def test_bundle_that_fails_to_load_is_refused(local_lake: Lake, tmp_path: Path, dirs):
    write_and_promote(local_lake, V1, dirs["v1"])
    store = BundleStore(local_lake, tmp_path / "cache")
    assert store.reload_now()
    # checksums match (the manifest describes the bad file) but the model cannot load
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in dirs["v2"].iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "user_tower.onnx").write_bytes(b"garbage")
    write_and_promote(local_lake, V3, bad)
    assert store.reload_now() is False
    assert store.engine.version == V1 and store.refused_version == V3 and "user_tower" in store.last_error


def test_pointer_to_missing_bundle(local_lake: Lake, tmp_path: Path, dirs):
    store = BundleStore(local_lake, tmp_path / "cache")
    assert store.reload_now() is False and store.engine is None and store.last_error is None
    local_lake.write_json(POINTER_KEY, {"version": "w-ghost", "promoted_at": "now"})
    assert store.reload_now() is False
    assert store.refused_version == "w-ghost" and "no manifest" in store.last_error


def test_promote_and_rollback_through_the_real_pointer_under_load(local_lake: Lake, tmp_path: Path, dirs):
    """The pipeline's own promote() and `recsys rollback`'s rollback() are picked up live:
    v1 -> v2 -> back to v1, with requests running the whole time and none failing."""
    from recsys_dagster.bundle.promote import promote, rollback

    for version, key in ((V1, "v1"), (V2, "v2")):
        write_and_promote(local_lake, version, dirs[key], promote=False)
    promote(local_lake, V1, reason="first")
    app = create_app(Settings(lake_uri=local_lake.uri, cache_dir=tmp_path / "cache", poll_seconds=0.05))
    failures: list[str] = []
    seen: list[str] = []  # versions, appended when the answering version changes
    answered: list[str] = []  # every successful response's version
    stop = threading.Event()
    with TestClient(app) as client:

        def hammer(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                loaded = bool(seen)
                r = client.post(
                    "/recommendations", json={"user_id": f"u{(n + i) % 50}", "recent_items": ["i1"], "k": 5}
                )
                if r.status_code == 503 and not loaded:
                    continue
                if r.status_code != 200 or len(r.json()["items"]) != 5:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                answered.append(r.json()["model_version"])
                if not seen or seen[-1] != answered[-1]:
                    seen.append(answered[-1])

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        try:
            _wait(lambda: V1 in seen)
            promote(local_lake, V2, reason="second")
            _wait(lambda: V2 in seen)
            pointer = rollback(local_lake, reason="bad metrics in production")
            assert pointer["version"] == V1
            _wait(lambda: client.get("/version").json()["version"] == V1)
            mark = len(answered)
            _wait(lambda: len(answered) > mark + 20)  # traffic keeps flowing after the swap back
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    assert not failures, failures[:3]
    assert seen[0] == V1 and V2 in seen
    assert set(answered[mark + 5 :]) == {V1}  # after the swap back, only v1 answers
