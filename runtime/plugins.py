"""Plug-in packages: protocols, field types and stream filters that pip packages ship, found
through entry points without touching protoc-x (docs/api.md, "Plug-in packages").

=======================  =====================================  ==============================
group                    entry point name                       value
=======================  =====================================  ==============================
``protoc_x.protocols``   the protocol's name (``acme``)          a codec module exposing
                                                                ``PROTOCOL``, or the XProtocol
``protoc_x.fieldtypes``  the library's name as specs spell it   a module like those of
                         (``mylib`` of ``mylib.thing``)          ``runtime.fieldtypes``
``protoc_x.filters``     the filter's name in a config          a StreamFilter subclass
=======================  =====================================  ==============================

Each plug-in declares the ``API_VERSION`` it was built against at the top level of the module
its entry point names (a codec module, a field-type module, a filter class's module);
:func:`~protoc_x.runtime.api.check_api_version` refuses it when that is another major version,
a newer minor one, or missing. Every failure is a :class:`~protoc_x.runtime.api.PluginError`
whose message names the plug-in: ``plug-in 'acme' (protoc-x-acme 0.1.0)``.

Nothing is cached here: the entry points are listed when asked (a few ms) and Python keeps what
it imported. The callers are ``runtime.fieldtypes`` (a library by name),
``runtime.filters.filters()`` and ``protoc_x.loader`` (the protocols).
"""

from __future__ import annotations

import importlib
import keyword
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .api import PluginError, XProtocol, check_api_version

PROTOCOLS = "protoc_x.protocols"
FIELDTYPES = "protoc_x.fieldtypes"
FILTERS = "protoc_x.filters"

#: what each group's entry points name, in messages
WHAT = {PROTOCOLS: "protocol", FIELDTYPES: "field-type library", FILTERS: "filter"}

#: the names each group allows: as specs spell protocol and library names (no Python keyword
#: either), and a filter's name in a config
_NAMES = {
    PROTOCOLS: re.compile(r"[a-z][a-z0-9_]*"),
    FIELDTYPES: re.compile(r"[A-Za-z][A-Za-z0-9_]*"),
    FILTERS: re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*"),
}


@dataclass(frozen=True)
class Plugin:
    """One installed entry point of a protoc-x group."""

    group: str
    name: str
    value: str  # "package.module" or "package.module:attribute"
    dist: str  # "protoc-x-acme 0.1.0" (the value when no distribution is known)

    def __str__(self) -> str:
        return f"plug-in {self.name!r} ({self.dist})"

    @property
    def what(self) -> str:
        return WHAT[self.group]


def installed(group: str) -> dict[str, Plugin]:
    """Every installed plug-in of ``group`` by name. PluginError when two distributions claim
    the same name, or a name is not one the group allows."""
    out: dict[str, Plugin] = {}
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        plugin = Plugin(
            group,
            ep.name,
            ep.value,
            f"{dist.name} {dist.version}" if dist is not None else ep.value,
        )
        other = out.get(plugin.name)
        if other is not None and other != plugin:
            raise PluginError(
                f"{plugin.what} {plugin.name!r} is defined twice: by {other} and by {plugin}"
            )
        if not _NAMES[group].fullmatch(plugin.name) or (
            group != FILTERS and keyword.iskeyword(plugin.name)
        ):
            raise PluginError(f"{plugin}: {plugin.name!r} cannot be a {plugin.what}'s name")
        out[plugin.name] = plugin
    return out


def load(plugin: Plugin) -> Any:
    """Import what ``plugin``'s entry point names, once its module's ``API_VERSION`` is
    accepted. A module that fails to import is still refused for its version when it declared
    one before failing (a plug-in for another major version typically fails at an import)."""
    module_name, _, attr = plugin.value.partition(":")
    module_name = module_name.strip()
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # the plug-in's own code: whatever it raises
        declared = _declared_before(e, module_name)
        if declared is not None:
            check_api_version(str(plugin), declared)
        raise PluginError(f"{plugin} cannot load {plugin.value}: {type(e).__name__}: {e}") from None
    check_api_version(str(plugin), getattr(module, "API_VERSION", None))
    obj: Any = module
    for part in attr.strip().split(".") if attr.strip() else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{plugin}: {module_name} has no {attr.strip()}") from None
    return obj


def _declared_before(error: BaseException, module_name: str) -> Any:
    """The ``API_VERSION`` that module ``module_name`` had set when ``error`` stopped it
    (read from the traceback's frame of the module's own code), or None."""
    tb = error.__traceback__
    while tb is not None:
        scope = tb.tb_frame.f_globals
        if tb.tb_frame.f_code.co_name == "<module>" and scope.get("__name__") == module_name:
            return scope.get("API_VERSION")
        tb = tb.tb_next
    return None


def protocols() -> dict[str, tuple[XProtocol, Plugin]]:
    """Every installed protocol plug-in, loaded: name → (protocol, plug-in). The entry point
    names a codec module (its ``PROTOCOL``) or the XProtocol itself, whose ``name`` must be the
    entry point's."""
    out = {}
    for name, plugin in installed(PROTOCOLS).items():
        obj = load(plugin)
        proto = getattr(obj, "PROTOCOL", None) if not isinstance(obj, XProtocol) else obj
        if not isinstance(proto, XProtocol):
            raise PluginError(
                f"{plugin}: {plugin.value} is neither an XProtocol nor a module with one as "
                "PROTOCOL"
            )
        if proto.name != name:
            raise PluginError(
                f"{plugin}: its protocol is named {proto.name!r}: the entry point's name must "
                "be the protocol's"
            )
        out[name] = (proto, plugin)
    return out


def fieldtype_library(name: str, reserved: dict[str, str]) -> Any:
    """The installed field-type library ``name``, loaded and checked, or None when no plug-in
    has that name. ``reserved``: names a plug-in may not take, each with what has it."""
    plugin = installed(FIELDTYPES).get(name)
    if plugin is None:
        return None
    if name in reserved:
        raise PluginError(
            f"field-type library {name!r} is defined twice: {reserved[name]}, and by {plugin}"
        )
    module = load(plugin)
    from .fieldtypes.base import FieldType

    missing = [a for a in ("TYPES", "FUNCTIONS") if not isinstance(getattr(module, a, None), dict)]
    if not callable(getattr(module, "new_context", None)):
        missing.append("new_context()")
    if missing:
        raise PluginError(
            f"{plugin}: {plugin.value} is not a field-type module: it has no "
            f"{' or '.join(missing)}"
        )
    for type_name, cls in module.TYPES.items():
        if not (isinstance(cls, type) and issubclass(cls, FieldType)):
            raise PluginError(
                f"{plugin}: TYPES[{type_name!r}] is not a subclass of "
                "protoc_x.runtime.fieldtypes.FieldType"
            )
    return module


def filters(builtin: dict[str, type]) -> dict[str, type]:
    """Every installed filter plug-in, loaded: name → its StreamFilter subclass (``name`` set
    to the entry point's). ``builtin``: the filters protoc-x has, whose names are taken."""
    from .filters import StreamFilter

    out = {}
    for name, plugin in installed(FILTERS).items():
        if name in builtin:
            raise PluginError(f"filter {name!r} is defined twice: built in, and by {plugin}")
        cls = load(plugin)
        if not (isinstance(cls, type) and issubclass(cls, StreamFilter)):
            raise PluginError(
                f"{plugin}: {plugin.value} is not a subclass of "
                "protoc_x.runtime.filters.StreamFilter"
            )
        cls.name = name
        out[name] = cls
    return out
