"""``local_rate_limit``: token buckets, one for the listener or one per descriptor
(``per: [service, method, "header:NAME"]``); over the limit → 429."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictFloat, StrictStr, field_validator

from ..config import PositiveInt, invalid

from ..stream import Stream
from . import FilterConfig, Reject, StreamFilter, register

MAX_BUCKETS = 100_000  # distinct descriptors kept before the table is reset


class Config(FilterConfig):
    tokens_per_second: Annotated[StrictFloat, Field(gt=0)]
    burst: PositiveInt
    per: tuple[StrictStr, ...] = ()

    @field_validator("per")
    @classmethod
    def _descriptors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item not in ("service", "method") and not (
                item.startswith("header:") and len(item) > 7
            ):
                raise invalid(f"expected service, method or header:NAME, got {item!r}")
        return value


class Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp


@register("local_rate_limit")
class LocalRateLimit(StreamFilter):
    """Token buckets refilled at ``tokens_per_second``, holding at most ``burst`` tokens.

    The buckets read no clock: their time is each request's arrival on the event loop's clock
    (``Stream.arrived``), the runtime's one clock for behaviour, so whoever makes the streams
    or runs the loop drives it (tests simulate minutes of traffic in milliseconds,
    tests/runtime/test_rate_limit_time.py and tests/runtime/test_virtual_time.py)."""

    Config = Config

    def __init__(self, config: Config, metrics=None):
        super().__init__(config, metrics)
        self.rate = config.tokens_per_second
        self.burst = float(config.burst)
        self.per = config.per
        self.buckets: dict[tuple, Bucket] = {}  # per descriptor
        self.bucket: Bucket | None = None  # the listener's, without descriptors
        self.share = 1.0

    @property
    def share(self) -> float:
        """This process's part of the limit: with N workers each takes 1/N of it."""
        return self._share

    @share.setter
    def share(self, value: float) -> None:
        self._share = value
        self.cap = self.burst * value  # tokens a bucket holds at most
        self.refill = self.rate * value  # tokens per second

    def new_bucket(self, ctx: Stream, now: float) -> Bucket:
        """A full bucket for the request's descriptor (the listener's one without ``per``)."""
        bucket = Bucket(self.cap, now)
        if not self.per:
            self.bucket = bucket
        else:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets.clear()
            self.buckets[self.descriptor(ctx)] = bucket
        return bucket

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
        now = ctx.arrived  # the loop's time when the request arrived
        bucket = self.buckets.get(self.descriptor(ctx)) if self.per else self.bucket
        if bucket is None:
            bucket = self.new_bucket(ctx, now)
        elif now > bucket.stamp:  # (a request held by a fault filter may arrive "earlier")
            tokens = bucket.tokens + (now - bucket.stamp) * self.refill
            bucket.tokens = tokens if tokens < self.cap else self.cap
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if self.metrics is not None:
            self.metrics.rate_limited(ctx)
        return Reject(429, "protoc-x: 429 rate limited")
