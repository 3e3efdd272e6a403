"""The captures themselves are tested here, without any protoc-x codec: each frame is whole,
starts with its protocol's magic, its length fields add up, its expectations are consistent with
a few fixed header offsets from the protocol docs, and the peers accept frames we change."""

from __future__ import annotations

import socket
import struct
from collections import Counter

import pytest

from .captures import (
    ECHO_PREFIX,
    PROTOBUF_CONTENT,
    Capture,
    anthunder_server,
    bolt_anthunder,
    bolt_frame_length,
    dubbo_decode,
    dubbo_frame_length,
    dubbo_server,
    dubbo_sofa_rpc_node,
    dubbo_ssl_python,
    invoke_hello,
    memcached_binary,
    memcached_frame_length,
    memcached_server,
    send_and_receive,
    split_frames,
    thrift_apache,
    thrift_framed_length,
    thrift_server,
    thrift_thriftpy2,
)

STREAM_TYPES = {"request", "oneway", "quiet", "response"}

# dubbo-ssl-python calls Thread.setDaemon() when imported; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning")


@pytest.fixture(scope="module")
def bolt() -> list[Capture]:
    return bolt_anthunder()


@pytest.fixture(scope="module")
def thriftpy2_frames() -> list[Capture]:
    return thrift_thriftpy2()


@pytest.fixture(scope="module")
def apache_frames() -> list[Capture]:
    return thrift_apache()


@pytest.fixture(scope="module")
def memcached():
    with memcached_server() as address:
        yield address


@pytest.fixture(scope="module")
def memcached_frames(memcached) -> list[Capture]:
    return memcached_binary(memcached[1])


@pytest.fixture(scope="module")
def dubbo_ssl_frames() -> list[Capture]:
    return dubbo_ssl_python()


@pytest.fixture(scope="module")
def dubbo_node_frames() -> list[Capture]:
    return dubbo_sofa_rpc_node()


def by_name(captures: list[Capture]) -> dict[str, Capture]:
    return {capture.name: capture for capture in captures}


def check_common(captures: list[Capture], prefix: str, frame_length) -> None:
    assert captures, "no frames captured"
    names = [capture.name for capture in captures]
    assert len(set(names)) == len(names), Counter(names).most_common(3)
    for capture in captures:
        assert capture.name.startswith(prefix), capture.name
        assert capture.direction in ("request", "response"), capture
        assert capture.data, capture
        frames, used = split_frames(capture.data, frame_length)
        assert len(frames) == 1 and used == len(capture.data), f"{capture}: not exactly one frame"
        expect = capture.expect
        assert expect["length"] == len(capture.data), capture
        assert isinstance(expect["request_id"], int), capture
        assert expect["stream_type"] in STREAM_TYPES, capture
        assert (expect["stream_type"] == "response") == (capture.direction == "response"), capture
        assert isinstance(expect["heartbeat"], bool), capture
        assert all(isinstance(v, str) for v in expect["headers"].values()), capture
        if capture.direction == "response":
            assert isinstance(expect["status"], int), capture
        else:
            assert expect["status"] is None, capture
        assert expect["timeout_ms"] is None or isinstance(expect["timeout_ms"], int), capture
        assert capture.data.endswith(expect["body"]), f"{capture}: body is not the frame's tail"


# --- bolt -----------------------------------------------------------------------------------


def test_bolt_frames_are_whole_and_consistent(bolt: list[Capture]) -> None:
    check_common(bolt, "bolt/", bolt_frame_length)
    for capture in bolt:
        data, expect = capture.data, capture.expect
        assert data[0] == 0x01, capture  # bolt v1
        kind, cmdcode, request_id = (
            data[1],
            struct.unpack_from(">H", data, 2)[0],
            struct.unpack_from(">I", data, 5)[0],
        )
        assert request_id == expect["request_id"], capture
        assert kind == {"response": 0, "request": 1, "oneway": 2}[expect["stream_type"]], capture
        assert (cmdcode == 0) == expect["heartbeat"], capture
        if kind == 0:
            assert struct.unpack_from(">H", data, 10)[0] == expect["status"], capture
            content_len = struct.unpack_from(">I", data, 16)[0]
        else:
            assert struct.unpack_from(">i", data, 10)[0] == expect["timeout_ms"], capture
            content_len = struct.unpack_from(">I", data, 18)[0]
        assert content_len == len(expect["body"]), capture
        for key, value in expect["headers"].items():
            needle = struct.pack(">I", len(key.encode())) + key.encode()
            needle += struct.pack(">I", len(value.encode())) + value.encode()
            assert needle in data, f"{capture}: header {key}"


def test_bolt_covers_the_cases(bolt: list[Capture]) -> None:
    frames = by_name(bolt)
    request = frames["bolt/anthunder/request"]
    assert request.data[9] == 11  # protobuf codec
    assert request.expect["service"] == "com.acme.HelloService:1.0"
    assert request.expect["method"] == "sayHello"
    assert request.expect["headers"]["sofa_head_target_service"] == request.expect["service"]
    assert request.expect["body"] == PROTOBUF_CONTENT
    response = frames["bolt/anthunder/response"]
    assert response.expect["request_id"] == request.expect["request_id"]
    assert response.expect["body"] == ECHO_PREFIX + PROTOBUF_CONTENT
    assert frames["bolt/anthunder/oneway-request"].data[1] == 2
    assert frames["bolt/anthunder/heartbeat-request"].expect["heartbeat"]
    assert frames["bolt/anthunder/heartbeat-response"].expect["heartbeat"]
    statuses = {c.expect["status"] for c in bolt if c.direction == "response"}
    assert {0, 6, 7, 0x10} <= statuses


def test_anthunder_server_accepts_a_changed_request(bolt: list[Capture]) -> None:
    request = by_name(bolt)["bolt/anthunder/request"].data
    changed = bytearray(request)
    changed[5:9] = struct.pack(">I", 0x01020304)  # a proxy rewrites the request id
    with anthunder_server() as (host, port):
        answer = send_and_receive(host, port, bytes(changed), min_bytes=20)
        size = bolt_frame_length(answer)
        assert size is not None and len(answer) >= size
        assert answer[5:9] == b"\x01\x02\x03\x04"
        assert struct.unpack_from(">H", answer, 10)[0] == 0
        assert answer[:size].endswith(ECHO_PREFIX + PROTOBUF_CONTENT)
        assert invoke_hello(host, port, b"abc") == ECHO_PREFIX + b"abc"


# --- thrift ---------------------------------------------------------------------------------


def check_thrift(captures: list[Capture], library: str) -> None:
    check_common(captures, f"thrift/{library}/", thrift_framed_length)
    types = Counter()
    for capture in captures:
        data, expect = capture.data, capture.expect
        (version,) = struct.unpack_from(">I", data, 4)
        assert version & 0xFFFF0000 == 0x80010000, capture  # strict binary protocol
        mtype = version & 0xFF
        types[mtype] += 1
        (name_len,) = struct.unpack_from(">I", data, 8)
        name = data[12 : 12 + name_len].decode()
        assert name == expect["name"], capture
        assert name.rpartition(":")[2] == expect["method"], capture
        (seqid,) = struct.unpack_from(">i", data, 12 + name_len)
        assert seqid == expect["request_id"] == 0, capture  # both clients always send 0
        assert data[16 + name_len :] == expect["body"], capture
        assert {1: "request", 4: "oneway"}.get(mtype, "response") == expect["stream_type"]
        if mtype == 3:
            assert expect["body"].endswith(
                b"\x08\x00\x02" + struct.pack(">i", expect["status"]) + b"\x00"
            )
    assert set(types) == {1, 2, 3, 4}, types
    statuses = {c.expect["status"] for c in captures if c.expect.get("message_type") == 3}
    assert {1, 6} <= statuses
    assert any(c.expect["service"] == "Calc" for c in captures)
    assert max(len(c.data) for c in captures) > 65535


def test_thriftpy2_frames(thriftpy2_frames: list[Capture]) -> None:
    check_thrift(thriftpy2_frames, "thriftpy2")


def test_apache_thrift_frames(apache_frames: list[Capture]) -> None:
    check_thrift(apache_frames, "apache")


def test_both_thrift_libraries_write_the_same_calls(
    thriftpy2_frames: list[Capture], apache_frames: list[Capture]
) -> None:
    apache = by_name(apache_frames)
    for capture in thriftpy2_frames:
        twin = apache.get(capture.name.replace("thriftpy2", "apache"))
        if twin is not None and capture.direction == "request":
            assert twin.data == capture.data, capture.name


@pytest.mark.parametrize("kind", ["thriftpy2", "apache"])
def test_thrift_servers_accept_the_other_librarys_frames(
    kind: str, thriftpy2_frames: list[Capture], apache_frames: list[Capture]
) -> None:
    other = by_name(apache_frames if kind == "thriftpy2" else thriftpy2_frames)
    lib = "apache" if kind == "thriftpy2" else "thriftpy2"
    call = other[f"thrift/{lib}/call"].data
    reply = other[f"thrift/{lib}/reply"].data
    changed = bytearray(call)
    changed[-12:-8] = struct.pack(">i", 40)  # add(3, 4) -> add(40, 4), same length
    with thrift_server(kind) as (host, port):
        assert send_and_receive(host, port, call, min_bytes=len(reply)) == reply
        answer = send_and_receive(host, port, bytes(changed), min_bytes=len(reply))
        assert answer[-5:-1] == struct.pack(">i", 44)
    with thrift_server(kind, multiplexed=True) as (host, port):
        mux = other[f"thrift/{lib}/call-multiplexed"].data
        mux_reply = other[f"thrift/{lib}/reply-multiplexed"].data
        assert send_and_receive(host, port, mux, min_bytes=len(mux_reply)) == mux_reply


# --- memcached ------------------------------------------------------------------------------


def test_memcached_frames(memcached_frames: list[Capture]) -> None:
    check_common(memcached_frames, "memcached/bmemcached/", memcached_frame_length)
    for capture in memcached_frames:
        data, expect = capture.data, capture.expect
        magic, opcode, key_len, extras_len, _dt, vb_status, total, opaque = struct.unpack_from(
            ">BBHBBHII", data
        )
        assert magic == (0x80 if capture.direction == "request" else 0x81), capture
        assert opcode == expect["opcode"], capture
        assert opaque == expect["request_id"], capture
        assert total == extras_len + key_len + len(expect["body"]), capture
        key = data[24 + extras_len : 24 + extras_len + key_len].decode()
        assert ({"key": key} if key else {}) == expect["headers"], capture
        if capture.direction == "response":
            assert vb_status == expect["status"], capture
    methods = Counter((c.expect["method"], c.direction) for c in memcached_frames)
    for method in ("set", "get", "delete", "increment", "getkq", "getk", "noop", "setq"):
        assert (method, "request") in methods or (method, "response") in methods, method
    assert any(c.expect.get("status") == 1 for c in memcached_frames)
    assert sum(1 for c in memcached_frames if c.expect["stream_type"] == "quiet") >= 3


def test_memcached_accepts_a_changed_request(memcached, memcached_frames: list[Capture]) -> None:
    frames = by_name(memcached_frames)
    changed = bytearray(frames["memcached/bmemcached/get-request"].data)
    changed[12:16] = struct.pack(">I", 77)  # opaque: memcached echoes it
    set_request = frames["memcached/bmemcached/set-request"].data
    answer = send_and_receive(*memcached, set_request + bytes(changed), min_bytes=24 + 24 + 4 + 15)
    first, used = split_frames(answer, memcached_frame_length)
    assert len(first) == 2 and used == len(answer)
    assert first[0][:2] == b"\x81\x01" and first[0][6:8] == b"\x00\x00"
    assert struct.unpack_from(">I", first[1], 12)[0] == 77
    assert first[1].endswith(b"hello memcached")


# --- dubbo ----------------------------------------------------------------------------------


def check_dubbo(captures: list[Capture], prefix: str) -> None:
    check_common(captures, prefix, dubbo_frame_length)
    for capture in captures:
        data, expect = capture.data, capture.expect
        assert data[:2] == b"\xda\xbb", capture
        flag, status = data[2], data[3]
        (request_id,) = struct.unpack_from(">q", data, 4)
        assert request_id == expect["request_id"], capture
        assert flag & 0x1F == 2, capture  # hessian2
        assert bool(flag & 0x80) == (capture.direction == "request"), capture
        assert bool(flag & 0x20) == expect["heartbeat"], capture
        if capture.direction == "request":
            oneway = expect["stream_type"] == "oneway"
            assert bool(flag & 0x40) != oneway, capture
        else:
            assert status == expect["status"], capture
        assert data[16:] == expect["body"], capture
        if expect["heartbeat"]:
            assert expect["body"] == b"N"
        elif capture.direction == "request":
            service = expect["service"].encode()
            assert service in data and expect["method"].encode() in data, capture
            assert expect["timeout_ms"] == int(expect["headers"]["timeout"])


def test_dubbo_ssl_python_frames(dubbo_ssl_frames: list[Capture]) -> None:
    check_dubbo(dubbo_ssl_frames, "dubbo/")
    frames = by_name(dubbo_ssl_frames)
    objects = frames["dubbo/dubbo-ssl-python/request-objects"].data
    assert b"C\x0dcom.acme.User" in objects  # a hessian class definition
    long_strings = frames["dubbo/dubbo-ssl-python/request-long-strings"]
    lengths = sorted(len(s.encode("utf-16-le")) // 2 for s in long_strings.expect["args"])
    assert lengths[0] > 1023 and lengths[1] > 32768
    assert "\U0001f600" in long_strings.expect["args"][1]
    assert b"\xed\xa0\xbd\xed\xb8\x80" in long_strings.data  # U+1F600 as CESU-8, like Java
    assert {c.expect["status"] for c in dubbo_ssl_frames if c.direction == "response"} == {20, 80}
    assert frames["dubbo/dubbo-ssl-python/heartbeat-request"].data[2] == 0xE2
    assert frames["dubbo/dubbo-ssl-python/heartbeat-response"].data[2:4] == b"\x22\x14"


def test_dubbo_remoting_frames(dubbo_node_frames: list[Capture]) -> None:
    check_dubbo(dubbo_node_frames, "dubbo/")
    frames = by_name(dubbo_node_frames)
    objects = frames["dubbo/dubbo-remoting/request-objects"].data
    assert b"C\x0dcom.acme.User" in objects and b"\x51\x91" in objects  # class def and ref 1
    long_strings = frames["dubbo/dubbo-remoting/request-long-strings"].data
    assert b"R\x7f\xff" in long_strings  # a chunk of 0x7fff: the surrogate pair stays whole
    assert b"R\x80\x00" in long_strings
    assert frames["dubbo/dubbo-remoting/oneway-request"].data[2] == 0x82
    assert (
        frames["dubbo/sofa-rpc-node/response-null-without-flag-to-dubbo-remoting"].expect["body"]
        == b"N"
    )


def test_dubbo_peer_accepts_a_changed_request(
    dubbo_ssl_frames: list[Capture], dubbo_node_frames: list[Capture]
) -> None:
    request = by_name(dubbo_ssl_frames)["dubbo/dubbo-ssl-python/request-objects"]
    changed = request.data[:4] + struct.pack(">q", 4242) + request.data[12:]
    oneway = by_name(dubbo_node_frames)["dubbo/dubbo-remoting/oneway-request"]
    with dubbo_server() as server:
        answer = send_and_receive(*server, changed, min_bytes=16)
        assert answer[:4] == b"\xda\xbb\x02\x14" and struct.unpack_from(">q", answer, 4)[0] == 4242
        seen = server.wait_request(4242)
        assert seen["method"] == "register" and seen["args"] == request.expect["args"]
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(oneway.data)
            sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # oneway: no answer
        assert server.wait_request(oneway.expect["request_id"])["twoWay"] is False
    decoded = dubbo_decode([changed, request.data[:40]])
    assert decoded[0]["ok"] and decoded[0]["decoded"]["packetId"] == 4242
    assert decoded[0]["decoded"]["data"]["methodName"] == "register"
    assert not decoded[1]["ok"]  # a cut frame is refused
