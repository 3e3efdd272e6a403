"""``local_rate_limit``: token buckets, one for the listener or one per descriptor
(``per: [service, method, "header:NAME"]``); over the limit → 429."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictFloat, StrictStr, field_validator

from ..config import PositiveInt, invalid

from ..ratelimit import TokenBuckets
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


@register("local_rate_limit")
class LocalRateLimit(TokenBuckets, StreamFilter):
    """Token buckets refilled at ``tokens_per_second``, holding at most ``burst`` tokens
    (runtime/ratelimit.py, compiled with the runtime: the hook ``on_request`` is its method)."""

    Config = Config

    def __init__(self, config: Config, metrics=None):
        StreamFilter.__init__(self, config, metrics)
        TokenBuckets.__init__(
            self,
            config.tokens_per_second,
            float(config.burst),
            config.per,
            MAX_BUCKETS,
            Reject(429, "protoc-x: 429 rate limited"),
            metrics,
        )
