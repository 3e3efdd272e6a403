"""Dubbo 2 frames from dubbo-ssl-python 0.9.6 and from npm dubbo-remoting (hessian.js), answered
by a real server: npm sofa-rpc-node's RpcServer with the dubbo-remoting protocol.

The node side lives in node/dubbo_peer.js; its packages are pinned by node/package-lock.json and
installed with `npm ci --prefix tests/peers/node` (node_process.NPM_INSTALL).
"""

from __future__ import annotations

import contextlib
import json
import queue
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from .capture import Capture
from .framing import DUBBO_HEADER, dubbo_frame_length
from .node_process import NODE, NODE_DIR, check_node, node_process
from .recording import LOOPBACK, TO_CLIENT, TO_SERVER, recording_relay

PEER_SCRIPT = NODE_DIR / "dubbo_peer.js"

SERVICE = "com.acme.DemoService"
SECOND_SERVICE = "com.acme.InventoryService"  # served the same way (routes by service)
VERSION = "1.0.0"
GROUP = "protocx"
MISSING_SERVICE = "com.acme.Missing"
STATUS_OK, STATUS_SERVER_ERROR = 20, 80
HESSIAN_NULL = b"N"


# --- the node server --------------------------------------------------------------------------


@dataclass
class DubboServer:
    """A running sofa-rpc-node dubbo server. Unpacks as (host, port).

    It serves SERVICE and SECOND_SERVICE, version VERSION: any method answers the hessian string
    "ok:<method>:<argument count>" (status 20, result flag 1); `fail` answers status 80 with
    a message; `nothing` answers status 20 with a bare hessian null (no result flag, a
    sofa-rpc-node quirk); an unknown service answers status 80. Oneway requests get no answer,
    heartbeats get dubbo-remoting's ack. Every request it decodes, and every response it sends,
    is reported: see `wait_request` and `wait_response`.
    """

    host: str
    port: int
    process: subprocess.Popen
    _events: "queue.Queue[dict[str, Any]]" = field(default_factory=queue.Queue)
    _seen: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _wait(self, event: str, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for item in self._seen:
                if item.get("event") == event and item.get("id") == str(request_id):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"dubbo server reported no {event} for id {request_id}; "
                    f"stderr: {''.join(self.stderr)[-500:]}"
                )
            try:
                self._seen.append(self._events.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                pass

    def wait_request(self, request_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """How the server decoded the request with this id: service ("path:version"), method,
        argTypes, args (hessian.js values as JSON), attachments, twoWay."""
        return self._wait("request", request_id, timeout)

    def wait_response(self, request_id: int, timeout: float = 5.0) -> bytes:
        """The exact frame the server sent in answer to the request with this id."""
        return bytes.fromhex(self._wait("response", request_id, timeout)["hex"])


@contextlib.contextmanager
def dubbo_server() -> Iterator[DubboServer]:
    """sofa-rpc-node's RpcServer + dubbo-remoting on 127.0.0.1 (free port); see DubboServer."""
    check_node("dubbo", "sofa-rpc-node")
    with node_process([str(PEER_SCRIPT), "server"], "node dubbo server") as (
        process,
        events,
        stderr,
        first,
    ):
        if first.get("event") != "listening":
            raise RuntimeError(f"unexpected first line from node: {first}")
        server = DubboServer(LOOPBACK, int(first["port"]), process, events, [], stderr)
        yield server


def dubbo_decode(frames: list[bytes], timeout: float = 20.0) -> list[dict[str, Any]]:
    """Decode whole dubbo frames with dubbo-remoting's own decoder (node), one result each:
    {"ok": true, "decoded": {...}} or {"ok": false, "error": "..."}."""
    check_node("dubbo", "sofa-rpc-node")
    result = subprocess.run(
        [NODE, str(PEER_SCRIPT), "decode"],
        cwd=NODE_DIR,
        input="".join(frame.hex() + "\n" for frame in frames),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


# --- helpers ------------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    """Python view of a hessian value: surrogate pairs joined, java objects as field dicts."""
    from dubbo_ssl.codec.encoder import Object

    if isinstance(value, str):
        return value.encode("utf-16-be", "surrogatepass").decode("utf-16-be")
    if isinstance(value, Object):
        return {key: _normalise(value[key]) for key in value.keys()}
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    return value


def _split_header(data: bytes) -> tuple[int, int, int, int]:
    flag, status, request_id, body_len = struct.unpack(">BBqI", data[2:DUBBO_HEADER])
    return flag, status, request_id, body_len


def _response_capture(name: str, data: bytes, request_id: int, heartbeat: bool = False) -> Capture:
    _flag, status, _rid, _len = _split_header(data)
    return Capture(
        name,
        "response",
        data,
        {
            "request_id": request_id,
            "stream_type": "response",
            "heartbeat": heartbeat,
            "status": status,
            "service": None,
            "method": None,
            "headers": {},
            "body": data[DUBBO_HEADER:],
            "length": len(data),
        },
    )


def _heartbeat_expect(data: bytes, request_id: int, direction: str) -> dict[str, Any]:
    expect: dict[str, Any] = {
        "request_id": request_id,
        "stream_type": direction,
        "heartbeat": True,
        "service": None,
        "method": None,
        "headers": {},
        "body": HESSIAN_NULL,
        "length": len(data),
    }
    if direction == "response":
        expect["status"] = STATUS_OK
    return expect


def _same_args(name: str, expected: list[Any], decoded: list[Any]) -> None:
    if _normalise(decoded) != expected:
        raise AssertionError(f"{name}: hessian.js decoded {decoded!r:.300}, sent {expected!r:.300}")


# --- dubbo-ssl-python ---------------------------------------------------------------------


def _surrogates(text: str) -> str:
    """text with every non-BMP character split into its UTF-16 surrogate pair.

    dubbo-ssl-python counts Python characters and encodes each as at most 3 bytes: a non-BMP
    character is mangled (its high bits dropped) unless it arrives as a surrogate pair, which
    it then writes exactly as Java's Hessian2Output does (CESU-8, two units)."""
    units = []
    for char in text:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            units.append(chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF)))
        else:
            units.append(char)
    return "".join(units)


def _dubbo_ssl_arguments() -> list[tuple[str, str, list[Any]]]:
    from dubbo_ssl.codec.encoder import Object

    def address(city: str, zip_code: int) -> Any:
        return Object("com.acme.Address", {"city": city, "zip": zip_code})

    alice = Object(
        "com.acme.User",
        {
            "name": "alice",
            "age": 30,
            "home": address("杭州", 310000),
            "tags": ["admin", "ops"],
            "score": 97.5,
            "active": True,
        },
    )
    bob = Object(
        "com.acme.User",
        {
            "name": "bob",
            "age": 41,
            "home": address("上海", 200000),
            "tags": ["dev"],
            "score": 1.0,
            "active": False,
        },
    )
    short_text = _surrogates(("Grüße 世界 😀 " * 120)[:1100])
    long_text = _surrogates(("Ünïcödé 中文 😀 𝄞 " * 2600)[:40000])
    return [
        ("request-objects", "register", [alice, 7, 1 << 40, True, 3.25]),
        ("request-object-list", "batch", [[alice, bob], [1, 2, 300000], ["x", "yz"], [0.5, 2.0]]),
        ("request-long-strings", "echo", [short_text, long_text]),
        ("request-fail", "fail", ["boom"]),
    ]


def _ensure_dubbo_ssl_threads() -> None:
    """dubbo-ssl-python's connection pool starts its reader and heartbeat threads at import; a
    KeyError or a dict resized during iteration kills them for the rest of the process."""
    from dubbo_ssl.connection import connections

    pool = connections.connection_pool
    names = " ".join(thread.name for thread in threading.enumerate())
    for target in ("_read_from_server", "_send_heartbeat"):
        if target not in names:
            threading.Thread(
                target=getattr(pool, target), name=f"dubbo-ssl {target}", daemon=True
            ).start()


def dubbo_ssl_python() -> list[Capture]:
    """Frames from dubbo-ssl-python's DubboClient (direct TCP, no registry) through a relay to
    sofa-rpc-node's dubbo server: requests with java objects (class definitions, nested objects,
    class refs), lists, long strings (> 1023 and > 32768 UTF-16 units, non-ASCII, non-BMP as
    surrogate pairs), attachments; its heartbeat and heartbeat reply; the server's answers."""
    check_node("dubbo", "sofa-rpc-node")
    from dubbo_ssl.client import DubboClient
    from dubbo_ssl.codec.encoder import Request
    from dubbo_ssl.common import constants, util
    from dubbo_ssl.connection import connections

    _ensure_dubbo_ssl_threads()
    pool = connections.connection_pool
    context = {"timeout": "3000", "x-trace": "trace-42"}
    captures: list[Capture] = []
    with dubbo_server() as server, recording_relay(server.address, dubbo_frame_length) as relay:
        host = f"{relay.host}:{relay.port}"
        client = DubboClient(SERVICE, GROUP, version=VERSION, host=host)

        def call(
            label: str, dubbo_client: Any, path: str, method: str, args: list[Any], answer: str
        ) -> None:
            request_id = util.invoke_id  # the id the next Request() takes
            try:
                result: Any = dubbo_client.call(method, args, context=context, timeout=5)
            except Exception as exc:  # noqa: BLE001 (error answers surface as exceptions)
                result = exc
            param = {
                "dubbo_version": "2.4.10",
                "version": VERSION,
                "method": method,
                "path": path,
                "arguments": args,
                "group": GROUP,
                "context": context,
            }
            body = bytes(Request(param)._encode_request_body())
            types = Request(param)._get_parameter_types(args)
            (data,) = relay.take(TO_SERVER)
            want = b"\xda\xbb\xc2\x00" + struct.pack(">qI", request_id, len(body)) + body
            if data != want:
                raise AssertionError(
                    f"{label}: wire {data[:40].hex()} != encoder {want[:40].hex()}"
                )
            attachments = {
                "path": path,
                "interface": path,
                "version": VERSION,
                "group": GROUP,
                **context,
            }
            expected_args = _normalise(args)
            decoded = server.wait_request(request_id)
            _same_args(label, expected_args, decoded["args"])
            captures.append(
                Capture(
                    f"dubbo/dubbo-ssl-python/{label}",
                    "request",
                    data,
                    {
                        "request_id": request_id,
                        "stream_type": "request",
                        "heartbeat": False,
                        "timeout_ms": 3000,
                        "service": path,
                        "method": method,
                        "headers": attachments,
                        "body": body,
                        "length": len(data),
                        "dubbo_version": "2.4.10",
                        "version": VERSION,
                        "parameter_types": types,
                        "args": expected_args,
                    },
                )
            )
            (reply,) = relay.take(TO_CLIENT)
            if reply != server.wait_response(request_id):
                raise AssertionError(f"{label}: relayed answer differs from the server's")
            captures.append(
                _response_capture(
                    f"dubbo/sofa-rpc-node/{answer}-to-dubbo-ssl-python", reply, request_id
                )
            )
            if answer.startswith("response-ok") and result != f"ok:{method}:{len(args)}":
                raise AssertionError(f"{label}: dubbo-ssl-python got {result!r}")

        answers = {"request-fail": "response-server-error"}
        for label, method, args in _dubbo_ssl_arguments():
            call(
                label, client, SERVICE, method, args, answers.get(label, f"response-ok-{label[8:]}")
            )

        missing = DubboClient(MISSING_SERVICE, GROUP, version=VERSION, host=host)
        call(
            "request-unknown-service",
            missing,
            MISSING_SERVICE,
            "echo",
            ["x"],
            "response-unknown-service",
        )

        # Heartbeat: only after 60 s idle, and only once its per-host counter exists (else the
        # heartbeat thread dies on KeyError). Pretend the connection has been idle.
        conn = pool._connection_pool[host]
        heartbeat_id = util.invoke_id
        pool.client_heartbeats[host] = 0
        conn.last_active = time.time() - constants.TIMEOUT_IDLE - 1
        try:
            ping = relay.take(TO_SERVER, timeout=3)[0]
        finally:
            conn.last_active = time.time()
        ack = relay.take(TO_CLIENT)[0]
        time.sleep(0.1)
        for extra in relay.take_all(TO_SERVER) + relay.take_all(TO_CLIENT):
            if extra[2] & 0x20 == 0:  # only further heartbeats may be left over
                raise AssertionError(f"unexpected frame {extra[:16].hex()}")
        captures.append(
            Capture(
                "dubbo/dubbo-ssl-python/heartbeat-request",
                "request",
                ping,
                _heartbeat_expect(ping, heartbeat_id, "request"),
            )
        )
        captures.append(
            Capture(
                "dubbo/sofa-rpc-node/heartbeat-response-to-dubbo-ssl-python",
                "response",
                ack,
                _heartbeat_expect(ack, heartbeat_id, "response"),
            )
        )

        # A server-initiated heartbeat (built from dubbo-ssl-python's own constants) makes the
        # client answer with its heartbeat response.
        server_ping_id = 0x7FFF_0000_0000_0001
        server_ping = bytes(
            constants.CLI_HEARTBEAT_REQ_HEAD
            + list(struct.pack(">q", server_ping_id))
            + constants.CLI_HEARTBEAT_TAIL
        )
        relay.inject(TO_CLIENT, server_ping)
        (pong,) = relay.take(TO_SERVER)
        captures.append(
            Capture(
                "dubbo/dubbo-ssl-python/heartbeat-response",
                "response",
                pong,
                _heartbeat_expect(pong, server_ping_id, "response"),
            )
        )
    # the relay is closed: the client sees EOF and drops the connection from its pool
    deadline = time.monotonic() + 3
    while host in pool._connection_pool and time.monotonic() < deadline:
        time.sleep(0.02)
    return captures


# --- dubbo-remoting (node) ----------------------------------------------------------------


def dubbo_sofa_rpc_node() -> list[Capture]:
    """Frames from npm dubbo-remoting's encoder (hessian.js + js-to-java arguments, what
    sofa-rpc-node's dubbo client sends) through a relay to sofa-rpc-node's dubbo server:
    objects with a class definition, nested objects and a ref (0x51), typed lists, maps,
    byte arrays, chunked strings (R chunks of 0x8000, a surrogate pair kept whole), a real
    oneway, a heartbeat, and the server's answers (ok, error 80, null without result flag)."""
    check_node("dubbo", "sofa-rpc-node")
    captures: list[Capture] = []
    with dubbo_server() as server, recording_relay(server.address, dubbo_frame_length) as relay:
        result = subprocess.run(
            [NODE, str(PEER_SCRIPT), "client", str(relay.port)],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"node dubbo client failed: {result.stderr}")
        sent = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        for item in sent:
            label, request_id = item["label"], int(item["id"])
            wire = bytes.fromhex(item["hex"])
            (data,) = relay.take(TO_SERVER)
            if data != wire:
                raise AssertionError(
                    f"{label}: relay recorded {data[:40].hex()}, node sent {wire[:40].hex()}"
                )
            decoded = item["decoded"]
            if label == "heartbeat-request":
                captures.append(
                    Capture(
                        "dubbo/dubbo-remoting/heartbeat-request",
                        "request",
                        data,
                        _heartbeat_expect(data, request_id, "request"),
                    )
                )
                (ack,) = relay.take(TO_CLIENT)
                captures.append(
                    Capture(
                        "dubbo/sofa-rpc-node/heartbeat-response-to-dubbo-remoting",
                        "response",
                        ack,
                        _heartbeat_expect(ack, request_id, "response"),
                    )
                )
                continue
            info = decoded["data"]
            attachments = {key: str(value) for key, value in info["requestProps"].items()}
            path, _, version = info["serverSignature"].partition(":")
            oneway = label.startswith("oneway")
            server_view = server.wait_request(request_id)
            if server_view["twoWay"] is oneway:
                raise AssertionError(f"{label}: server saw twoWay={server_view['twoWay']}")
            _same_args(label, _normalise(info["args"]), server_view["args"])
            captures.append(
                Capture(
                    f"dubbo/dubbo-remoting/{label}",
                    "request",
                    data,
                    {
                        "request_id": request_id,
                        "stream_type": "oneway" if oneway else "request",
                        "heartbeat": False,
                        "timeout_ms": int(attachments["timeout"]),
                        "service": path,
                        "method": info["methodName"],
                        "headers": {**attachments, "version": version},
                        "body": data[DUBBO_HEADER:],
                        "length": len(data),
                        "dubbo_version": attachments["dubbo"],
                        "version": version,
                        "args": _normalise(info["args"]),
                    },
                )
            )
            if oneway:
                continue
            (reply,) = relay.take(TO_CLIENT)
            if reply != server.wait_response(request_id):
                raise AssertionError(f"{label}: relayed answer differs from the server's")
            name = {
                "request-fail": "response-server-error",
                "request-unknown-service": "response-unknown-service",
                "request-null-result": "response-null-without-flag",
            }.get(label, "response-ok-" + label[len("request-") :])
            captures.append(
                _response_capture(
                    f"dubbo/sofa-rpc-node/{name}-to-dubbo-remoting", reply, request_id
                )
            )
        relay.assert_silent(TO_CLIENT, wait=0.1)
    return captures
