"""Metrics in Prometheus' data model (prometheus-client), one registry per proxy. Children are
cached per label set so the per-request cost is a dict lookup and an increment."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "protocx_requests", "Requests answered, by runtime code",
            ["listener", "protocol", "service", "method", "cluster", "code"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "protocx_request_duration_seconds", "Time from request to answer",
            ["listener", "protocol", "cluster"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.downstream = Gauge(
            "protocx_downstream_connections",
            "Open downstream connections",
            ["listener"],
            registry=r,
        )
        self.upstream = Gauge(
            "protocx_upstream_connections", "Open upstream connections", ["cluster", "endpoint"],
            registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "protocx_pool_pending_requests", "Requests waiting for an upstream connection",
            ["cluster"], registry=r,
        )  # fmt: skip
        self.active = Gauge(
            "protocx_pool_active_requests", "Requests in flight upstream", ["cluster"], registry=r
        )
        self.rate_limited_total = Counter(
            "protocx_rate_limited", "Requests refused by local_rate_limit", ["listener", "protocol"],
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "protocx_retries", "Requests retried on another endpoint", ["cluster"], registry=r
        )
        self.overflow = Counter(
            "protocx_circuit_breaker_overflow",
            "Requests refused by a cluster's circuit breakers", ["cluster", "breaker"], registry=r,
        )  # fmt: skip
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels):
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def request_done(self, listener, protocol, service, method, cluster, code, seconds) -> None:
        self.child(
            self.requests, listener, protocol, service or "", method or "", cluster or "", str(code)
        ).inc()
        self.child(self.duration, listener, protocol, cluster or "").observe(seconds)

    def rate_limited(self, ctx) -> None:
        self.child(self.rate_limited_total, ctx.listener, ctx.protocol.name).inc()

    def retried(self, cluster: str) -> None:
        self.child(self.retries, cluster).inc()

    def overflowed(self, cluster: str, breaker: str) -> None:
        self.child(self.overflow, cluster, breaker).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
