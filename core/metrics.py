"""Prometheus metrics. One registry per process; the worker serves it on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

TASKS = Counter(
    "aiwebimage_task_deliveries_total",
    "Task deliveries handled by this worker, by outcome and provider.",
    ["outcome", "provider"],
    registry=REGISTRY,
)
ATTEMPTS = Histogram(
    "aiwebimage_task_attempt",
    "Attempt number of each handled delivery.",
    buckets=(1, 2, 3, 4, 5, 7, 10, 20),
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "aiwebimage_provider_latency_seconds",
    "Time spent in the image model call.",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "aiwebimage_queue_depth",
    "Unfinished tasks by status (read from PostgreSQL at scrape time).",
    ["status"],
    registry=REGISTRY,
)


def record_delivery(provider: str, outcome: object, latency_s: float | None) -> None:
    TASKS.labels(outcome=getattr(outcome, "outcome", "unknown"), provider=provider).inc()
    attempt = getattr(outcome, "attempt", None)
    if attempt:
        ATTEMPTS.observe(attempt)
    if latency_s is not None:
        PROVIDER_LATENCY.labels(provider=provider).observe(latency_s)


def set_queue_depth(depth: dict[str, int]) -> None:
    for status in ("pending", "queued", "running"):
        QUEUE_DEPTH.labels(status=status).set(depth.get(status, 0))


def render() -> bytes:
    return generate_latest(REGISTRY)
