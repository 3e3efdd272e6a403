"""Metrics in Prometheus' data model (prometheus-client), one registry per proxy. Children are
cached per label set so the per-request cost is a dict lookup and an increment."""

from __future__ import annotations

import os
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from . import built

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
           2.5, 5, 10)  # fmt: skip
_COMPILED = built(__file__)  # (this module, compiled by Cython)
N = len(BUCKETS) + 1  # counts per label set: one per bucket, and +Inf (metrics.pxd says 17)


class Cell:
    """The answers of one label set: how many fell in each duration bucket (the last: +Inf),
    and their seconds summed (compiled: C numbers, metrics.pxd)."""

    def __init__(self, service, method, cluster, code: int):
        self.service = service
        self.method = method
        self.cluster = cluster
        self.code = code
        zeros = [0] * N  # (compiled: copied into the C array, which a bare [0] * N is not)
        self.counts = zeros
        self.seconds = 0.0

    def matches(self, service, method, cluster, code: int) -> bool:
        """Whether an answer with these labels (and this cell's listener and protocol) is
        counted here."""
        return (
            code == self.code
            and service == self.service
            and method == self.method
            and cluster == self.cluster
        )

    def add(self, seconds: float) -> None:
        """Count an answer that took ``seconds`` (the bucket: bisect_left of BUCKETS, which
        the compiled module searches in C)."""
        if not _COMPILED:  # (the Python source: bisect's C beats a loop of Python)
            self.counts[bisect_left(BUCKETS, seconds)] += 1
            self.seconds += seconds
            return
        bounds = BUCKETS
        lo = 0
        hi = len(bounds)
        while lo < hi:
            mid = (lo + hi) // 2
            bound = bounds[mid]
            if bound < seconds:
                lo = mid + 1
            else:
                hi = mid
        self.counts[lo] += 1
        self.seconds += seconds


class Metrics:
    def __init__(self, worker: int = 0, shared: str | None = None) -> None:
        self.worker = worker
        self.shared = shared  # with several workers: their multiprocess files' directory
        self._files: dict[str, object] = {}  # with several workers: kind → this worker's file
        self._keys: dict[tuple, str] = {}  # (sample name, *labels) → its key in the files
        r = self.registry = CollectorRegistry()
        # The per-request metrics are counted in cells (a Cell per label set: listener,
        # protocol, service, method, cluster, code) handed to prometheus-client when scraped:
        # no lock and no label lookup on the request path (a connection keeps the cell of its
        # last answer, proxy.py's deliver).
        self.cells: dict[tuple, Cell] = {}
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

    def cell(self, listener, protocol, service, method, cluster, code) -> "Cell":
        """The cell counting the answers of this label set."""
        key = (listener, protocol, service, method, cluster, code)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell(service, method, cluster, code)
        return cell

    def request_done(self, listener, protocol, service, method, cluster, code, seconds) -> None:
        self.cell(listener, protocol, service, method, cluster, code).add(seconds)

    def rate_limited(self, ctx) -> None:
        self.child(self.rate_limited_total, ctx.listener, ctx.protocol.name).inc()

    def retried(self, cluster: str) -> None:
        self.child(self.retries, cluster).inc()

    def overflowed(self, cluster: str, breaker: str) -> None:
        self.child(self.overflow, cluster, breaker).inc()

    def text(self) -> bytes:
        if self.shared is not None:
            return self.summed_text()
        return generate_latest(self.registry)

    # -- several workers ------------------------------------------------------------------
    # Each worker keeps counting in its own registry (no lock, no file write per request) and
    # publishes every metric's value into its own prometheus-client multiprocess files in
    # ``shared`` (counter_<worker>.db, histogram_<worker>.db, gauge_livesum_<worker>.db) every
    # PUBLISH_S and when it stops; worker 0 publishes its own at each scrape, and
    # prometheus-client's MultiProcessCollector sums every counter, histogram and gauge over
    # the workers' files.
    PUBLISH_S = 0.25

    def start_publishing(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.publish()
            self._tick = loop.call_later(self.PUBLISH_S, tick)

        tick()

    def stop_publishing(self) -> None:
        """The last values, then no more."""
        tick = getattr(self, "_tick", None)
        if tick is not None:
            tick.cancel()
        self.publish()

    def publish(self) -> None:
        """Write this worker's current value of every sample of every metric to its files."""
        from prometheus_client.mmap_dict import MmapedDict, mmap_key

        files, keys = self._files, self._keys
        for family in self.registry.collect():
            kind = "gauge_livesum" if family.type == "gauge" else family.type
            out = files.get(kind)
            if out is None:
                # made under another name: a scrape never reads a file being initialised
                path = f"{self.shared}/{kind}_{self.worker}.db"
                out = files[kind] = MmapedDict(path + ".new")
                os.replace(path + ".new", path)
            below: dict[tuple, float] = {}  # a histogram's cumulative count so far, by labels
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if name.endswith("_created") or (kind == "histogram" and name.endswith("_count")):
                    continue  # (the collector counts a histogram from its buckets)
                if kind == "histogram" and "le" in labels:  # the files hold each bucket alone
                    rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    value, below[rest] = value - below.get(rest, 0.0), value
                key = keys.get((name, *labels.items()))
                if key is None:
                    key = keys[(name, *labels.items())] = mmap_key(
                        family.name, name, list(labels), list(labels.values()), family.documentation
                    )
                out.write_value(key, value, 0.0)

    def summed_text(self) -> bytes:
        """Every worker's metrics, summed (worker 0's /metrics)."""
        from prometheus_client.multiprocess import MultiProcessCollector

        self.publish()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.shared)
        return generate_latest(registry)

    def answered(self) -> dict[int, int]:
        """Requests this process answered, by runtime code (a worker's log line at stop)."""
        codes: dict[int, int] = {}
        for key, cell in self.cells.items():
            codes[key[-1]] = codes.get(key[-1], 0) + sum(cell.counts)
        return codes


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
        for key, cell in self.metrics.cells.items():
            listener, protocol, service, method, cluster, code = key
            labels = [listener, protocol, service or "", method or "", cluster or "", str(code)]
            requests.add_metric(labels, sum(cell.counts))
            # [count per bucket (the last is +Inf)..., sum of seconds]
            summed = durations.setdefault((listener, protocol, cluster or ""), [0] * (N + 1))
            for i, v in enumerate(cell.counts):
                summed[i] += v
            summed[N] += cell.seconds
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
