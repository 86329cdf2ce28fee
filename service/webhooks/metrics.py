"""What the webhook engine counts, and its Prometheus collector (the metrics: docs/webhooks.md)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

QUEUE_LABELS: Final = 20  # endpoints named in the queue-depth metric; the rest are "other"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)


class DeliveryMetrics:
    """Delivery outcomes, attempt latency and commit-to-delivered lag, as the engine sends."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.latency = [0.0] * (len(LATENCY_BUCKETS) + 2)  # counts per bucket, +Inf, sum
        self.lag = [0.0] * (len(LATENCY_BUCKETS) + 2)  # event commit -> delivered

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @staticmethod
    def observe(series: list[float], seconds: float) -> None:
        index = 0
        while index < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[index]:
            index += 1
        series[index] += 1
        series[-1] += seconds


class _Collector(Collector):
    def __init__(
        self, metrics: DeliveryMetrics, queue_depths: Callable[[], list[tuple[str, int]]]
    ) -> None:
        self.metrics = metrics
        self.queue_depths = queue_depths  # the engine's: it knows the workers

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        outcomes = CounterMetricFamily(
            "dubsim_webhook_deliveries",
            "Webhook delivery outcomes (succeeded, failed_attempt, failed: past the schedule or "
            "410, lost: events gone from the log before delivery)",
            labels=["outcome"],
        )
        for outcome in ("succeeded", "failed_attempt", "failed", "lost"):
            outcomes.add_metric([outcome], metrics.outcomes.get(outcome, 0))
        yield outcomes
        for name, text, series in (
            ("dubsim_webhook_attempt_seconds", "Successful attempt latency", metrics.latency),
            ("dubsim_webhook_lag_seconds", "Event commit to delivered", metrics.lag),
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
        for endpoint_id, n in self.queue_depths():
            depth.add_metric([endpoint_id], n)
        yield depth
