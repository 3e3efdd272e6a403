"""The base class of field types: what the compiler asks of a type a spec names (``tars.int(4)``)
and what the generated codec calls. Every built-in type subclasses it, and so does a plug-in's
(docs/api.md, "Field types")."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

#: the kinds of value a field type reads (``FieldType.VALUE``): what a spec may do with it
VALUES = ("int", "str", "bytes", "map", "raw", "none")


class FieldType(abc.ABC):
    """One value encoding of another serialization format: ``read`` decodes one value,
    ``write`` encodes one. A spec names an instance as ``lib.name(args)``: the compiler builds
    it with those literal arguments (checked against ``PARAMS`` and ``PARAM_TYPES``) to check
    the spec, and the generated module builds the same one when it loads.

    Class attributes, read by the compiler:

    * ``PARAMS``: the arguments' names (``("tag",)``); ``PARAM_TYPES``: their types (``int``,
      ``str``), one each.
    * ``VALUE``: what ``read`` gives, one of :data:`VALUES`: ``"int"`` (a size, a request id
      or arithmetic may use it), ``"str"`` (text), ``"bytes"`` (may be a ``body`` and hold an
      ``inside`` layout), ``"map"`` (``x["key"]`` and headers read it), ``"raw"`` (kept and
      written back, nothing else) or ``"none"`` (a token, no value). An instance may set its
      own (``thrift.field(1, "i32")`` reads an int).
    * ``NULLABLE``: ``read`` may give None (an absent tag); arithmetic on it then needs a
      default (``x ?? 0``), and writing None writes nothing.
    * ``WINDOW``: the value cannot tell where it ends (a JSON object): ``T[n]`` is one value
      filling ``n`` bytes, and a spec must give it a size.

    Optional methods, found by the compiler with ``hasattr``:

    * ``measure(buf, pos, ctx)``: a generator stepping over the same value in a buffer that
      grows while it waits; it yields the buffer length it needs before it can go on and
      returns ``(value, pos)`` as ``read`` would, ``value`` only where a later size may read it
      (``VALUE == "int"``; None otherwise). A type with it can end a frame that announces no
      length; one without it must be sized by the frame (``T[n]``).
    * ``detach(value)``: ``value``, read from one frame, as it may go into another (a template
      copying ``request.x``): without what it keeps of its own frame's bytes.
    """

    __slots__ = ()
    PARAMS: ClassVar[tuple[str, ...]] = ()
    PARAM_TYPES: ClassVar[tuple[type, ...]] = ()
    VALUE: ClassVar[str] = "raw"
    NULLABLE: ClassVar[bool] = False
    WINDOW: ClassVar[bool] = False

    @abc.abstractmethod
    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[Any, int]:
        """The value at ``buf[pos:]`` and the position after it. Never read at or past
        ``end`` (the frame's end or the field's size); raise only
        :class:`protoc_x.runtime.api.DecodeError`, with the offset of the bad byte. ``ctx``
        is the module's ``new_context()`` for the message, shared by its fields."""

    @abc.abstractmethod
    def write(self, value, ctx=None) -> bytes:
        """The bytes of ``value``; ``read`` of them gives it back. ValueError for a value
        this type cannot hold."""
