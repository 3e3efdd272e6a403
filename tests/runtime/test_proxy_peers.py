"""Real third-party peers through `protoc-x run`, all on 127.0.0.1: each library's own client
talks to the proxy, the proxy to the same library's own server (or a real memcached).

- anthunder AioClient → proxy (bolt) → anthunder AioListener
- thriftpy2 client → proxy (thrift) → thriftpy2 server (framed, strict binary)
- python-binary-memcached → proxy (memcached) → memcached -B binary

The peer libraries are blocking (or run their own loops in threads), so the proxy runs as a
separate process: `protoc-x run CONFIG`, stopped with SIGTERM at the end of each test, which
must then exit 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator
from unittest import mock

import pytest
import yaml

from protoc_x.generated.bolt import PROTOCOL as BOLT
from protoc_x.runtime.api import Direction
from tests.peers import thrift_peers
from tests.peers.captures import (
    ECHO_PREFIX,
    HELLO_METHOD,
    HELLO_SERVICE,
    SOFA_BOLT_NODE_PING,
    anthunder_server,
    invoke_hello,
    memcached_server,
    send_and_receive,
    thrift_server,
    thriftpy2_module,
)
from tests.runtime.harness import free_port, simple_config

pytestmark = pytest.mark.timeout(60)

PROTOC_X = Path(sys.executable).with_name("protoc-x")
LOOPBACK = "127.0.0.1"


# --- the proxy as a process -----------------------------------------------------------------


class ProxyProcess:
    """`protoc-x run CONFIG` with its log in a file (a pipe nobody reads could fill up)."""

    def __init__(self, config: dict, directory: Path, name: str = "proxy"):
        self.config_path = directory / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = directory / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.ports = [int(l["address"].rpartition(":")[2]) for l in config["listeners"]]
        self.process = subprocess.Popen(
            [str(PROTOC_X), "run", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"protoc-x run exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                with socket.create_connection((LOOPBACK, pending[0]), timeout=0.2):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"proxy not listening on {pending}:\n{self.log()}")
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"proxy ignored SIGTERM for {timeout}s:\n{self.log()}")
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def proxy_process(config: dict, directory: Path) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(config, directory)
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        if proxy.process.poll() is None:
            with contextlib.suppress(AssertionError):
                proxy.stop()
        proxy._log.close()


def stop_cleanly(proxy: ProxyProcess) -> None:
    code = proxy.stop()
    assert code == 0, f"protoc-x run exited {code} after SIGTERM:\n{proxy.log()}"


def in_threads(fn, args_list: list, timeout: float = 30.0) -> list:
    """Run ``fn(*args)`` for every args tuple at the same time, one thread each."""
    start = threading.Barrier(len(args_list))

    def call(args):
        start.wait(timeout)
        return fn(*args)

    with concurrent.futures.ThreadPoolExecutor(len(args_list)) as pool:
        futures = [pool.submit(call, args) for args in args_list]
        return [f.result(timeout) for f in futures]


# --- anthunder (bolt) -------------------------------------------------------------------------


def _anthunder_header(service: str = HELLO_SERVICE, method: str = HELLO_METHOD):
    from anthunder.protocol import SofaHeader
    from mytracer import SpanContext

    spanctx = SpanContext(sofaTraceId="0a00000b1700000000001100112233", sofaRpcId="0.1")
    return SofaHeader.build_header(spanctx, service, method, target_app="acme-hello")


class AnthunderClient:
    """anthunder's own AioClient (built through tests.peers so that its mesh probe and its
    uvloop switch stay off), used directly: several invokes at once on its loop."""

    def __init__(self):
        from tests.peers.anthunder_peer import _Client

        self.wrapper = _Client()
        self.client = self.wrapper.client

    def hello_many(self, address, contents: list[bytes], timeout: float = 10.0) -> list[bytes]:
        from anthunder.protocol import BoltRequest

        pkgs = [
            BoltRequest.new_request(_anthunder_header(), content, timeout_ms=3000)
            for content in contents
        ]

        async def all_at_once():
            return await asyncio.gather(*(self.client.invoke(p, address=address) for p in pkgs))

        responses = self.wrapper.run(all_at_once(), timeout)
        return [r.content for r in responses]

    def close(self):
        self.wrapper.close()


def test_anthunder_through_proxy(tmp_path):
    with anthunder_server() as (host, port):
        listen = free_port()
        config = simple_config("bolt", listen, [f"{host}:{port}"])
        with proxy_process(config, tmp_path) as proxy:
            address = (LOOPBACK, listen)

            # sequential calls, each with a fresh anthunder client (invoke_hello)
            for i, content in enumerate([b"", b"\x0a\x05world\x10\x2a", bytes(range(256)) * 40]):
                got = invoke_hello(LOOPBACK, listen, content)
                assert got == ECHO_PREFIX + content, f"call {i}: {got!r}"

            # concurrent calls: 4 clients, each with 8 requests in flight at once on its
            # connection, all clients started together
            clients = [AnthunderClient() for _ in range(4)]
            try:
                work = [
                    (c, address, [b"client-%d-call-%d-" % (n, k) + b"x" * k for k in range(8)])
                    for n, c in enumerate(clients)
                ]
                results = in_threads(lambda c, a, contents: c.hello_many(a, contents), work)
                for (_, _, contents), answers in zip(work, results):
                    assert answers == [ECHO_PREFIX + c for c in contents]
            finally:
                for c in clients:
                    c.close()

            stop_cleanly(proxy)


def test_anthunder_heartbeat_through_proxy(tmp_path):
    """anthunder's ping (what invoke_heartbeat sends) and sofa-bolt-node's ping both get an ack;
    the anthunder connection stays usable afterwards."""
    from anthunder.command.heartbeat import HeartbeatRequest

    with anthunder_server() as (host, port):
        listen = free_port()
        with proxy_process(simple_config("bolt", listen, [f"{host}:{port}"]), tmp_path) as proxy:
            address = (LOOPBACK, listen)
            client = AnthunderClient()
            try:
                assert client.hello_many(address, [b"before"]) == [ECHO_PREFIX + b"before"]
                ping = HeartbeatRequest.new_request()
                # AioClient wakes the caller when a frame with the ping's id arrives but never
                # stores heartbeat acks, so invoke() raises KeyError once the ack came back
                # (no ack would be a timeout instead).
                with pytest.raises(KeyError):
                    client.wrapper.run(client.client.invoke(ping, address=address), 5)
                assert client.hello_many(address, [b"after"]) == [ECHO_PREFIX + b"after"]
            finally:
                client.close()

            ack = send_and_receive(LOOPBACK, listen, SOFA_BOLT_NODE_PING, min_bytes=20)
            frame = BOLT.decode(ack, 0, Direction.RESPONSE)
            assert frame is not None and frame.length == len(ack), ack.hex()
            assert frame.is_heartbeat()
            assert frame.get_request_id() == 2
            assert BOLT.runtime_status(frame.get_status()) == 200
            stop_cleanly(proxy)


# --- thriftpy2 (thrift) -----------------------------------------------------------------------


def thriftpy2_client(port: int, service: str = "Calc"):
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TFramedTransportFactory

    module = thriftpy2_module()
    return make_client(
        getattr(module, service),
        LOOPBACK,
        port,
        proto_factory=TBinaryProtocolFactory(),
        trans_factory=TFramedTransportFactory(),
        timeout=5000,
    )


def test_thriftpy2_through_proxy(tmp_path):
    from thriftpy2.thrift import TApplicationException

    logged: list[str] = []
    got_line = threading.Event()

    def log(self, line: str) -> None:  # the server's handler for the oneway `log`
        logged.append(line)
        got_line.set()

    with (
        mock.patch.object(thrift_peers._Thriftpy2Handler, "log", log, create=True),
        thrift_server("thriftpy2") as (host, port),
    ):
        listen = free_port()
        with proxy_process(simple_config("thrift", listen, [f"{host}:{port}"]), tmp_path) as proxy:

            def session(n: int) -> list[tuple]:
                client = thriftpy2_client(listen)
                try:
                    out = []
                    for k in range(15):
                        out.append(("add", n, k, client.add(n * 1000, k)))
                        text = f"client {n} call {k} ✓ " + "é" * k
                        out.append(("echo", n, k, client.echo(text)))
                    return out
                finally:
                    client.close()

            results = in_threads(session, [(n,) for n in range(6)])
            for n, calls in enumerate(results):
                for op, cn, k, value in calls:
                    assert cn == n
                    if op == "add":
                        assert value == n * 1000 + k
                    else:
                        assert value == f"client {n} call {k} ✓ " + "é" * k

            client = thriftpy2_client(listen)
            try:
                # oneway: nothing comes back; the next call on the same connection still gets
                # its own answer, and the server saw the line
                assert client.log("a oneway line through protoc-x") is None
                assert client.add(20, 22) == 42
                assert got_line.wait(5), "the server never got the oneway call"
                assert logged == ["a oneway line through protoc-x"]

                # a server-side exception reaches the client as the library's exception
                with pytest.raises(TApplicationException) as raised:
                    client.fail("boom")
                assert raised.value.type == TApplicationException.INTERNAL_ERROR
                assert raised.value.message == "fail: boom"
                assert client.echo("still fine") == "still fine"
            finally:
                client.close()

            # an unknown method: the server's UNKNOWN_METHOD exception, through the proxy
            plus = thriftpy2_client(listen, "CalcPlus")
            try:
                with pytest.raises(TApplicationException) as raised:
                    plus.sub(9, 1)
                assert raised.value.type == TApplicationException.UNKNOWN_METHOD
                assert plus.add(9, 1) == 10
            finally:
                plus.close()
            stop_cleanly(proxy)


# --- python-binary-memcached (memcached) ------------------------------------------------------


def bmemcached_client(port: int):
    import bmemcached

    return bmemcached.Client((f"{LOOPBACK}:{port}",), socket_timeout=5)


def connections_to(port: int) -> int:
    """Established TCP connections whose remote end is 127.0.0.1:port (Linux /proc/net/tcp)."""
    remote = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == remote and fields[3] == "01":  # 01: ESTABLISHED
            count += 1
    return count


def test_bmemcached_through_proxy(tmp_path):
    with memcached_server() as (host, port):
        listen = free_port()
        config = simple_config("memcached", listen, [f"{host}:{port}"])
        with proxy_process(config, tmp_path) as proxy:
            client = bmemcached_client(listen)
            try:
                assert client.set("greeting", "hello memcached", time=300)
                assert client.get("greeting") == "hello memcached"
                assert client.get("absent") is None
                assert client.set("blob", b"\x00\x01\xff" * 10)
                assert client.get("blob") == b"\x00\x01\xff" * 10
                assert client.set("number", 12345)
                assert client.get("number") == 12345
                big = "z" * 5000  # compressed by bmemcached (flags), restored on get
                assert client.set("big", big)
                assert client.get("big") == big

                # get_multi: GETKQ for all keys but the last, then GETK; misses stay silent
                assert client.set("k1", "v1") and client.set("k3", "v3")
                assert client.get_multi(["k1", "k2", "k3", "k4"]) == {"k1": "v1", "k3": "v3"}
                assert client.get_multi(["k2", "k4", "k3"]) == {"k3": "v3"}
                assert client.get_multi(["n1", "n2", "n3"]) == {}
                assert client.get_multi(["k3", "k1"]) == {"k3": "v3", "k1": "v1"}

                assert client.delete("greeting")
                assert client.get("greeting") is None
                assert client.delete("greeting") is True  # a miss: bmemcached says True too
                assert client.get("greeting") is None

                assert client.incr("counter", 5) == 0  # absent: the initial value is stored
                assert client.incr("counter", 5) == 5
                assert client.incr("counter", 10) == 15
                assert client.decr("counter", 3) == 12
                assert client.get("k1") == "v1"  # the connection is still in step
            finally:
                client.disconnect_all()
            stop_cleanly(proxy)


def test_bmemcached_clients_share_one_upstream_connection(tmp_path):
    sessions = 6
    counted: dict[str, int] = {}

    with memcached_server() as (host, port):
        listen = free_port()
        config = simple_config("memcached", listen, [f"{host}:{port}"])

        def count() -> None:  # runs once every session is done and still connected
            counted["downstream"] = connections_to(listen)
            counted["upstream"] = connections_to(port)

        all_done = threading.Barrier(sessions, action=count)

        def session(n: int) -> list:
            # bmemcached keeps its sockets in a threading.local: one connection per thread
            client = bmemcached_client(listen)
            try:
                out = []
                for k in range(20):
                    key = f"c{n}-k{k}"
                    assert client.set(key, f"value {n}/{k}")
                    out.append(client.get(key))
                    out.append(client.get(f"c{n}-missing{k}"))
                    out.append(client.get_multi([key, f"c{n}-none", f"c{n}-k0"]))
                out.append(client.incr(f"c{n}-counter", 7))
                out.append(client.incr(f"c{n}-counter", 7))
                all_done.wait(30)
                return out
            finally:
                client.disconnect_all()

        with proxy_process(config, tmp_path) as proxy:
            results = in_threads(session, [(n,) for n in range(sessions)])
            for n, out in enumerate(results):
                expected = []
                for k in range(20):
                    expected += [
                        f"value {n}/{k}",
                        None,
                        {f"c{n}-k{k}": f"value {n}/{k}", f"c{n}-k0": f"value {n}/0"},
                    ]
                assert out == expected + [0, 7], f"client {n}"
            # six bmemcached connections to the proxy, one proxy connection to memcached
            assert counted == {"downstream": sessions, "upstream": 1}
            stop_cleanly(proxy)


def test_bmemcached_set_multi_and_delete_multi_through_proxy(tmp_path):
    """set_multi is SETQ... + NOOP: only the NOOP is answered, after the SETQs are done;
    delete_multi is DELETE... + NOOP."""
    with memcached_server() as (host, port):
        listen = free_port()
        config = simple_config("memcached", listen, [f"{host}:{port}"])
        with proxy_process(config, tmp_path) as proxy:
            client = bmemcached_client(listen)
            direct = bmemcached_client(port)
            try:
                started = time.monotonic()
                assert client.set_multi({"m1": "one", "m2": "two", "m3": "three"}) == []
                assert time.monotonic() - started < 2.0
                assert direct.get_multi(["m1", "m2", "m3"]) == {
                    "m1": "one",
                    "m2": "two",
                    "m3": "three",
                }
                assert client.get_multi(["m1", "m2", "m3"]) == {
                    "m1": "one",
                    "m2": "two",
                    "m3": "three",
                }
                assert client.delete_multi(["m1", "nothere"]) is False
                assert client.get_multi(["m1", "m2"]) == {"m2": "two"}
            finally:
                client.disconnect_all()
                direct.disconnect_all()
            stop_cleanly(proxy)
