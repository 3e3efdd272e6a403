"""Apache Thrift strict binary protocol (TBinaryProtocol) values.

Owns the encoding of single Thrift values and the skipping of whole values of any type: a
length-prefixed ``string``, an opaque ``struct`` (kept as raw bytes), a tagged ``field`` of a
struct (found by id, skipping the fields before it) and the ``stop`` that ends a struct.
Message envelopes (version word, method name, sequence id) belong to the spec's layout.
"""

from __future__ import annotations

import struct
from functools import partial

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

MAX_DEPTH = 64

STOP, BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST = (
    0,
    2,
    3,
    4,
    6,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
)
UUID = 16  # Thrift 0.19+: 16 raw bytes; only ever skipped here

TYPE_NAMES = {
    BOOL: "bool",
    BYTE: "byte",
    DOUBLE: "double",
    I16: "i16",
    I32: "i32",
    I64: "i64",
    STRING: "string",
    STRUCT: "struct",
    MAP: "map",
    SET: "set",
    LIST: "list",
    UUID: "uuid",
}

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_MAP_HEAD = struct.Struct(">BBi")
_LIST_HEAD = struct.Struct(">Bi")

# Wire size of each fixed-size type (0: variable size or not a type).
_SIZE = [0] * 256
for _t, _n in ((BOOL, 1), (BYTE, 1), (DOUBLE, 8), (I16, 2), (I32, 4), (I64, 8), (UUID, 16)):
    _SIZE[_t] = _n
_VALID = [False] * 256
for _t in TYPE_NAMES:
    _VALID[_t] = True
del _t, _n


def _type_name(t: int) -> str:
    return TYPE_NAMES.get(t, f"type {t}")


def _skip(buf, pos: int, end: int, t: int, depth: int) -> int:
    """The position after one value of (valid) type ``t`` starting at ``pos``."""
    size = _SIZE[t]
    if size:
        new = pos + size
        if new > end:
            raise DecodeError(pos, f"{_type_name(t)} value overruns the frame")
        return new
    if t == STRING:
        if pos + 4 > end:
            raise DecodeError(pos, "string length overruns the frame")
        (n,) = _I32.unpack_from(buf, pos)
        if n < 0:
            raise DecodeError(pos, f"negative string length {n}")
        new = pos + 4 + n
        if new > end:
            raise DecodeError(pos, f"string of {n} bytes overruns the frame")
        return new
    if t == STRUCT:
        return _skip_struct(buf, pos, end, depth)
    if depth > MAX_DEPTH:
        raise DecodeError(pos, f"values nested deeper than {MAX_DEPTH} levels")
    if t == MAP:
        if pos + 6 > end:
            raise DecodeError(pos, "map header overruns the frame")
        kt, vt, n = _MAP_HEAD.unpack_from(buf, pos)
        if n < 0:
            raise DecodeError(pos + 2, f"negative map size {n}")
        pos += 6
        if n == 0:
            # element types of an empty container are never used; some writers put 0 there
            return pos
        if not _VALID[kt]:
            raise DecodeError(pos - 6, f"unknown map key type {kt}")
        if not _VALID[vt]:
            raise DecodeError(pos - 5, f"unknown map value type {vt}")
        ks, vs = _SIZE[kt], _SIZE[vt]
        if ks and vs:
            new = pos + n * (ks + vs)
            if new > end:
                raise DecodeError(pos, f"map of {n} entries overruns the frame")
            return new
        if 2 * n > end - pos:  # every entry takes at least two bytes: refuse before looping
            raise DecodeError(pos, f"map of {n} entries overruns the frame")
        depth += 1
        for _ in range(n):
            pos = _skip(buf, pos, end, kt, depth)
            pos = _skip(buf, pos, end, vt, depth)
        return pos
    # SET and LIST share their header
    if pos + 5 > end:
        raise DecodeError(pos, f"{_type_name(t)} header overruns the frame")
    et, n = _LIST_HEAD.unpack_from(buf, pos)
    if n < 0:
        raise DecodeError(pos + 1, f"negative {_type_name(t)} size {n}")
    pos += 5
    if n == 0:
        return pos
    if not _VALID[et]:
        raise DecodeError(pos - 5, f"unknown {_type_name(t)} element type {et}")
    es = _SIZE[et]
    if es:
        new = pos + n * es
        if new > end:
            raise DecodeError(pos, f"{_type_name(t)} of {n} elements overruns the frame")
        return new
    if n > end - pos:
        raise DecodeError(pos, f"{_type_name(t)} of {n} elements overruns the frame")
    depth += 1
    for _ in range(n):
        pos = _skip(buf, pos, end, et, depth)
    return pos


def _skip_struct(buf, pos: int, end: int, depth: int) -> int:
    """The position after the STOP that ends the struct whose fields start at ``pos``."""
    if depth > MAX_DEPTH:
        raise DecodeError(pos, f"structs nested deeper than {MAX_DEPTH} levels")
    depth += 1
    while True:
        if pos >= end:
            raise DecodeError(pos, "struct has no STOP before the end of the frame")
        t = buf[pos]
        if t == STOP:
            return pos + 1
        if not _VALID[t]:
            raise DecodeError(pos, f"unknown field type {t}")
        if pos + 3 > end:
            raise DecodeError(pos, "field header overruns the frame")
        pos = _skip(buf, pos + 3, end, t, depth)


# ---- measuring: the same walk over a buffer that grows while it waits ----------------------
# Generators that yield the buffer length they need before they can go on and return the
# position after the value, as _skip does; resumed where they stopped, they read each header
# once however the bytes arrive. A fixed-size value is stepped over without waiting for its
# bytes (what comes after it waits for them), so a count too large for the frame shows at once
# as the length the frame would need (the runtime's max_frame_bytes refuses it).


def _measure_value(buf, pos: int, t: int, depth: int):
    size = _SIZE[t]
    if size:
        return pos + size
    if t == STRING:
        while len(buf) < pos + 4:
            yield pos + 4
        (n,) = _I32.unpack_from(buf, pos)
        if n < 0:
            raise DecodeError(pos, f"negative string length {n}")
        return pos + 4 + n
    if t == STRUCT:
        return (yield from _measure_struct(buf, pos, depth))
    if depth > MAX_DEPTH:
        raise DecodeError(pos, f"values nested deeper than {MAX_DEPTH} levels")
    if t == MAP:
        while len(buf) < pos + 6:
            yield pos + 6
        kt, vt, n = _MAP_HEAD.unpack_from(buf, pos)
        if n < 0:
            raise DecodeError(pos + 2, f"negative map size {n}")
        if n == 0:
            return pos + 6
        if not _VALID[kt]:
            raise DecodeError(pos, f"unknown map key type {kt}")
        if not _VALID[vt]:
            raise DecodeError(pos + 1, f"unknown map value type {vt}")
        pos += 6
        if _SIZE[kt] and _SIZE[vt]:
            return pos + n * (_SIZE[kt] + _SIZE[vt])
        for _ in range(n):  # (each entry takes bytes that must arrive: n is bounded by them)
            pos = yield from _measure_value(buf, pos, kt, depth + 1)
            pos = yield from _measure_value(buf, pos, vt, depth + 1)
        return pos
    while len(buf) < pos + 5:  # SET and LIST share their header
        yield pos + 5
    et, n = _LIST_HEAD.unpack_from(buf, pos)
    if n < 0:
        raise DecodeError(pos + 1, f"negative {_type_name(t)} size {n}")
    if n == 0:
        return pos + 5
    if not _VALID[et]:
        raise DecodeError(pos, f"unknown {_type_name(t)} element type {et}")
    pos += 5
    if _SIZE[et]:
        return pos + n * _SIZE[et]
    for _ in range(n):
        pos = yield from _measure_value(buf, pos, et, depth + 1)
    return pos


def _measure_struct(buf, pos: int, depth: int):
    if depth > MAX_DEPTH:
        raise DecodeError(pos, f"structs nested deeper than {MAX_DEPTH} levels")
    while True:
        while len(buf) <= pos:
            yield pos + 1
        t = buf[pos]
        if t == STOP:
            return pos + 1
        if not _VALID[t]:
            raise DecodeError(pos, f"unknown field type {t}")
        pos = yield from _measure_value(buf, pos + 3, t, depth + 1)


def _measured(buf, pos: int, t: int, depth: int):
    """:func:`_measure_value`, but a value whose bytes are all there (as they are when a message
    arrives in one read) is skipped at once by :func:`_skip`; only a value still arriving is
    walked by the generators (an error is left to them to find again, where it is)."""
    try:
        return _skip(buf, pos, len(buf), t, depth)
    except DecodeError:
        return (yield from _measure_value(buf, pos, t, depth))


# ---- value codecs of field(): (reader(buf, pos, end) -> (value, pos), writer(value) -> bytes)


def _read_bool(buf, pos, end):
    if pos >= end:
        raise DecodeError(pos, "bool overruns the frame")
    # C++ and Python read any non-zero byte as true (Java and Go: only 1); writers send 0/1
    return buf[pos] != 0, pos + 1


def _read_fixed(s: struct.Struct, name: str, buf, pos, end):
    # (a plain function bound with partial, not a closure made at import: mutation testing
    # switches a mutant on after the import, and can then reach this code)
    size = s.size
    if pos + size > end:
        raise DecodeError(pos, f"{name} overruns the frame")
    return s.unpack_from(buf, pos)[0], pos + size


def _read_binary(buf, pos, end):
    if pos + 4 > end:
        raise DecodeError(pos, "binary length overruns the frame")
    (n,) = _I32.unpack_from(buf, pos)
    if n < 0:
        raise DecodeError(pos, f"negative binary length {n}")
    start = pos + 4
    stop = start + n
    if stop > end:
        raise DecodeError(pos, f"binary of {n} bytes overruns the frame")
    return bytes(buf[start:stop]), stop


def _read_string(buf, pos, end):
    if pos + 4 > end:
        raise DecodeError(pos, "string length overruns the frame")
    (n,) = _I32.unpack_from(buf, pos)
    if n < 0:
        raise DecodeError(pos, f"negative string length {n}")
    start = pos + 4
    stop = start + n
    if stop > end:
        raise DecodeError(pos, f"string of {n} bytes overruns the frame")
    try:
        return str(buf[start:stop], "utf-8"), stop
    except UnicodeDecodeError as e:
        raise DecodeError(start + e.start, "invalid UTF-8 in a string") from None


def _read_raw(t: int, buf, pos, end):
    new = _skip(buf, pos, end, t, 1)
    return bytes(buf[pos:new]), new


def _write_bool(value) -> bytes:
    return b"\x01" if value else b"\x00"


def _write_string(value: str) -> bytes:
    data = value.encode("utf-8")
    return _I32.pack(len(data)) + data


def _write_binary(value) -> bytes:
    data = bytes(value)
    return _I32.pack(len(data)) + data


def _write_raw(value) -> bytes:
    return bytes(value)


# kind -> (wire type, VALUE, reader, writer)
_KINDS = {
    "bool": (BOOL, "int", _read_bool, _write_bool),
    "byte": (BYTE, "int", partial(_read_fixed, _I8, "byte"), _I8.pack),
    "i16": (I16, "int", partial(_read_fixed, _I16, "i16"), _I16.pack),
    "i32": (I32, "int", partial(_read_fixed, _I32, "i32"), _I32.pack),
    "i64": (I64, "int", partial(_read_fixed, _I64, "i64"), _I64.pack),
    # no float VALUE exists; a double is a number, read as a Python float
    "double": (DOUBLE, "int", partial(_read_fixed, _F64, "double"), _F64.pack),
    "string": (STRING, "str", _read_string, _write_string),
    "binary": (STRING, "bytes", _read_binary, _write_binary),
    "struct": (STRUCT, "raw", partial(_read_raw, STRUCT), _write_raw),
    "list": (LIST, "raw", partial(_read_raw, LIST), _write_raw),
    "set": (SET, "raw", partial(_read_raw, SET), _write_raw),
    "map": (MAP, "raw", partial(_read_raw, MAP), _write_raw),
}
KINDS = tuple(_KINDS)


class String(FieldType):
    """A string: i32 byte length + UTF-8."""

    VALUE = "str"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[str, int]:
        return _read_string(buf, pos, end)

    def measure(self, buf, pos: int, ctx=None):
        return None, (yield from _measured(buf, pos, STRING, 0))

    def write(self, value: str, ctx=None) -> bytes:
        return _write_string(value)


class Struct(FieldType):
    """A whole struct (its fields and STOP), skipped type by type and kept as raw bytes."""

    VALUE = "bytes"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[bytes, int]:
        new = _skip_struct(buf, pos, end, 0)
        return bytes(buf[pos:new]), new

    def measure(self, buf, pos: int, ctx=None):
        return None, (yield from _measured(buf, pos, STRUCT, 0))

    def write(self, value, ctx=None) -> bytes:
        data = bytes(value)
        try:
            whole = _skip_struct(data, 0, len(data), 0) == len(data)
        except DecodeError:
            whole = False
        if not whole:  # (where nothing else says where it ends, the peer could not tell)
            raise ValueError(f"{len(data)} bytes are not one struct")
        return data


ABSENT, HERE, SKIP = 0, 1, 2  # what a field header says to Field (its _says)


class Field(FieldType):
    """Field ``id`` of a struct, of ``kind`` (bool, byte, i16, i32, i64, double, string, binary,
    struct, list, set, map). Fields with lower ids before it are skipped; when the next field
    has a higher id, or the struct ends, the field is absent: None, and nothing is consumed.

    ``VALUE`` on the class is "raw"; each instance carries the VALUE of its kind.
    """

    PARAMS = ("id", "kind")
    PARAM_TYPES = (int, str)
    VALUE = "raw"

    def __init__(self, id: int, kind: str):
        if kind not in _KINDS:
            raise ValueError(f"thrift.field: unknown kind {kind!r} (have: {', '.join(KINDS)})")
        if not -(1 << 15) <= id < (1 << 15):
            raise ValueError(f"thrift.field: id {id} does not fit in an i16")
        self.id = id
        self.kind = kind
        self.wire, self.VALUE, self._read_value, self._write_value = _KINDS[kind]
        self._header = bytes((self.wire,)) + _I16.pack(id)

    def _says(self, buf, pos: int, t: int) -> int:
        """What the field header at ``pos`` (its type ``t`` and, unless STOP, its id are in
        ``buf``) says: ABSENT (the struct ended, or a higher id came), HERE, or SKIP another."""
        if t == STOP:
            return ABSENT
        (fid,) = _I16.unpack_from(buf, pos + 1)
        if fid > self.id:
            return ABSENT
        if fid == self.id:
            if t != self.wire:
                raise DecodeError(
                    pos, f"field {self.id} is {_type_name(t)} on the wire, expected {self.kind}"
                )
            return HERE
        if not _VALID[t]:
            raise DecodeError(pos, f"unknown field type {t}")
        return SKIP

    def read(self, buf, pos: int, end: int, ctx=None):
        while pos < end:
            t = buf[pos]
            if t != STOP and pos + 3 > end:
                raise DecodeError(pos, "field header overruns the frame")
            step = self._says(buf, pos, t)
            if step == ABSENT:
                return None, pos
            if step == HERE:
                return self._read_value(buf, pos + 3, end)
            pos = _skip(buf, pos + 3, end, t, 1)
        return None, pos

    def measure(self, buf, pos: int, ctx=None):
        while True:  # read's walk, waiting for each header
            while len(buf) <= pos:
                yield pos + 1
            t = buf[pos]
            while t != STOP and len(buf) < pos + 3:
                yield pos + 3
            step = self._says(buf, pos, t)
            if step == ABSENT:
                return None, pos
            if step == HERE:
                end = yield from _measured(buf, pos + 3, t, 1)
                if self.VALUE != "int":
                    return None, end
                while len(buf) < end:  # (read, as a later size may read it)
                    yield end
                return self._read_value(buf, pos + 3, end)
            pos = yield from _measured(buf, pos + 3, t, 1)

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            return b""
        return self._header + self._write_value(value)


class Stop(FieldType):
    """The end of a struct: skips any fields left, then consumes the STOP byte."""

    VALUE = "none"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[None, int]:
        return None, _skip_struct(buf, pos, end, 0)

    def measure(self, buf, pos: int, ctx=None):
        return None, (yield from _measured(buf, pos, STRUCT, 0))

    def write(self, value=None, ctx=None) -> bytes:
        return b"\x00"


TYPES: dict[str, type] = {"string": String, "struct": Struct, "field": Field, "stop": Stop}
FUNCTIONS: dict[str, object] = {}


def new_context() -> None:
    """Thrift values need no per-message state."""
    return None
