"""Metrics in Prometheus' data model (prometheus-client), one registry per proxy. Children are
cached per label set so the per-request cost is a dict lookup and an increment."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)


class Metrics:
    def __init__(self, worker: int = 0, shared: str | None = None) -> None:
        self.worker = worker
        self.shared = shared  # with several workers: where they leave their counts
        r = self.registry = CollectorRegistry()
        # The per-request metrics are counted in one plain dict and handed to prometheus-client
        # when scraped: no lock and no label lookup on the request path. A cell per label set
        # (listener, protocol, service, method, cluster, code) holds its duration histogram:
        # [count per bucket (the last is +Inf)..., sum of seconds]; its request count is the
        # sum of the buckets.
        self.cells: dict[tuple, list] = {}
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
        key = (listener, protocol, service, method, cluster, code)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0] * (len(BUCKETS) + 2)
        cell[bisect_left(BUCKETS, seconds)] += 1
        cell[-1] += seconds

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
        data = [[list(k), v] for k, v in self.cells.items()]
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    def merged(self) -> dict[tuple, list]:
        """This process's cells plus the other workers' last dumps."""
        cells = {k: list(v) for k, v in self.cells.items()}
        if self.shared is None:
            return cells
        import glob
        import json

        for path in glob.glob(f"{self.shared}/worker-*.json"):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            for key, cell in data:
                mine = cells.setdefault(tuple(key), [0] * len(cell))
                for i, v in enumerate(cell):
                    mine[i] += v
        return cells


class _RequestCollector:
    """protocx_requests_total and protocx_request_duration_seconds, from the cells."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        requests = CounterMetricFamily(
            "protocx_requests", "Requests answered, by runtime code",
            labels=["listener", "protocol", "service", "method", "cluster", "code"],
        )  # fmt: skip
        durations: dict[tuple, list] = {}  # (listener, protocol, cluster) → summed cells
        for key, cell in self.metrics.merged().items():
            listener, protocol, service, method, cluster, code = key
            labels = [listener, protocol, service or "", method or "", cluster or "", str(code)]
            requests.add_metric(labels, sum(cell[:-1]))
            summed = durations.setdefault((listener, protocol, cluster or ""), [0] * len(cell))
            for i, v in enumerate(cell):
                summed[i] += v
        yield requests
        duration = HistogramMetricFamily(
            "protocx_request_duration_seconds", "Time from request to answer",
            labels=["listener", "protocol", "cluster"],
        )  # fmt: skip
        for key, h in durations.items():
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKETS + (float("inf"),), h[:-1]):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            duration.add_metric(list(key), buckets, h[-1])
        yield duration
