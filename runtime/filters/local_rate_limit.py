"""``local_rate_limit``: token buckets, one for the listener or one per descriptor
(``per: [service, method, "header:NAME"]``); over the limit → 429."""

from __future__ import annotations

import time

from pydantic import Field, field_validator

from . import FilterConfig, Reject, RequestContext, StreamFilter, register

MAX_BUCKETS = 100_000  # distinct descriptors kept before the table is reset


class Config(FilterConfig):
    tokens_per_second: float = Field(gt=0)
    burst: int = Field(gt=0)
    per: tuple[str, ...] = ()

    @field_validator("per")
    @classmethod
    def _descriptors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item not in ("service", "method") and not (
                item.startswith("header:") and len(item) > 7
            ):
                raise ValueError(f"descriptor must be service, method or header:NAME, not {item!r}")
        return value


class Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp


@register("local_rate_limit")
class LocalRateLimit(StreamFilter):
    Config = Config

    def __init__(self, config: Config, metrics=None):
        super().__init__(config, metrics)
        self.rate = config.tokens_per_second
        self.burst = float(config.burst)
        self.buckets: dict[tuple, Bucket] = {}
        self.share = 1.0  # with N workers each takes 1/N of the rate

    def descriptor(self, ctx: RequestContext) -> tuple:
        out = []
        for item in self.config.per:
            if item == "service":
                out.append(ctx.service)
            elif item == "method":
                out.append(ctx.method)
            else:
                out.append(ctx.header(item[7:]))
        return tuple(out)

    def on_request(self, ctx: RequestContext):
        key = self.descriptor(ctx) if self.config.per else ()
        now = time.monotonic()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets.clear()
            bucket = self.buckets[key] = Bucket(self.burst * self.share, now)
        else:
            bucket.tokens = min(
                self.burst * self.share,
                bucket.tokens + (now - bucket.stamp) * self.rate * self.share,
            )
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if self.metrics is not None:
            self.metrics.rate_limited(ctx)
        return Reject(429, "protoc-x: 429 rate limited")
