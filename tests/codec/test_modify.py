"""Frames we change stay valid: ids (tars: to widths that change the frame's length), headers,
bodies; and the frames the codecs build (heartbeats, replies, errors, successes) decode back."""

from __future__ import annotations

import importlib

import pytest

from protoc_x.samples import SAMPLES
from protoc_x.runtime.api import RUNTIME_CODES, Direction, StreamType, XFrame

PROTOCOLS = ["bolt", "boltv2", "dubbo", "thrift", "thrift_unframed", "memcached", "tars", "kafka",
             "xexample"]  # fmt: skip
#: a body that is one value of its own (a thrift struct, where no length says where it ends)
BODIES = {"thrift_unframed": b"\x0b\x00\x01\x00\x00\x00\x09new body\xff\x00"}


def codec(name):
    return importlib.import_module(f"protoc_x.generated.{name}").PROTOCOL


def sample(protocol, prefix):
    return next(s for s in SAMPLES if s.protocol == protocol and s.name.startswith(prefix))


def redecode(proto, frame, direction=None):
    data = frame.encode()
    again = proto.decode(data, 0, direction)
    assert again is not None and again.length == len(data)
    assert again.encode() == data
    return again


@pytest.mark.parametrize("new_id", [0, 127, 128, 300, 32767, 70000, 2**31 - 1, 2**40])
def test_tars_request_id_rewrite_changes_length(new_id):
    proto = codec("tars")
    s = sample("tars", "RequestPacket")
    frame = proto.decode(s.data, 0, Direction.REQUEST)
    before = {
        k: v for k, v in frame.field_values().items() if k not in ("iRequestId", "packet_len")
    }
    frame.set_request_id(new_id)
    again = redecode(proto, frame, Direction.REQUEST)
    assert again.get_request_id() == new_id
    after = {k: v for k, v in again.field_values().items() if k not in ("iRequestId", "packet_len")}
    assert after == before
    width = (
        0
        if new_id == 0
        else 1 if new_id < 128 else 2 if new_id < 32768 else 4 if new_id < 2**31 else 8
    )
    assert again.packet_len == len(s.data) - 1 + width


@pytest.mark.parametrize(
    "protocol,prefix,direction",
    [("bolt", "request", None), ("boltv2", "request", None), ("dubbo", "request", None),
     ("tars", "RequestPacket", Direction.REQUEST)],
)  # fmt: skip
def test_header_added_and_removed(protocol, prefix, direction):
    proto = codec(protocol)
    frame = proto.decode(sample(protocol, prefix).data, 0, direction)
    service, method = frame.get_service(), frame.get_method()
    frame.set_header("x-color", "blue")
    again = redecode(proto, frame, direction)
    assert again.get_header("x-color") == "blue"
    assert again.get_headers()["x-color"] == "blue"
    assert (again.get_service(), again.get_method()) == (service, method)
    again.del_header("x-color")
    third = redecode(proto, again, direction)
    assert third.get_header("x-color") is None


@pytest.mark.parametrize("s", SAMPLES, ids=[f"{s.protocol}:{s.name}" for s in SAMPLES])
def test_body_replaced(s):
    proto = codec(s.protocol)
    d = Direction(s.direction) if s.direction else None
    frame = proto.decode(s.data, 0, d)
    if frame.is_heartbeat() or frame.is_goaway():
        return
    body = BODIES.get(s.protocol, b"\x00new body \xff" * 5)
    if type(frame).set_body is XFrame.set_body:  # a spec without a body (redis)
        with pytest.raises(NotImplementedError):
            frame.set_body(body)
        return
    frame.set_body(body)
    again = redecode(proto, frame, d)
    assert bytes(again.get_body()) == body
    assert again.get_request_id() == frame.get_request_id()
    if s.protocol in BODIES:  # bytes that are not one such value are refused, not sent
        frame.set_body(body[:-1])
        with pytest.raises(ValueError, match="not one struct"):
            frame.encode()


@pytest.mark.parametrize("name", PROTOCOLS)
def test_built_frames_decode_back(name):
    proto = codec(name)
    requests = [s for s in SAMPLES if s.protocol == name and s.direction != "response"]
    for s in requests:
        d = Direction(s.direction) if s.direction else None
        request = proto.decode(s.data, 0, d)
        if request.get_stream_type() is StreamType.RESPONSE:
            continue
        rid = request.get_request_id()
        success = proto.success_response(request)
        got = redecode(proto, success, Direction.RESPONSE if d else None)
        assert got.get_stream_type() is StreamType.RESPONSE
        assert got.get_request_id() == rid
        assert proto.runtime_status(got.get_status() or 0) == 200
        if not request.is_heartbeat():
            assert bytes(got.get_body()) == bytes(request.get_body())
        for code in RUNTIME_CODES[1:]:
            error = proto.hijack(request, code)
            if not proto.has_error_response:
                assert error is None
                continue
            got = redecode(proto, error, Direction.RESPONSE if d else None)
            assert got.get_request_id() == rid
            assert got.get_stream_type() is StreamType.RESPONSE
            assert got.get_status() == proto.map_status(code)
        if request.is_heartbeat():
            reply = redecode(proto, proto.reply(request), Direction.RESPONSE if d else None)
            assert reply.is_heartbeat() and reply.get_request_id() == rid
    ping = proto.trigger(77)
    if ping is not None:
        got = redecode(proto, ping, Direction.REQUEST if proto.needs_direction else None)
        assert got.is_heartbeat() and got.get_request_id() == 77


def test_error_responses_carry_the_message():
    for name, find in [("bolt", b"protoc-x: 429"), ("xexample", b"protoc-x: 429"),
                       ("memcached", b"protoc-x: 429"), ("dubbo", b"protoc-x: 429"),
                       ("thrift", b"protoc-x: 429"), ("tars", b"protoc-x: 429")]:  # fmt: skip
        proto = codec(name)
        s = next(x for x in SAMPLES if x.protocol == name and x.direction != "response"
                 and not proto.decode(x.data, 0, Direction(x.direction) if x.direction else None).is_heartbeat())  # fmt: skip
        request = proto.decode(s.data, 0, Direction(s.direction) if s.direction else None)
        assert find in proto.hijack(request, 429).encode(), name


def test_status_maps_follow_protocols_md():
    expect = {
        "bolt": {200: 0, 400: 9, 403: 2, 404: 6, 429: 4, 500: 2, 502: 0x10, 503: 4, 504: 7},
        "dubbo": {200: 20, 400: 40, 403: 40, 404: 60, 429: 100, 500: 80, 502: 80, 503: 100, 504: 31},
        "thrift": {200: 0, 400: 7, 403: 6, 404: 1, 429: 6, 500: 6, 502: 6, 503: 6, 504: 6},
        "memcached": {200: 0, 400: 4, 403: 0x20, 404: 0x84, 429: 0x85, 500: 0x84, 502: 0x86, 503: 0x86, 504: 0x86},
        "tars": {200: 0, 400: -1, 403: -99, 404: -4, 429: -9, 500: -99, 502: -8, 503: -9, 504: -7},
        "xexample": {200: 0, 400: 1, 403: 1, 404: 1, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1},
    }  # fmt: skip
    for name, table in expect.items():
        proto = codec(name)
        assert {code: proto.map_status(code) for code in table} == table, name
    reverse = {
        "bolt": {0: 200, 9: 400, 17: 400, 18: 400, 6: 404, 4: 503, 5: 502, 0x10: 502, 7: 504, 3: 500},
        "dubbo": {20: 200, 25: 400, 40: 400, 50: 400, 90: 400, 60: 404, 100: 503, 30: 504, 31: 504, 70: 500},
        "thrift": {0: 200, 1: 404, 7: 400, 6: 500, 5: 500},
        "memcached": {0: 200, 1: 200, 2: 200, 5: 200, 6: 200, 4: 400, 0x81: 400, 0x20: 403, 0x82: 503, 0x85: 503, 0x86: 502, 0x84: 500},
        "tars": {0: 200, -1: 400, -12: 400, -3: 404, -4: 404, -9: 503, -8: 502, -6: 504, -7: 504, -2: 500},
        "xexample": {0: 200, 1: 500},
    }  # fmt: skip
    for name, table in reverse.items():
        proto = codec(name)
        assert {s: proto.runtime_status(s) for s in table} == table, name


@pytest.mark.parametrize("s", SAMPLES, ids=[f"{s.protocol}:{s.name}" for s in SAMPLES])
def test_request_id_patched_in_place_equals_reencoding(s):
    proto = codec(s.protocol)
    d = Direction(s.direction) if s.direction else None
    frame = proto.decode(s.data, 0, d)
    if frame.get_request_id() is None:
        return
    data = bytearray(s.data)
    patched = frame.patch_request_id(data, 0x1234)
    frame.set_request_id(0x1234)
    if patched:
        assert bytes(data) == frame.encode()
    else:  # only where the id has no fixed place (TARS TLV) or a checksum covers it
        assert s.protocol == "tars" or (s.protocol == "boltv2" and "CRC" in s.name), s.name
