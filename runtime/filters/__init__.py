"""Stream filters: per-listener chains that see each request before and after routing, and
its response. A filter is a class registered by name with :func:`register`; every module of
this package is imported when filters are first needed, so adding a filter is adding a file.

A hook returns ``None`` to continue, :class:`Reject` to answer the request at once with a
runtime code (the spec turns it into the protocol's own error frame), or :class:`Pause` to hold
the request for a while and then continue (fault injection)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

REGISTRY: dict[str, type["StreamFilter"]] = {}


def register(name: str):
    def add(cls: type["StreamFilter"]) -> type["StreamFilter"]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def filters() -> dict[str, type["StreamFilter"]]:
    """Every registered filter, importing this package's modules on first use."""
    if not getattr(filters, "loaded", False):
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        filters.loaded = True  # type: ignore[attr-defined]
    return REGISTRY


@dataclass(frozen=True)
class Reject:
    """Answer now with the protocol's error for ``code``."""

    code: int
    message: str | None = None


@dataclass(frozen=True)
class Pause:
    """Continue after ``seconds``."""

    seconds: float


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestContext:
    """What filters see of one request."""

    __slots__ = ("frame", "protocol", "listener", "service", "method", "extra_headers", "cluster",
                 "modified")  # fmt: skip

    def __init__(self, frame, protocol, listener: str, service, method):
        self.frame = frame
        self.protocol = protocol
        self.listener = listener
        self.service = service
        self.method = method
        self.extra_headers: dict[str, str] | None = None  # seen by routing, not forwarded
        self.cluster: str | None = None
        self.modified = False  # the request frame changed: it must be re-encoded

    def header(self, name: str) -> Any:
        extra = self.extra_headers
        if extra is not None and name in extra:
            return extra[name]
        return self.frame.get_header(name)


class StreamFilter:
    """Base class. ``Config`` is the pydantic model of the filter's ``config`` mapping."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[FilterConfig]] = FilterConfig
    #: the filter changes response frames (they must be decoded and re-encoded)
    touches_responses: ClassVar[bool] = False

    def __init__(self, config: FilterConfig, metrics=None):
        self.config = config
        self.metrics = metrics

    def check(self, protocol) -> str | None:
        """Why this filter cannot work with ``protocol`` (checked at load), or None."""
        return None

    def on_request(self, ctx: RequestContext) -> Reject | Pause | None:
        return None

    def on_routed(self, ctx: RequestContext) -> Reject | Pause | None:
        return None

    def on_response(self, ctx: RequestContext, frame) -> None:
        return None
