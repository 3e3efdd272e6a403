"""The field-type library: value encodings of other serialization formats that specs use as
field types (``hessian2.string``, ``thrift.field(1, "i32")``, ``tars.int(4)``, ``varint.signed``,
``json.object[n]``).

Each module exports ``TYPES`` (name → class with ``PARAMS``, ``PARAM_TYPES``, ``VALUE``, and
instances with ``read(buf, pos, end, ctx) -> (value, pos)`` and ``write(value, ctx) -> bytes``),
optionally ``measure(buf, pos, ctx)``: a generator that steps over the same value in a buffer
that grows while it waits, yielding the buffer length it needs before it can go on and
returning ``(value, pos)``, ``pos`` as ``read`` gives it and ``value`` only where a later size
may read it (an integer, VALUE "int"; None for other values, which are not copied: a frame
that ends where such a value ends is measured with it, resuming where it stopped as bytes
arrive), ``FUNCTIONS`` (helpers spec expressions may call) and ``new_context()`` (the
per-message state passed as ``ctx`` to every field of one message). A type whose value cannot
tell where it ends (a JSON object) sets ``WINDOW = True``: ``T[n]`` is then one value filling
n bytes, not as many values as fill them, and a spec must give it a size. Readers never read at or past ``end`` and raise
only :class:`runtime.api.DecodeError`. Field types encode one value each; message layouts belong
to the specs.
"""

from __future__ import annotations

from types import ModuleType

from . import hessian2, json, tars, texts, thrift, varint

#: library name (as specs spell it) → module
MODULES: dict[str, ModuleType] = {
    "hessian2": hessian2,
    "thrift": thrift,
    "tars": tars,
    "varint": varint,
    "texts": texts,
    "json": json,
}

__all__ = ["MODULES", "hessian2", "json", "tars", "texts", "thrift", "varint"]
