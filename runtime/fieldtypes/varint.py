"""LEB128 variable-length integers (protobuf / Kafka style): ``unsigned`` and zigzag ``signed``.

Owns only the encoding of one 64-bit integer. A value takes at most 10 bytes; an 11th byte,
or a 10th byte carrying bits above bit 63, is a DecodeError. Redundant trailing zero groups
(``0x80 0x00``) are accepted, as protobuf and Kafka readers accept them.
"""

from __future__ import annotations

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

MAX_BYTES = 10
_U64 = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

# Single-byte encodings are by far the most common (lengths, counts, small ids): precompute.
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def _read(buf, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise DecodeError(pos, "expected a varint, found the end of the frame")
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value = b & 0x7F
    shift = 7
    p = pos + 1
    while True:
        if p >= end:
            raise DecodeError(p, "varint runs past the end of the frame")
        b = buf[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 7 * MAX_BYTES:
            raise DecodeError(pos, f"varint longer than {MAX_BYTES} bytes")
    if value >= _U64:
        raise DecodeError(pos, "varint overflows 64 bits")
    return value, p


def _measure(buf, pos: int):
    """A generator reading a varint from a buffer that grows while it waits: it yields the
    buffer length it needs before it can go on, and returns ``(value, end)`` as ``_read``.
    However the varint arrives, each of its bytes is read twice at most: once to find its
    end, once to decode it."""
    p = pos
    while True:
        while p >= len(buf):
            yield p + 1
        if buf[p] < 0x80 or p - pos >= MAX_BYTES - 1:
            break
        p += 1
    return _read(buf, pos, p + 1)


def _write(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError(f"unsigned varint cannot hold {value}")
        return _ONE_BYTE[value]
    if value >= _U64:
        raise ValueError(f"varint {value} overflows 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Unsigned(FieldType):
    """An unsigned LEB128 varint (0 .. 2**64-1)."""

    VALUE = "int"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[int, int]:
        return _read(buf, pos, end)

    def measure(self, buf, pos: int, ctx=None):
        return (yield from _measure(buf, pos))

    def write(self, value: int, ctx=None) -> bytes:
        return _write(value)


class Signed(FieldType):
    """A zigzag-encoded signed varint (-2**63 .. 2**63-1): 0, -1, 1, -2 … → 0, 1, 2, 3 …"""

    VALUE = "int"
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[int, int]:
        n, pos = _read(buf, pos, end)
        return (n >> 1) ^ -(n & 1), pos

    def measure(self, buf, pos: int, ctx=None):
        n, pos = yield from _measure(buf, pos)
        return (n >> 1) ^ -(n & 1), pos

    def write(self, value: int, ctx=None) -> bytes:
        if not _I64_MIN <= value <= _I64_MAX:
            raise ValueError(f"signed varint {value} overflows 64 bits")
        return _write(((value << 1) ^ (value >> 63)) & (_U64 - 1))


TYPES: dict[str, type] = {"unsigned": Unsigned, "signed": Signed}
FUNCTIONS: dict[str, object] = {}


def new_context() -> None:
    """Varints need no per-message state."""
    return None
