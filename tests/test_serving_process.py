"""The serving process itself: no heavy imports, and a real uvicorn server on an S3 lake."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from bundle_factory import make_bundle_dir, write_and_promote

from recsys_dagster.lake import Lake

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("dagster", "pyspark", "torch", "mlflow")
NOT_IN_IMAGE = ("pandas", "onnx", "sklearn")  # the serving extra does not install them


def test_serving_imports_no_heavy_module(tmp_path: Path):
    code = textwrap.dedent(
        f"""
        import json, sys
        from recsys_dagster.serving.app import create_app
        from recsys_dagster.serving.main import run
        from recsys_dagster.serving.settings import Settings
        from recsys_dagster.serving.engine import Engine
        app = create_app(Settings(lake_uri="file://{tmp_path}/lake", cache_dir="{tmp_path}/cache"), poll=False)
        app.state.store.reload_now()
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"fastapi", "onnxruntime", "faiss"} <= loaded  # the probe really imported the app
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not loaded & set(NOT_IN_IMAGE), loaded & set(NOT_IN_IMAGE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_uvicorn_server_on_s3_lake(s3_lake: Lake, moto_server: str, tmp_path: Path):
    v1, v2 = "w2026-10-19-20261021T030501Z", "w2026-10-26-20261028T030501Z"
    write_and_promote(s3_lake, v1, make_bundle_dir(tmp_path / "b1", n_items=200, dim=8, seed=3))
    port = _free_port()
    env = {
        **os.environ,
        "RECSYS_LAKE_URI": s3_lake.uri,
        "RECSYS_S3_ENDPOINT_URL": moto_server,
        "RECSYS_SERVING_CACHE": str(tmp_path / "cache"),
        "RECSYS_POLL_SECONDS": "0.2",
        "RECSYS_API_KEY": "k",
    }
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_dagster.serving.main", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": "k"}
    try:
        with httpx.Client(base_url=base, timeout=5) as c:
            _wait(lambda: c.get("/ready", headers=headers).status_code == 200, proc)
            r = c.post("/recommendations", json={"user_id": "u1", "k": 4}, headers=headers)
            assert r.status_code == 200 and r.json()["model_version"] == v1 and len(r.json()["items"]) == 4
            assert c.post("/recommendations", json={"user_id": "u1"}).status_code == 401
            write_and_promote(s3_lake, v2, make_bundle_dir(tmp_path / "b2", n_items=250, dim=8, seed=4))
            _wait(lambda: c.get("/version", headers=headers).json()["version"] == v2, proc)
            assert "recsys_bundle_reloads_total 2.0" in c.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    lines = (tmp_path / "server.log").read_text().splitlines()
    access = [json.loads(line) for line in lines if line.startswith('{"path"')]
    assert any(a["path"] == "/recommendations" and a["status"] == 200 and a["model_version"] == v1 for a in access)


def _wait(cond, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if cond():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the server")
