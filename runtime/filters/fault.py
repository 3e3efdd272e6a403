"""``fault``: Envoy's fault injection — delay a share of requests, or answer a share at once
with a runtime code."""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from ..api import RUNTIME_CODES
from ..config import NonNegativeInt, invalid
from ..stream import Stream

from . import FilterConfig, Pause, Reject, StreamFilter, register


class Delay(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed_delay_ms: NonNegativeInt
    percent: Annotated[StrictFloat, Field(ge=0, le=100)] = 100


class Abort(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: StrictInt
    percent: Annotated[StrictFloat, Field(ge=0, le=100)] = 100

    @field_validator("code")
    @classmethod
    def _runtime_code(cls, value: int) -> int:
        if value not in RUNTIME_CODES or value == 200:
            raise invalid(
                f"must be a runtime error code ({', '.join(map(str, RUNTIME_CODES[1:]))}), "
                f"got {value}"
            )
        return value


class Config(FilterConfig):
    delay: Delay | None = None
    abort: Abort | None = None


@register("fault")
class Fault(StreamFilter):
    Config = Config

    def __init__(self, config: Config, metrics=None):
        super().__init__(config, metrics)
        self.rng = random.Random()

    def on_request(self, ctx: Stream):
        c = self.config
        if c.abort is not None and self.rng.random() * 100 < c.abort.percent:
            return Reject(c.abort.code, f"protoc-x: {c.abort.code} fault injected")
        if c.delay is not None and self.rng.random() * 100 < c.delay.percent:
            return Pause(c.delay.fixed_delay_ms / 1000)
        return None
