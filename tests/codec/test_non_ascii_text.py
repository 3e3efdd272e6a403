"""Non-ASCII text in every text field a user can set, for every built-in protocol: the lengths
the encoder writes count UTF-8 bytes (or what the field type counts), not characters, so the
frame decodes back to the same values and re-encodes to the same bytes. Iterates over the
built-in protocols and their samples, so a new spec is covered without touching this file."""

from __future__ import annotations

import io

import pytest

from protoc_x.loader import builtin_protocols
from protoc_x.runtime.api import Direction, StreamType
from protoc_x.samples import SAMPLES

# 2-, 3- and 4-byte UTF-8 sequences (and a UTF-16 surrogate pair for hessian2's counts)
TEXT = "größe-服务-🚀"

PROTOCOLS = builtin_protocols()
FRAMES = [s for s in SAMPLES if s.protocol in PROTOCOLS]


def _decode(proto, data, direction):
    frame = proto.decode(data, 0, direction)
    assert frame is not None and frame.length == len(data)
    return frame


def _round_trip(proto, frame, direction):
    """encode → decode → encode: the decoded frame re-encodes to the very same bytes."""
    data = frame.encode()
    again = _decode(proto, data, direction)
    assert again.encode() == data
    return again


def _with_text(value, name):
    if isinstance(value, str):
        if value.startswith("L") and value.endswith(";"):
            # a JVM descriptor (dubbo's param_types: it counts the arguments) stays one
            return f"L{TEXT}/{name};"
        return f"{TEXT}-{name}"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        changed = {k: (f"{TEXT}-{k}" if isinstance(v, str) else v) for k, v in value.items()}
        changed[f"{TEXT}-key"] = f"{TEXT}-value"
        return changed
    return None


def _text_fields(frame):
    """The frame's text fields (strings and string-keyed maps) with non-ASCII values."""
    out = {}
    for name, value in frame.field_values().items():
        changed = _with_text(value, name)
        if changed is not None:
            out[name] = changed
    return out


def test_every_protocol_has_a_sample():
    assert {s.protocol for s in FRAMES} == set(PROTOCOLS)


@pytest.mark.parametrize("s", FRAMES, ids=[f"{s.protocol}:{s.name}" for s in FRAMES])
def test_non_ascii_fields_round_trip(s):
    proto = PROTOCOLS[s.protocol]
    direction = Direction(s.direction) if s.direction else None
    frame = _decode(proto, s.data, direction)
    fields = _text_fields(frame)
    for name, value in fields.items():
        setattr(frame, name, value)
    again = _round_trip(proto, frame, direction)
    assert {name: getattr(again, name) for name in fields} == fields
    assert again.get_request_id() == frame.get_request_id()
    assert again.get_stream_type() is frame.get_stream_type()


@pytest.mark.parametrize(
    "s",
    [s for s in FRAMES if PROTOCOLS[s.protocol].writable_headers],
    ids=lambda s: f"{s.protocol}:{s.name}",
)
def test_non_ascii_header_round_trips(s):
    proto = PROTOCOLS[s.protocol]
    direction = Direction(s.direction) if s.direction else None
    frame = _decode(proto, s.data, direction)
    if frame.is_heartbeat() or frame.is_goaway():
        return
    frame.set_header(f"x-{TEXT}", TEXT)
    again = _round_trip(proto, frame, direction)
    assert again.get_header(f"x-{TEXT}") == TEXT
    assert again.get_headers()[f"x-{TEXT}"] == TEXT
    assert again.get_body() == frame.get_body()
    assert (again.get_service(), again.get_method()) == (frame.get_service(), frame.get_method())


def _requests():
    out = []
    for s in FRAMES:
        proto = PROTOCOLS[s.protocol]
        direction = Direction(s.direction) if s.direction else None
        frame = _decode(proto, s.data, direction)
        request = frame.get_stream_type() is StreamType.REQUEST and not frame.is_heartbeat()
        if proto.has_error_response and request:
            out.append(s)
    return out


@pytest.mark.parametrize("s", _requests(), ids=lambda s: f"{s.protocol}:{s.name}")
def test_non_ascii_request_and_error_message_in_templates(s):
    """The templates (error_response, success_response) copy text from a request with non-ASCII
    fields and take a non-ASCII $message: what they build round-trips and keeps the text."""
    proto = PROTOCOLS[s.protocol]
    direction = Direction(s.direction) if s.direction else None
    request = _decode(proto, s.data, direction)
    for name, value in _text_fields(request).items():
        setattr(request, name, value)
    request = _round_trip(proto, request, direction)
    answer_direction = Direction.RESPONSE if direction else None
    error = proto.hijack(request, 503, TEXT)
    assert error is not None
    again = _round_trip(proto, error, answer_direction)
    assert again.get_request_id() == request.get_request_id()
    assert again.get_status() == proto.map_status(503)
    message = TEXT.encode()
    # hessian writes UTF-16 surrogates as 3 bytes each (CESU-8): bolt's hessian error content
    cesu8 = "".join(
        (
            chr(0xD800 + ((ord(c) - 0x10000) >> 10)) + chr(0xDC00 + ((ord(c) - 0x10000) & 0x3FF))
            if ord(c) > 0xFFFF
            else c
        )
        for c in TEXT
    ).encode("utf-8", "surrogatepass")
    data = again.encode()
    assert (
        message in data
        or cesu8 in data
        or any(TEXT in str(v) for v in again.field_values().values())
    ), "the message is not in the error response"
    success = proto.success_response(request)
    if success is not None:
        _round_trip(proto, success, answer_direction)


def test_thrift_peers_read_a_non_ascii_method_name():
    """thriftpy2's and Apache thrift's TBinaryProtocol read the method name our codec wrote."""
    from thrift.protocol.TBinaryProtocol import TBinaryProtocol
    from thrift.transport.TTransport import TMemoryBuffer
    from thriftpy2.protocol.binary import TBinaryProtocol as Py2Binary

    proto = PROTOCOLS["thrift"]
    s = next(s for s in FRAMES if s.protocol == "thrift" and s.name.startswith("CALL"))
    frame = _decode(proto, s.data, None)
    frame.name = f"Calc:{TEXT}"
    data = frame.encode()
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    name, kind, seqid = Py2Binary(io.BytesIO(data[4:])).read_message_begin()
    assert (name, kind, seqid) == (f"Calc:{TEXT}", 1, 7)
    name, kind, seqid = TBinaryProtocol(TMemoryBuffer(data[4:])).readMessageBegin()
    assert (name, kind, seqid) == (f"Calc:{TEXT}", 1, 7)


def test_memcached_server_and_client_accept_a_non_ascii_key():
    """A real memcached stores a value under a UTF-8 key our codec wrote (SET, then GET with our
    frames), and python-binary-memcached reads it back by the same text key."""
    import socket

    import bmemcached

    from tests.peers.memcached_peer import memcached_server

    proto = PROTOCOLS["memcached"]
    get = _decode(proto, next(s for s in FRAMES if s.name == "GET foo").data, None)
    get.key = TEXT.encode()
    set_ = _decode(proto, get.encode(), None)
    set_.opcode, set_.opaque, set_.extras, set_.value = 0x01, 6, bytes(8), TEXT.encode() * 2
    with memcached_server() as (host, port):
        with socket.create_connection((host, port), timeout=5) as sock:
            answers = []
            for frame in (set_, get):
                sock.sendall(frame.encode())
                buf = b""
                while (answer := proto.decode(buf, 0, None)) is None:
                    chunk = sock.recv(65536)
                    assert chunk, "memcached closed the connection"
                    buf += chunk
                answers.append(answer)
        assert [(a.get_request_id(), a.status) for a in answers] == [(6, 0), (5, 0)]
        assert answers[1].get_body() == TEXT.encode() * 2
        client = bmemcached.Client([f"{host}:{port}"])
        try:
            assert client.get(TEXT) in (TEXT * 2, TEXT.encode() * 2)
        finally:
            client.disconnect_all()
