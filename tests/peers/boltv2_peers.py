"""Bolt v2 (SOFABolt RpcProtocolV2, with CRC32) from a real implementation: npm sofa-bolt-node
2.0.1's 'bolt2' protocol type, served by sofa-rpc-node 2.10.0's RpcServer on top of it.

The node side lives in node/bolt_peer.js; its packages are pinned by node/package-lock.json and
installed with `npm ci --prefix tests/peers/node` (node_process.NPM_INSTALL). Content is hessian2 (codec 1,
what sofa-bolt-node writes by default) or protobuf (codec 11, protobufjs with the HelloService
below); the protobuf bytes here are written by hand from the protobuf wire format, never with a
protoc-x codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from .capture import Capture
from .framing import (
    BOLTV2_REQUEST_HEADER,
    BOLTV2_RESPONSE_HEADER,
    boltv2_crc,
    boltv2_frame_length,
)
from .node_process import NODE, NODE_DIR, check_node, node_process
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay

PEER_SCRIPT = NODE_DIR / "bolt_peer.js"

INTERFACE = "com.acme.HelloService"
SERVICE = INTERFACE + ":1.0"
MISSING_SERVICE = "com.acme.Missing:1.0"
METHOD = "sayHello"
REQUEST_CLASS = "com.alipay.sofa.rpc.core.request.SofaRequest"
RESPONSE_CLASS = "com.alipay.sofa.rpc.core.response.SofaResponse"
CODECS = {"hessian2": 1, "protobuf": 11}  # sofa-bolt-node's codecName2Code
HEARTBEAT_TIMEOUT = 3000  # sofa-bolt-node's HeartbeatCommand default


# --- protobuf and hessian values, by hand ---------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def hello_request(name: str, count: Optional[int] = None) -> bytes:
    """HelloRequest{name = 1, count = 2} in protobuf wire format; protobufjs writes a field that
    is set on the object even when it holds the proto3 default (count 0 gives `10 00`)."""
    data = name.encode()
    out = b"\x0a" + _varint(len(data)) + data
    return out + (b"\x10" + _varint(count) if count is not None else b"")


def hello_reply(message: str) -> bytes:
    """HelloReply{message = 1} in protobuf wire format."""
    data = message.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def say_hello(name: str) -> str:
    """What the node server answers to sayHello(name)."""
    return "hello " + name


def hessian_short_string(text: str) -> bytes:
    """A hessian2 string of fewer than 32 UTF-16 units (one length byte, then UTF-8)."""
    assert len(text.encode("utf-16-le")) // 2 < 32
    return bytes([len(text)]) + text.encode()


def bolt_map(headers: dict[str, str]) -> bytes:
    """Bolt header bytes: (u32 key length, key, u32 value length, value) per entry, in order."""
    out = b""
    for key, value in headers.items():
        out += struct.pack(">I", len(key.encode())) + key.encode()
        out += struct.pack(">I", len(value.encode())) + value.encode()
    return out


# --- frame parts at the documented offsets (protocols.md), for captures and tests ------------


@dataclass(frozen=True)
class Parts:
    """A bolt v2 frame cut at protocols.md's offsets: no protoc-x codec involved."""

    ver1: int
    kind: int
    cmd: int
    ver2: int
    request_id: int
    codec: int
    switch: int
    status: Optional[int]
    timeout: Optional[int]
    class_name: bytes
    headers: bytes
    content: bytes
    crc: Optional[int]


def parts(data: bytes) -> Parts:
    if data[0] != 0x02:
        raise ValueError(f"not bolt v2: {data[:1].hex()}")
    ver1, kind, cmd, ver2, request_id, codec, switch = struct.unpack_from(">BBHBIBB", data, 1)
    if kind == 0:
        (status,) = struct.unpack_from(">H", data, 12)
        timeout = None
        class_len, header_len, content_len = struct.unpack_from(">HHI", data, 14)
        offset = BOLTV2_RESPONSE_HEADER
    else:
        status = None
        (timeout,) = struct.unpack_from(">i", data, 12)
        class_len, header_len, content_len = struct.unpack_from(">HHI", data, 16)
        offset = BOLTV2_REQUEST_HEADER
    class_name = data[offset : offset + class_len]
    offset += class_len
    headers = data[offset : offset + header_len]
    offset += header_len
    content = data[offset : offset + content_len]
    offset += content_len
    crc = struct.unpack_from(">I", data, offset)[0] if boltv2_crc(data) else None
    return Parts(
        ver1, kind, cmd, ver2, request_id, codec, switch, status, timeout, class_name, headers,
        content, crc,
    )  # fmt: skip


def crc_ok(data: bytes) -> bool:
    """The frame's CRC32 (zlib polynomial) covers every byte before it."""
    return struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])


# --- the node server --------------------------------------------------------------------------


@dataclass
class BoltServer:
    """A running sofa-rpc-node RpcServer speaking sofa-bolt-node's bolt (v1 and v2), serving
    SERVICE: sayHello(name) answers "hello " + name (hessian2 string, or protobuf HelloReply),
    fail() answers SERVER_EXCEPTION (2), an unknown service SERVER_EXCEPTION too. Oneway requests
    get no answer, heartbeats get sofa-bolt-node's ack (same ver1, switch and CRC as the ping).
    Unpacks as (host, port). It reports every request it decoded, every heartbeat, every answer
    it sent (exact bytes) and every decode error (`events`)."""

    host: str
    port: int
    process: subprocess.Popen
    response_status: dict[str, int]
    _events: "queue.Queue[dict[str, Any]]" = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _drain(self, wait: float) -> None:
        with contextlib.suppress(queue.Empty):
            self.seen.append(self._events.get(timeout=wait))
            while True:
                self.seen.append(self._events.get_nowait())

    def wait_for(self, predicate, what: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for item in self.seen:
                if predicate(item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"bolt server reported no {what}; saw {self.seen[-5:]}; "
                    f"stderr: {''.join(self.stderr)[-500:]}"
                )
            self._drain(min(remaining, 0.1))

    def wait_event(self, event: str, request_id: int, timeout: float = 5.0) -> dict[str, Any]:
        return self.wait_for(
            lambda item: item.get("event") == event and item.get("id") == request_id,
            f"{event} for id {request_id}",
            timeout,
        )

    def wait_request(self, request_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """How the server decoded the request with this id: service, method, args, argTypes,
        requestProps, oneway, options {protocolType, boltVersion, codecType, crcEnable,
        timeout}."""
        return self.wait_event("request", request_id, timeout)

    def wait_response(self, request_id: int, timeout: float = 5.0) -> bytes:
        """The exact frame the server sent in answer to the request with this id."""
        return bytes.fromhex(self.wait_event("response", request_id, timeout)["hex"])

    def events(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Everything reported so far (after waiting `wait` seconds for more)."""
        if wait:
            time.sleep(wait)
        self._drain(0.0)
        return list(self.seen)


@contextlib.contextmanager
def bolt2_server() -> Iterator[BoltServer]:
    """sofa-rpc-node's RpcServer + sofa-bolt-node on 127.0.0.1 (free port); see BoltServer."""
    check_node("bolt v2", "sofa-bolt-node", "protobufjs")
    with node_process([str(PEER_SCRIPT), "server"], "node bolt server") as (
        process,
        events,
        stderr,
        first,
    ):
        if first.get("event") != "listening":
            raise RuntimeError(f"unexpected first line from node: {first}")
        yield BoltServer(
            LOOPBACK, int(first["port"]), process, first["responseStatus"], events, [], stderr
        )


# --- the node client ------------------------------------------------------------------------


def _client_args(port: int) -> list[str]:
    return [str(PEER_SCRIPT), "client", str(port)]  # the script goes to stdin


def _client_lines(out: str, err: str, returncode: int, script: list) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    labels = {line.get("label") for line in lines}
    if returncode != 0 or labels != {item["label"] for item in script}:
        raise AssertionError(f"bolt client printed {lines}; stderr: {err[-800:]}")
    return lines


def bolt2_client_sync(port: int, script: list[dict[str, Any]], timeout: float = 30.0) -> list:
    """sofa-bolt-node's encoder/decoder (node) sends the script's items on one connection to
    127.0.0.1:port, all at once, and prints one dict per item (see bolt_peer.js)."""
    check_node("bolt v2", "sofa-bolt-node", "protobufjs")
    result = subprocess.run(
        [NODE, *_client_args(port)],
        cwd=NODE_DIR,
        input=json.dumps(script),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
    return _client_lines(result.stdout, result.stderr, result.returncode, script)


async def bolt2_client(port: int, script: list[dict[str, Any]], timeout: float = 30.0) -> list:
    """bolt2_client_sync as a subprocess of the running event loop (in-process proxies keep
    serving while it runs)."""
    check_node("bolt v2", "sofa-bolt-node", "protobufjs")
    process = await asyncio.create_subprocess_exec(
        NODE,
        *_client_args(port),
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(script).encode()), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
    return _client_lines(out.decode(), err.decode(), process.returncode or 0, script)


# --- captures -------------------------------------------------------------------------------

LONG_NAME = ("Grüße 世界 😀 " * 5000)[:40000]  # > 65535 bytes of UTF-8: a u32 content length
TRACE_ID = "0a0b0c0d1700000000001"

SCRIPT: list[dict[str, Any]] = [
    {"label": "request-hessian", "id": 1, "name": "bob"},
    {
        "label": "request-protobuf",
        "id": 2,
        "codec": "protobuf",
        "name": "eve",
        "count": 3,
        "targetApp": "protocx-app",
        "props": {"rpc_trace_context": {"sofaTraceId": TRACE_ID}, "x-color": "blue"},
    },
    {"label": "heartbeat-request", "id": 3, "kind": "heartbeat"},
    {"label": "oneway-request", "id": 4, "kind": "oneway", "name": "fire and forget"},
    {"label": "request-fail", "id": 5, "method": "fail", "args": ["z"]},
    {"label": "request-unknown-service", "id": 6, "service": MISSING_SERVICE, "name": "q"},
    {"label": "request-ver1-1", "id": 7, "ver1": 1, "crc": False, "name": "v1"},
    {"label": "request-crc-off", "id": 8, "crc": False, "name": "nc", "timeout": 1500},
    {"label": "request-long", "id": 9, "name": LONG_NAME},
    {"label": "request-protobuf-big-id", "id": 0x7FFF_FFF0, "codec": "protobuf", "name": "Zoë"},
]

RESPONSE_NAMES = {
    "request-fail": "response-server-exception",
    "request-unknown-service": "response-unknown-service",
}


def request_headers(item: dict[str, Any]) -> dict[str, str]:
    """The header map sofa-bolt-node writes for a script item (RpcRequestCommand.serializeHeader):
    `service` alone with hessian2; with protobuf also the method, target app and service, and
    requestProps flattened with '.'."""
    service = item.get("service", SERVICE)
    headers = {"service": service}
    if item.get("codec") == "protobuf":
        headers.update(
            {
                "sofa_head_method_name": item.get("method", METHOD),
                "sofa_head_target_app": item.get("targetApp", ""),
                "sofa_head_target_service": service,
            }
        )

        def flat(prefix: str, values: dict[str, Any]) -> None:
            for key, value in values.items():
                if isinstance(value, dict):
                    flat(f"{prefix}{key}.", value)
                else:
                    headers[prefix + key] = str(value)

        flat("", {"service": service, **item.get("props", {})})
    return headers


def _request_capture(item: dict[str, Any], sent: dict[str, Any], data: bytes) -> Capture:
    heartbeat = item.get("kind") == "heartbeat"
    codec = item.get("codec", "hessian2")
    if heartbeat:
        library = {"className": "", "content": "", "headers": "", "timeout": HEARTBEAT_TIMEOUT}
    else:
        library = sent["request"]
        if bytes.fromhex(library["headers"]) != bolt_map(request_headers(item)):
            raise AssertionError(f"{item['label']}: sofa-bolt-node wrote other headers")
    expect = {
        "request_id": item["id"],
        "stream_type": "oneway" if item.get("kind") == "oneway" else "request",
        "heartbeat": heartbeat,
        "timeout_ms": item.get("timeout", 3000) if not heartbeat else library["timeout"],
        "service": None if heartbeat else item.get("service", SERVICE),
        # hessian2: sofa-bolt-node sends the method only inside the hessian SofaRequest
        "method": METHOD if codec == "protobuf" and not heartbeat else None,
        "headers": {} if heartbeat else request_headers(item),
        "body": bytes.fromhex(library["content"]),
        "length": len(data),
        "ver1": item.get("ver1", 2),
        "crc": item.get("crc", True),
        "codec": CODECS[codec],
        "class_name": library["className"],
    }
    if codec == "protobuf" and not heartbeat:
        if expect["body"] != hello_request(item["name"], item.get("count")):
            raise AssertionError(f"{item['label']}: protobuf content differs from HelloRequest")
    return Capture(f"boltv2/sofa-bolt-node/{item['label']}", "request", data, expect)


def _response_capture(
    name: str, item: dict[str, Any], data: bytes, status: int, heartbeat: bool = False
) -> Capture:
    codec = item.get("codec", "hessian2")
    if heartbeat:
        body, class_name, headers = b"", "", {}
    elif codec == "protobuf" and status == 0:
        body, class_name = hello_reply(say_hello(item["name"])), RESPONSE_CLASS
        headers = {"sofa_head_response_error": "false"}  # RpcResponseCommand.serializeHeader
    else:
        body, class_name, headers = parts(data).content, RESPONSE_CLASS, {}
    return Capture(
        name,
        "response",
        data,
        {
            "request_id": item["id"],
            "stream_type": "response",
            "heartbeat": heartbeat,
            "status": status,
            "service": None,
            "method": None,
            "headers": headers,
            "body": body,
            "length": len(data),
            "ver1": item.get("ver1", 2),
            "crc": item.get("crc", True),
            "codec": CODECS[codec],
            "class_name": class_name,
        },
    )


def boltv2_sofa_bolt_node() -> list[Capture]:
    """Frames of sofa-bolt-node's own encoder set to bolt2 (ver1 2, CRC on unless said), all
    written at once on one connection through a relay to sofa-rpc-node's server: hessian2 and
    protobuf requests, a heartbeat, a oneway, a failing method, an unknown service, ver1 1 and
    CRC-off frames, a > 64 KiB content, a large request id; and the server's answers."""
    check_node("bolt v2", "sofa-bolt-node", "protobufjs")
    captures: list[Capture] = []
    with bolt2_server() as server, recording_relay(server.address, boltv2_frame_length) as relay:
        sent = {line["label"]: line for line in bolt2_client_sync(relay.port, SCRIPT)}
        exception = server.response_status["SERVER_EXCEPTION"]
        frames = relay.take(TO_SERVER, len(SCRIPT))
        for item, data in zip(SCRIPT, frames):
            line = sent[item["label"]]
            if data != bytes.fromhex(line["hex"]):
                raise AssertionError(f"{item['label']}: relay recorded other bytes than node wrote")
            captures.append(_request_capture(item, line, data))
            if item.get("kind") == "heartbeat":
                continue
            seen = server.wait_request(item["id"])
            args = seen["args"] if item.get("codec") != "protobuf" else [seen["args"][0]["name"]]
            want_args = item.get("args") or [item["name"]]
            if (seen["service"], seen["method"], args, seen["oneway"]) != (
                item.get("service", SERVICE),
                item.get("method", METHOD),
                want_args,
                item.get("kind") == "oneway",
            ) or (seen["options"]["boltVersion"], seen["options"]["crcEnable"]) != (
                item.get("ver1", 2),
                item.get("crc", True),
            ):
                raise AssertionError(f"{item['label']}: server decoded {seen}")
        answered = [item for item in SCRIPT if item.get("kind") is None]
        replies = relay.take(TO_CLIENT, len(answered) + 1)  # + the heartbeat ack
        by_bytes = {}
        for item in answered:
            by_bytes[server.wait_response(item["id"])] = item
        for data in replies:
            item = by_bytes.pop(data, None)
            if item is None:  # the one frame the server did not report: the heartbeat ack
                (item,) = [i for i in SCRIPT if i.get("kind") == "heartbeat"]
                answer = sent[item["label"]]["answer"]
                if answer.get("packetType") != "heartbeat_ack":
                    raise AssertionError(f"heartbeat answered with {answer}")
                captures.append(
                    _response_capture(
                        "boltv2/sofa-rpc-node/heartbeat-response", item, data, 0, heartbeat=True
                    )
                )
                continue
            label = item["label"]
            failed = label in RESPONSE_NAMES
            answer = sent[label]["answer"]
            if failed != bool(answer["data"].get("error")):
                raise AssertionError(f"{label}: sofa-bolt-node decoded {answer}")
            if not failed:
                result = answer["data"]["appResponse"]
                if item.get("codec") == "protobuf":
                    result = result["message"]
                if result != say_hello(item["name"]):
                    raise AssertionError(f"{label}: sofa-bolt-node decoded {result!r:.100}")
            name = RESPONSE_NAMES.get(label, "response-" + label[len("request-") :])
            captures.append(
                _response_capture(
                    f"boltv2/sofa-rpc-node/{name}", item, data, exception if failed else 0
                )
            )
        if by_bytes:
            raise AssertionError(f"answers not relayed: {[i['label'] for i in by_bytes.values()]}")
        relay.assert_silent(TO_CLIENT, wait=0.1)  # the oneway stays unanswered
    return captures
