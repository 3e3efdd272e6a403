"""``header_mutation``: add or remove request and response headers, Envoy-style. The frame is
re-encoded, so only protocols whose spec binds a writable header map can use it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ..stream import Stream
from . import FilterConfig, StreamFilter, register


class HeaderValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: Annotated[StrictStr, Field(min_length=1)]
    value: StrictStr
    append: StrictBool = False  # append to an existing value (comma-joined) instead of replacing


class Config(FilterConfig):
    request_headers_to_add: tuple[HeaderValue, ...] = ()
    request_headers_to_remove: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = ()
    response_headers_to_add: tuple[HeaderValue, ...] = ()
    response_headers_to_remove: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = ()


def _apply(frame, add, remove) -> bool:
    """Edit ``frame``'s headers; False when its layout has no header map (the codec's setters
    refuse with NotImplementedError, e.g. an answer that carries no attachments): such a frame
    passes unchanged."""
    try:
        for name in remove:
            frame.del_header(name)
        for h in add:
            old = frame.get_header(h.key) if h.append else None
            frame.set_header(h.key, f"{old},{h.value}" if old else h.value)
    except NotImplementedError:
        return False
    return True


@register("header_mutation")
class HeaderMutation(StreamFilter):
    Config = Config

    def __init__(self, config: Config, metrics=None):
        super().__init__(config, metrics)
        self.touches_responses = bool(
            config.response_headers_to_add or config.response_headers_to_remove
        )

    def check(self, protocol) -> str | None:
        if not protocol.writable_headers:
            return f"protocol {protocol.name!r} has no writable header map"
        return None

    def on_request(self, ctx: Stream):
        c = self.config
        if c.request_headers_to_add or c.request_headers_to_remove:
            if _apply(ctx.frame, c.request_headers_to_add, c.request_headers_to_remove):
                ctx.modified = True
        return None

    def on_response(self, ctx: Stream, frame) -> None:
        c = self.config
        if c.response_headers_to_add or c.response_headers_to_remove:
            _apply(frame, c.response_headers_to_add, c.response_headers_to_remove)
