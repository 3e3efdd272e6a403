"""Hessian 2.0 serialization values, as Dubbo (apache/dubbo-hessian-lite) reads and writes them.

Owns the encoding of single Hessian values: ``string`` and ``int`` as Python values, ``map``
as a dict of simple values, ``any`` as the raw bytes of one value of any type (skipped code by
code), the per-message :class:`Context` (class definitions and type names, which later values
of one body refer to by number), and ``arg_count`` for Dubbo parameter descriptors.

Strings count UTF-16 code units, like Java. Writers produce what Java's Hessian2Output writes,
so a body that is decoded and re-encoded keeps its bytes.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

MAX_DEPTH = 64

_U16 = struct.Struct(">H")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Raw:
    """A Hessian value kept as its encoding (a map key or value that is not a simple type)."""

    data: bytes


class Context:
    """What one message body's values share: class definitions ('C') and type names of typed
    lists and maps, both referred to by index from later values."""

    __slots__ = ("classes", "types")

    def __init__(self) -> None:
        self.classes: list[tuple[str, tuple[str, ...]]] = []  # (class name, field names)
        self.types: list[str] = []


def new_context() -> Context:
    return Context()


# ---- reading: scalars ---------------------------------------------------------------------


def _truncated(pos: int, what: str) -> DecodeError:
    return DecodeError(pos, f"{what} overruns the frame")


def _int_at(buf, pos: int, end: int, longs: bool = False) -> tuple[int, int]:
    """An int (any int form; with ``longs`` any long form too) at ``pos``."""
    if pos >= end:
        raise DecodeError(pos, "expected an int, found the end of the frame")
    code = buf[pos]
    if 0x80 <= code <= 0xBF:
        return code - 0x90, pos + 1
    if 0xC0 <= code <= 0xCF:
        if pos + 2 > end:
            raise _truncated(pos, "int")
        return ((code - 0xC8) << 8) + buf[pos + 1], pos + 2
    if 0xD0 <= code <= 0xD7:
        if pos + 3 > end:
            raise _truncated(pos, "int")
        return ((code - 0xD4) << 16) + (buf[pos + 1] << 8) + buf[pos + 2], pos + 3
    if code == 0x49:  # 'I'
        if pos + 5 > end:
            raise _truncated(pos, "int")
        return _I32.unpack_from(buf, pos + 1)[0], pos + 5
    if longs:
        if 0xD8 <= code <= 0xEF:
            return code - 0xE0, pos + 1
        if code >= 0xF0:
            if pos + 2 > end:
                raise _truncated(pos, "long")
            return ((code - 0xF8) << 8) + buf[pos + 1], pos + 2
        if 0x38 <= code <= 0x3F:
            if pos + 3 > end:
                raise _truncated(pos, "long")
            return ((code - 0x3C) << 16) + (buf[pos + 1] << 8) + buf[pos + 2], pos + 3
        if code == 0x59:  # long encoded as 32-bit int
            if pos + 5 > end:
                raise _truncated(pos, "long")
            return _I32.unpack_from(buf, pos + 1)[0], pos + 5
        if code == 0x4C:  # 'L'
            if pos + 9 > end:
                raise _truncated(pos, "long")
            return _I64.unpack_from(buf, pos + 1)[0], pos + 9
    raise DecodeError(pos, f"expected an int, found code {code:#04x}")


def _double_at(buf, pos: int, end: int) -> tuple[float, int]:
    code = buf[pos]
    if code == 0x5B:
        return 0.0, pos + 1
    if code == 0x5C:
        return 1.0, pos + 1
    if code == 0x5D:
        if pos + 2 > end:
            raise _truncated(pos, "double")
        return float(_I8.unpack_from(buf, pos + 1)[0]), pos + 2
    if code == 0x5E:
        if pos + 3 > end:
            raise _truncated(pos, "double")
        return float(_I16.unpack_from(buf, pos + 1)[0]), pos + 3
    if code == 0x5F:
        # Java reads this form as thousandths in an int (BC_DOUBLE_MILL), not as a float32
        if pos + 5 > end:
            raise _truncated(pos, "double")
        return 0.001 * _I32.unpack_from(buf, pos + 1)[0], pos + 5
    if code == 0x44:  # 'D'
        if pos + 9 > end:
            raise _truncated(pos, "double")
        return _F64.unpack_from(buf, pos + 1)[0], pos + 9
    raise DecodeError(pos, f"expected a double, found code {code:#04x}")


# ---- reading: strings ---------------------------------------------------------------------


def _units(buf, pos: int, end: int, n: int) -> tuple[str, int]:
    """``n`` UTF-16 code units of UTF-8 text at ``pos``: (text, position after).

    Surrogates encoded one by one (CESU-8, as Java writes characters outside the BMP) pass
    through here as lone surrogates and are paired by the caller.
    """
    # Common case: the first n characters are all in the BMP, so they are the n units. Decode
    # the most bytes n units can take (3 each), up to the first byte that is not UTF-8.
    window = bytes(buf[pos : min(end, pos + 3 * n)])
    try:
        text = window.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        text = window[: e.start].decode("utf-8", "surrogatepass")
    if len(text) >= n:
        text = text[:n]
        if len(text.encode("utf-16-le", "surrogatepass")) == 2 * n:  # all in the BMP
            # strict UTF-8 re-encodes to the very bytes it came from
            return text, pos + len(text.encode("utf-8", "surrogatepass"))
    # Otherwise walk: a window of the next n bytes never overshoots (every unit takes a byte)
    parts = []
    while n > 0:
        take = pos + n
        if take > end:
            raise DecodeError(pos, "string overruns the frame")
        chunk = bytes(buf[pos:take])
        if chunk.isascii():
            parts.append(chunk.decode("ascii"))
            pos = take
            break
        # cut back to the last whole character, subtract the units decoded, go on
        k = len(chunk)
        j = k - 1
        low = k - 4 if k > 4 else 0
        while j > low and chunk[j] & 0xC0 == 0x80:
            j -= 1
        lead = chunk[j]
        width = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        cut = k if j + width <= k else j
        if cut == 0:
            # the first character has more bytes than units are left: take it whole
            cut = width
            if pos + cut > end:
                raise DecodeError(pos, "string overruns the frame")
            chunk = bytes(buf[pos : pos + cut])
        try:
            text = chunk[:cut].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise DecodeError(pos + e.start, "invalid UTF-8 in a string") from None
        # a 4-byte character is a surrogate pair in Java: 2 units
        units = len(text.encode("utf-16-le", "surrogatepass")) >> 1
        if units > n:
            raise DecodeError(pos, "a character crosses the end of the string")
        parts.append(text)
        n -= units
        pos += cut
    return "".join(parts), pos


def _short_string(data: bytes, pos: int, end: int) -> tuple[str, int] | None:
    """The string at ``pos`` (``pos < end``) when it is short (under 32 characters, one
    byte of length) and ASCII, as names, keys and most values are: (text, position after).
    None for any other string: the rest of :func:`_string_at` reads it. (Compiled,
    hessian2.pxd makes the offsets C integers and decodes from ``data``'s buffer.)"""
    code = data[pos]
    if code < 0x20:
        stop = pos + 1 + code
        if stop <= end and stop <= len(data):
            try:
                return data[pos + 1 : stop].decode("ascii"), stop
            except UnicodeDecodeError:
                pass
    return None


def _string_at(buf, pos: int, end: int) -> tuple[str, int]:
    """A string (not null) at ``pos``, in any form including chunks."""
    if pos >= end:
        raise DecodeError(pos, "expected a string, found the end of the frame")
    if type(buf) is bytes:  # a short ASCII string, as names, keys and most values are
        found = _short_string(buf, pos, end)
        if found is not None:
            return found
    start = pos
    code = buf[pos]
    parts = []
    while True:
        if code < 0x20:
            n = code
            pos += 1
            final = True
        elif 0x30 <= code <= 0x33:
            if pos + 2 > end:
                raise _truncated(pos, "string length")
            n = ((code - 0x30) << 8) + buf[pos + 1]
            pos += 2
            final = True
        elif code == 0x53 or code == 0x52:  # 'S' final chunk, 'R' chunk followed by more
            if pos + 3 > end:
                raise _truncated(pos, "string length")
            n = (buf[pos + 1] << 8) + buf[pos + 2]
            pos += 3
            final = code == 0x53
        else:
            what = "string chunk" if parts else "string"
            raise DecodeError(pos, f"expected a {what}, found code {code:#04x}")
        stop = pos + n
        if final and not parts and stop <= end:
            chunk = bytes(buf[pos:stop])
            if chunk.isascii():
                return chunk.decode("ascii"), stop
        text, pos = _units(buf, pos, end, n)
        parts.append(text)
        if final:
            break
        if pos >= end:
            raise DecodeError(pos, "string chunk is not followed by the rest of the string")
        code = buf[pos]
    text = parts[0] if len(parts) == 1 else "".join(parts)
    if not text.isascii() and _SURROGATE.search(text):
        # pair the surrogates Java wrote one by one; a lone one is not text
        try:
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise DecodeError(start, "string holds an unpaired UTF-16 surrogate") from None
    return text, pos


# ---- skipping any value -------------------------------------------------------------------

# Total size of values whose size their code fixes (0: anything else).
_FIXED = [0] * 256
for _c in range(0x80, 0xC0):
    _FIXED[_c] = 1  # int, one byte
for _c in range(0xC0, 0xD0):
    _FIXED[_c] = 2
for _c in range(0xD0, 0xD8):
    _FIXED[_c] = 3
for _c in range(0xD8, 0xF0):
    _FIXED[_c] = 1  # long, one byte
for _c in range(0xF0, 0x100):
    _FIXED[_c] = 2
for _c in range(0x38, 0x40):
    _FIXED[_c] = 3
for _c in range(0x20, 0x30):
    _FIXED[_c] = 1 + _c - 0x20  # short binary
for _c, _n in (
    (0x44, 9),  # 'D' double
    (0x46, 1),  # 'F'
    (0x49, 5),  # 'I'
    (0x4A, 9),  # date, ms
    (0x4B, 5),  # date, minutes
    (0x4C, 9),  # 'L'
    (0x4E, 1),  # 'N'
    (0x54, 1),  # 'T'
    (0x59, 5),  # long as int
    (0x5B, 1),
    (0x5C, 1),
    (0x5D, 2),
    (0x5E, 3),
    (0x5F, 5),
):
    _FIXED[_c] = _n


def _skip(buf, pos: int, end: int, ctx: Context, depth: int) -> int:
    """The position after the one value (with any class definitions before it) at ``pos``."""
    if pos >= end:
        raise DecodeError(pos, "expected a value, found the end of the frame")
    code = buf[pos]
    size = _FIXED[code]
    if size:
        new = pos + size
        if new > end:
            raise DecodeError(pos, f"value {code:#04x} overruns the frame")
        return new
    return _COMPLEX[code](buf, pos, end, ctx, depth)


def _skip_string(buf, pos, end, ctx, depth):
    return _string_at(buf, pos, end)[1]


def _skip_binary(buf, pos, end, ctx, depth):
    code = buf[pos]
    while True:
        start = pos
        if 0x20 <= code <= 0x2F:
            pos += 1 + code - 0x20
            final = True
        elif 0x34 <= code <= 0x37:
            if pos + 2 > end:
                raise _truncated(pos, "binary length")
            pos += 2 + ((code - 0x34) << 8) + buf[pos + 1]
            final = True
        elif code == 0x42 or code == 0x41:  # 'B' final chunk, 'A' chunk followed by more
            if pos + 3 > end:
                raise _truncated(pos, "binary length")
            pos += 3 + (buf[pos + 1] << 8) + buf[pos + 2]
            final = code == 0x42
        else:
            raise DecodeError(pos, f"expected a binary chunk, found code {code:#04x}")
        if pos > end:
            raise DecodeError(start, "binary overruns the frame")
        if final:
            return pos
        if pos >= end:
            raise DecodeError(pos, "binary chunk is not followed by the rest of the binary")
        code = buf[pos]


def _class_def(buf, pos: int, end: int, ctx: Context) -> int:
    """Read the class definition at ``pos`` ('C' name count field-name*) into ``ctx``."""
    name, p = _string_at(buf, pos + 1, end)
    count, q = _int_at(buf, p, end)
    if count < 0 or count > end - q:
        raise DecodeError(p, f"bad field count {count} in class definition {name!r}")
    fields = []
    for _ in range(count):
        field, q = _string_at(buf, q, end)
        fields.append(field)
    ctx.classes.append((name, tuple(fields)))
    return q


def _skip_class_def(buf, pos, end, ctx, depth):
    # a definition precedes the value using it; loop (not recurse) over a run of them
    while True:
        pos = _class_def(buf, pos, end, ctx)
        if pos >= end:
            raise DecodeError(pos, "class definition is not followed by a value")
        if buf[pos] != 0x43:
            return _skip(buf, pos, end, ctx, depth)


def _type_at(buf, pos: int, end: int, ctx: Context) -> tuple[str, int]:
    """The type of a typed list or map: a new type name, or the index of an earlier one."""
    if pos >= end:
        raise DecodeError(pos, "expected a type, found the end of the frame")
    code = buf[pos]
    if code < 0x20 or 0x30 <= code <= 0x33 or code == 0x52 or code == 0x53:
        name, pos = _string_at(buf, pos, end)
        ctx.types.append(name)
        return name, pos
    ref, new = _int_at(buf, pos, end)
    if not 0 <= ref < len(ctx.types):
        raise DecodeError(pos, f"type reference {ref} to an unknown type")
    return ctx.types[ref], new


def _deeper(pos: int, depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise DecodeError(pos, f"values nested deeper than {MAX_DEPTH} levels")
    return depth + 1


def _skip_list(buf, pos, end, ctx, depth):
    code = buf[pos]
    inner = _deeper(pos, depth)
    p = pos + 1
    if code == 0x55 or code == 0x56 or 0x70 <= code <= 0x77:
        _, p = _type_at(buf, p, end, ctx)
    if code == 0x55 or code == 0x57:  # variable length, ends with 'Z'
        while True:
            if p >= end:
                raise DecodeError(p, "list has no end ('Z') before the end of the frame")
            if buf[p] == 0x5A:
                return p + 1
            p = _skip(buf, p, end, ctx, inner)
    if code == 0x56 or code == 0x58:
        n, q = _int_at(buf, p, end)
        if n < 0 or n > end - q:  # every element takes at least one byte
            raise DecodeError(p, f"bad list length {n}")
        p = q
    elif code <= 0x77:
        n = code - 0x70
    else:
        n = code - 0x78
    for _ in range(n):
        p = _skip(buf, p, end, ctx, inner)
    return p


def _skip_map(buf, pos, end, ctx, depth):
    inner = _deeper(pos, depth)
    p = pos + 1
    if buf[pos] == 0x4D:  # 'M': typed
        _, p = _type_at(buf, p, end, ctx)
    while True:
        if p >= end:
            raise DecodeError(p, "map has no end ('Z') before the end of the frame")
        if buf[p] == 0x5A:
            return p + 1
        p = _skip(buf, p, end, ctx, inner)
        p = _skip(buf, p, end, ctx, inner)


def _skip_object(buf, pos, end, ctx, depth):
    code = buf[pos]
    if code == 0x4F:  # 'O' int
        ref, p = _int_at(buf, pos + 1, end)
    else:
        ref, p = code - 0x60, pos + 1
    if not 0 <= ref < len(ctx.classes):
        raise DecodeError(pos, f"object of unknown class definition {ref}")
    inner = _deeper(pos, depth)
    for _ in range(len(ctx.classes[ref][1])):
        p = _skip(buf, p, end, ctx, inner)
    return p


def _skip_ref(buf, pos, end, ctx, depth):
    ref, p = _int_at(buf, pos + 1, end)
    if ref < 0:
        raise DecodeError(pos, f"negative reference {ref}")
    return p


def _bad(buf, pos, end, ctx, depth):
    code = buf[pos]
    if code == 0x5A:
        raise DecodeError(pos, "unexpected end of list or map ('Z')")
    raise DecodeError(pos, f"unknown value code {code:#04x}")


_COMPLEX = [_bad] * 256
for _c in [*range(0x00, 0x20), *range(0x30, 0x34), 0x52, 0x53]:
    _COMPLEX[_c] = _skip_string
for _c in [*range(0x34, 0x38), 0x41, 0x42]:
    _COMPLEX[_c] = _skip_binary
for _c in [0x55, 0x56, 0x57, 0x58, *range(0x70, 0x80)]:
    _COMPLEX[_c] = _skip_list
for _c in [0x4F, *range(0x60, 0x70)]:
    _COMPLEX[_c] = _skip_object
_COMPLEX[0x43] = _skip_class_def
_COMPLEX[0x48] = _skip_map
_COMPLEX[0x4D] = _skip_map
_COMPLEX[0x51] = _skip_ref
del _c, _n

# How map() reads a key or value: s string, i int/long, d double, n/t/f, else kept raw.
_SIMPLE = [""] * 256
for _c in [*range(0x00, 0x20), *range(0x30, 0x34), 0x52, 0x53]:
    _SIMPLE[_c] = "s"
for _c in [*range(0x80, 0x100), *range(0x38, 0x40), 0x49, 0x4C, 0x59]:
    _SIMPLE[_c] = "i"
for _c in (0x44, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F):
    _SIMPLE[_c] = "d"
_SIMPLE[0x4E] = "n"
_SIMPLE[0x54] = "t"
_SIMPLE[0x46] = "f"
del _c


def _value_at(buf, pos: int, end: int, ctx: Context):
    if pos >= end:
        raise DecodeError(pos, "expected a value, found the end of the frame")
    kind = _SIMPLE[buf[pos]]
    if kind == "s":
        return _string_at(buf, pos, end)
    if kind == "i":
        return _int_at(buf, pos, end, True)
    if kind == "n":
        return None, pos + 1
    if kind == "t":
        return True, pos + 1
    if kind == "f":
        return False, pos + 1
    if kind == "d":
        return _double_at(buf, pos, end)
    new = _skip(buf, pos, end, ctx, 1)
    return Raw(bytes(buf[pos:new])), new


# ---- writing ------------------------------------------------------------------------------

_SMALL_INTS = tuple(bytes((v + 0x90,)) for v in range(-0x10, 0x30))
_SHORT_STRING = tuple(bytes((n,)) for n in range(0x20))


def encode_int(value: int) -> bytes:
    """An int the way Hessian2Output.writeInt writes it; a long ('L') beyond 32 bits."""
    if -0x10 <= value <= 0x2F:
        return _SMALL_INTS[value + 0x10]
    if -0x800 <= value <= 0x7FF:
        return bytes((0xC8 + (value >> 8), value & 0xFF))
    if -0x40000 <= value <= 0x3FFFF:
        return bytes((0xD4 + (value >> 16), (value >> 8) & 0xFF, value & 0xFF))
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return b"I" + _I32.pack(value)
    if -(1 << 63) <= value < (1 << 63):
        return b"L" + _I64.pack(value)
    raise ValueError(f"hessian2 int {value} overflows 64 bits")


def _split_non_bmp(m: re.Match) -> str:
    c = ord(m.group()) - 0x10000
    return chr(0xD800 + (c >> 10)) + chr(0xDC00 + (c & 0x3FF))


def encode_string(value: str | None) -> bytes:
    """A string the way Hessian2Output.writeString writes it: lengths in UTF-16 units, chunks
    of 0x8000 units ('R', never ending on a high surrogate), the last part in the shortest
    form, characters outside the BMP as two 3-byte surrogates (CESU-8). None → 'N'."""
    if value is None:
        return b"N"
    if value.isascii():
        n = len(value)
        if n <= 0x1F:
            return _SHORT_STRING[n] + value.encode("ascii")
        java = value
    elif max(value) > "\uffff":
        java = _NON_BMP.sub(_split_non_bmp, value)  # one Python char per UTF-16 unit
    else:
        java = value
    n = len(java)
    parts = []
    off = 0
    while n > 0x8000:
        sub = 0x8000
        if "\ud800" <= java[off + sub - 1] <= "\udbff":
            sub -= 1
        parts.append(b"R" + _U16.pack(sub))
        parts.append(java[off : off + sub].encode("utf-8", "surrogatepass"))
        n -= sub
        off += sub
    if n <= 0x1F:
        parts.append(_SHORT_STRING[n])
    elif n <= 0x3FF:
        parts.append(bytes((0x30 + (n >> 8), n & 0xFF)))
    else:
        parts.append(b"S" + _U16.pack(n))
    parts.append((java[off:] if off else java).encode("utf-8", "surrogatepass"))
    return b"".join(parts)


def encode_value(value) -> bytes:
    """A simple value as map() writes it: str, int, bool, None, float ('D') or Raw."""
    if value is None:
        return b"N"
    t = type(value)
    if t is str:
        return encode_string(value)
    if t is bool:
        return b"T" if value else b"F"
    if t is int:
        return encode_int(value)
    if t is float:
        return b"D" + _F64.pack(value)
    if t is Raw:
        return value.data
    # subclasses (bool has none: every bool was written above)
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, int):
        return encode_int(value)
    if isinstance(value, float):
        return b"D" + _F64.pack(value)
    raise TypeError(f"hessian2.map cannot write a {t.__name__}")


# ---- the field types ----------------------------------------------------------------------


class String(FieldType):
    """A string, or None for null ('N')."""

    VALUE = "str"
    NULLABLE = True  # hessian2's null (N) reads as None, and None writes N
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        if pos < end and buf[pos] == 0x4E:
            return None, pos + 1
        return _string_at(buf, pos, end)

    def write(self, value, ctx=None) -> bytes:
        return encode_string(value)


class Int(FieldType):
    """An int or a long, in any of their forms."""

    VALUE = "int"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        if pos < end:
            code = buf[pos]
            if 0x80 <= code <= 0xBF:
                return code - 0x90, pos + 1
        return _int_at(buf, pos, end, True)

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            raise ValueError("hessian2.int cannot write None")
        return encode_int(value)


class Any(FieldType):
    """Any one value (with the class definitions before it), kept as its raw bytes."""

    VALUE = "raw"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        new = _skip(buf, pos, end, ctx if ctx is not None else Context(), 0)
        return bytes(buf[pos:new]), new

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            return b"N"
        if type(value) is Raw:
            return value.data
        return bytes(value)


class Map(FieldType):
    """An untyped ('H') or typed ('M') map → dict, or None for null. Strings, ints, longs,
    bools, nulls and doubles become Python values; anything else a :class:`Raw`. Written
    back as an untyped map."""

    VALUE = "map"
    NULLABLE = True  # hessian2's null (N) reads as None, and None writes N
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        if pos >= end:
            raise DecodeError(pos, "expected a map, found the end of the frame")
        if ctx is None:
            ctx = Context()
        code = buf[pos]
        if code == 0x48:  # 'H'
            p = pos + 1
        elif code == 0x4D:  # 'M' type
            _, p = _type_at(buf, pos + 1, end, ctx)
        elif code == 0x4E:
            return None, pos + 1
        else:
            raise DecodeError(pos, f"expected a map, found code {code:#04x}")
        out = {}
        while True:
            if p >= end:
                raise DecodeError(p, "map has no end ('Z') before the end of the frame")
            if buf[p] == 0x5A:
                return out, p + 1
            key, p = _value_at(buf, p, end, ctx)
            out[key], p = _value_at(buf, p, end, ctx)

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            return b"N"
        parts = [b"H"]
        for k, v in value.items():
            parts.append(encode_value(k))
            parts.append(encode_value(v))
        parts.append(b"Z")
        return b"".join(parts)


# ---- functions for spec expressions -------------------------------------------------------

# JVM field descriptors, as Dubbo's ReflectUtils.DESC_PATTERN accepts them, one after another.
# Possessive: each descriptor has one way to match, so nothing is retried (linear time).
_DESCS = re.compile(r"(?:\[*+(?:[VZBCDSIFJ]|L[^;/\[.]++(?:/[^;/\[.]++)*+;))*+")
_CLASS_NAME = re.compile(r"L[^;]*;")
_PRIMITIVES = "VZBCDSIFJ"


@functools.lru_cache(maxsize=512)
def _count_descriptors(descriptor: str) -> int:
    if not descriptor.strip(_PRIMITIVES):  # "IIJ...": one descriptor a character
        return len(descriptor)
    done = _DESCS.match(descriptor).end()
    if done != len(descriptor):
        raise DecodeError(0, f"malformed parameter descriptor at character {done}")
    flat = _CLASS_NAME.sub("L", descriptor)  # one letter a descriptor, after its '['s
    return len(flat) - flat.count("[")


def arg_count(descriptor: str | None) -> int:
    """How many arguments a Dubbo parameter descriptor declares:
    ``"Ljava/lang/String;I[Ljava/lang/Object;[[J"`` → 4; None or "" → 0. Linear time in C:
    a descriptor of 10^6 characters takes milliseconds."""
    if not descriptor:
        return 0
    if not isinstance(descriptor, str):
        raise DecodeError(0, "parameter descriptor is not a string")
    if len(descriptor) > 512:  # keep the cache small: long descriptors are not cached
        return _count_descriptors.__wrapped__(descriptor)
    return _count_descriptors(descriptor)


def _draft_string(value: str) -> bytes:
    """A string in the Hessian 2.0 draft codes SOFA's hessian writes: up to 31 UTF-16 units in
    one length byte, else 's' chunks (u16 length, 0x8000 units, never ending on a high
    surrogate) and a final 'S' chunk; CESU-8 like encode_string."""
    java = _NON_BMP.sub(_split_non_bmp, value)
    if len(java) <= 0x1F:
        return _SHORT_STRING[len(java)] + java.encode("utf-8", "surrogatepass")
    parts = []
    while len(java) > 0x8000:
        sub = 0x8000 - ("\ud800" <= java[0x7FFF] <= "\udbff")
        parts.append(b"s" + _U16.pack(sub) + java[:sub].encode("utf-8", "surrogatepass"))
        java = java[sub:]
    parts.append(b"S" + _U16.pack(len(java)) + java.encode("utf-8", "surrogatepass"))
    return b"".join(parts)


def sofa_exception(class_name: str, message: str | None) -> bytes:
    """A Java exception object as SOFA's hessian writes it for a bolt error answer (what
    sofa-rpc-node's server sends, and the only content sofa-bolt-node reads from a bolt response
    whose status is not SUCCESS: it decodes any other content as such an object, and a bare
    string or text fails its whole connection). Hessian 2.0 draft codes, unlike the rest of
    this module: 'O' class definition (int name length, name, int field count, field names),
    'o' instance (int definition number), then the fields: detailMessage = message,
    stackTrace = null, cause = null."""
    name = class_name.encode()
    fields = (b"detailMessage", b"stackTrace", b"cause")
    out = [b"O", encode_int(len(name)), name, encode_int(len(fields))]
    out += [_SHORT_STRING[len(field)] + field for field in fields]
    out += [b"o", encode_int(0), b"N" if message is None else _draft_string(message), b"NN"]
    return b"".join(out)


TYPES: dict[str, type] = {"string": String, "int": Int, "any": Any, "map": Map}
FUNCTIONS: dict[str, object] = {"arg_count": arg_count, "sofa_exception": sofa_exception}
