"""Token buckets: the table of ``local_rate_limit`` (runtime/filters/local_rate_limit.py), kept
here to be compiled with the layers (ratelimit.pxd): the filter is a subclass, and its
``on_request`` hook is this class's method, so the proxy calls it in C."""

from __future__ import annotations

from .stream import Stream


class Bucket:
    """Tokens left, and the loop time they were counted at."""

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp


class TokenBuckets:
    """Buckets refilled at ``rate`` tokens per second, holding at most ``burst`` tokens: one
    for every request, or one per descriptor (``per``: ``service``, ``method``,
    ``header:NAME``), at most ``max_buckets`` of them before the table starts again. A request
    that finds its bucket empty gets ``reject`` (and ``metrics.rate_limited`` counts it).

    The buckets read no clock: their time is each request's arrival on the event loop's clock
    (``Stream.arrived``), the runtime's one clock for behaviour, so whoever makes the streams
    or runs the loop drives it (tests simulate minutes of traffic in milliseconds,
    tests/runtime/test_rate_limit_time.py and tests/runtime/test_virtual_time.py)."""

    def __init__(self, rate: float, burst: float, per: tuple, max_buckets: int, reject,
                 metrics=None):  # fmt: skip
        self.rate = rate
        self.burst = burst
        self.per = per
        self.max_buckets = max_buckets
        self.reject = reject
        self.metrics = metrics
        self.table: dict = {}  # per descriptor
        self.bucket = None  # the only one, without descriptors
        self.cap = burst  # tokens a bucket holds at most (share)
        self.refill = rate  # tokens per second (share)
        self._share = 1.0

    @property
    def share(self) -> float:
        """This process's part of the limit: with N workers each takes 1/N of it."""
        return self._share

    @share.setter
    def share(self, value: float) -> None:
        self._share = value
        self.cap = self.burst * value
        self.refill = self.rate * value

    def descriptor(self, ctx: Stream) -> tuple:
        out = []
        for item in self.per:
            if item == "service":
                out.append(ctx.service)
            elif item == "method":
                out.append(ctx.method)
            else:
                out.append(ctx.header(item[7:]))
        return tuple(out)

    def on_request(self, ctx: Stream):
        """None while the request's bucket holds a token (it takes one), else ``reject``."""
        now = ctx.arrived  # the loop's time when the request arrived
        if self.per:
            key = self.descriptor(ctx)
            bucket = self.table.get(key)
            if bucket is None:  # a full bucket for a new descriptor
                if len(self.table) >= self.max_buckets:
                    self.table.clear()
                bucket = self.table[key] = Bucket(self.cap, now)
        else:
            bucket = self.bucket
            if bucket is None:
                bucket = self.bucket = Bucket(self.cap, now)
        if now > bucket.stamp:  # (a request held by a fault filter may arrive "earlier")
            tokens = bucket.tokens + (now - bucket.stamp) * self.refill
            bucket.tokens = tokens if tokens < self.cap else self.cap
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if self.metrics is not None:
            self.metrics.rate_limited(ctx)
        return self.reject
