"""Prometheus metrics, one CollectorRegistry per app (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Down to 0.5 ms: the latency target is p99 < 10 ms, so the interesting range is small.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("recsys_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram(
            "recsys_request_latency_seconds", "HTTP request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.fallbacks = Counter(
            "recsys_fallbacks_total", "Recommendations served from a fallback", ["reason"], registry=r
        )
        self.topped_up = Counter(
            "recsys_topped_up_items_total", "Items filled from popularity after re-ranking", registry=r
        )
        self.bundle_info = Gauge("recsys_bundle_info", "The bundle being served (value 1)", ["version"], registry=r)
        self.reloads = Counter("recsys_bundle_reloads_total", "Bundles loaded and swapped in", registry=r)
        self.reload_failures = Counter(
            "recsys_bundle_reload_failures_total", "Bundles refused (verification or load failed)", registry=r
        )
        self.bundle_load_seconds = Gauge(
            "recsys_bundle_load_seconds", "Fetch + load time of the last bundle swapped in", registry=r
        )

    def set_bundle(self, version: str) -> None:
        self.bundle_info.clear()
        self.bundle_info.labels(version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
