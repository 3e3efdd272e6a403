"""The field-type library: value encodings of other serialization formats that specs use as
field types (``hessian2.string``, ``thrift.field(1, "i32")``, ``tars.int(4)``, ``varint.signed``,
``json.object[n]``).

Each library is a module that exports ``TYPES`` (name → a :class:`FieldType` subclass, whose
docstring says what the compiler and the generated code ask of it), ``FUNCTIONS`` (helpers spec
expressions may call) and ``new_context()`` (the per-message state passed as ``ctx`` to every
field of one message, or None). Field types encode one value each; message layouts belong to
the specs.

The built-in libraries are :data:`MODULES`; a plug-in package adds one through the
``protoc_x.fieldtypes`` entry point group (runtime/plugins.py). :func:`library` finds either,
and so does an attribute of this package: generated code imports a library as
``from protoc_x.runtime.fieldtypes import NAME``, built in or not.
"""

from __future__ import annotations

from types import ModuleType

from . import hessian2, json, tars, texts, thrift, varint
from .base import VALUES, FieldType

#: library name (as specs spell it) → module: the built-in ones
MODULES: dict[str, ModuleType] = {
    "hessian2": hessian2,
    "thrift": thrift,
    "tars": tars,
    "varint": varint,
    "texts": texts,
    "json": json,
}


def library(name: str) -> ModuleType | None:
    """The field-type library ``name``: built in, or an installed plug-in's (loaded and
    checked: :class:`~protoc_x.runtime.api.PluginError` when it is refused); None when there
    is none. A plug-in may not take a name this package has (a built-in library, ``base``):
    asking for that name is then an error naming both."""
    from ..plugins import fieldtype_library

    reserved = {n: f"protoc_x.runtime.fieldtypes.{n}" for n in globals() if not n.startswith("_")}
    reserved.update((n, "built in") for n in MODULES)
    return fieldtype_library(name, reserved) or MODULES.get(name)


def library_names() -> list[str]:
    """The names of the built-in and the installed libraries (plug-ins listed, not loaded)."""
    from ..plugins import FIELDTYPES, installed

    return sorted(set(MODULES) | set(installed(FIELDTYPES)))


def __getattr__(name: str) -> ModuleType:
    """A plug-in's library as an attribute, for generated code's import of it."""
    module = None if name.startswith("_") else library(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return module


__all__ = [
    "MODULES",
    "VALUES",
    "FieldType",
    "hessian2",
    "json",
    "library",
    "library_names",
    "tars",
    "texts",
    "thrift",
    "varint",
]
