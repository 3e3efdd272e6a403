"""Metrics in Prometheus' data model (prometheus-client), one registry per proxy. Children are
cached per label set so the per-request cost is a dict lookup and an increment."""

from __future__ import annotations

import bisect

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, worker: int = 0, shared: str | None = None) -> None:
        self.worker = worker
        self.shared = shared  # with several workers: where they leave their counts
        r = self.registry = CollectorRegistry()
        # The per-request metrics are counted in plain dicts and handed to prometheus-client
        # when scraped: no lock and no label lookup on the request path.
        self.counts: dict[tuple, int] = {}
        self.durations: dict[tuple, list] = {}  # labels → [bucket counts..., sum]
        r.register(_RequestCollector(self))
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
        key = (listener, protocol, service or "", method or "", cluster or "", code)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        hkey = (listener, protocol, cluster or "")
        h = self.durations.get(hkey)
        if h is None:
            h = self.durations[hkey] = [0] * (len(BUCKETS) + 2)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds

    def rate_limited(self, ctx) -> None:
        self.child(self.rate_limited_total, ctx.listener, ctx.protocol.name).inc()

    def retried(self, cluster: str) -> None:
        self.child(self.retries, cluster).inc()

    def overflowed(self, cluster: str, breaker: str) -> None:
        self.child(self.overflow, cluster, breaker).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    # -- several workers: others write their request counts, worker 0 adds them up ----------
    def start_sharing(self) -> None:
        import asyncio

        loop = asyncio.get_event_loop()

        def dump() -> None:
            self.dump()
            loop.call_later(0.5, dump)

        loop.call_later(0.5, dump)

    def dump(self) -> None:
        import json
        import os

        path = os.path.join(self.shared, f"worker-{self.worker}.json")
        data = {"counts": [[list(k), v] for k, v in self.counts.items()],
                "durations": [[list(k), v] for k, v in self.durations.items()]}  # fmt: skip
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    def merged(self) -> tuple[dict, dict]:
        """This process's counts plus the other workers' last dumps."""
        counts = dict(self.counts)
        durations = {k: list(v) for k, v in self.durations.items()}
        if self.shared is None:
            return counts, durations
        import glob
        import json

        for path in glob.glob(f"{self.shared}/worker-*.json"):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            for key, value in data["counts"]:
                key = tuple(key)
                counts[key] = counts.get(key, 0) + value
            for key, h in data["durations"]:
                key = tuple(key)
                mine = durations.setdefault(key, [0] * len(h))
                for i, v in enumerate(h):
                    mine[i] += v
        return counts, durations


class _RequestCollector:
    """protocx_requests_total and protocx_request_duration_seconds, from the counts."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        requests = CounterMetricFamily(
            "protocx_requests", "Requests answered, by runtime code",
            labels=["listener", "protocol", "service", "method", "cluster", "code"],
        )  # fmt: skip
        counts, durations = self.metrics.merged()
        for key, value in counts.items():
            requests.add_metric([str(k) for k in key], value)
        yield requests
        duration = HistogramMetricFamily(
            "protocx_request_duration_seconds", "Time from request to answer",
            labels=["listener", "protocol", "cluster"],
        )  # fmt: skip
        for key, h in durations.items():
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKETS + (float("inf"),), h[:-1]):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            duration.add_metric(list(key), buckets, h[-1])
        yield duration
