"""Third-party client → `protoc-x run` (a real process) → third-party server, on 127.0.0.1.

- thrift (strict binary, framed and buffered transports), crossed both ways: Apache thrift's generated client →
  thriftpy2's server, and thriftpy2's client → Apache's server; concurrent clients, structs,
  a oneway, server-side TApplicationExceptions arriving as each library's own exception.
- bolt: anthunder AioClients → anthunder AioListener (protobuf content, codec 11); concurrent
  clients, a heartbeat answered by the proxy, a real oneway (type 2), NO_PROCESSOR from the
  server.
- dubbo: dubbo-ssl-python (direct TCP, several processes) → npm sofa-rpc-node's dubbo server;
  Java-object arguments checked as the server decoded them, the client's heartbeat answered by
  the proxy, SERVER_ERROR from the server; and heartbeats between the proxy and the server
  (the proxy's keepalive, the server's own ping).
- bolt and dubbo detected on one listener and routed by service to the anthunder and the
  sofa-rpc-node servers, with anthunder, dubbo-ssl-python and npm dubbo-remoting clients all
  running at once.

A recording relay (tests/peers) sits between the proxy and the bolt and dubbo servers where the
test must see what reached the server. Frames there are read with the protocol documents' fixed
offsets, never with protoc-x's codecs. Library oddities and how we cope: docs/peers.md,
"Through the proxy".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator
from unittest import mock

import pytest

from tests.peers import anthunder_peer, thrift_peers
from tests.peers.captures import (
    ECHO_PREFIX,
    HELLO_METHOD,
    HELLO_SERVICE,
    MISSING_SERVICE,
    anthunder_server,
    dubbo_server,
    thrift_server,
)
from tests.peers.dubbo_peers import NODE, NODE_DIR, PEER_SCRIPT, _ensure_dubbo_ssl_threads
from tests.peers.dubbo_peers import _normalise
from tests.peers.framing import bolt_frame_length, dubbo_frame_length
from tests.peers.recording import TO_CLIENT, TO_SERVER, RecordingRelay, recording_relay

from . import peer_dubbo_client as dubbo_calls
from .peer_proxy import ROOT, free_port, proxy_process

pytestmark = pytest.mark.timeout(120)

# --- small things shared by the cases ---------------------------------------------------------


def one_route(cluster: str, domains: list[str]) -> dict:
    return {
        "domains": domains,
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
    }


def single_listener(protocol: Any, port: int, endpoints: list[str], **cluster_extra: Any) -> dict:
    return {
        "drain_timeout_ms": 1000,
        "listeners": [
            {
                "name": "main",
                "address": f"127.0.0.1:{port}",
                "protocol": protocol,
                "route_config": "main",
            }
        ],
        "route_configs": [
            {"name": "main", "virtual_hosts": [{"name": "all", **one_route("up", ["*"])}]}
        ],
        "clusters": [{"name": "up", "endpoints": endpoints, **cluster_extra}],
    }


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """work(0..count-1) in `count` threads at once; re-raises the first failure."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(work, range(count)))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def relay_frames(relay: RecordingRelay, direction: str) -> list[bytes]:
    """Every whole frame not yet taken, over all the relay's connections."""
    frames: list[bytes] = []
    for index in range(len(relay.connections)):
        frames += relay.take_all(direction, connection=index)
    return frames


class LogRecords(logging.Handler):
    """Collects the records a library logs (anthunder reports error statuses only there)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.ERROR) -> list[str]:
        return [r.getMessage() for r in list(self.records) if r.levelno >= level]


@contextlib.contextmanager
def logged(name: str) -> Iterator[LogRecords]:
    handler = LogRecords()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# Fixed offsets from shared/docs/protocols.md: bolt v1 and dubbo headers.


def bolt_fields(frame: bytes) -> dict[str, int | None]:
    ptype = frame[1]
    return {
        "type": ptype,  # 0 response, 1 request, 2 oneway
        "cmdcode": int.from_bytes(frame[2:4], "big"),  # 0 heartbeat, 1 request, 2 response
        "id": int.from_bytes(frame[5:9], "big"),
        "status": int.from_bytes(frame[10:12], "big") if ptype == 0 else None,
    }


def dubbo_fields(frame: bytes) -> dict[str, int]:
    return {
        "flag": frame[2],  # 0x80 request, 0x40 two-way, 0x20 event (heartbeat)
        "status": frame[3],
        "id": int.from_bytes(frame[4:12], "big"),
    }


# --- thrift: crossed clients and servers ----------------------------------------------------

THRIFT_THREADS = 6
THRIFT_CALLS = 15
INTERNAL_ERROR, UNKNOWN_METHOD = 6, 1


def thrift_client(
    kind: str, address: tuple[str, int], service: str = "Calc", transport: str = "framed"
) -> Any:
    if kind == "apache":
        return thrift_peers._ApacheClient(address, service, transport=transport)
    return thrift_peers._Thriftpy2Client(address, service, transport=transport)


def thrift_types(kind: str) -> tuple[type, Callable[..., Any]]:
    """(TApplicationException, Point) of a client library."""
    if kind == "apache":
        from thrift.Thrift import TApplicationException

        return TApplicationException, thrift_peers.apache_stubs().ttypes.Point
    from thriftpy2.thrift import TApplicationException as Thriftpy2AppException

    return Thriftpy2AppException, thrift_peers.thriftpy2_module().Point


@contextlib.contextmanager
def oneway_lines() -> Iterator["queue.Queue[str]"]:
    """Lines the thrift servers' `log` handler (a oneway) received."""
    lines: "queue.Queue[str]" = queue.Queue()
    original = thrift_peers._Handler.log

    def log(self: Any, line: str) -> None:
        original(self, line)
        lines.put(line)

    with mock.patch.object(thrift_peers._Handler, "log", log):
        yield lines


@pytest.mark.parametrize(
    "transport,protocol",
    [("framed", "thrift"), ("buffered", "thrift_unframed")],
    ids=["framed", "buffered"],
)
@pytest.mark.parametrize(
    "client_kind,server_kind",
    [("apache", "thriftpy2"), ("thriftpy2", "apache")],
    ids=["apache-client-to-thriftpy2-server", "thriftpy2-client-to-apache-server"],
)
def test_thrift_crossed_through_proxy(client_kind, server_kind, transport, protocol, tmp_path):
    app_exception, point = thrift_types(client_kind)
    # what each server puts in its TApplicationExceptions (docs/peers.md)
    fail_message = (lambda why: f"fail: {why}") if server_kind == "thriftpy2" else None
    unknown_message = "Unknown function sub" if server_kind == "apache" else None
    with oneway_lines() as lines, thrift_server(server_kind, transport=transport) as (host, port):
        config = single_listener(protocol, free_port(), [f"{host}:{port}"])
        with proxy_process(config, tmp_path) as proxy:
            address = ("127.0.0.1", proxy.port)

            def client_session(n: int) -> None:
                client = thrift_client(client_kind, address, transport=transport)
                try:
                    calc = client.client
                    for i in range(THRIFT_CALLS):
                        assert calc.add(1000 * n, i) == 1000 * n + i
                        text = f"client {n} call {i}: Grüße, 世界 😀"
                        assert calc.echo(text) == text
                    assert calc.echo(thrift_peers.LONG_TEXT) == thrift_peers.LONG_TEXT  # > 64 KiB
                    answer = calc.describe(
                        point(x=n, y=2, label=f"p{n}"),
                        [1, 2, 3],
                        {"a": 1, "b": 1 << 40},
                        {"t"},
                        0.5,
                        True,
                        b"\x00\xff\x80",
                    )
                    assert (answer.x, answer.y, answer.label) == (n + 6, 5, f"p{n}/3/True")
                    calc.log(f"oneway from client {n}")
                    # the server's exception arrives as the library's own exception ...
                    with pytest.raises(app_exception) as raised:
                        calc.fail(f"boom-{n}")
                    assert raised.value.type == INTERNAL_ERROR
                    if fail_message is not None:
                        assert raised.value.message == fail_message(f"boom-{n}")
                    else:
                        assert raised.value.message == "Internal error"
                    # ... and the connection still serves the next call
                    assert calc.add(n, n) == 2 * n
                finally:
                    client.close()

                plus = thrift_client(client_kind, address, "CalcPlus", transport)
                try:
                    with pytest.raises(app_exception) as raised:
                        plus.client.sub(9, n)
                    assert raised.value.type == UNKNOWN_METHOD
                    assert raised.value.message == unknown_message
                    assert plus.client.add(9, n) == 9 + n
                finally:
                    plus.close()

            in_threads(THRIFT_THREADS, client_session)

            wanted = {f"oneway from client {n}" for n in range(THRIFT_THREADS)}
            seen: list[str] = []
            deadline = time.monotonic() + 5
            while not wanted <= set(seen) and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    seen.append(lines.get(timeout=0.1))
            assert sorted(seen) == sorted(wanted), "each oneway reaches the server exactly once"


# --- bolt: anthunder through the proxy ------------------------------------------------------

BOLT_CLIENTS = 4
BOLT_IN_FLIGHT = 25
SINK_SERVICE = "com.acme.OnewaySink:1.0"
SINK_METHOD = "record"


def protobuf_message(text: str, number: int) -> bytes:
    """The protobuf message {1: text, 2: number}, as anthunder users send (codec 11)."""
    data = text.encode()
    varint = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        varint.append(byte | (0x80 if number else 0))
        if not number:
            break
    return b"\x0a" + bytes([len(data)]) + data + b"\x10" + bytes(varint)


@contextlib.contextmanager
def oneway_sink() -> Iterator["queue.Queue[bytes]"]:
    """A service on every AioListener of this process that records what it is sent.

    anthunder keeps handler registrations in a class attribute shared by all listeners."""
    from anthunder.listener.base_listener import BaseHandler, BaseService

    received: "queue.Queue[bytes]" = queue.Queue()

    class OnewaySink(BaseService):
        def record(self, body: bytes) -> bytes:
            received.put(body)
            return b""

    BaseHandler.interface_mapping[SINK_SERVICE] = OnewaySink
    try:
        yield received
    finally:
        BaseHandler.interface_mapping.pop(SINK_SERVICE, None)


def bolt_request(service: str, content: bytes, **kwargs: Any) -> Any:
    from anthunder.protocol import BoltRequest

    method = SINK_METHOD if service == SINK_SERVICE else HELLO_METHOD
    return BoltRequest.new_request(anthunder_peer._header(service, method), content, **kwargs)


def bolt_burst(client: Any, address: tuple[str, int], tag: str) -> None:
    """BOLT_IN_FLIGHT requests in flight at once on one anthunder connection; each answer
    must be the server's echo of its own request."""
    pkgs = [
        bolt_request(HELLO_SERVICE, protobuf_message(f"{tag}-{i}", i * 977), timeout_ms=4000)
        for i in range(BOLT_IN_FLIGHT)
    ]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(client.client.invoke(p, address=address) for p in pkgs))

    responses = client.run(all_at_once(), timeout=15)
    for pkg, response in zip(pkgs, responses):
        assert response is not None and response.request_id == pkg.request_id
        assert response.respstatus == 0
        assert response.content == ECHO_PREFIX + pkg.content


def test_bolt_anthunder_through_proxy(tmp_path):
    anthunder_peer._anthunder()
    from anthunder.command.heartbeat import HeartbeatRequest
    from anthunder.protocol.constants import PTYPE

    with (
        oneway_sink() as sink,
        anthunder_server() as server,
        recording_relay(server, bolt_frame_length) as relay,
        logged("anthunder.client.aio_client") as client_log,
    ):
        config = single_listener("bolt", free_port(), [f"{relay.host}:{relay.port}"])
        with proxy_process(config, tmp_path) as proxy:
            address = ("127.0.0.1", proxy.port)
            clients = [anthunder_peer._Client() for _ in range(BOLT_CLIENTS)]
            try:
                # 1. several clients, each with many requests in flight at once
                in_threads(BOLT_CLIENTS, lambda n: bolt_burst(clients[n], address, f"c{n}"))
                assert client_log.messages() == []
                client = clients[0]

                # 2. a heartbeat: anthunder's reader takes the ack (cmdcode 0, our id) without
                #    storing it, so invoke() raises KeyError at once and logs nothing; with no
                #    ack it would wait, with any other answer it would return or log an error.
                ping = HeartbeatRequest.new_request()
                with pytest.raises(KeyError):
                    client.run(client.client.invoke(ping, address=address), timeout=5)
                assert client_log.messages() == []

                # 3. a real oneway (type 2): no answer, and the server's handler runs
                content = protobuf_message("fire and forget", 7)
                oneway = bolt_request(SINK_SERVICE, content, ptype=PTYPE.ONEWAY)
                assert client.run(client.client.invoke(oneway, address=address)) is None
                assert sink.get(timeout=5) == content

                # 4. an unknown service: the server's status 6 NO_PROCESSOR reaches the client
                #    (anthunder logs "RESPSTATUS=6, NO_PROCESSOR" and raises KeyError)
                missing = bolt_request(MISSING_SERVICE, content, timeout_ms=3000)
                with pytest.raises(KeyError):
                    client.run(client.client.invoke(missing, address=address), timeout=5)
                errors = client_log.messages()
                assert len(errors) == 1 and "NO_PROCESSOR" in errors[0], errors

                # the connection survives all of that
                bolt_burst(client, address, "after")
                time.sleep(0.3)  # nothing more may reach the server (oneway: no answer)
            finally:
                for each in clients:
                    each.close()

            # What reached the server and came back, read off the relay:
            to_server = [bolt_fields(f) | {"raw": f} for f in relay_frames(relay, TO_SERVER)]
            to_proxy = [bolt_fields(f) for f in relay_frames(relay, TO_CLIENT)]
        requests = [f for f in to_server if f["cmdcode"] == 1 and f["type"] == 1]
        assert len(requests) == (BOLT_CLIENTS + 1) * BOLT_IN_FLIGHT + 1
        assert len({f["id"] for f in requests}) == len(requests), "upstream ids are unique"
        assert not [f for f in to_server if f["cmdcode"] == 0], "heartbeat answered locally"
        (oneway_up,) = [f for f in to_server if f["type"] == 2]
        assert oneway_up["raw"].endswith(content)
        assert oneway_up["id"] not in {f["id"] for f in to_proxy}, "no answer to a oneway"
        (missing_up,) = [f for f in requests if MISSING_SERVICE.encode() in f["raw"]]
        statuses = {f["id"]: f["status"] for f in to_proxy}
        assert statuses[missing_up["id"]] == 6, "NO_PROCESSOR came from the server"


# --- dubbo: dubbo-ssl-python through the proxy ------------------------------------------------

DUBBO_PROCESSES = 3  # separate client processes: separate connections
DUBBO_PROCESS_THREADS = 3
DUBBO_IN_PROCESS_THREADS = 4
DUBBO_CALLS = 5
HESSIAN_NULL = b"N"


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen]]:
    """Client processes a test starts; any still running at teardown are killed."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def start_dubbo_clients(
    spawned: list, host: str, prefix: str, processes: int, threads: int
) -> list[subprocess.Popen]:
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.peer_dubbo_client", host, f"{prefix}{n}"]
            + [str(threads), str(DUBBO_CALLS)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        for n in range(processes)
    ]
    spawned += started
    return started


def forget_dubbo_host(host: str) -> None:
    """After the proxy at host has gone: wait until dubbo-ssl-python's pool dropped the
    connection, so that its heartbeat thread does not die (a dict resized while it iterates)
    in the middle of a later test."""
    from dubbo_ssl.connection import connections

    pool = connections.connection_pool
    deadline = time.monotonic() + 3
    while host in pool._connection_pool and time.monotonic() < deadline:
        time.sleep(0.02)
    _ensure_dubbo_ssl_threads()


def dubbo_client_outcomes(processes: list[Any]) -> list[dict[str, Any]]:
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        outcomes += [json.loads(line) for line in out.splitlines() if line.strip()]
    return outcomes


def dubbo_tags(prefix: str, processes: int, threads: int) -> list[str]:
    """Every call tag a run of start_dubbo_clients / run_threads makes."""
    prefixes = [f"{prefix}{n}" for n in range(processes)] if processes else [prefix]
    return [f"{p}-{t}-{i}" for p in prefixes for t in range(threads) for i in range(DUBBO_CALLS)]


def assert_dubbo_answers(outcomes: list[dict[str, Any]], tags: list[str]) -> None:
    expected = {dubbo_calls.call_method(tag) for tag in tags}
    assert sorted(o["method"] for o in outcomes) == sorted(expected)
    wrong = [o for o in outcomes if o.get("result") != f"ok:{o['method']}:6"]
    assert not wrong, wrong[:5]


def dubbo_client(host: str, service: str = dubbo_calls.SERVICE) -> Any:
    from dubbo_ssl.client import DubboClient

    return DubboClient(service, dubbo_calls.GROUP, version=dubbo_calls.VERSION, host=host)


@contextlib.contextmanager
def dubbo_wire_spy(host: str) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """(what dubbo-ssl-python writes, the 16-byte headers it reads) on its connection to host."""
    from dubbo_ssl.connection import connections

    pool = connections.connection_pool
    conn = pool._connection_pool[host]
    written: list[bytes] = []
    heads: list[bytes] = []
    write, parse_head = conn.write, pool._parse_head

    def spy_write(data: Any) -> Any:
        written.append(bytes(data))
        return write(data)

    def spy_head(data: Any, connection: Any) -> Any:
        if connection is conn:
            heads.append(bytes(data))
        return parse_head(data, connection)

    with (
        mock.patch.object(conn, "write", spy_write),
        mock.patch.object(pool, "_parse_head", spy_head),
    ):
        yield written, heads


def dubbo_client_heartbeat(host: str) -> list[int]:
    """Make dubbo-ssl-python send its heartbeat on the connection to host, wait for the acks;
    returns the pings' ids. It pings only after 60 s of idleness and only once its per-host
    counter exists: we create the counter and date the connection's activity back."""
    from dubbo_ssl.common import constants
    from dubbo_ssl.connection import connections

    pool = connections.connection_pool
    conn = pool._connection_pool[host]
    with dubbo_wire_spy(host) as (written, heads):
        pool.client_heartbeats[host] = 0
        conn.last_active = time.time() - constants.TIMEOUT_IDLE - 1
        try:
            wait_for(lambda: written, 5, "dubbo-ssl-python's heartbeat")
            # the library pings every 30 ms until a read refreshes last_active
            wait_for(lambda: pool.client_heartbeats[host] == 0, 5, "heartbeat acks")
        finally:
            conn.last_active = time.time()
        time.sleep(0.1)
        pings = [dubbo_fields(w) for w in written]
        acks = {dubbo_fields(h)["id"]: dubbo_fields(h) for h in heads}
    assert pings and all(p["flag"] == 0xE2 for p in pings), [w.hex() for w in written]
    for ping in pings:
        ack = acks.get(ping["id"])
        assert ack is not None, f"no ack for ping {ping['id']}: {[h.hex() for h in heads]}"
        assert (ack["flag"], ack["status"]) == (0x22, 20)
    return [p["id"] for p in pings]


def test_dubbo_ssl_python_through_proxy(tmp_path, spawned):
    from dubbo_ssl.common.exceptions import DubboResponseException

    _ensure_dubbo_ssl_threads()
    with dubbo_server() as server, recording_relay(server.address, dubbo_frame_length) as relay:
        config = single_listener("dubbo", free_port(), [f"{relay.host}:{relay.port}"])
        with proxy_process(config, tmp_path) as proxy:
            host = f"127.0.0.1:{proxy.port}"

            # 1. client processes (one connection each, threads sharing it) and threads in
            #    this process, all calling at once with Java objects
            processes = start_dubbo_clients(
                spawned, host, "p", DUBBO_PROCESSES, DUBBO_PROCESS_THREADS
            )
            local = dubbo_calls.run_threads(host, "local", DUBBO_IN_PROCESS_THREADS, DUBBO_CALLS)
            outcomes = dubbo_client_outcomes(processes) + local
            tags = dubbo_tags("p", DUBBO_PROCESSES, DUBBO_PROCESS_THREADS)
            tags += dubbo_tags("local", 0, DUBBO_IN_PROCESS_THREADS)
            assert_dubbo_answers(outcomes, tags)

            # 2. a server-side error: sofa-rpc-node answers status 80 with its message, which
            #    dubbo-ssl-python raises as DubboResponseException
            client = dubbo_client(host)
            with pytest.raises(DubboResponseException, match="boom from fail"):
                client.call("fail", ["boom"], timeout=5)
            missing = dubbo_client(host, "com.acme.Missing")
            with pytest.raises(DubboResponseException, match="not found service"):
                missing.call("echo", ["x"], timeout=5)
            after = dubbo_calls.call(client, "after-errors")
            assert after == {
                "method": "register_after_errors",
                "result": "ok:register_after_errors:6",
            }

            # 3. the client's heartbeat, answered by the proxy (never forwarded)
            _ensure_dubbo_ssl_threads()
            ping_ids = dubbo_client_heartbeat(host)
            assert dubbo_calls.call(client, "after-heartbeat")["result"].startswith("ok:")
            time.sleep(0.2)

            to_server = relay_frames(relay, TO_SERVER)
            to_proxy = relay_frames(relay, TO_CLIENT)
        forget_dubbo_host(host)

        # What reached the server, read off the relay, and how the server decoded it
        fields = [dubbo_fields(f) for f in to_server]
        assert not [f for f in fields if f["flag"] & 0x20], f"heartbeat forwarded ({ping_ids})"
        assert all(f["flag"] == 0xC2 for f in fields), "two-way hessian2 requests only"
        ids = [f["id"] for f in fields]
        assert len(set(ids)) == len(ids), "upstream ids are unique"
        by_method = {dubbo_calls.call_method(t): t for t in tags + ["after-errors"]}
        seen_methods = []
        for uid in ids:
            decoded = server.wait_request(uid)
            method = decoded["method"]
            seen_methods.append(method)
            if method not in by_method:
                continue
            expected = _normalise(dubbo_calls.java_args(by_method[method]))
            assert _normalise(decoded["args"]) == expected, method
            assert decoded["attachments"]["x-trace"] == "e2e"
        assert sorted(m for m in seen_methods if m in by_method) == sorted(by_method)
        statuses = sorted(dubbo_fields(f)["status"] for f in to_proxy)
        assert statuses.count(80) == 2 and statuses.count(20) == len(to_proxy) - 2


def test_dubbo_heartbeats_between_proxy_and_server(tmp_path):
    """Heartbeats on the upstream side: the proxy's keepalive ping is answered by
    sofa-rpc-node, and a ping from the server (what a Java Dubbo provider sends on an idle
    connection; sofa-rpc-node never pings, so the relay injects one) is answered by the proxy
    with a heartbeat response carrying the ping's id, as dubbo-ssl-python itself answers it."""
    _ensure_dubbo_ssl_threads()
    keepalive = {"interval_ms": 200, "timeout_ms": 1000, "failures": 3}
    with dubbo_server() as server, recording_relay(server.address, dubbo_frame_length) as relay:
        config = single_listener(
            "dubbo", free_port(), [f"{relay.host}:{relay.port}"], keepalive=keepalive
        )
        with proxy_process(config, tmp_path) as proxy:
            host = f"127.0.0.1:{proxy.port}"
            client = dubbo_client(host)
            assert dubbo_calls.call(client, "before")["result"] == "ok:register_before:6"

            # 1. the proxy's keepalive and sofa-rpc-node's ack
            sent: list[dict[str, int]] = []
            answered: list[dict[str, int]] = []

            def keepalive_acked() -> bool:
                sent.extend(dubbo_fields(f) for f in relay_frames(relay, TO_SERVER))
                answered.extend(dubbo_fields(f) for f in relay_frames(relay, TO_CLIENT))
                pings = {f["id"] for f in sent if f["flag"] == 0xE2}
                acks = {f["id"] for f in answered if (f["flag"], f["status"]) == (0x22, 20)}
                return bool(pings & acks)

            wait_for(keepalive_acked, 5, "a keepalive ping from the proxy answered by the server")

            # 2. the server pings the proxy
            server_ping_id = 0x7FFF_0000_0000_0001
            server_ping = (
                b"\xda\xbb\xe2\x00" + server_ping_id.to_bytes(8, "big") + b"\x00\x00\x00\x01N"
            )
            relay.inject(TO_CLIENT, server_ping)
            replies: list[bytes] = []

            def server_ping_answered() -> bool:
                replies.extend(
                    f
                    for f in relay_frames(relay, TO_SERVER)
                    if dubbo_fields(f)["id"] == server_ping_id
                )
                return bool(replies)

            wait_for(server_ping_answered, 3, "the proxy's answer to the server's ping")
            (reply,) = replies
            assert (dubbo_fields(reply)["flag"], dubbo_fields(reply)["status"]) == (0x22, 20)
            assert reply[12:] == b"\x00\x00\x00\x01" + HESSIAN_NULL
            # and the connection still carries requests
            assert dubbo_calls.call(client, "after")["result"] == "ok:register_after:6"
        forget_dubbo_host(host)


# --- bolt and dubbo on one listener -----------------------------------------------------------

DEMO_SERVICE = dubbo_calls.SERVICE


def test_bolt_and_dubbo_detected_on_one_listener(tmp_path, spawned):
    """One listener with `protocol: [bolt, dubbo]`; routes by service: HELLO_SERVICE (bolt's
    service header) to the anthunder server, the dubbo interface to sofa-rpc-node; anything
    else gets the proxy's own 404 in each protocol. anthunder, dubbo-ssl-python (threads here
    and a client process) and npm dubbo-remoting (node) call at the same time."""
    from dubbo_ssl.common.exceptions import DubboResponseException

    _ensure_dubbo_ssl_threads()
    with (
        anthunder_server() as bolt_server,
        dubbo_server() as dubbo_peer,
        logged("anthunder.client.aio_client") as client_log,
    ):
        port = free_port()
        config = {
            "drain_timeout_ms": 1000,
            "listeners": [
                {
                    "name": "mixed",
                    "address": f"127.0.0.1:{port}",
                    "protocol": ["bolt", "dubbo"],
                    "route_config": "by_service",
                }
            ],
            "route_configs": [
                {
                    "name": "by_service",
                    "virtual_hosts": [
                        {"name": "hello", **one_route("anthunder", [HELLO_SERVICE])},
                        {"name": "demo", **one_route("sofa", [DEMO_SERVICE])},
                    ],
                }
            ],
            "clusters": [
                {"name": "anthunder", "endpoints": [f"{bolt_server[0]}:{bolt_server[1]}"]},
                {"name": "sofa", "endpoints": [f"{dubbo_peer.host}:{dubbo_peer.port}"]},
            ],
        }
        with proxy_process(config, tmp_path) as proxy:
            address = ("127.0.0.1", proxy.port)
            host = f"127.0.0.1:{proxy.port}"
            node_out, node_err = tmp_path / "node.out", tmp_path / "node.err"
            with open(node_out, "wb") as out, open(node_err, "wb") as err:
                # to files: it prints every frame it sent in hex, far more than a pipe holds
                node = subprocess.Popen(
                    [NODE, str(PEER_SCRIPT), "client", str(proxy.port)],
                    cwd=NODE_DIR,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            spawned.append(node)
            processes = start_dubbo_clients(spawned, host, "mixed", 1, 2)
            clients = [anthunder_peer._Client() for _ in range(3)]
            try:

                others = processes + [node]

                def work(n: int) -> Any:
                    if n == len(clients):
                        return dubbo_calls.run_threads(host, "mixed-local", 3, DUBBO_CALLS)
                    # bolt bursts go on until the dubbo client processes are done
                    deadline = time.monotonic() + 20
                    rounds = 0
                    while rounds < 2 or (
                        any(p.poll() is None for p in others) and time.monotonic() < deadline
                    ):
                        bolt_burst(clients[n], address, f"mixed-bolt-{n}-{rounds}")
                        rounds += 1
                    return rounds

                *_, local = in_threads(len(clients) + 1, work)
                assert client_log.messages() == []

                # a service no route names: the proxy's 404 in each protocol
                unrouted = bolt_request(MISSING_SERVICE, b"\x0a\x01x", timeout_ms=3000)
                with pytest.raises(KeyError):
                    clients[0].run(clients[0].client.invoke(unrouted, address=address))
                errors = client_log.messages()
                assert len(errors) == 1 and "NO_PROCESSOR" in errors[0], errors
                nowhere = dubbo_client(host, "com.acme.Nowhere")
                with pytest.raises(DubboResponseException, match="protoc-x: 404"):
                    nowhere.call("echo", ["x"], timeout=5)
            finally:
                for each in clients:
                    each.close()

            outcomes = dubbo_client_outcomes(processes) + local
            tags = dubbo_tags("mixed", 1, 2) + dubbo_tags("mixed-local", 0, 3)
            assert_dubbo_answers(outcomes, tags)

            # npm dubbo-remoting: objects, long strings, a oneway, a heartbeat (answered by
            # the proxy), errors; it waits for every answer by id and fails without one
            assert node.wait(timeout=30) == 0, node_err.read_text(encoding="utf-8")
            lines = node_out.read_text(encoding="utf-8").splitlines()
            sent = {item["label"]: item for item in map(json.loads, lines)}
            oneway = dubbo_peer.wait_request(int(sent["oneway-request"]["id"]))
            assert (oneway["method"], oneway["twoWay"]) == ("notify", False)
        forget_dubbo_host(host)
