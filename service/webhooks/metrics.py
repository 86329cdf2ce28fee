"""The webhook engine's Prometheus collector (the metrics are in docs/webhooks.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .engine import WebhookService

QUEUE_LABELS: Final = 20  # endpoints named in the queue-depth metric; the rest are "other"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


class _Collector(Collector):
    def __init__(self, engine: WebhookService) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        outcomes = CounterMetricFamily(
            "dubsim_webhook_deliveries",
            "Webhook delivery outcomes (succeeded, failed_attempt, failed: past the schedule or "
            "410, lost: events gone from the log before delivery)",
            labels=["outcome"],
        )
        for outcome in ("succeeded", "failed_attempt", "failed", "lost"):
            outcomes.add_metric([outcome], engine.outcomes.get(outcome, 0))
        yield outcomes
        for name, text, series in (
            ("dubsim_webhook_attempt_seconds", "Successful attempt latency", engine.latency),
            ("dubsim_webhook_lag_seconds", "Event commit to delivered", engine.lag),
        ):
            family = HistogramMetricFamily(name, text)
            cumulative, buckets = 0.0, []
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), series[:-1], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            family.add_metric([], buckets, series[-1])
            yield family
        depth = GaugeMetricFamily(
            "dubsim_webhook_queue_depth",
            f"Deliveries waiting per endpoint (the {QUEUE_LABELS} deepest; the rest as other)",
            labels=["endpoint"],
        )
        for endpoint_id, n in engine.queue_depths():
            depth.add_metric([endpoint_id], n)
        yield depth
