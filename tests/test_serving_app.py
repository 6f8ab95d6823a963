"""The HTTP API through TestClient on a local lake."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from bundle_factory import make_bundle_dir, write_and_promote
from fastapi.testclient import TestClient

from recsys_dagster.lake import Lake
from recsys_dagster.serving.app import create_app
from recsys_dagster.serving.settings import Settings

V1 = "w2026-10-19-20261021T030501Z"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle_dir(tmp_path_factory.mktemp("bundle"), n_items=300, dim=8, seed=1)


def settings_for(lake: Lake, tmp_path: Path, **kw) -> Settings:
    return Settings(lake_uri=lake.uri, cache_dir=tmp_path / "cache", poll_seconds=3600, **kw)


@pytest.fixture
def client(local_lake: Lake, tmp_path: Path, bundle_dir: Path):
    write_and_promote(local_lake, V1, bundle_dir)
    app = create_app(settings_for(local_lake, tmp_path), poll=False)
    app.state.store.reload_now()
    with TestClient(app) as c:
        yield c


def test_before_any_bundle(local_lake: Lake, tmp_path: Path):
    app = create_app(settings_for(local_lake, tmp_path), poll=False)
    with TestClient(app) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        r = c.post("/recommendations", json={"user_id": "u1"})
        assert r.status_code == 503
        assert (
            r.json()["detail"]["error"] == "no_bundle" and "no promoted model bundle" in r.json()["detail"]["message"]
        )
        assert c.get("/items/i1/similar").status_code == 503
        assert c.get("/version").json()["version"] is None


def test_recommendations_and_version(client: TestClient, caplog):
    with caplog.at_level(logging.INFO, logger="recsys.serving.access"):
        r = client.post("/recommendations", json={"user_id": "u2", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == "u2" and body["model_version"] == V1
    assert body["source"] == "stored_history" and body["fallback"] is None and body["unknown_items"] == []
    assert len(body["items"]) == 5 and body["latency_ms"] >= 0
    assert set(body["items"][0]) == {
        "item_id",
        "score",
        "title",
        "price",
        "category_path",
        "condition",
        "location",
        "image_url",
    }
    line = json.loads([rec.getMessage() for rec in caplog.records if rec.name == "recsys.serving.access"][-1])
    assert line == {
        **line,
        "path": "/recommendations",
        "status": 200,
        "user_id": "u2",
        "model_version": V1,
        "fallback": None,
    }
    assert set(line) == {"path", "method", "status", "latency_ms", "user_id", "model_version", "fallback"}

    v = client.get("/version").json()
    assert v["version"] == V1 and v["n_items"] == 300 and v["embedding_dim"] == 8 and v["refused_version"] is None
    assert client.get("/ready").json()["ready"] is True


def test_fallback_and_filters_over_http(client: TestClient):
    r = client.post("/recommendations", json={"user_id": "stranger", "k": 3})
    assert r.json()["fallback"] == {"reason": "unknown_user"} and r.json()["source"] == "popularity"
    r = client.post(
        "/recommendations",
        json={
            "user_id": "x",
            "recent_items": ["i1", "bogus"],
            "filters": {"price_max": 100, "conditions": ["new", "used"]},
            "diversity_cap": None,
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["source"] == "realtime" and body["unknown_items"] == ["bogus"]
    assert all(i["price"] <= 100 and i["condition"] in ("new", "used") for i in body["items"])


@pytest.mark.parametrize(
    "payload,where",
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 101}, "k"),
        ({"user_id": "u1", "recent_items": ["i1"] * 51}, "recent_items"),
        ({"user_id": "u1", "filters": {"price_min": 10, "price_max": 5}}, "price_min"),
        ({"user_id": "u1", "filters": {"conditions": ["mint"]}}, "conditions"),
        ({"user_id": "u1", "popularity_penalty": -1}, "popularity_penalty"),
        ({"user_id": "u1", "surprise": 1}, "surprise"),
        ({"user_id": "u1", "hour": 24}, "hour"),
        ({"user_id": "u1", "hour": -1}, "hour"),
        ({"user_id": "u1", "hour": 3.5}, "hour"),
        ({"user_id": "u1", "hour": "7"}, "hour"),
        ({"user_id": "u1", "device": "phablet"}, "device"),
    ],
)
def test_bad_input_is_422(client: TestClient, payload, where):
    r = client.post("/recommendations", json=payload)
    assert r.status_code == 422
    assert where in json.dumps(r.json()["detail"])


def test_context_is_optional_and_unknown_when_omitted(client: TestClient):
    engine = client.app.state.store.engine
    for payload in ({"user_id": "u2", "k": 8}, {"user_id": "anon", "recent_items": ["i1", "i2", "i3"], "k": 8}):
        r = client.post("/recommendations", json=payload)
        assert r.status_code == 200
        want = engine.recommend(payload["user_id"], recent_items=payload.get("recent_items"), k=8)
        assert r.json()["items"] == want.items and r.json()["fallback"] is None
    full = client.post("/recommendations", json={"user_id": "u2", "k": 8, "device": "tablet", "hour": 0})
    assert full.status_code == 200 and len(full.json()["items"]) == 8


def test_request_schema_documents_context_and_order(client: TestClient):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RecommendationRequest"]["properties"]
    assert "oldest first, most recent last" in schema["recent_items"]["description"]
    assert "never the server's clock" in schema["hour"]["description"]
    assert "unknown device" in schema["device"]["description"]


def test_a_bundle_without_user_seen_is_served(local_lake: Lake, tmp_path: Path):
    old_dir = make_bundle_dir(tmp_path / "old", n_items=200, dim=8, seed=2, write_seen=False)
    manifest = write_and_promote(local_lake, V1, old_dir)
    assert "user_seen.parquet" not in manifest["files"]
    app = create_app(settings_for(local_lake, tmp_path), poll=False)
    assert app.state.store.reload_now() is True
    with TestClient(app) as c:
        assert c.get("/ready").json()["version"] == V1
        r = c.post("/recommendations", json={"user_id": "u3", "k": 5})
        assert r.status_code == 200 and r.json()["source"] == "stored_history" and len(r.json()["items"]) == 5
    assert app.state.store.engine.seen.n_users == 0


def test_similar(client: TestClient):
    r = client.get("/items/i3/similar", params={"k": 4})
    assert r.status_code == 200 and len(r.json()["items"]) == 4
    assert client.get("/items/nope/similar").status_code == 404
    assert client.get("/items/i3/similar", params={"k": 0}).status_code == 422


def test_metrics_text(client: TestClient):
    client.post("/recommendations", json={"user_id": "u2"})
    client.post("/recommendations", json={"user_id": "nobody"})
    client.get("/items/i3/similar")
    text = client.get("/metrics").text
    assert 'recsys_requests_total{endpoint="/recommendations",method="POST",status="200"} 2.0' in text
    assert 'recsys_request_latency_seconds_bucket{endpoint="/items/{item_id}/similar",le="0.0005"}' in text
    assert 'recsys_fallbacks_total{reason="unknown_user"} 1.0' in text
    assert f'recsys_bundle_info{{version="{V1}"}} 1.0' in text
    assert "recsys_bundle_reload_failures_total 0.0" in text


def test_api_key(local_lake: Lake, tmp_path: Path, bundle_dir: Path):
    write_and_promote(local_lake, V1, bundle_dir)
    app = create_app(settings_for(local_lake, tmp_path, api_key="s3cret"), poll=False)
    app.state.store.reload_now()
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        for method, path in (
            ("post", "/recommendations"),
            ("get", "/ready"),
            ("get", "/version"),
            ("get", "/items/i1/similar"),
        ):
            kwargs = {"json": {"user_id": "u1"}} if method == "post" else {}
            assert getattr(c, method)(path, **kwargs).status_code == 401
            assert getattr(c, method)(path, headers={"X-API-Key": "wrong"}, **kwargs).status_code == 401
            assert getattr(c, method)(path, headers={"X-API-Key": "s3cret"}, **kwargs).status_code == 200


def test_settings_from_env(tmp_path: Path):
    s = Settings.from_env(
        {
            "RECSYS_LAKE_URI": "s3://b/p",
            "RECSYS_S3_ENDPOINT_URL": "http://m:9000",
            "RECSYS_SERVING_CACHE": str(tmp_path),
            "RECSYS_POLL_SECONDS": "2.5",
            "RECSYS_API_KEY": "k",
            "RECSYS_CANDIDATES": "300",
        }
    )
    assert (s.lake_uri, s.s3_endpoint_url, s.cache_dir, s.poll_seconds, s.api_key, s.candidates) == (
        "s3://b/p",
        "http://m:9000",
        tmp_path,
        2.5,
        "k",
        300,
    )
    defaults = Settings.from_env({})
    assert (
        defaults.poll_seconds,
        defaults.candidates,
        defaults.max_k,
        defaults.max_recent_items,
        defaults.api_key,
    ) == (10.0, 500, 100, 50, None)
    with pytest.raises(ValueError, match="RECSYS_POLL_SECONDS"):
        Settings.from_env({"RECSYS_POLL_SECONDS": "soon"})
