"""Prometheus metrics: counters kept by the domain and hub are read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .hub import Hub
from .jobs import JobService
from .models import Status

STREAM_ROUTES = frozenset({"/v1/ws", "/v1/events"})


class _DomainCollector(Collector):
    def __init__(self, service: JobService, hub: Hub) -> None:
        self.service = service
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("dubsim_jobs", "Jobs by status", labels=["status"])
        counts = dict.fromkeys(Status, 0)
        for record in self.service.jobs.values():
            counts[record.job.status] += 1
        for status, n in counts.items():
            jobs.add_metric([status.value], n)
        yield jobs
        submitted = CounterMetricFamily(
            "dubsim_submissions", "Accepted jobs by plan", labels=["plan"]
        )
        for role, n in self.service.submitted.items():
            submitted.add_metric([role.value], n)
        yield submitted
        yield CounterMetricFamily(
            "dubsim_rate_limited",
            "Submissions refused by the rate limit",
            value=self.service.rate_limited,
        )
        subs = GaugeMetricFamily(
            "dubsim_subscribers", "Connected subscribers", labels=["transport"]
        )
        for name in ("ws", "sse", "poll"):
            subs.add_metric([name], self.hub.count(name))
        yield subs
        yield CounterMetricFamily("dubsim_events_published", "Events", value=self.hub.published)
        yield CounterMetricFamily(
            "dubsim_slow_consumers", "Subscribers closed as slow", value=self.hub.slow_consumers
        )
        yield CounterMetricFamily(
            "dubsim_replays", "Resumes from the buffer", value=self.hub.replays
        )
        yield CounterMetricFamily(
            "dubsim_resets", "Resumes that needed a reset", value=self.hub.resets
        )
        yield GaugeMetricFamily("dubsim_seq", "Current event sequence number", value=self.hub.seq)


class Metrics:
    """One registry per app, so tests can build many apps in one process."""

    def __init__(self, service: JobService, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DomainCollector(service, hub))
        self.latency = Histogram(
            "dubsim_request_seconds",
            "Request latency by route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            if route in STREAM_ROUTES:
                return await handler(request)
            start = time.perf_counter()
            try:
                return await handler(request)
            finally:
                self.latency.labels(request.method, route).observe(time.perf_counter() - start)

        return measure
