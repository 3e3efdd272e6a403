"""JSON: one JSON object in a field of a size the frame gives (``json.object[header_len]``),
as RocketMQ's remoting protocol carries its request header, or a JSON-RPC envelope does.

The value is a dict (VALUE "map"): a spec reads it like any map (``header["opaque"]``), a
request id may live in it (``request_id = header["opaque"]``, rewritten by the proxy and
written back, the sizes that measure it following), and the encoder writes it back compact
(``{"a":1}``: no spaces, key order kept, UTF-8). An unmodified frame is forwarded as its
bytes, so a peer's spacing survives unless the proxy changes the object.

Untrusted bytes are refused with a DecodeError at the field: invalid UTF-8 or JSON, a value
that is not an object, ``NaN``/``Infinity`` (not JSON), numbers of more than
:data:`MAX_DIGITS` digits, nesting deeper than :data:`MAX_DEPTH` (checked before parsing,
so no input reaches the parser's recursion limit), and a ``\\uD800`` escape that is not half of
a surrogate pair (no character: the value could not be written back as UTF-8, nor printed).
"""

from __future__ import annotations

import json as _json
import re

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

#: arrays and objects nested deeper than this are refused (RocketMQ's header nests 2 deep)
MAX_DEPTH = 64
#: the longest integer or fraction, in digits
MAX_DIGITS = 64

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), 0x22, 0x5C


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _number(text: str):
    if len(text) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} characters")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    return float(_number(text))


_DECODER = _json.JSONDecoder(
    parse_constant=_not_json, parse_int=_int, parse_float=_float, strict=True
)


#: every escape of a JSON text that parsed (a backslash is only ever an escape's), its code if \u
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")


def _lone_surrogate_at(text: str) -> int:
    """The offset in ``text`` of the first \\uXXXX escape that is half of a surrogate pair alone
    (Python's decoder pairs a high one with the low one right after it), or -1."""
    high = -1  # a high surrogate's escape waiting for its low half: where it starts
    ends = -1  # and where it ends
    for m in _ESCAPE.finditer(text):
        code = int(m.group(1), 16) if m.group(1) else -1
        if high >= 0:
            if m.start() == ends and 0xDC00 <= code <= 0xDFFF:
                high = -1
                continue
            return high
        if 0xD800 <= code <= 0xDBFF:
            high, ends = m.start(), m.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return m.start()
    return high


def _depth_at(data: bytes) -> int:
    """The offset where nesting first exceeds MAX_DEPTH, or -1 (strings skipped)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return -1  # (cannot be deeper: no need to walk it)
    depth, in_string, escaped = 0, False, False
    for i, b in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif b == _BACKSLASH:
                escaped = True
            elif b == _QUOTE:
                in_string = False
        elif b == _QUOTE:
            in_string = True
        elif b in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return i
        elif b in _CLOSE:
            depth -= 1
    return -1


class Object(FieldType):
    """A JSON object → dict, written back compact."""

    VALUE = "map"
    WINDOW = True  # one object fills the bytes the frame gives it: json.object[n]
    __slots__ = ()

    def read(self, buf, pos: int, end: int, ctx=None):
        data = bytes(buf[pos:end])
        deep = _depth_at(data)
        if deep >= 0:
            raise DecodeError(pos + deep, f"JSON nested more than {MAX_DEPTH} deep")
        try:
            text = data.decode()
        except UnicodeDecodeError as e:
            raise DecodeError(pos + e.start, "invalid UTF-8 in a JSON value") from None
        try:
            value, stop = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
        except _json.JSONDecodeError as e:
            at = pos + len(text[: e.pos].encode())
            raise DecodeError(at, f"invalid JSON: {e.msg}") from None
        except ValueError as e:  # (a constant or number the hooks refuse)
            raise DecodeError(pos, f"invalid JSON: {e}") from None
        if text[stop:].strip():
            raise DecodeError(pos + len(text[:stop].encode()), "bytes after the JSON value")
        if not isinstance(value, dict):
            raise DecodeError(pos, f"expected a JSON object, found {type(value).__name__}")
        if "\\u" in text:
            lone = _lone_surrogate_at(text)
            if lone >= 0:
                at = pos + len(text[:lone].encode())
                raise DecodeError(at, "a lone surrogate escape in a JSON string (no character)")
        return value, end

    def write(self, value, ctx=None) -> bytes:
        if value is None:
            value = {}
        return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


TYPES = {"object": Object}
FUNCTIONS: dict = {}


def new_context():
    return None
