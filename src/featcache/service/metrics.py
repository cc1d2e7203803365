"""Prometheus metrics with `prometheus_client`, on a registry of the app's own.

Route labels are route templates (``/v1/predictions/{key}``); every path that matches no
route counts under ``unmatched``, so the number of series stays bounded whatever clients
send. Under ``serve --workers N`` the processes share ``PROMETHEUS_MULTIPROC_DIR`` and
`/metrics` adds up every worker's counts.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE", "UNMATCHED", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The service's counters and histograms; `render` gives the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        r = self.registry
        self.requests = Counter(
            "featcache_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "featcache_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.body_bytes = Counter(
            "featcache_request_body_bytes", "Request body bytes read", registry=r
        )
        self.hits = Counter("featcache_cache_hits", "Images answered from the store", registry=r)
        self.misses = Counter("featcache_cache_misses", "Images that needed extraction", registry=r)
        self.answer_hits = Counter(
            "featcache_answer_cache_hits", "Answers served from the in-memory cache", registry=r
        )
        self.batch_size = Histogram(
            "featcache_extraction_batch_size",
            "Images per network batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.upload_failures = Counter(
            "featcache_upload_failures",
            "Uploaded files refused (too large, undecodable, ...), by status; counted here, "
            "never written to the store",
            ["status"],
            registry=r,
        )
        self.head_swaps = Counter(
            "featcache_head_swaps", "Times the served head changed", registry=r
        )
        # Children by label values, so a request costs a dict lookup, not a labels() call.
        self._counted: dict[tuple[str, int], Counter] = {}
        self._timed: dict[str, Histogram] = {}

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished request (any status) and its latency."""
        counter = self._counted.get((route, status))
        if counter is None:
            counter = self._counted[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()
        timer = self._timed.get(route)
        if timer is None:
            timer = self._timed[route] = self.latency.labels(route)
        timer.observe(seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
