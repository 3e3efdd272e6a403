"""The field-type library: value encodings of other serialization formats that specs use as
field types (``hessian2.string``, ``thrift.field(1, "i32")``, ``tars.int(4)``, ``varint.signed``,
``json.object[n]``).

Each library is a module that exports ``TYPES`` (name → a :class:`FieldType` subclass, whose
docstring says what the compiler and the generated code ask of it), ``FUNCTIONS`` (helpers spec
expressions may call) and ``new_context()`` (the per-message state passed as ``ctx`` to every
field of one message, or None). Field types encode one value each; message layouts belong to
the specs.
"""

from __future__ import annotations

from types import ModuleType

from . import hessian2, json, tars, texts, thrift, varint
from .base import VALUES, FieldType

#: library name (as specs spell it) → module
MODULES: dict[str, ModuleType] = {
    "hessian2": hessian2,
    "thrift": thrift,
    "tars": tars,
    "varint": varint,
    "texts": texts,
    "json": json,
}

__all__ = [
    "MODULES",
    "VALUES",
    "FieldType",
    "hessian2",
    "json",
    "tars",
    "texts",
    "thrift",
    "varint",
]
