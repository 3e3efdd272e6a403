"""Bolt v1 frames from anthunder 0.8.1 (the Python SOFA bolt client and server).

Client frames come from `AioClient.invoke()` through a recording relay into a real
`AioListener`; the listener's answers (success, heartbeat ack, NO_PROCESSOR, TIMEOUT,
CONNECTION_CLOSED) are recorded on the way back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from typing import Any, Iterator, Optional
from unittest import mock

from .capture import Capture
from .framing import BOLT_RESPONSE_HEADER, bolt_frame_length
from .recording import (
    LOOPBACK,
    TO_CLIENT,
    TO_SERVER,
    recording_relay,
    recv_exactly,
    send_and_receive,
)

HELLO_SERVICE = "com.acme.HelloService:1.0"
HELLO_METHOD = "sayHello"
SLOW_METHOD = "slowHello"
MISSING_SERVICE = "com.acme.MissingService:1.0"
ECHO_PREFIX = b"hello:"  # AioListener's handler answers ECHO_PREFIX + request content
SLOW_SECONDS = 0.6

# A protobuf message {1: "world", 2: 42} (field 1 string, field 2 varint), as anthunder users send.
PROTOBUF_CONTENT = b"\x0a\x05world\x10\x2a"

# Ping from sofa-bolt-node, as quoted in shared/docs/protocols.md (id 2, hessian2, timeout 3000).
SOFA_BOLT_NODE_PING = bytes.fromhex(
    "01 01 00 00 01 00 00 00 02 01 00 00 0b b8 00 00 00 00 00 00 00 00"
)


def _anthunder() -> Any:
    """Import anthunder without letting it switch the whole process to uvloop."""
    policy = asyncio.get_event_loop_policy()
    import anthunder  # noqa: F401  (its aio modules call set_event_loop_policy on import)
    from anthunder.client.aio_client import AioClient  # noqa: F401
    from anthunder.listener.aio_listener import AioListener  # noqa: F401

    asyncio.set_event_loop_policy(policy)
    return anthunder


@contextlib.contextmanager
def _no_mesh() -> Iterator[None]:
    """anthunder POSTs to a mesh agent on 127.0.0.1:13330 at start-up and ignores the failure;
    skip that HTTP call so nothing outside our own ports is touched."""
    from anthunder.mesh.mesh_client import MeshClient

    def refuse(self: Any) -> bool:
        raise ConnectionError("protoc-x tests: no mesh agent")

    with mock.patch.object(MeshClient, "startup", refuse):
        yield


def _service_class() -> type:
    from anthunder.listener.base_listener import BaseService

    class HelloService(BaseService):
        def sayHello(self, body: bytes) -> bytes:  # noqa: N802 (the wire's method name)
            return ECHO_PREFIX + body

        def slowHello(self, body: bytes) -> bytes:  # noqa: N802
            time.sleep(SLOW_SECONDS)
            return ECHO_PREFIX + body

    return HelloService


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    async def cancel_others() -> None:
        # Let connection handlers see their peers' EOF and finish on their own first:
        # cancelling them makes asyncio's stream callback print a CancelledError traceback.
        current = asyncio.current_task()
        deadline = loop.time() + 1.0
        while loop.time() < deadline:
            others = [t for t in asyncio.all_tasks() if t is not current]
            if not others:
                return
            await asyncio.sleep(0.02)
        for task in others:
            task.cancel()

    if loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_others(), loop).result(2)
        loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=2)


@contextlib.contextmanager
def anthunder_server() -> Iterator[tuple[str, int]]:
    """A real anthunder `AioListener` on 127.0.0.1 (free port) serving HELLO_SERVICE.

    `sayHello(content)` answers ECHO_PREFIX + content (status 0, codec 11, class SofaResponse);
    `slowHello` does the same after SLOW_SECONDS; any other service gets status 6 NO_PROCESSOR.
    """
    anthunder = _anthunder()
    with _no_mesh():
        listener = anthunder.AioListener((LOOPBACK, 0), "protocx-peers")
    listener.handler.register_interface(HELLO_SERVICE, _service_class())
    thread = threading.Thread(
        target=listener.run_forever, name="anthunder-aio-listener", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 5
    while listener._server is None or not listener._server.sockets:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("anthunder AioListener did not start")
        time.sleep(0.01)
    port = listener._server.sockets[0].getsockname()[1]
    try:
        yield LOOPBACK, port
    finally:
        listener._loop.call_soon_threadsafe(listener._server.close)
        _stop_loop(listener._loop, thread)
        listener.handler.executor.shutdown(wait=False)


class _Client:
    """anthunder's AioClient, with its private loop thread stopped on close."""

    def __init__(self) -> None:
        anthunder = _anthunder()
        with _no_mesh():
            self.client = anthunder.AioClient("protocx-peers")

    def run(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.client._loop).result(timeout)

    def close(self) -> None:
        for task, writer in list(self.client.connection_mapping.values()):
            self.client._loop.call_soon_threadsafe(writer.close)
        _stop_loop(self.client._loop, self.client.loop_thread)


def _header(service: str, method: str, **extra: str) -> Any:
    from anthunder.protocol import SofaHeader
    from mytracer import SpanContext

    # A fixed trace id keeps the frames stable (the default one embeds time, ip and pid).
    spanctx = SpanContext(sofaTraceId="0a00000b1700000000001100112233", sofaRpcId="0.1")
    return SofaHeader.build_header(
        spanctx, service, method, target_app="acme-hello", uid="u-42", **extra
    )


def _request_expect(pkg: Any, data: bytes, stream_type: str) -> dict[str, Any]:
    header = dict(pkg.header)
    return {
        "request_id": pkg.request_id,
        "stream_type": stream_type,
        "heartbeat": False,
        "timeout_ms": pkg.timeout,
        "service": header.get("service") or header.get("sofa_head_target_service"),
        "method": header.get("sofa_head_method_name"),
        "headers": header,
        "body": pkg.content,
        "length": len(data),
    }


def _response_expect(
    request_id: int, status: int, body: bytes, data: bytes, heartbeat: bool = False
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "stream_type": "response",
        "heartbeat": heartbeat,
        "status": status,
        "service": None,
        "method": None,
        "headers": {},
        "body": body,
        "length": len(data),
    }


def _check_same(name: str, wire: bytes, library: bytes) -> None:
    if wire != library:
        raise AssertionError(
            f"{name}: relay recorded {wire[:40].hex()}..., library encoded {library[:40].hex()}..."
        )


def bolt_anthunder() -> list[Capture]:
    """Bolt v1 frames from anthunder's AioClient and AioListener (see module docstring)."""
    _anthunder()
    from anthunder.command.heartbeat import HeartbeatRequest
    from anthunder.protocol import BoltRequest
    from anthunder.protocol.constants import PTYPE

    captures: list[Capture] = []
    with anthunder_server() as server, recording_relay(server, bolt_frame_length) as relay:
        client = _Client()
        try:
            address = relay.address

            # 1. A request with protobuf content and SOFA headers, and AioListener's answer.
            pkg = BoltRequest.new_request(
                _header(HELLO_SERVICE, HELLO_METHOD, color="blue", zone="gz00a"),
                PROTOBUF_CONTENT,
                timeout_ms=3000,
            )
            response = client.run(client.client.invoke(pkg, address=address))
            if response.content != ECHO_PREFIX + PROTOBUF_CONTENT:
                raise AssertionError(f"unexpected answer {response!r}")
            (request,) = relay.take(TO_SERVER)
            (reply,) = relay.take(TO_CLIENT)
            _check_same("request", request, pkg.to_stream())
            captures.append(
                Capture(
                    "bolt/anthunder/request",
                    "request",
                    request,
                    _request_expect(pkg, request, "request"),
                )
            )
            captures.append(
                Capture(
                    "bolt/anthunder/response",
                    "response",
                    reply,
                    _response_expect(pkg.request_id, 0, ECHO_PREFIX + PROTOBUF_CONTENT, reply),
                )
            )

            # 2. Heartbeat: the two lines of AioClient.invoke_heartbeat(), so the id is known.
            #    invoke() then raises KeyError: AioClient never stores heartbeat acks.
            ping = HeartbeatRequest.new_request()
            with contextlib.suppress(KeyError):
                client.run(client.client.invoke(ping, address=address))
            (ping_wire,) = relay.take(TO_SERVER)
            (ack_wire,) = relay.take(TO_CLIENT)
            _check_same("heartbeat", ping_wire, ping.to_stream())
            captures.append(
                Capture(
                    "bolt/anthunder/heartbeat-request",
                    "request",
                    ping_wire,
                    {
                        "request_id": ping.request_id,
                        "stream_type": "request",
                        "heartbeat": True,
                        "timeout_ms": 0,
                        "service": None,
                        "method": None,
                        "headers": {},
                        "body": b"",
                        "length": len(ping_wire),
                    },
                )
            )
            captures.append(
                Capture(
                    "bolt/anthunder/heartbeat-response",
                    "response",
                    ack_wire,
                    _response_expect(ping.request_id, 0, b"", ack_wire, heartbeat=True),
                )
            )

            # 3. A real oneway (type 2): only through invoke(ptype=ONEWAY); no answer comes.
            oneway = BoltRequest.new_request(
                _header(HELLO_SERVICE, HELLO_METHOD, color="green"),
                b"\x0a\x06oneway",
                ptype=PTYPE.ONEWAY,
            )
            client.run(client.client.invoke(oneway, address=address))
            (oneway_wire,) = relay.take(TO_SERVER)
            _check_same("oneway", oneway_wire, oneway.to_stream())
            relay.assert_silent(TO_CLIENT, wait=0.3)
            captures.append(
                Capture(
                    "bolt/anthunder/oneway-request",
                    "request",
                    oneway_wire,
                    _request_expect(oneway, oneway_wire, "oneway"),
                )
            )

            # 4. Unknown service: AioListener answers status 6 NO_PROCESSOR with no content;
            #    AioClient logs a ServerError and invoke() raises KeyError.
            missing = BoltRequest.new_request(
                _header(MISSING_SERVICE, HELLO_METHOD), PROTOBUF_CONTENT, timeout_ms=1000
            )
            with contextlib.suppress(KeyError):
                client.run(client.client.invoke(missing, address=address))
            (missing_wire,) = relay.take(TO_SERVER)
            (no_processor,) = relay.take(TO_CLIENT)
            captures.append(
                Capture(
                    "bolt/anthunder/request-unknown-service",
                    "request",
                    missing_wire,
                    _request_expect(missing, missing_wire, "request"),
                )
            )
            captures.append(
                Capture(
                    "bolt/anthunder/response-no-processor",
                    "response",
                    no_processor,
                    _response_expect(missing.request_id, 6, b"", no_processor),
                )
            )

            # 5. A handler slower than the request's timeout: status 7 TIMEOUT.
            slow = BoltRequest.new_request(
                _header(HELLO_SERVICE, SLOW_METHOD), PROTOBUF_CONTENT, timeout_ms=200
            )
            with contextlib.suppress(KeyError):
                client.run(client.client.invoke(slow, address=address))
            (slow_wire,) = relay.take(TO_SERVER)
            (timeout_wire,) = relay.take(TO_CLIENT)
            captures.append(
                Capture(
                    "bolt/anthunder/request-short-timeout",
                    "request",
                    slow_wire,
                    _request_expect(slow, slow_wire, "request"),
                )
            )
            captures.append(
                Capture(
                    "bolt/anthunder/response-timeout",
                    "response",
                    timeout_wire,
                    _response_expect(slow.request_id, 7, b"", timeout_wire),
                )
            )
        finally:
            client.close()

        # 6. AioListener's extra frame on half-close: status 0x10 CONNECTION_CLOSED carrying
        #    the id of the last request seen on that connection.
        closing = BoltRequest.new_request(
            _header(HELLO_SERVICE, HELLO_METHOD), PROTOBUF_CONTENT, timeout_ms=3000
        )
        with socket.create_connection(server, timeout=5) as sock:
            sock.sendall(closing.to_stream())
            answer = _read_bolt_frame(sock)
            sock.shutdown(socket.SHUT_WR)
            closed = _read_bolt_frame(sock)
        captures.append(
            Capture(
                "bolt/anthunder/response-connection-closed",
                "response",
                closed,
                _response_expect(closing.request_id, 0x10, b"", closed),
            )
        )
        if answer[:2] != b"\x01\x00":
            raise AssertionError(f"unexpected answer {answer.hex()}")

        # 7. sofa-bolt-node's ping (from protocols.md) and AioListener's ack to it.
        ack = send_and_receive(*server, SOFA_BOLT_NODE_PING, min_bytes=BOLT_RESPONSE_HEADER)
        captures.append(
            Capture(
                "bolt/sofa-bolt-node/heartbeat-request",
                "request",
                SOFA_BOLT_NODE_PING,
                {
                    "request_id": 2,
                    "stream_type": "request",
                    "heartbeat": True,
                    "timeout_ms": 3000,
                    "service": None,
                    "method": None,
                    "headers": {},
                    "body": b"",
                    "length": 22,
                },
            )
        )
        captures.append(
            Capture(
                "bolt/anthunder/heartbeat-response-to-node-ping",
                "response",
                ack,
                _response_expect(2, 0, b"", ack, heartbeat=True),
            )
        )
    return captures


def _read_bolt_frame(sock: socket.socket) -> bytes:
    head = recv_exactly(sock, BOLT_RESPONSE_HEADER)
    size = bolt_frame_length(head)
    assert size is not None
    return head + recv_exactly(sock, size - len(head))


def invoke_hello(
    host: str, port: int, content: bytes = PROTOBUF_CONTENT, timeout: float = 5.0
) -> Optional[bytes]:
    """Call HELLO_SERVICE.sayHello with anthunder's own client; returns the answer's content."""
    _anthunder()
    from anthunder.protocol import BoltRequest

    client = _Client()
    try:
        pkg = BoltRequest.new_request(
            _header(HELLO_SERVICE, HELLO_METHOD), content, timeout_ms=3000
        )
        response = client.run(client.client.invoke(pkg, address=(host, port)), timeout)
        return None if response is None else response.content
    except (KeyError, concurrent.futures.TimeoutError):
        return None
    finally:
        client.close()
