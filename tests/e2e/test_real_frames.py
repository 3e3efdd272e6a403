"""Frames produced by real libraries (tests/peers): anthunder, sofa-bolt-node (bolt v2 with CRC),
kafka-python, kafkajs and librdkafka (Kafka), thriftpy2, Apache thrift,
python-binary-memcached with a real memcached, dubbo-ssl-python and npm dubbo-remoting.
Each decodes to the values the library meant, re-encodes byte-exactly, needs more on every
proper prefix, and `protoc-x decode --roundtrip` agrees; frames we modify are accepted by the
real servers."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import captures as peers
from tests.peers.capture import VIEW_KEYS
from protoc_x.cli import frame_json
from protoc_x.runtime.api import DecodeError, Direction, StreamType

ROOT = Path(__file__).parents[2]


def codec(name):
    return importlib.import_module(f"protoc_x.generated.{name}").PROTOCOL


@pytest.fixture(scope="module")
def captured():
    return peers.all_captures()


def check_view(view: dict, cap) -> list[str]:
    """Mismatches between our decoding and what the library meant."""
    bad = []
    exp = cap.expect
    for key in VIEW_KEYS:
        if key in exp and view[key] != exp[key]:
            bad.append(f"{cap.name}: {key} = {view[key]!r}, library meant {exp[key]!r}")
    for key, value in exp.get("headers", {}).items():
        if view["headers"].get(key) != value:
            bad.append(f"{cap.name}: header {key} = {view['headers'].get(key)!r}, meant {value!r}")
    if "body_length" in exp and view["body_length"] != exp["body_length"]:
        bad.append(f"{cap.name}: body_length {view['body_length']} != {exp['body_length']}")
    return bad


@pytest.mark.parametrize("protocol", ["bolt", "boltv2", "thrift", "memcached", "dubbo", "kafka"])
def test_real_frames_decode_reencode_and_need_more(captured, protocol):
    proto = codec(protocol)
    caps = captured[protocol]
    assert len(caps) >= 10, [c.name for c in caps]
    problems = []
    for cap in caps:
        frame = proto.decode(cap.data, 0, Direction(cap.direction))
        assert frame is not None, cap.name
        assert frame.length == len(cap.data), cap.name
        view = frame_json(protocol, frame)
        problems += check_view(view, cap)
        if "body" in cap.expect:
            if bytes(frame.get_body()) != cap.expect["body"]:
                problems.append(f"{cap.name}: body differs")
        assert frame.encode() == cap.data, cap.name
        step = max(1, len(cap.data) // 2000)  # every prefix of small frames; a sample of huge ones
        for cut in list(range(0, len(cap.data), step)) + [len(cap.data) - 1]:
            assert proto.decode(cap.data[:cut], 0, Direction(cap.direction)) is None, (
                cap.name,
                cut,
            )
    assert not problems, "\n".join(problems)


def test_protocol_specific_values(captured):
    for cap in captured["thrift"]:
        frame = codec("thrift").decode(cap.data)
        if "name" in cap.expect:
            assert frame.name == cap.expect["name"], cap.name
        if "message_type" in cap.expect:
            want = cap.expect["message_type"]
            got = frame.FIELD_ENUMS["type"].get(frame.type)
            assert str(want).lower() in (got, str(frame.type)), (cap.name, want, got)
    for cap in captured["memcached"]:
        frame = codec("memcached").decode(cap.data)
        if "opcode" in cap.expect:
            assert frame.opcode == cap.expect["opcode"], cap.name
        if "extras" in cap.expect:
            assert bytes(frame.extras) == cap.expect["extras"], cap.name
    for cap in captured["dubbo"]:
        frame = codec("dubbo").decode(cap.data)
        if "dubbo_version" in cap.expect:
            assert frame.dubbo_version == cap.expect["dubbo_version"], cap.name
        if "version" in cap.expect:
            assert frame.service_version == cap.expect["version"], cap.name
        if "args" in cap.expect:
            assert len(frame.arguments) == len(cap.expect["args"]), cap.name
        if "parameter_types" in cap.expect:
            assert frame.param_types == cap.expect["parameter_types"], cap.name


def test_several_real_frames_in_one_buffer(captured):
    for protocol, caps in captured.items():
        proto = codec(protocol)
        for direction in ("request", "response"):
            frames = [c.data for c in caps if c.direction == direction]
            buf = b"".join(frames)
            decoded = list(proto.decode_all(buf, Direction(direction)))
            assert [f.length for f in decoded] == [len(f) for f in frames], (protocol, direction)


def test_cli_decode_roundtrip_on_real_frames(captured, tmp_path):
    for protocol, caps in captured.items():
        for direction in ("request", "response"):
            chosen = [c for c in caps if c.direction == direction]
            path = tmp_path / f"{protocol}-{direction}.bin"
            path.write_bytes(b"".join(c.data for c in chosen))
            r = subprocess.run(
                [sys.executable, "-m", "protoc_x.cli", "decode", protocol, str(path), "--roundtrip",
                 "--direction", direction],
                capture_output=True, cwd=ROOT,
            )  # fmt: skip
            assert r.returncode == 0, (protocol, direction, r.stderr)
            lines = [json.loads(line) for line in r.stdout.splitlines()]
            assert len(lines) == len(chosen)
            problems = [p for obj, cap in zip(lines, chosen) for p in check_view(obj, cap)]
            assert not problems, "\n".join(problems)


# ---- frames we modify, accepted by the real servers --------------------------------------


def first(caps, predicate):
    return next(c for c in caps if predicate(c))


def test_modified_bolt_request_accepted_by_anthunder(captured):
    proto = codec("bolt")
    cap = first(captured["bolt"], lambda c: c.direction == "request" and c.expect.get("method") == peers.HELLO_METHOD
                and c.expect.get("stream_type") == "request")  # fmt: skip
    frame = proto.decode(cap.data)
    frame.set_request_id(424242)
    frame.set_header("x-protocx-added", "yes")
    new_content = b"\x0a\x05proxy" + bytes(range(40))
    frame.set_body(new_content)
    with peers.anthunder_server() as (host, port):
        answer = peers.send_and_receive(host, port, frame.encode(), min_bytes=20)
        response = None
        for _ in range(3):
            response = proto.decode(answer)
            if response is not None:
                break
            answer += peers.send_and_receive(host, port, b"", timeout=0.5)
    assert response is not None
    assert response.get_request_id() == 424242
    assert response.get_status() == 0
    assert bytes(response.get_body()) == peers.ECHO_PREFIX + new_content


@pytest.mark.parametrize("kind", ["thriftpy2", "apache"])
def test_modified_thrift_call_accepted(captured, kind):
    proto = codec("thrift")
    cap = first(captured["thrift"], lambda c: c.direction == "request" and c.expect.get("method") == "echo"
                and c.expect.get("service") is None)  # fmt: skip
    frame = proto.decode(cap.data)
    frame.set_request_id(31337)
    text = "modified by protoc-x ✓".encode()
    frame.set_body(b"\x0b\x00\x01" + len(text).to_bytes(4, "big") + text + b"\x00")  # echo_args
    with peers.thrift_server(kind) as (host, port):
        answer = peers.send_and_receive(host, port, frame.encode(), min_bytes=4)
        while proto.decode(answer) is None:
            answer += peers.send_and_receive(host, port, b"", timeout=0.5)
    reply = proto.decode(answer)
    assert reply.get_request_id() == 31337
    assert reply.get_status() == 0 and reply.get_stream_type() is StreamType.RESPONSE
    assert text in bytes(reply.get_body())  # echo_result field 0 = our text


def test_modified_memcached_frames_accepted(captured):
    proto = codec("memcached")
    set_cap = first(
        captured["memcached"],
        lambda c: c.direction == "request" and c.expect.get("method") == "set",
    )
    get_cap = first(
        captured["memcached"],
        lambda c: c.direction == "request" and c.expect.get("method") == "get",
    )
    set_frame = proto.decode(set_cap.data)
    set_frame.set_request_id(0xABCDEF)
    set_frame.set_body(b"value replaced by protoc-x")
    get_frame = proto.decode(get_cap.data)
    get_frame.key = set_frame.key
    get_frame.set_request_id(0x123456)
    with peers.memcached_server() as (host, port):
        answer = peers.send_and_receive(
            host, port, set_frame.encode() + get_frame.encode(), min_bytes=48
        )
        frames = []
        pos = 0
        while pos < len(answer):
            f = proto.decode(answer, pos)
            if f is None:
                answer += peers.send_and_receive(host, port, b"", timeout=0.5)
                continue
            frames.append(f)
            pos += f.length
            if len(frames) == 2:
                break
    stored, got = frames
    assert stored.get_request_id() == 0xABCDEF and stored.get_status() == 0
    assert got.get_request_id() == 0x123456 and got.get_status() == 0
    assert bytes(got.get_body()) == b"value replaced by protoc-x"


def test_modified_dubbo_request_accepted_by_dubbo_remoting(captured):
    proto = codec("dubbo")
    caps = [
        c for c in captured["dubbo"] if c.direction == "request" and not c.expect.get("heartbeat")
    ]
    assert caps
    with peers.dubbo_server() as server:
        for i, cap in enumerate(caps[:6]):
            frame = proto.decode(cap.data)
            new_id = 900000 + i
            frame.set_request_id(new_id)
            frame.set_header("x-protocx-color", "green")
            attachments_before = dict(frame.attachments)
            data = frame.encode()
            assert data != cap.data
            peers.send_and_receive(server.host, server.port, data, timeout=0.5)
            seen = server.wait_request(new_id)
            assert seen["method"] == cap.expect["method"], cap.name
            assert seen["attachments"].get("x-protocx-color") == "green", cap.name
            for key, value in attachments_before.items():
                if isinstance(value, str):
                    assert seen["attachments"].get(key) == value, (cap.name, key)


def test_broken_dubbo_body_is_a_decode_error_on_read_not_on_framing(captured):
    """The header decodes (id, length known: the runtime can answer 400); the body raises."""
    proto = codec("dubbo")
    cap = first(
        captured["dubbo"], lambda c: c.direction == "request" and not c.expect.get("heartbeat")
    )
    data = bytearray(cap.data)
    data[16:] = b"\xff" * (len(data) - 16)  # not hessian2
    frame = proto.decode(bytes(data))
    assert frame is not None and frame.get_request_id() == cap.expect["request_id"]
    with pytest.raises(DecodeError):
        frame.get_service()
    error = proto.hijack(frame, 400)
    assert proto.decode(error.encode()).get_status() == 40
