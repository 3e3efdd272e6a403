"""The stable API between the runtime and protocol codecs (generated modules and plug-ins).

A codec module exposes ``PROTOCOL``, an :class:`XProtocol`, whose frames are :class:`XFrame`
instances. The model follows MOSN's XProtocol/XFrame (mosn/api xprotocol.go), in Python
spelling, and is sans-IO: bytes in, frames out; a frame in, bytes out.

Generated code imports only this module and ``runtime.fieldtypes``. A plug-in declares the
``API_VERSION`` it was built against, and :func:`check_api_version` refuses it when that is
another major version or a newer minor one. Documented for plug-in authors in docs/api.md.
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import Any, Callable, ClassVar, Iterator

#: (major, minor) of this API. A minor version adds to it (a plug-in built for 1.0 works with
#: 1.3); a major version changes or removes something.
API_VERSION = (1, 0)

# Re-exported so generated modules need no other import.
Struct = struct.Struct
crc32 = zlib.crc32

#: The runtime's status codes: the vocabulary of hijack and of the status maps.
RUNTIME_CODES = (200, 400, 403, 404, 429, 500, 502, 503, 504)

RUNTIME_REASONS = {
    200: "ok",
    400: "codec error",
    403: "denied",
    404: "no route",
    429: "rate limited",
    500: "internal error",
    502: "upstream unreachable or reset",
    503: "overflow or no healthy endpoint",
    504: "timeout",
}


class DecodeError(Exception):
    """The bytes cannot be a frame of this protocol. ``offset`` counts from the buffer start."""

    def __init__(self, offset: int, reason: str):
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class PluginError(Exception):
    """A plug-in that cannot be used: refused for its API version, failing to import, not what
    its entry point's group needs, or clashing with another one's name. The message names it."""


def check_api_version(plugin: str, declared: Any) -> None:
    """Refuse (:class:`PluginError`) a plug-in built for another major ``API_VERSION`` than
    this one, or for a newer minor one, or that declares none. ``plugin`` names it in the
    message (``plug-in 'acme' (protoc-x-acme 0.1.0)``); ``declared`` is the plug-in's
    ``API_VERSION``, None when it has none."""
    major, minor = API_VERSION
    have = f"this protoc-x has API {major}.{minor}"
    if declared is None:
        raise PluginError(
            f"{plugin} is refused: it declares no API_VERSION (the (major, minor) of "
            f"protoc_x.runtime.api it was built against); {have}"
        )
    if not (
        isinstance(declared, tuple)
        and len(declared) == 2
        and all(type(part) is int and part >= 0 for part in declared)
    ):
        raise PluginError(
            f"{plugin} is refused: its API_VERSION is {declared!r}, not (major, minor); {have}"
        )
    if declared[0] != major or declared[1] > minor:
        raise PluginError(
            f"{plugin} is refused: built for API {declared[0]}.{declared[1]}; {have} (a "
            f"plug-in must be built for API {major}.{minor} or an earlier {major}.x)"
        )


class Match(enum.Enum):
    """Result of :meth:`XProtocol.match` (MOSN: Success / Failed / Again)."""

    SUCCESS = "success"
    FAILED = "failed"
    AGAIN = "again"  # not enough bytes to decide


class PoolMode(enum.Enum):
    MULTIPLEX = "multiplex"  # many requests in flight per connection, matched by request id
    PINGPONG = "pingpong"  # one request per connection at a time
    #: many requests in flight per connection, answered in the order they were written and
    #: matched by that position (no request id: Redis, as twemproxy pipelines it)
    PIPELINE = "pipeline"
    #: a client connection gets an upstream connection of its own, opened for its first
    #: request (routed as any request) and closed with it; every later request follows it,
    #: answers are matched by position, and what the server sends unasked goes to that client
    #: (protocols whose connection is a session: a handshake, server-side state)
    SESSION = "session"


class StreamType(enum.Enum):
    REQUEST = "request"
    ONEWAY = "oneway"  # never answered
    QUIET = "quiet"  # answered only on some outcomes (a cache's quiet get or set)
    RESPONSE = "response"


class Direction(enum.Enum):
    """Which way a frame travels; decoders of protocols whose bytes do not say it need it."""

    REQUEST = "request"
    RESPONSE = "response"


def text(value: Any) -> str | None:
    """A header or routing value as a string (bytes as UTF-8, invalid bytes replaced)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_int(value: Any) -> int | None:
    """A value read as an integer (the ``int()`` of spec expressions); None if it is not one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(text(value).strip())
    except (ValueError, AttributeError):
        return None


def id_like(request_id: int, old: Any) -> Any:
    """A request id to write where ``old`` was (a map's value): as text when that was text,
    as bytes when it was bytes, else as the integer."""
    if isinstance(old, str):
        return str(request_id)
    if isinstance(old, (bytes, bytearray)):
        return b"%d" % request_id
    return request_id


def before(value: str | None, sep: str) -> str | None:
    """The part before the first ``sep``; None when ``sep`` is absent (spec ``before()``)."""
    if value is None:
        return None
    head, found, _ = value.partition(sep)
    return head if found else None


def after(value: str | None, sep: str) -> str | None:
    """The part after the first ``sep``; the whole value when ``sep`` is absent."""
    if value is None:
        return None
    _, found, tail = value.partition(sep)
    return tail if found else value


def value_attr(value: Any, name: str) -> Any:
    """``value.name`` of spec expressions: a record value's field (None when the value is None
    or its layout has no such field), mapped over a list of values."""
    if value is None:
        return None
    if value.__class__ is list:
        return [value_attr(v, name) for v in value]
    return getattr(value, name, None)


def value_item(value: Any, index: Any) -> Any:
    """``items[i]``: an element of a list (from the end when negative); None out of range."""
    if value.__class__ is not list or index is None:
        return None
    try:
        return value[index]
    except (IndexError, TypeError):
        return None


def value_slice(value: Any, start: Any, stop: Any, step: Any) -> list | None:
    """``items[start:stop:step]`` as Python slices it; None for a value that is no list (or a
    step of 0)."""
    if value.__class__ is not list or step == 0:
        return None
    try:
        return value[start:stop:step]
    except TypeError:
        return None


def lower_text(value: Any) -> Any:
    """``lower(x)``: text in lower case (bytes as UTF-8, invalid bytes replaced), mapped over a
    list; None stays None."""
    if value.__class__ is list:
        return [lower_text(v) for v in value]
    value = text(value)
    return None if value is None else value.lower()


def split_words(value: Any) -> list | None:
    """``words(x)``: the words of text, split at runs of white space (bytes stay bytes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).split()
    if isinstance(value, str):
        return value.split()
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    return None


def byte_of(value: Any) -> bytes:
    """``char(x)``: the one byte whose value is ``x`` (b"" when it is not 0..255)."""
    if isinstance(value, int) and 0 <= value <= 255:
        return bytes((value,))
    return b""


def join_text(left: Any, right: Any) -> Any:
    """``a + b`` of text: None is empty; with bytes on either side the result is bytes (a
    string joined as UTF-8), else a string."""
    if left is None:
        left = ""
    if right is None:
        right = ""
    if isinstance(left, str) and isinstance(right, str):
        return left + right
    return as_bytes(left) + as_bytes(right)


def first_value(value: Any) -> Any:
    """A header that may be a list (a command's keys): its first value (None when empty)."""
    if value.__class__ is list:
        return value[0] if value else None
    return value


def header_values(value: Any) -> list[str]:
    """Every value of a header that may be a list, as text (null values left out)."""
    values = value if value.__class__ is list else [value]
    return [t for t in map(text, values) if t is not None]


def need(buf_len: int, pos: int, size: int, limit: int | None) -> bool:
    """True when ``size`` bytes at ``pos`` are available; raise if they overrun a known frame."""
    if pos + size <= buf_len and (limit is None or pos + size <= limit):
        return True
    if limit is not None and pos + size > limit:
        raise DecodeError(pos, f"field of {size} bytes overruns the frame")
    return False


def present_fields(obj) -> dict[str, Any]:
    """The named fields of a frame or a record value that its layout has (not None), under
    the spec's names, in layout order."""
    out = {}
    for name in obj.FIELD_NAMES:
        value = getattr(obj, name)
        if value is not None:
            out[name] = value
    return out


class XRecord:
    """A value of a spec's record (a named layout used as a field type). Generated subclasses
    hold the record's fields as slots, None when absent from its layout."""

    __slots__ = ()
    #: the record's field names in layout order; enum fields: name → {value: member name}
    FIELD_NAMES: ClassVar[tuple[str, ...]] = ()
    FIELD_ENUMS: ClassVar[dict[str, dict[int, str]]] = {}
    __hash__ = None  # (mutable)

    def field_values(self) -> dict[str, Any]:
        return present_fields(self)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.FIELD_NAMES)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.field_values().items())
        return f"{type(self).__name__}({fields})"


def copied(value: XRecord | None) -> XRecord | None:
    """A record value read from a request, copied into a reply (a template's
    ``head = request.head``): the reply's changes, its request id among them, stay its own."""
    if value is None:
        return None
    new = object.__new__(type(value))
    for name in type(value).__slots__:
        setattr(new, name, getattr(value, name))
    return new


class XFrame:
    """One decoded frame. Generated subclasses hold the spec's fields as attributes.

    Semantic accessors are methods with MOSN-style names so that they never collide with a
    spec's field names (a spec may call a field ``status`` or ``headers``).
    """

    # ``length``: bytes the frame occupied on the wire (0 when built, not decoded). Frames of
    # protocols whose bytes do not say their direction add a ``direction`` slot.
    __slots__ = ("length",)
    direction: Direction | None = None
    #: the first frame of its connection in its direction (a handshake): protocols with
    #: ``first_frames`` add a ``first`` slot, set by decode and read by encode
    first: bool = False

    protocol: ClassVar["XProtocol"]
    #: spec field names in layout order (for ``field_values``)
    FIELD_NAMES: ClassVar[tuple[str, ...]] = ()
    #: enum fields: name → {value: member name}
    FIELD_ENUMS: ClassVar[dict[str, dict[int, str]]] = {}

    # -- identity -------------------------------------------------------------------------
    def get_request_id(self) -> int | None:
        raise NotImplementedError

    def set_request_id(self, request_id: int) -> None:
        raise NotImplementedError

    def get_stream_type(self) -> StreamType:
        raise NotImplementedError

    def patch_request_id(self, data: bytearray, request_id: int) -> bool:
        """Write a new id into ``data`` (a copy of this decoded frame's bytes) in place, so a
        proxy forwards the bytes that arrived; False when it cannot (then ``encode``)."""
        return False

    def is_heartbeat(self) -> bool:
        return False

    def is_goaway(self) -> bool:
        return False

    def get_timeout(self) -> int | None:
        """The timeout the frame carries, in ms; None when it carries none, <0 never."""
        return None

    def get_status(self) -> int | None:
        """The protocol's own status code on responses, else None."""
        return None

    # -- routing view ---------------------------------------------------------------------
    def get_service(self) -> str | None:
        return None

    def get_method(self) -> str | None:
        return None

    def get_headers(self) -> dict[str, str | None]:
        return {}

    def get_header(self, name: str) -> str | None:
        return self.get_headers().get(name)

    def get_header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` in order (a command's keys, where a spec's header is
        a list); ``get_header`` and ``get_headers`` give the first."""
        value = self.get_header(name)
        return [] if value is None else [value]

    def set_header(self, name: str, value: str) -> None:
        raise NotImplementedError(f"{self.protocol.name} frames have no writable header map")

    def del_header(self, name: str) -> None:
        raise NotImplementedError(f"{self.protocol.name} frames have no writable header map")

    # -- body -----------------------------------------------------------------------------
    def get_body(self) -> bytes:
        return b""

    def set_body(self, body: bytes) -> None:
        raise NotImplementedError

    # -- bytes ----------------------------------------------------------------------------
    def encode(self) -> bytes:
        """The frame's bytes, with lengths and checksums recomputed."""
        raise NotImplementedError

    def field_values(self) -> dict[str, Any]:
        """Every named field of the layout present in this frame, under the spec's names."""
        return present_fields(self)


class XProtocol:
    """A protocol codec. Generated modules export one instance as ``PROTOCOL``."""

    name: ClassVar[str] = ""
    pool_mode: ClassVar[PoolMode] = PoolMode.MULTIPLEX
    #: responses come back in request order on a connection
    ordered: ClassVar[bool] = False
    #: False when the protocol cannot express an error: the runtime closes instead
    has_error_response: ClassVar[bool] = True
    #: the frames' bytes do not say their direction: decode needs ``direction``
    needs_direction: ClassVar[bool] = False
    #: a connection's first frame in a direction has a layout of its own (a handshake): the
    #: decoder's functions take ``first=True`` for it
    first_frames: ClassVar[bool] = False
    #: frames have a header map that ``set_header`` writes (and the encoder carries)
    writable_headers: ClassVar[bool] = False
    #: the spec defines heartbeats / goaway (when False, ``is_heartbeat``/``is_goaway`` of its
    #: frames are always False and the runtime need not ask)
    has_heartbeat: ClassVar[bool] = False
    has_goaway: ClassVar[bool] = False
    #: the spec answers some requests itself (``answer when``): the runtime asks
    #: :meth:`local_answer`
    has_local_answers: ClassVar[bool] = False
    #: detection: ((offset, width, byteorder, frozenset of values), ...); () = not detectable
    detect: ClassVar[tuple[tuple[int, int, str, frozenset[int]], ...]] = ()
    #: bytes needed to decide a match
    detect_length: ClassVar[int] = 0
    frame_class: ClassVar[type[XFrame]]
    #: how a request id is packed where :meth:`scan` says it sits (None: never in place)
    id_struct: ClassVar[struct.Struct | None] = None

    def match(self, data: bytes) -> Match:
        if not self.detect:
            return Match.FAILED
        for offset, width, order, values in self.detect:
            if len(data) < offset + width:
                return Match.AGAIN
            if int.from_bytes(data[offset : offset + width], order) not in values:
                return Match.FAILED
        return Match.SUCCESS

    def decode(
        self, buf: bytes, start: int = 0, direction: Direction | None = None, into=None,
        first: bool = False,
    ) -> XFrame | None:  # fmt: skip
        """Decode one frame at ``buf[start:]``: the frame (its ``length`` says how many bytes it
        took), None when more bytes are needed, or DecodeError for bytes that cannot be one.
        ``first``: it is its connection's first frame in ``direction`` (``first_frames``
        protocols only: the runtime passes it to decode, scan, frame_size and measure)."""
        raise NotImplementedError

    def scan(
        self, buf: bytes, start: int = 0, direction: Direction | None = None, first: bool = False
    ) -> tuple | None:
        """The frame at ``buf[start:]`` as the runtime's fast lane needs it, without keeping a
        frame: None when more bytes are needed (DecodeError as :meth:`decode`), else

            (length, request id, the id's offset in the frame or -1, stream type,
             heartbeat or goaway, service, method, timeout)

        where a response carries its status in place of the timeout (and None as service and
        method). The id's offset is where :attr:`id_struct` packs a new id in place (-1: the
        frame must be re-encoded). Generated codecs read it in one pass into a reused frame;
        this default decodes a frame and asks it."""
        if first:
            frame = self.decode(buf, start, direction, first=True)
        else:
            frame = self.decode(buf, start, direction)
        if frame is None:
            return None
        kind = frame.get_stream_type()
        special = frame.is_heartbeat() or frame.is_goaway()
        rid = frame.get_request_id()
        if kind is StreamType.RESPONSE:
            return (frame.length, rid, -1, kind, special, None, None, frame.get_status())
        return (frame.length, rid, -1, kind, special, frame.get_service(), frame.get_method(),
                frame.get_timeout())  # fmt: skip

    def frame_size(
        self, buf: bytes, start: int = 0, direction: Direction | None = None, first: bool = False
    ) -> int | None:
        """The length the frame at ``buf[start:]`` announces once its header has arrived (None
        before), so a runtime can refuse an oversized frame without waiting for it."""
        return None

    def measure(
        self, buf: bytearray, start: int = 0, direction: Direction | None = None,
        first: bool = False,
    ):  # fmt: skip
        """For a protocol whose frames end where their last field ends (no length announced):
        a generator that finds the length of the frame at ``buf[start:]`` while ``buf`` grows.
        It yields the buffer length it needs before it can go on (the caller sends it nothing
        and resumes it once ``buf`` has grown that far), returns the frame's length, and
        raises DecodeError for bytes that cannot be a frame. Resumed where it stopped, it reads
        a frame's headers once however the frame arrives (a varint twice) and steps over
        values it need not read. None for protocols whose frames announce their length
        (:meth:`frame_size`)."""
        return None

    def decode_all(self, buf: bytes, direction: Direction | None = None) -> Iterator[XFrame]:
        """Every whole frame in ``buf``; DecodeError on garbage or a partial frame at the end."""
        pos = 0
        while pos < len(buf):
            frame = self.decode(buf, pos, direction)
            if frame is None:
                raise DecodeError(len(buf), "incomplete frame at the end of the input")
            pos += frame.length
            yield frame

    def encode(self, frame: XFrame) -> bytes:
        return frame.encode()

    # -- stream-layer hooks ---------------------------------------------------------------
    def trigger(self, request_id: int) -> XFrame | None:
        """A heartbeat request with this id, or None if the protocol has none."""
        return None

    def reply(self, request: XFrame) -> XFrame | None:
        """The answer to a heartbeat request, or None."""
        return None

    def local_answer(self, request: XFrame) -> tuple[XFrame, bool] | None:
        """The proxy's own answer to ``request`` (the spec's ``answer when``) and whether the
        client's connection closes after it (``answer and close``), or None to send the
        request on. A scan marks such a request special, so it takes the full path."""
        return None

    def hijack(self, request: XFrame, code: int, message: str | None = None) -> XFrame | None:
        """The protocol's own error response to ``request`` for a runtime code; None when the
        protocol has no error response (the runtime then closes the connection)."""
        return None

    def success_response(self, request: XFrame) -> XFrame | None:
        """The success response ``protoc-x serve`` sends, carrying the request's body."""
        return None

    def map_status(self, code: int) -> int | None:
        """Runtime code → the protocol's status code."""
        return None

    def runtime_status(self, status: int) -> int:
        """The protocol's status code → runtime code."""
        return 200 if status == 0 else 500

    def generate_request_id(self, counter: int) -> int:
        return counter


def default_message(code: int) -> str:
    """The human message error responses carry, e.g. ``protoc-x: 429 rate limited``."""
    return f"protoc-x: {code} {RUNTIME_REASONS.get(code, 'error')}"


Factory = Callable[..., Any]


# ---- helpers generated codecs call (part of the stable API) ----------------------------


def utf8(buf: bytes, start: int, stop: int) -> str:
    """``buf[start:stop]`` as UTF-8 text; DecodeError (at ``start``) when it is not UTF-8."""
    try:
        return bytes(buf[start:stop]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(start + e.start, "invalid UTF-8 in a string field") from None


def as_bytes(value: Any) -> bytes:
    """A template value for a bytes field: text becomes UTF-8."""
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def read_kvmap(buf: bytes, pos: int, end: int, length: Any, signed: bool) -> dict:
    """Key/value pairs until ``end``, each key and value prefixed by a length read with
    ``length`` (a Struct, or a field type with ``read``). With a signed prefix, -1 means null."""
    if not isinstance(length, struct.Struct):
        out, pos = _read_pairs(buf, pos, end, None, length, signed)
        return out
    return read_kvmap_fixed(buf, pos, end, length, signed)


def read_kvmap_fixed(buf: bytes, pos: int, end: int, length: struct.Struct, signed: bool) -> dict:
    """:func:`read_kvmap` for a fixed-width length prefix (generated code calls it directly)."""
    # the hot case (an RPC header map): a fixed-width length, written out for speed. Every
    # length is checked against ``end`` before it is used, so nothing past the map is read;
    # negative lengths are refused at once (they would walk backwards).
    if type(buf) is not bytes:  # (a bytearray or a view: the map's own bytes, as bytes)
        try:
            return read_kvmap_fixed(bytes(buf[pos:end]), 0, end - pos, length, signed)
        except DecodeError as e:
            raise DecodeError(pos + e.offset, e.reason) from None
    lsigned = _BE32.get(length.format)
    if lsigned is not None and 0 <= pos <= end <= len(buf):
        return _read_kvmap_be32(buf, pos, end, lsigned, signed)
    return _read_kvmap_struct(buf, pos, end, length, signed)


def _read_kvmap_struct(data: bytes, pos: int, end: int, length: struct.Struct, signed: bool):
    """:func:`read_kvmap_fixed` with each length read by ``length``."""
    # (compiled, api.pxd types ``data`` as bytes: its slices decode from its buffer)
    unpack = length.unpack_from
    width = length.size
    out = {}
    try:
        while pos < end:
            if end - pos < width:
                raise DecodeError(pos, "map entry length overruns the map")
            (size,) = unpack(data, pos)
            if size < 0:
                raise DecodeError(pos, f"bad map key length {size}")
            pos += width
            if size > end - pos:
                raise DecodeError(pos - width, "a map entry overruns the map")
            key = data[pos : pos + size].decode()
            pos += size
            if end - pos < width:
                raise DecodeError(pos, "map entry length overruns the map")
            (size,) = unpack(data, pos)
            pos += width
            if size < 0:
                if size != -1 or not signed:
                    raise DecodeError(pos - width, f"bad map value length {size}")
                out[key] = None
                continue
            if size > end - pos:
                raise DecodeError(pos - width, "a map entry overruns the map")
            out[key] = data[pos : pos + size].decode()
            pos += size
    except struct.error:  # (``end`` beyond the buffer)
        raise DecodeError(pos, "map entry length overruns the frame") from None
    except UnicodeDecodeError:
        raise DecodeError(pos, "invalid UTF-8 in a map entry") from None
    if pos != end:  # (``end`` before ``pos``)
        raise DecodeError(end, "a map entry overruns the map")
    return out


# Struct formats of a 32-bit big-endian length, and whether it is signed: the common prefix
# (that of many RPC header maps), read byte by byte so that, compiled, it is C arithmetic.
_BE32 = {">i": True, "!i": True, ">I": False, "!I": False}


def _be32_at(data: bytes, pos: int, end: int, lsigned: bool) -> int:
    """The 32-bit big-endian length at ``pos``, before ``end``."""
    if end - pos < 4:
        raise DecodeError(pos, "map entry length overruns the map")
    size = data[pos]  # (then shifted as a 64-bit integer when compiled, never a C int)
    size = (size << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
    if lsigned and size >= 0x80000000:
        size -= 0x100000000
    return size


def _read_kvmap_be32(data: bytes, pos: int, end: int, lsigned: bool, signed: bool) -> dict:
    """:func:`_read_kvmap_struct` for 32-bit big-endian lengths in ``data[pos:end]`` (within
    ``data``): the same steps and errors, each length read from its four bytes."""
    out = {}
    while pos < end:
        size = _be32_at(data, pos, end, lsigned)
        if size < 0:
            raise DecodeError(pos, f"bad map key length {size}")
        pos += 4
        if size > end - pos:
            raise DecodeError(pos - 4, "a map entry overruns the map")
        try:
            key = data[pos : pos + size].decode()
        except UnicodeDecodeError:
            raise DecodeError(pos, "invalid UTF-8 in a map entry") from None
        pos += size
        size = _be32_at(data, pos, end, lsigned)
        pos += 4
        if size < 0:
            if size != -1 or not signed:
                raise DecodeError(pos - 4, f"bad map value length {size}")
            out[key] = None
            continue
        if size > end - pos:
            raise DecodeError(pos - 4, "a map entry overruns the map")
        try:
            out[key] = data[pos : pos + size].decode()
        except UnicodeDecodeError:
            raise DecodeError(pos, "invalid UTF-8 in a map entry") from None
        pos += size
    return out


def _read_pairs(buf, pos, end, count, length, signed) -> tuple[dict, int]:
    out: dict = {}
    is_struct = isinstance(length, struct.Struct)
    width = length.size if is_struct else 0
    n = 0
    while (pos < end) if count is None else (n < count):
        n += 1
        pair = []
        for _ in (0, 1):
            if is_struct:
                if pos + width > end:
                    raise DecodeError(pos, "map entry length overruns the frame")
                (size,) = length.unpack_from(buf, pos)
                pos += width
            else:
                size, pos = length.read(buf, pos, end, None)
            if size < 0:
                if not signed or size != -1:
                    raise DecodeError(pos - width, f"negative map entry length {size}")
                pair.append(None)
                continue
            if pos + size > end:
                raise DecodeError(pos, f"map entry of {size} bytes overruns the frame")
            pair.append(utf8(buf, pos, pos + size))
            pos += size
        if pair[0] is None:
            raise DecodeError(pos, "null map key")
        out[pair[0]] = pair[1]
    return out, pos


def read_kvmap_count(
    buf: bytes, pos: int, end: int, count: int, length: Any, signed: bool
) -> tuple[dict, int]:
    """Like :func:`read_kvmap` for a map bounded by its number of pairs; returns (map, pos)."""
    if count < 0 or count > end - pos:
        raise DecodeError(pos, f"bad map entry count {count}")
    return _read_pairs(buf, pos, end, count, length, signed)


def write_kvmap(items: dict | None, length: Any) -> bytes:
    """The inverse of :func:`read_kvmap`; None values are written with length -1."""
    if not items:
        return b""
    if isinstance(length, struct.Struct):
        return write_kvmap_fixed(items, length)
    return _write_pairs(items, length)


def write_kvmap_fixed(items: dict | None, length: struct.Struct) -> bytes:
    """:func:`write_kvmap` for a fixed-width length prefix (generated code calls it directly)."""
    if not items:
        return b""
    pack = length.pack
    parts: list[bytes] = []
    append = parts.append
    try:
        for key, value in items.items():
            data = key.encode()
            append(pack(len(data)))
            append(data)
            if value is None:
                append(pack(-1))
                continue
            data = value.encode()
            append(pack(len(data)))
            append(data)
        return b"".join(parts)
    except AttributeError:
        pass  # a bytes or non-text value: the general loop below
    return _write_pairs(items, length)


def _write_pairs(items: dict, length: Any) -> bytes:
    is_struct = isinstance(length, struct.Struct)
    parts = []
    for key, value in items.items():
        for item in (key, value):
            if item is None:
                parts.append(length.pack(-1) if is_struct else length.write(-1, None))
                continue
            data = item.encode("utf-8") if isinstance(item, str) else as_bytes(item)
            parts.append(length.pack(len(data)) if is_struct else length.write(len(data), None))
            parts.append(data)
    return b"".join(parts)


def map_get(items: dict | None, key: str) -> Any:
    """``m["key"]`` of spec expressions: None when the map or the key is absent."""
    if items is None:
        return None
    try:
        return items.get(key)
    except AttributeError:  # a field type's value that is not a map (a JSON list or text)
        return None


def coalesce(first: Any, second: Any) -> Any:
    """``a ?? b`` of spec expressions."""
    return first if first is not None else second


def measured(steps) -> int | None:
    """Run a :meth:`XProtocol.measure` generator over the bytes there are: the frame's length,
    or None when it needs more."""
    try:
        next(steps)
    except StopIteration as done:
        return done.value
    steps.close()
    return None


def overrun(pos: int, name: str, size: int) -> DecodeError:
    """The error for a field whose ``size`` bytes at ``pos`` run past its frame."""
    return DecodeError(pos, f"{name}: {size} bytes overrun the frame")
