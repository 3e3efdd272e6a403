"""Text encodings: bytes and strings that end at a delimiter, ASCII decimal integers, and
literal tokens (Redis RESP's ``$5\\r\\nhello\\r\\n``, memcached's text commands, HTTP/1 lines).

Specs do not name this library (``texts``): the language spells its types ``bytes[until "\\r\\n"]``,
``string[until "\\r\\n"]``, ``decimal[until "\\r\\n"]`` and a literal token ``crlf "\\r\\n"``
(docs/language.md), and the parser turns them into these field types.

A delimiter or token is given as text whose characters are bytes 0-255 (the spec's ``"\\xff"``
is one byte). A delimited value never contains its delimiter: ``write`` refuses one that does
(the peer would end the value there). A decimal is canonical: an optional ``-`` and digits
without leading zeros (``0``, ``42``, ``-1``; not ``007``, ``-0`` or ``+1``), at most 20
characters, so that an unmodified frame re-encodes to its bytes; anything else is refused.
``measure`` scans a growing buffer from where it stopped (each byte is examined once, plus the
delimiter's length less one at every wait), and a decimal is refused at its first bad byte
rather than at its delimiter.
"""

from __future__ import annotations

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes.base import FieldType

#: "-" and 19 digits hold any 64-bit integer; longer is not a number these protocols send
MAX_DECIMAL = 20
_DIGITS = frozenset(b"0123456789")


def _octets(text: str, what: str) -> bytes:
    try:
        out = text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be bytes 0-255 (\\xNN), not {text!r}") from None
    if not out:
        raise ValueError(f"{what} must not be empty")
    return out


def _find(buf, pos: int, end: int, delim: bytes, what: str) -> int:
    i = buf.find(delim, pos, end)
    if i < 0:
        raise DecodeError(pos, f"{what} runs past the end of the frame without {delim!r}")
    return i


def _until(buf, pos: int, delim: bytes):
    """A generator: the offset of the first ``delim`` at or after ``pos`` in a growing
    buffer, yielding the length it needs while there is none yet."""
    k = len(delim)
    p = pos
    while True:
        i = buf.find(delim, p)
        if i >= 0:
            return i
        p = max(p, len(buf) - k + 1)  # a delimiter may straddle what arrives next
        yield max(len(buf) + 1, p + k)  # (p is past the buffer after a skipped value)


class Bytes(FieldType):
    """Bytes up to a delimiter, which follows them on the wire and is not part of the value."""

    PARAMS = ("delimiter",)
    PARAM_TYPES = (str,)
    VALUE = "bytes"
    __slots__ = ("delim", "what")

    def __init__(self, delimiter: str):
        self.delim = _octets(delimiter, "a delimiter")
        self.what = "a value ending in %r" % self.delim

    def _value(self, buf, pos: int, i: int):
        return buf[pos:i]  # (a bytearray's slice when decoding the runtime's buffer)

    def read(self, buf, pos: int, end: int, ctx=None):
        i = _find(buf, pos, end, self.delim, self.what)
        return self._value(buf, pos, i), i + len(self.delim)

    def measure(self, buf, pos: int, ctx=None):
        i = yield from _until(buf, pos, self.delim)
        return None, i + len(self.delim)

    def _octets(self, value) -> bytes:
        return bytes(value)

    def write(self, value, ctx=None) -> bytes:
        data = self._octets(value) + self.delim
        if data.find(self.delim) != len(data) - len(self.delim):  # (in it, or made by its end)
            raise ValueError(f"{self.what} cannot hold {self.delim!r}: the peer would end it there")
        return data


class String(Bytes):
    """UTF-8 text up to a delimiter."""

    VALUE = "str"
    __slots__ = ()

    def _value(self, buf, pos: int, i: int):
        try:
            return buf[pos:i].decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(pos + e.start, f"invalid UTF-8 in text ({e.reason})") from None

    def _octets(self, value) -> bytes:
        return value.encode("utf-8")


class Decimal(FieldType):
    """A signed integer written in ASCII decimal digits, ended by a delimiter."""

    PARAMS = ("delimiter",)
    PARAM_TYPES = (str,)
    VALUE = "int"
    __slots__ = ("delim",)

    def __init__(self, delimiter: str):
        self.delim = _octets(delimiter, "a delimiter")
        if self.delim[0] in _DIGITS:
            raise ValueError("a decimal's delimiter cannot start with a digit")

    def _number(self, buf, pos: int, i: int) -> int:
        text = buf[pos:i]
        digits = text[1:] if text[:1] == b"-" else text
        if (
            not digits
            or len(text) > MAX_DECIMAL
            or not _DIGITS.issuperset(digits)
            or (digits[0] == 0x30 and (len(digits) > 1 or text[:1] == b"-"))
        ):
            raise DecodeError(pos, f"expected a decimal number, found {bytes(text[:24])!r}")
        return int(text)

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[int, int]:
        i = buf.find(self.delim, pos, min(end, pos + MAX_DECIMAL + len(self.delim)))
        if i < 0:
            if end - pos < MAX_DECIMAL + len(self.delim):
                raise DecodeError(pos, "a decimal number runs past the end of the frame")
            raise DecodeError(pos, f"expected a decimal number, found {bytes(buf[pos:pos + 24])!r}")
        return self._number(buf, pos, i), i + len(self.delim)

    def measure(self, buf, pos: int, ctx=None):
        p = pos
        first = self.delim[0]
        while True:  # digits (and a leading "-") until the delimiter's first byte
            while p >= len(buf):
                yield p + 1
            b = buf[p]
            if b == first and p > pos:
                break
            if not (b in _DIGITS or (b == 0x2D and p == pos)) or p - pos >= MAX_DECIMAL:
                raise DecodeError(
                    pos, f"expected a decimal number, found {bytes(buf[pos:p + 1])!r}"
                )
            p += 1
        k = len(self.delim)
        while len(buf) < p + k:
            yield p + k
        return self.read(buf, pos, p + k)

    def write(self, value: int, ctx=None) -> bytes:
        text = str(int(value)).encode()
        if len(text) > MAX_DECIMAL:
            raise ValueError(f"decimal {value} is longer than {MAX_DECIMAL} characters")
        return text + self.delim


class Token(FieldType):
    """Literal bytes: checked on decode, written as they are."""

    PARAMS = ("token",)
    PARAM_TYPES = (str,)
    VALUE = "none"
    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = _octets(token, "a token")

    def read(self, buf, pos: int, end: int, ctx=None) -> tuple[None, int]:
        k = len(self.token)
        if pos + k > end:
            raise DecodeError(pos, f"expected {self.token!r}, found the end of the frame")
        if buf[pos : pos + k] != self.token:
            raise DecodeError(pos, f"expected {self.token!r}, found {bytes(buf[pos:pos + k])!r}")
        return None, pos + k

    def measure(self, buf, pos: int, ctx=None):
        k = len(self.token)
        while len(buf) < pos + k:
            yield pos + k
        return self.read(buf, pos, pos + k)

    def write(self, value=None, ctx=None) -> bytes:
        return self.token


TYPES: dict[str, type] = {"bytes": Bytes, "string": String, "decimal": Decimal, "token": Token}
FUNCTIONS: dict[str, object] = {}


def new_context() -> None:
    """Text values need no per-message state."""
    return None
