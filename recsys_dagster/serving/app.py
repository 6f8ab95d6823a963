"""The HTTP API: `create_app(settings) -> FastAPI`.

Handlers are `async` and call the engine inline: a request is ~0.1-1 ms of CPU, cheaper than
a hop to the thread pool, and the process runs one engine thread per core anyway.
No `from __future__ import annotations` here: the request model is built per app, and
FastAPI must see the class itself, not a string, in the handler signature.
"""

import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from recsys_dagster.lake import Lake
from recsys_dagster.serving.engine import Engine
from recsys_dagster.serving.metrics import Metrics
from recsys_dagster.serving.schemas import recommendation_request_model
from recsys_dagster.serving.settings import Settings
from recsys_dagster.serving.store import BundleStore

access_log = logging.getLogger("recsys.serving.access")

OPEN_PATHS = ("/health", "/metrics")


class FastJSONResponse(Response):
    """json.dumps straight to bytes: skips FastAPI's jsonable_encoder / response-model pass,
    which costs more than the recommendation itself for a 10-item payload."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


class AccessLogMiddleware:
    """Pure ASGI: one JSON log line and the metrics per request (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint=endpoint, method=scope["method"], status=str(status["code"])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                access_log.info(
                    json.dumps(
                        {
                            "path": scope["path"],
                            "method": scope["method"],
                            "status": status["code"],
                            "latency_ms": round(elapsed * 1000, 3),
                            "user_id": state.get("user_id"),
                            "model_version": state.get("model_version"),
                            "fallback": state.get("fallback"),
                        },
                        separators=(",", ":"),
                    )
                )


def create_app(settings: Settings | None = None, *, store: BundleStore | None = None, poll: bool = True) -> FastAPI:
    """The serving app. `poll=False` skips the background poller (tests call `reload_now()`)."""
    settings = settings or Settings.from_env()
    metrics = Metrics()
    if store is None:
        lake = Lake.from_uri(settings.lake_uri, endpoint_url=settings.s3_endpoint_url)

        def loader(path, version):
            return Engine.from_dir(path, version, candidates=settings.candidates, threads=settings.threads)

        store = BundleStore(
            lake, settings.cache_dir, poll_seconds=settings.poll_seconds, metrics=metrics, loader=loader
        )
    else:
        store.metrics = metrics
        if store.engine is not None:
            metrics.set_bundle(store.engine.version)
    RecommendationRequest = recommendation_request_model(settings.max_k, settings.max_recent_items)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if poll:
            store.start()
        try:
            yield
        finally:
            store.stop()

    # async on purpose: a sync dependency is run in the thread pool, a ~1 ms hop per request.
    async def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None or not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or invalid X-API-Key header")

    def current_engine(request: Request) -> Engine:
        engine = store.engine  # read once: a swap mid-request does not affect this request
        if engine is None:
            raise HTTPException(
                status_code=503,
                detail={"error": "no_bundle", "message": "no promoted model bundle is loaded yet", **store.status()},
            )
        request.state.model_version = engine.version
        return engine

    app = FastAPI(title="recsys serving", version="1", lifespan=lifespan)
    app.state.store = store
    app.state.metrics = metrics
    app.state.settings = settings
    app.add_middleware(AccessLogMiddleware, metrics=metrics)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", dependencies=[Depends(require_key)])
    async def ready() -> JSONResponse:
        status = store.status()
        ok = status["version"] is not None
        return JSONResponse({"ready": ok, **status}, status_code=200 if ok else 503)

    @app.get("/version", dependencies=[Depends(require_key)])
    async def version() -> dict[str, Any]:
        engine = store.engine
        status = store.status()
        return {
            **status,
            "n_items": engine.n_items if engine else None,
            "embedding_dim": engine.dim if engine else None,
            "index_type": engine.manifest.get("index_type") if engine else None,
            "created_at": engine.manifest.get("created_at") if engine else None,
        }

    @app.post("/recommendations", dependencies=[Depends(require_key)])
    async def recommendations(body: RecommendationRequest, request: Request) -> Response:
        started = time.perf_counter()
        request.state.user_id = body.user_id
        engine = current_engine(request)
        rec = engine.recommend(
            body.user_id,
            recent_items=body.recent_items,
            k=body.k,
            exclude_seen=body.exclude_seen,
            filters=body.filters.to_filters() if body.filters else None,
            diversity_cap=body.diversity_cap,
            popularity_penalty=body.popularity_penalty,
            device=body.device,
            hour=body.hour,
        )
        request.state.fallback = rec.fallback
        if rec.fallback:
            metrics.fallbacks.labels(reason=rec.fallback).inc()
        if rec.topped_up:
            metrics.topped_up.inc(rec.topped_up)
        return FastJSONResponse(
            {
                "user_id": body.user_id,
                "model_version": rec.model_version,
                "items": rec.items,
                "fallback": {"reason": rec.fallback} if rec.fallback else None,
                "source": rec.source,
                "unknown_items": rec.unknown_items,
                "topped_up": rec.topped_up,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    @app.get("/items/{item_id}/similar", dependencies=[Depends(require_key)])
    async def similar(item_id: str, request: Request, k: int = Query(10, ge=1, le=settings.max_k)) -> Response:
        engine = current_engine(request)
        try:
            items = engine.similar(item_id, k)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"unknown item_id {item_id!r}") from None
        return FastJSONResponse({"item_id": item_id, "model_version": engine.version, "items": items})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
