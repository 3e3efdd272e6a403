"""Bolt v2 with CRC32 against a real implementation: npm sofa-bolt-node 2.0.1 ('bolt2') and
sofa-rpc-node 2.10.0's server on top of it (boltv2_peers.py, node/bolt_peer.js).

- The captures (sofa-bolt-node's client → relay → sofa-rpc-node's server) are whole frames whose
  fields, read at protocols.md's offsets, match what the library was asked to send, with a
  zlib CRC32 where ver1 is 2 and the switch's bit 0 is set.
- Our boltv2 codec reads every field of them, re-encodes them byte for byte, needs more bytes on
  every proper prefix and refuses a frame whose CRC does not match.
- Frames we change with our codec (request id, headers, content; CRC recomputed) are decoded and
  answered by the real server; the same change with the old CRC is refused by it.
- Two real clients with the same request ids, pipelined, through the proxy to the real server;
  the proxy answers their heartbeats itself (with a CRC the client checks), and its error answer
  reaches the client.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct

import pytest

from protoc_x.cli import frame_json
from protoc_x.runtime.api import DecodeError, Direction
from tests.runtime.harness import PROTOCOLS, free_port, proxy_running, run, simple_config

from .boltv2_peers import (
    CODECS,
    METHOD,
    SERVICE,
    bolt2_client,
    bolt2_client_sync,
    bolt2_server,
    bolt_map,
    boltv2_sofa_bolt_node,
    crc_ok,
    hello_reply,
    hello_request,
    parts,
    say_hello,
)
from .capture import Capture
from .framing import boltv2_frame_length, split_frames
from .recording import TO_SERVER, recording_relay, recv_exactly, send_and_receive

BOLTV2 = PROTOCOLS["boltv2"]
GENERIC = ("request_id", "stream_type", "heartbeat", "status", "timeout_ms", "service", "method")


@pytest.fixture(scope="module")
def captures() -> list[Capture]:
    return boltv2_sofa_bolt_node()


def by_name(captures: list[Capture]) -> dict[str, Capture]:
    return {capture.name: capture for capture in captures}


def read_frame(sock: socket.socket) -> bytes:
    """One whole bolt v2 frame from sock (length-only parsing)."""
    data = recv_exactly(sock, 22)
    while (size := boltv2_frame_length(data)) is None or len(data) < size:
        data += recv_exactly(sock, (size or 24) - len(data))
    return data


# --- the captures, without our codec -----------------------------------------------------------


def test_captures_are_whole_and_consistent(captures: list[Capture]) -> None:
    names = [capture.name for capture in captures]
    assert len(set(names)) == len(names) == 19, names  # 10 requests, 9 answers (no oneway)
    for capture in captures:
        data, expect = capture.data, capture.expect
        frames, used = split_frames(data, boltv2_frame_length)
        assert len(frames) == 1 and used == len(data) == expect["length"], capture
        p = parts(data)
        assert p.request_id == expect["request_id"], capture
        assert p.kind == {"response": 0, "request": 1, "oneway": 2}[expect["stream_type"]], capture
        assert (p.cmd == 0) == expect["heartbeat"], capture
        assert p.cmd in ((0, 2) if p.kind == 0 else (0, 1)), capture
        assert (p.ver1, p.ver2, p.codec) == (expect["ver1"], 1, expect["codec"]), capture
        assert p.switch == (1 if expect["crc"] else 0), capture
        assert p.status == expect["status"] and p.timeout == expect["timeout_ms"], capture
        assert p.class_name == expect["class_name"].encode(), capture
        assert p.headers == bolt_map(expect["headers"]), capture
        assert p.content == expect["body"], capture
        if expect["ver1"] == 2 and expect["crc"]:
            assert p.crc is not None and crc_ok(data), capture
        else:
            assert p.crc is None and data.endswith(expect["body"]), capture


def test_captures_cover_the_cases(captures: list[Capture]) -> None:
    frames = by_name(captures)
    assert {c.expect["status"] for c in captures if c.direction == "response"} == {0, 2}
    assert {c.expect["codec"] for c in captures} == set(CODECS.values())
    assert {(c.expect["ver1"], c.expect["crc"]) for c in captures} == {
        (2, True),
        (2, False),
        (1, False),
    }
    long = frames["boltv2/sofa-bolt-node/request-long"]
    assert len(long.expect["body"]) > 0xFFFF  # a u32 content length
    assert frames["boltv2/sofa-bolt-node/oneway-request"].data[2] == 2
    assert frames["boltv2/sofa-bolt-node/heartbeat-request"].expect["heartbeat"]
    assert frames["boltv2/sofa-rpc-node/heartbeat-response"].expect["heartbeat"]
    protobuf = frames["boltv2/sofa-bolt-node/request-protobuf"]
    assert protobuf.expect["body"] == hello_request("eve", 3)
    assert protobuf.expect["headers"]["rpc_trace_context.sofaTraceId"]
    assert frames["boltv2/sofa-rpc-node/response-protobuf"].expect["body"] == hello_reply(
        "hello eve"
    )
    hessian = frames["boltv2/sofa-rpc-node/response-hessian"].expect["body"]
    assert b"\x09hello bob" in hessian  # hessian2 compact string in the SofaResponse
    assert b"not found service" in frames["boltv2/sofa-rpc-node/response-unknown-service"].data


# --- our codec on them ----------------------------------------------------------------------


def test_our_codec_reads_every_field(captures: list[Capture]) -> None:
    problems = []
    for capture in captures:
        data, expect = capture.data, capture.expect
        direction = Direction(capture.direction)
        frame = BOLTV2.decode(data, 0, direction)
        assert frame is not None and frame.length == len(data), capture
        view = frame_json("boltv2", frame)
        for key in GENERIC:
            if view[key] != expect[key]:
                problems.append(f"{capture.name}: {key} = {view[key]!r}, meant {expect[key]!r}")
        if view["headers"] != expect["headers"]:
            problems.append(f"{capture.name}: headers {view['headers']} != {expect['headers']}")
        if bytes(frame.get_body()) != expect["body"]:
            problems.append(f"{capture.name}: body differs")
        fields = frame.field_values()
        p = parts(data)
        want = {
            "ver1": expect["ver1"],
            "ver2": 1,
            "crc_on": int(expect["crc"]),
            "switch_reserved": 0,
            "codec": expect["codec"],
            "class_name": expect["class_name"],
            "crc": p.crc,
        }
        got = {key: fields.get(key) for key in want}
        if got != want:
            problems.append(f"{capture.name}: fields {got} != {want}")
        assert frame.encode() == data, capture  # CRC recomputed: the same bytes
        step = max(1, len(data) // 500)
        for cut in [*range(0, len(data), step), len(data) - 1]:
            assert BOLTV2.decode(data[:cut], 0, direction) is None, (capture, cut)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("where", ["crc", "content", "id"])
def test_our_codec_refuses_a_frame_with_a_wrong_crc(captures: list[Capture], where) -> None:
    for capture in captures:
        p = parts(capture.data)
        if where == "content" and not p.content:
            continue
        changed = bytearray(capture.data)
        offset = {"crc": len(changed) - 1, "content": len(changed) - 5, "id": 8}[where]
        changed[offset] ^= 0x01
        direction = Direction(capture.direction)
        if p.crc is not None:
            with pytest.raises(DecodeError, match="crc"):
                BOLTV2.decode(bytes(changed), 0, direction)
        elif where != "crc":  # no CRC to check: the change is read as it is
            frame = BOLTV2.decode(bytes(changed), 0, direction)
            assert frame is not None and frame.encode() == bytes(changed), capture


def test_sofa_bolt_node_writes_a_crc_that_sofabolt_does_not_read_with_ver1_1() -> None:
    """A wire disagreement between the two implementations: sofa-bolt-node appends a CRC
    whenever its switch is on, SOFABolt's RpcCommandDecoderV2 (and our spec) read one only when
    ver1 is 2. Java's default (ver1 1, CRC switch on, no CRC) is the other side of it."""
    script = [{"label": "v1-crc", "id": 11, "ver1": 1, "crc": True, "name": "x", "wait": False}]
    with recording_relay(None, boltv2_frame_length) as relay:
        (line,) = bolt2_client_sync(relay.port, script)
        sent = relay.pending(TO_SERVER)
    assert sent == bytes.fromhex(line["hex"]) and (sent[1], sent[11]) == (1, 1)
    assert crc_ok(sent)  # node's CRC, over everything before it
    frame = BOLTV2.decode(sent, 0, Direction.REQUEST)
    assert frame.length == len(sent) - 4 and frame.crc_on == 1 and frame.ver1 == 1
    assert bytes(frame.get_body()) == bytes.fromhex(line["request"]["content"])


# --- the real server on frames we changed ---------------------------------------------------


def test_real_server_accepts_frames_we_changed(captures: list[Capture]) -> None:
    frames = by_name(captures)
    protobuf = BOLTV2.decode(frames["boltv2/sofa-bolt-node/request-protobuf"].data)
    protobuf.set_request_id(0x0102_0304)
    protobuf.set_header("x-protocx", "added by protoc-x ✓")
    protobuf.set_body(hello_request("changed", 7))
    hessian_capture = frames["boltv2/sofa-bolt-node/request-hessian"]
    hessian = BOLTV2.decode(hessian_capture.data)
    hessian.set_request_id(0x7FFF_0001)
    hessian.set_header("x-protocx", "yes")
    ping = BOLTV2.decode(frames["boltv2/sofa-bolt-node/heartbeat-request"].data)
    ping.set_request_id(0x7FFF_0002)
    changed = [protobuf.encode(), hessian.encode(), ping.encode()]
    for data in changed:
        assert data[1] == 2 and data[11] == 1 and crc_ok(data)  # still v2, CRC recomputed
    with bolt2_server() as server, socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"".join(changed))
        answers = {}
        for _ in changed:
            answer = BOLTV2.decode(read_frame(sock), 0, Direction.RESPONSE)
            answers[answer.get_request_id()] = answer
        seen = server.wait_request(0x0102_0304)
        assert seen["args"] == [{"name": "changed", "count": 7}], seen
        assert seen["requestProps"]["x-protocx"] == "added by protoc-x ✓", seen
        assert seen["requestProps"]["sofa_head_method_name"] == METHOD
        assert seen["options"]["crcEnable"] is True and seen["options"]["boltVersion"] == 2
        assert server.wait_request(0x7FFF_0001)["args"] == ["bob"]
        assert server.wait_event("heartbeat", 0x7FFF_0002)["options"]["crcEnable"] is True
    assert sorted(answers) == [0x0102_0304, 0x7FFF_0001, 0x7FFF_0002]
    for answer in answers.values():  # decoded by our codec: CRC checked
        assert answer.get_status() == 0 and answer.ver1 == 2 and answer.crc_on == 1
    assert bytes(answers[0x0102_0304].get_body()) == hello_reply(say_hello("changed"))
    assert b"\x09hello bob" in bytes(answers[0x7FFF_0001].get_body())
    assert answers[0x7FFF_0002].is_heartbeat()


def test_real_server_refuses_a_changed_frame_with_its_old_crc(captures: list[Capture]) -> None:
    original = by_name(captures)["boltv2/sofa-bolt-node/request-hessian"].data
    stale = bytearray(original)
    stale[7:11] = struct.pack(">I", 0x0BAD_0001)  # a new request id, CRC left as it was
    with bolt2_server() as server:
        assert send_and_receive(*server, bytes(stale), timeout=1.0) == b""
        warning = server.wait_for(
            lambda item: item.get("event") == "warn" and "CRC check failed" in item["message"],
            "CRC warning",
        )
        assert warning
        assert not [e for e in server.events() if e.get("event") == "request"]


def test_real_server_answers_our_heartbeat() -> None:
    ping = BOLTV2.trigger(0x7FFF_0003)
    with bolt2_server() as server, socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(ping.encode())
        ack = read_frame(sock)
        assert server.wait_event("heartbeat", 0x7FFF_0003)["options"]["boltVersion"] == 1
    answer = BOLTV2.decode(ack, 0, Direction.RESPONSE)
    assert answer.length == len(ack) and answer.is_heartbeat()
    assert answer.get_request_id() == 0x7FFF_0003 and answer.get_status() == 0


# --- through the proxy ----------------------------------------------------------------------


def client_script(tag: str) -> list[dict]:
    """The same request ids on every client: they collide across connections."""
    return [
        {"label": "hessian", "id": 1, "name": f"{tag}-bob"},
        {"label": "protobuf", "id": 2, "codec": "protobuf", "name": f"{tag}-eve", "count": 2},
        {"label": "long", "id": 3, "name": f"{tag}-" + "ü世😀" * 3000},
        {"label": "crc-off", "id": 4, "crc": False, "name": f"{tag}-nc"},
        {"label": "heartbeat", "id": 5, "kind": "heartbeat"},
        {"label": "protobuf-2", "id": 6, "codec": "protobuf", "name": f"{tag}-zoë"},
    ]


def result_of(line: dict) -> str:
    data = line["answer"]["data"]
    assert not data.get("error"), line
    value = data["appResponse"]
    return value["message"] if isinstance(value, dict) else value


def test_real_clients_through_the_proxy_to_the_real_server() -> None:
    proxy_port = free_port()
    scripts = {tag: client_script(tag) for tag in ("one", "two")}

    async def main(server_port: int):
        config = simple_config("boltv2", proxy_port, [f"127.0.0.1:{server_port}"])
        async with proxy_running(config):
            return await asyncio.gather(
                *(bolt2_client(proxy_port, script) for script in scripts.values())
            )

    with bolt2_server() as server:
        results = run(main(server.port))
        events = server.events(wait=0.2)
    requests = [e for e in events if e.get("event") == "request"]
    assert not [e for e in events if e.get("event") in ("heartbeat", "warn", "error")], events
    for (tag, script), lines in zip(scripts.items(), results):
        got = {line["label"]: line for line in lines}
        for item in script:
            line = got[item["label"]]
            assert line["id"] == item["id"] and not line["answer"].get("timeout"), line
            options = line["answer"]["options"]
            # sofa-bolt-node checked the CRC of every answer that has one
            assert options["boltVersion"] == 2, line
            assert options["crcEnable"] is item.get("crc", True), line
            if item.get("kind") == "heartbeat":
                assert line["answer"]["packetType"] == "heartbeat_ack", line  # from the proxy
            else:
                assert result_of(line) == say_hello(item["name"]), line
    sent = [item for script in scripts.values() for item in script if "name" in item]
    assert len(requests) == len(sent)
    served = sorted(
        (r["args"][0]["name"] if isinstance(r["args"][0], dict) else r["args"][0]) for r in requests
    )
    assert served == sorted(item["name"] for item in sent)
    for request in requests:
        assert request["service"] == SERVICE and request["options"]["boltVersion"] == 2, request
    # the proxy renumbers: the server's ids are unique even though the clients' collide
    assert len({r["id"] for r in requests}) == len(requests), requests


def test_real_client_reads_the_proxys_error_answer() -> None:
    proxy_port, closed_port = free_port(), free_port()  # nothing listens on closed_port
    config = simple_config("boltv2", proxy_port, [f"127.0.0.1:{closed_port}"])
    script = [
        {"label": "hessian", "id": 1, "name": "nobody-home"},
        {"label": "protobuf", "id": 2, "codec": "protobuf", "name": "nobody-home"},
        {"label": "hessian-crc-off", "id": 3, "crc": False, "name": "nobody-home"},
        {"label": "heartbeat", "id": 4, "kind": "heartbeat"},
    ]

    async def main():
        async with proxy_running(config):
            return await bolt2_client(proxy_port, script)

    got = {line["label"]: line for line in run(main())}
    for item in script[:3]:
        answer = got[item["label"]]["answer"]
        assert answer["options"] == {
            "protocolType": "bolt2",
            "boltVersion": 2,
            "codecType": item.get("codec", "hessian2"),
            "crcEnable": item.get("crc", True),
        }, answer
        # runtime 502 (or 503 once the endpoint is marked down): sofa-bolt-node reads the
        # message from the hessian exception object, or from the protobuf error text; a bare
        # text in a hessian answer failed its whole connection
        prefix = (
            "Error" if item.get("codec") else "com.alipay.remoting.rpc.exception.RpcServerException"
        )
        assert re.fullmatch(
            prefix + r": protoc-x: (502 upstream unreachable or reset|503 no healthy endpoint)",
            answer["data"]["error"]["error"],
        ), answer
    assert got["heartbeat"]["answer"]["packetType"] == "heartbeat_ack"


def test_real_bolt_v1_client_reads_the_proxys_error_answer() -> None:
    """sofa-bolt-node's default protocol is bolt v1 (no ver1, switch or CRC): the same error
    answer, from the bolt spec."""
    proxy_port, closed_port = free_port(), free_port()
    config = simple_config("bolt", proxy_port, [f"127.0.0.1:{closed_port}"])
    script = [
        {"label": "hessian", "id": 1, "protocol": "bolt", "name": "nobody-home"},
        {"label": "protobuf", "id": 2, "protocol": "bolt", "codec": "protobuf", "name": "x"},
        {"label": "heartbeat", "id": 3, "protocol": "bolt", "kind": "heartbeat"},
    ]

    async def main():
        async with proxy_running(config):
            return await bolt2_client(proxy_port, script)

    got = {line["label"]: line for line in run(main())}
    for label, prefix in (
        ("hessian", "com.alipay.remoting.rpc.exception.RpcServerException"),
        ("protobuf", "Error"),
    ):
        answer = got[label]["answer"]
        assert answer["options"]["protocolType"] == "bolt", answer
        assert re.fullmatch(
            prefix + r": protoc-x: (502 upstream unreachable or reset|503 no healthy endpoint)",
            answer["data"]["error"]["error"],
        ), answer
    assert got["heartbeat"]["answer"]["packetType"] == "heartbeat_ack"
