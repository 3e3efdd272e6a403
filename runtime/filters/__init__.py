"""Stream filters: per-listener chains that see each request before and after routing, and
its response. A filter is a class registered by name with :func:`register`; every module of
this package is imported when filters are first needed, so adding a filter is adding a file.
A plug-in package adds one through the ``protoc_x.filters`` entry point group instead
(runtime/plugins.py): its entry point's name is the filter's, and it does not call ``register``.

A hook returns ``None`` to continue, :class:`Reject` to answer the request at once with a
runtime code (the spec turns it into the protocol's own error frame), or :class:`Pause` to hold
the request for a while and then continue (fault injection)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from ..stream import Stream

REGISTRY: dict[str, type["StreamFilter"]] = {}


def register(name: str):
    def add(cls: type["StreamFilter"]) -> type["StreamFilter"]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def filters() -> dict[str, type["StreamFilter"]]:
    """Every filter, built in or an installed plug-in's, importing this package's modules and
    loading the plug-ins on first use. A plug-in that is refused, or takes a built-in filter's
    name, raises :class:`~protoc_x.runtime.api.PluginError` (each time: it is never skipped)."""
    if not getattr(filters, "loaded", False):
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        from ..plugins import filters as plugin_filters

        REGISTRY.update(plugin_filters(REGISTRY))
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
    """A filter's ``config``: unknown keys refused; declare fields with strict types
    (``StrictInt``, ``StrictFloat``, ``StrictBool``, ``StrictStr``) so that ``'5'``, ``5.0``
    and ``'yes'`` are refused like everywhere else in the config. A file the config names is
    relative to the config file (``protoc_x.runtime.config.config_file``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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

    def on_request(self, ctx: Stream) -> Reject | Pause | None:
        return None

    def on_routed(self, ctx: Stream) -> Reject | Pause | None:
        return None

    def on_response(self, ctx: Stream, frame) -> None:
        return None
