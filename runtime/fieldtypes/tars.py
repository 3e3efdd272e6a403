"""TARS (TUP) tag-length-value values, as TarsGo's tars/protocol/codec reads and writes them.

Owns the encoding of one tagged field: its head byte ``(tag << 4) | type`` (``0xF0 | type``
then a tag byte for tags >= 15) and its value, plus skipping whole fields of any type. Every
reader is tagged: it skips fields with lower tags, and finds its field absent (None, nothing
consumed) when the next field has a higher tag, a struct ends, or the frame ends. A struct's
fields are read in ascending tag order, as TARS IDL numbers them and TarsGo reads them: a field
that comes after a higher tag, or repeats one, is not seen (TarsGo skips it too).

Writers produce exactly TarsGo's bytes (smallest integer width, 0 as ZERO, STRING1 up to 255
bytes). A field that came in another form, or with fields the reader skipped around it
(unknown tags, out of order, repeated), reads as a :class:`Wire` value (``TarsInt``,
``TarsStr``, ``TarsBytes``, ``TarsMap``, ``TarsRaw``) that remembers those bytes, and is written
back as it came as long as it is not replaced: a decoded frame re-encodes byte for byte. When a
field is set (or removed), only its own bytes change: the other fields it carried are written
by the value after it (the per-message :class:`Context` links them). ``rest`` keeps whatever
follows the last field a layout names (fields of tags it does not know), written back verbatim.
"""

from __future__ import annotations

import struct

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

MAX_DEPTH = 64

# head types (TarsGo codec constants)
INT1, INT2, INT4, INT8, FLOAT, DOUBLE, STRING1, STRING4 = 0, 1, 2, 3, 4, 5, 6, 7
MAP, LIST, STRUCT_BEGIN, STRUCT_END, ZERO, SIMPLE_LIST = 8, 9, 10, 11, 12, 13

TYPE_NAMES = (
    "int1",
    "int2",
    "int4",
    "int8",
    "float",
    "double",
    "string1",
    "string4",
    "map",
    "list",
    "struct",
    "struct end",
    "zero",
    "simple list",
    "type 14",
    "type 15",
)

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")

# fixed value sizes by type; -1: variable or invalid
_SIZE = (1, 2, 4, 8, 4, 8, -1, -1, -1, -1, -1, 0, 0, -1, -1, -1)
_INT_READERS = {INT1: _I8, INT2: _I16, INT4: _I32, INT8: _I64}


def _head(ty: int, tag: int) -> bytes:
    if tag < 15:
        return bytes(((tag << 4) | ty,))
    return bytes((0xF0 | ty, tag))


def _int_value(buf, pos: int, end: int, ty: int, head: int) -> tuple[int, int]:
    """The integer of type ``ty`` whose value starts at ``pos`` (its head was at ``head``)."""
    if ty == ZERO:
        return 0, pos
    s = _INT_READERS.get(ty)
    if s is None:
        raise DecodeError(head, f"expected an integer, found {TYPE_NAMES[ty]}")
    new = pos + s.size
    if new > end:
        raise DecodeError(pos, f"{TYPE_NAMES[ty]} overruns the frame")
    return s.unpack_from(buf, pos)[0], new


def _length(buf, pos: int, end: int) -> tuple[int, int]:
    """A container length: an int32-compatible integer with tag 0, never negative."""
    if pos >= end:
        raise DecodeError(pos, "expected a length, found the end of the frame")
    ty, tag, p = _read_head(buf, pos, end)
    if tag != 0 or ty == INT8:
        raise DecodeError(pos, f"expected a length (int, tag 0), found {TYPE_NAMES[ty]} tag {tag}")
    n, p = _int_value(buf, p, end, ty, pos)
    if n < 0:
        raise DecodeError(pos, f"negative length {n}")
    return n, p


def _skip(buf, pos: int, end: int, ty: int, depth: int) -> int:
    """The position after the value of type ``ty`` starting at ``pos`` (after its head)."""
    size = _SIZE[ty]
    if size >= 0:
        new = pos + size
        if new > end:
            raise DecodeError(pos, f"{TYPE_NAMES[ty]} overruns the frame")
        return new
    if ty == STRING1:
        if pos >= end:
            raise DecodeError(pos, "string length overruns the frame")
        new = pos + 1 + buf[pos]
        if new > end:
            raise DecodeError(pos, "string overruns the frame")
        return new
    if ty == STRING4:
        if pos + 4 > end:
            raise DecodeError(pos, "string length overruns the frame")
        new = pos + 4 + _U32.unpack_from(buf, pos)[0]
        if new > end:
            raise DecodeError(pos, "string overruns the frame")
        return new
    if ty == SIMPLE_LIST:
        if pos >= end:
            raise DecodeError(pos, "simple list overruns the frame")
        b = buf[pos]
        # TarsGo checks the element head's type only; Java the same
        if b & 15 != INT1:
            raise DecodeError(pos, f"simple list of {TYPE_NAMES[b & 15]}, expected int1")
        p = pos + (2 if b >> 4 == 15 else 1)
        if p > end:  # the element head's tag byte is past the frame
            raise DecodeError(pos, "head overruns the frame")
        n, p = _length(buf, p, end)
        new = p + n
        if new > end:
            raise DecodeError(p, f"simple list of {n} bytes overruns the frame")
        return new
    if ty > SIMPLE_LIST:
        raise DecodeError(pos, f"value of unknown type {ty}")
    if depth > MAX_DEPTH:
        raise DecodeError(pos, f"values nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if ty == STRUCT_BEGIN:
        while True:
            if pos >= end:
                raise DecodeError(pos, "struct has no end before the end of the frame")
            b = buf[pos]
            t = b & 15
            pos += 2 if b >> 4 == 15 else 1
            if pos > end:
                raise DecodeError(pos - 2, "head overruns the frame")
            if t == STRUCT_END:
                return pos
            pos = _skip(buf, pos, end, t, depth)
    # MAP and LIST: a length then that many (MAP: twice as many) whole fields
    n, pos = _length(buf, pos, end)
    if ty == MAP:
        n *= 2
    if n > end - pos:  # every field takes at least one byte: refuse before looping
        raise DecodeError(pos, f"{TYPE_NAMES[ty]} of {n} fields overruns the frame")
    for _ in range(n):
        if pos >= end:
            raise DecodeError(pos, f"{TYPE_NAMES[ty]} overruns the frame")
        b = buf[pos]
        pos += 2 if b >> 4 == 15 else 1
        if pos > end:
            raise DecodeError(pos - 2, "head overruns the frame")
        pos = _skip(buf, pos, end, b & 15, depth)
    return pos


def _read_head(buf, pos: int, end: int) -> tuple[int, int, int]:
    """The field head at ``pos`` (``pos`` < ``end``): (type, tag, value position)."""
    b = buf[pos]
    ty, tag, p = b & 15, b >> 4, pos + 1
    if tag == 15:
        if p >= end:
            raise DecodeError(pos, "head overruns the frame")
        tag = buf[p]
        p += 1
    return ty, tag, p


def _seek(buf, pos: int, end: int, tag: int) -> tuple[int, int, int]:
    """Skip fields with lower tags. Returns (type, value position, head position) of the field
    with ``tag``, or (-1, position, position) when it is absent."""
    while pos < end:
        ty, cur, p = _read_head(buf, pos, end)
        if ty == STRUCT_END or cur > tag:
            return -1, pos, pos
        if cur == tag:
            return ty, p, pos
        pos = _skip(buf, p, end, ty, 1)
    return -1, pos, pos


def _string_value(buf, pos: int, end: int, ty: int, head: int) -> tuple[str, int]:
    if ty == STRING1:
        if pos >= end:
            raise DecodeError(pos, "string length overruns the frame")
        start = pos + 1
        stop = start + buf[pos]
    elif ty == STRING4:
        if pos + 4 > end:
            raise DecodeError(pos, "string length overruns the frame")
        start = pos + 4
        stop = start + _U32.unpack_from(buf, pos)[0]
    else:
        raise DecodeError(head, f"expected a string, found {TYPE_NAMES[ty]}")
    if stop > end:
        raise DecodeError(pos, "string overruns the frame")
    try:
        return str(buf[start:stop], "utf-8"), stop
    except UnicodeDecodeError as e:
        raise DecodeError(start + e.start, "invalid UTF-8 in a string") from None


def _write_int(value: int, heads: tuple[bytes, ...]) -> bytes:
    # TarsGo WriteInt64 → WriteInt32 → WriteInt16 → WriteInt8: the smallest width wins
    if value == 0:
        return heads[ZERO]
    if -0x80 <= value <= 0x7F:
        return heads[INT1] + _I8.pack(value)
    if -0x8000 <= value <= 0x7FFF:
        return heads[INT2] + _I16.pack(value)
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return heads[INT4] + _I32.pack(value)
    if -(1 << 63) <= value < (1 << 63):
        return heads[INT8] + _I64.pack(value)
    raise ValueError(f"tars int {value} overflows 64 bits")


def _write_string(value: str, heads: tuple[bytes, ...]) -> bytes:
    data = value.encode("utf-8")
    n = len(data)
    if n <= 255:
        return heads[STRING1] + bytes((n,)) + data
    if n > 0xFFFFFFFF:
        raise ValueError("tars string longer than 4 GiB")
    return heads[STRING4] + _U32.pack(n) + data


def _heads(tag: int) -> tuple[bytes, ...]:
    return tuple(_head(ty, tag) for ty in range(14))


_TAG0 = _heads(0)
_TAG1 = _heads(1)


def _lower_after(buf, pos: int, end: int, tag: int) -> int:
    """The position after the fields at ``pos`` whose tags are at most ``tag``: fields that no
    reader of a higher tag would see (TarsGo skips them), kept with the field before them."""
    while pos < end:
        ty, cur, p = _read_head(buf, pos, end)
        if ty == STRUCT_END or cur > tag:
            return pos
        pos = _skip(buf, p, end, ty, 1)
    return pos


# ---- values that remember their bytes -----------------------------------------------------


class Wire:
    """What the ``Tars*`` values have in common: ``tars_tag``, the tag they were read with, and
    ``tars_wire``, the bytes they came as (the fields skipped before them, their own field in
    the form it came in, the lower-tag fields after it). A writer of that tag writes
    ``tars_wire`` back; any other value is encoded as TarsGo would. ``detach()`` is the plain
    value, for copying into another frame (which must not carry this frame's other fields)."""

    __slots__ = ()
    PLAIN: type = object

    def detach(self):
        return self.PLAIN(self)


class TarsInt(Wire, int):
    """An int read from a frame, with the bytes it came as."""

    PLAIN = int


class TarsStr(Wire, str):
    """A string read from a frame, with the bytes it came as."""

    PLAIN = str


class TarsBytes(Wire, bytes):
    """A ``vector<byte>`` read from a frame, with the bytes it came as."""

    PLAIN = bytes


class TarsRaw(Wire, bytes):
    """A field read whole by ``any``, with the bytes skipped around it."""

    PLAIN = bytes


class TarsRest(Wire, bytes):
    """What ``rest`` read, when the field before it carried other fields' bytes."""

    PLAIN = bytes


class TarsMap(Wire, dict):
    """A map read from a frame: read-only, so that a change cannot go unencoded (set a new
    dict instead: ``dict(m)`` is a writable copy). ``tars_wire`` is None when TarsGo would
    write the map exactly as it came."""

    __slots__ = ("tars_tag", "tars_wire", "tars_foreign", "tars_before")
    PLAIN = dict

    def _read_only(self, *args, **kwargs):
        raise TypeError("a map decoded from a tars frame is read-only: assign a new dict")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


def _int_canonical(ty: int, value: int) -> bool:
    """Whether TarsGo writes ``value`` with type ``ty`` (the smallest width, 0 as ZERO)."""
    if value == 0:
        return ty == ZERO
    if ty == INT1:
        return True
    if ty == INT2:
        return not -0x80 <= value <= 0x7F
    if ty == INT4:
        return not -0x8000 <= value <= 0x7FFF
    return not -0x80000000 <= value <= 0x7FFFFFFF


def _int_size(n: int) -> int:
    """The bytes TarsGo writes a non-negative length ``n`` in (head included)."""
    return 1 if n == 0 else 2 if n < 0x80 else 3 if n < 0x8000 else 5 if n < 0x80000000 else 9


class _Tagged(FieldType):
    PARAMS = ("tag",)
    PARAM_TYPES = (int,)
    VALUE = "raw"
    NULLABLE = True  # an absent tag reads as None, and None writes no field
    WIRE: type = Wire
    __slots__ = ("tag", "heads", "head_size")

    def __init__(self, tag: int):
        if not 0 <= tag <= 255:
            raise ValueError(f"tars tag {tag} is not in 0..255")
        self.tag = tag
        self.heads = _heads(tag)
        self.head_size = 1 if tag < 15 else 2

    def read(self, buf, pos: int, end: int, ctx=None):
        tag = self.tag
        ty, p, head = _seek(buf, pos, end, tag)
        if ty < 0:
            return None, pos  # what was skipped belongs to the next field read
        value, new, canonical = self._value(buf, p, end, ty, head)
        stop = new
        if new < end:
            t = buf[new] >> 4
            if t <= tag or t == 15:  # fields after it that no later reader sees: keep them
                stop = _lower_after(buf, new, end, tag)
        before = ctx.foreign if ctx is not None else None
        if canonical and pos == head and stop == new and p - head == self.head_size:
            if before is None:
                return value, new
        out = self._keep(value, bytes(buf[pos:stop]))
        out.tars_foreign = bytes(buf[pos:head]) + bytes(buf[new:stop])
        out.tars_before = before
        if ctx is not None:
            ctx.foreign = out if out.tars_foreign else None
        return out, stop

    def _keep(self, value, wire: bytes):
        out = self.WIRE(value)
        out.tars_tag = self.tag
        out.tars_wire = wire
        return out

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            return b""
        if value.__class__ is self.WIRE and value.tars_tag == self.tag and value.tars_wire:
            out = value.tars_wire
            if ctx is not None:
                before = value.tars_before
                if before is not None and id(before) not in ctx.written:
                    out = before.tars_foreign + out  # it was replaced: keep what it carried
                ctx.written.add(id(value))
            return out
        return self._encode(value)

    @staticmethod
    def detach(value):
        """``value`` (read from one frame) as it may go into another: without the bytes of
        its frame's other fields."""
        return value.detach() if isinstance(value, Wire) else value


class Int(_Tagged):
    """An integer field: int1/int2/int4/int8 or ZERO on the wire."""

    VALUE = "int"
    WIRE = TarsInt
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        # the common case first: the field is next, as TarsGo writes it, and so is the field
        # after it (a higher tag); anything else takes the general path
        if pos + 1 < end and (ctx is None or ctx.foreign is None):
            b = buf[pos]
            if b >> 4 == self.tag and self.head_size == 1:  # (15: a long head, tag after)
                ty = b & 15
                if ty == ZERO:
                    t = buf[pos + 1] >> 4
                    if self.tag < t < 15:
                        return 0, pos + 1
                elif ty == INT1 and pos + 2 < end:
                    t = buf[pos + 2] >> 4
                    value = buf[pos + 1]
                    if self.tag < t < 15 and value:
                        return (value - 256 if value > 127 else value), pos + 2
        return _Tagged.read(self, buf, pos, end, ctx)

    def _value(self, buf, p: int, end: int, ty: int, head: int):
        value, new = _int_value(buf, p, end, ty, head)
        return value, new, _int_canonical(ty, value)

    def _encode(self, value) -> bytes:
        return _write_int(value, self.heads)


class String(_Tagged):
    """A string field (string1: u8 length, string4: u32 length), UTF-8."""

    VALUE = "str"
    WIRE = TarsStr
    __slots__ = ()

    def _value(self, buf, p: int, end: int, ty: int, head: int):
        value, new = _string_value(buf, p, end, ty, head)
        return value, new, ty == STRING1 or new - p - 4 > 255

    def _encode(self, value) -> bytes:
        return _write_string(value, self.heads)


class Bytes(_Tagged):
    """A ``vector<byte>`` field: a simple list (as TarsGo and Java write it), or a plain list
    of int1 elements (as some older writers do); written as a simple list."""

    VALUE = "bytes"
    WIRE = TarsBytes
    __slots__ = ()

    def _value(self, buf, p: int, end: int, ty: int, head: int):
        start = p
        if ty == SIMPLE_LIST:
            if p >= end:
                raise DecodeError(p, "simple list overruns the frame")
            b = buf[p]
            if b & 15 != INT1:
                raise DecodeError(p, f"simple list of {TYPE_NAMES[b & 15]}, expected int1")
            p += 2 if b >> 4 == 15 else 1
            if p > end:  # the element head's tag byte is past the frame
                raise DecodeError(start, "head overruns the frame")
            n, p = _length(buf, p, end)
            stop = p + n
            if stop > end:
                raise DecodeError(p, f"simple list of {n} bytes overruns the frame")
            canonical = b == 0 and stop - start == 1 + _int_size(n) + n
            return bytes(buf[p:stop]), stop, canonical
        if ty == LIST:
            n, p = _length(buf, p, end)
            if n > end - p:
                raise DecodeError(p, f"list of {n} elements overruns the frame")
            out = bytearray(n)
            for i in range(n):
                if p >= end:
                    raise DecodeError(p, "list overruns the frame")
                b = buf[p]
                if b == 0x0C:  # ZERO, tag 0
                    p += 1
                elif b == 0x00:  # int1, tag 0
                    if p + 2 > end:
                        raise DecodeError(p, "list element overruns the frame")
                    out[i] = buf[p + 1]
                    p += 2
                else:
                    raise DecodeError(p, "a byte list element must be an int1 with tag 0")
            return bytes(out), p, False
        raise DecodeError(head, f"expected bytes (simple list), found {TYPE_NAMES[ty]}")

    def _encode(self, value) -> bytes:
        data = bytes(value)
        return self.heads[SIMPLE_LIST] + b"\x00" + _write_int(len(data), _TAG0) + data


class Map(_Tagged):
    """A ``map<string, string>`` field → a read-only :class:`TarsMap` (keys tag 0, values
    tag 1); written from any dict of strings."""

    VALUE = "map"
    WIRE = TarsMap
    __slots__ = ()

    def _value(self, buf, p: int, end: int, ty: int, head: int):
        if ty != MAP:
            raise DecodeError(head, f"expected a map, found {TYPE_NAMES[ty]}")
        start = p
        n, p = _length(buf, p, end)
        canonical = p - start == _int_size(n)
        if 4 * n > end - p:  # an entry is two heads and two lengths at least
            raise DecodeError(p, f"map of {n} entries overruns the frame")
        pairs = []
        for _ in range(n):
            pair = []
            for want in (0, 1):
                if p >= end:
                    raise DecodeError(p, "map overruns the frame")
                b = buf[p]
                t, tag, h = b & 15, b >> 4, p
                p += 1
                if tag == 15:
                    if p >= end:
                        raise DecodeError(h, "head overruns the frame")
                    tag = buf[p]
                    p += 1
                    canonical = False
                if tag != want:
                    raise DecodeError(h, f"map entry has tag {tag}, expected {want}")
                s, new = _string_value(buf, p, end, t, h)
                if t == STRING4 and new - p - 4 <= 255:
                    canonical = False
                p = new
                pair.append(s)
            pairs.append(pair)
        out = TarsMap(pairs)
        out.tars_tag = self.tag
        out.tars_wire = None
        return out, p, canonical and len(out) == n

    def _keep(self, value, wire: bytes):
        value.tars_wire = wire
        return value

    def _encode(self, value) -> bytes:
        parts = [self.heads[MAP], _write_int(len(value), _TAG0)]
        for k, v in value.items():
            if k is None or v is None:
                raise ValueError("tars map<string, string> cannot hold None")
            parts.append(_write_string(k, _TAG0))
            parts.append(_write_string(v, _TAG1))
        return b"".join(parts)


class Any(_Tagged):
    """Any field: the raw bytes of the whole field, head included, written back verbatim."""

    VALUE = "raw"
    WIRE = TarsRaw
    __slots__ = ()

    def _value(self, buf, p: int, end: int, ty: int, head: int):
        new = _skip(buf, p, end, ty, 1)
        return bytes(buf[head:new]), new, True

    def _encode(self, value) -> bytes:
        return bytes(value)


class Rest(FieldType):
    """The fields after the last one a layout names, of any tags (fields a newer peer added):
    their raw bytes, written back verbatim; None when there are none."""

    VALUE = "raw"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        before = ctx.foreign if ctx is not None else None
        if pos >= end and before is None:
            return None, pos
        p = pos
        while p < end:
            b = buf[p]
            h = p
            p += 2 if b >> 4 == 15 else 1
            if p > end:
                raise DecodeError(h, "head overruns the frame")
            p = _skip(buf, p, end, b & 15, 1)
        data = bytes(buf[pos:end])
        if before is None:
            return data, end
        out = TarsRest(data)  # empty, when only the last field's other fields are to keep
        out.tars_before = before
        ctx.foreign = None
        return out, end

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            return b""
        if value.__class__ is TarsRest and ctx is not None:
            if id(value.tars_before) not in ctx.written:
                return value.tars_before.tars_foreign + value
        return bytes(value)


TYPES: dict[str, type] = {
    "int": Int,
    "string": String,
    "bytes": Bytes,
    "map": Map,
    "any": Any,
    "rest": Rest,
}
FUNCTIONS: dict[str, object] = {}


class Context:
    """What the fields of one message share. Reading: ``foreign``, the last value read with
    other fields' bytes (the next value read keeps a reference to it). Writing: ``written``,
    the ids of the values written as they came; a value whose predecessor is not among them
    (it was replaced or removed) writes the other fields' bytes that predecessor carried, so
    that none is lost."""

    __slots__ = ("foreign", "written")

    def __init__(self) -> None:
        self.foreign = None
        self.written: set[int] = set()


def new_context() -> Context:
    return Context()
