"""Test harness: the proxy, `serve` upstreams and codec clients as tasks of one event loop,
all on real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from protoc_x.demo import free_port  # noqa: F401 (also for the modules importing it from here)
from protoc_x.runtime import compiled
from protoc_x.runtime.api import Direction, XFrame
from protoc_x.runtime.client import Client
from protoc_x.runtime.config import parse_config
from protoc_x.loader import protocols as load_protocols
from protoc_x.runtime.network import FramedConnection
from protoc_x.runtime.proxy import Proxy
from protoc_x.runtime.run import install_loop
from protoc_x.runtime.serve import serve

PROTOCOLS = load_protocols()

#: a test that watches the runtime from inside by patching its classes, which a compiled
#: class does not allow: it runs on the Python source (`make test` runs the suite both ways)
pure_only = pytest.mark.skipif(
    compiled(), reason="patches a runtime class (runs with PROTOC_X_PURE=1)"
)


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    """For a test module that imports it: fails a test when anything logged an error (an
    exception in a callback, a protocol's or a timer's, is only logged by asyncio)."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``predicate()`` once it is true, polled every 20 ms; its last value after ``timeout``
    seconds (the caller's assertion then says what did not happen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return value


def run(coro) -> Any:
    install_loop()
    return asyncio.run(asyncio.wait_for(coro, 120))


def config(listeners, route_configs, clusters, **extra) -> dict:
    return {"listeners": listeners, "route_configs": route_configs, "clusters": clusters, **extra}


def simple_config(
    protocol, port: int, endpoints: list[str], cluster_extra=None, listener_extra=None
) -> dict:
    """One listener → one route → one cluster."""
    return config(
        [{"name": "main", "address": f"127.0.0.1:{port}", "protocol": protocol,
          "route_config": "main", **(listener_extra or {})}],
        [{"name": "main", "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]}]}],
        [{"name": "up", "endpoints": endpoints, **(cluster_extra or {})}],
    )  # fmt: skip


@contextlib.asynccontextmanager
async def proxy_running(
    data: dict, base_dir: Path = Path("."), protocols: dict | None = None
) -> AsyncIterator[Proxy]:
    """The proxy of config ``data``, with the loaded protocols or ``protocols``."""
    cfg = parse_config(data, base_dir)
    proxy = Proxy(cfg, protocols or PROTOCOLS)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.drain(0.5)


@contextlib.asynccontextmanager
async def upstream(protocol: str, port: int, stats: dict | None = None):
    server = await serve(PROTOCOLS[protocol], "127.0.0.1", port, f"up{port}", stats)
    try:
        yield server
    finally:
        server.close()


class Recorder(FramedConnection):
    """An upstream that records every request frame and answers like `serve`, or not at all
    (``answer=False``), or only after ``delay`` seconds (a number, or a function of how many
    frames were seen before this one: answers can overtake each other), or, where ``code``
    (a function of the request frame) gives a runtime code, with the protocol's error answer
    for that code."""

    direction = Direction.REQUEST

    def __init__(self, proto, seen: list, answer=True, delay=0.0, code=None):
        super().__init__(proto)
        self.seen = seen
        self.answer = answer
        self.delay = delay
        self.code = code

    def on_frame(self, frame: XFrame, buf, start, length) -> None:
        self.seen.append(frame)
        if not self.answer:
            return
        if frame.is_heartbeat():
            reply = self.proto.reply(frame)
            out = reply.encode() if reply is not None else None
        else:
            code = self.code(frame) if self.code is not None else None
            if code is None:
                resp = self.proto.success_response(frame)
            else:
                resp = self.proto.hijack(frame, code, f"answered {code}")
            out = resp.encode() if resp is not None else None
        if out is None or frame.get_stream_type().value == "oneway":
            return
        delay = self.delay(len(self.seen) - 1) if callable(self.delay) else self.delay
        if delay:
            self.loop.call_later(delay, self.send, out)
        else:
            self.send(out)


@contextlib.asynccontextmanager
async def recorder(protocol: str, port: int, seen: list, **kw):
    loop = asyncio.get_running_loop()
    conns: list = []

    def factory():
        conn = Recorder(PROTOCOLS[protocol], seen, **kw)
        conns.append(conn)
        return conn

    server = await loop.create_server(factory, "127.0.0.1", port, reuse_address=True)
    try:
        yield RecorderServer(server, conns)
    finally:
        server.close()
        for c in conns:
            c.abort()


class RecorderServer:
    """A recording upstream's server and the connections it accepted."""

    def __init__(self, server, conns: list):
        self.server = server
        self.conns = conns


async def client(protocol: str, port: int) -> Client:
    return await Client.connect(PROTOCOLS[protocol], "127.0.0.1", port)


@contextlib.contextmanager
def proxy_in_thread(data: dict, base_dir: Path = Path(".")):
    """The proxy on its own event loop in a thread, for blocking peer libraries."""
    import threading

    install_loop()
    loop = asyncio.new_event_loop()
    cfg = parse_config(data, base_dir)
    started = threading.Event()
    holder: list = []

    async def start():
        proxy = Proxy(cfg, PROTOCOLS)
        await proxy.start()
        holder.append(proxy)

    def main():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10)
    proxy = holder[0]
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.drain(0.5), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def wait_listening(port: int, count: int, timeout: float = 15.0, exactly: bool = False) -> None:
    """Wait until ``count`` sockets (``exactly``: no more) listen on 127.0.0.1:``port``
    (SO_REUSEPORT: one per worker), as the kernel lists them."""
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        found = sum(1 for row in rows if row[1] == wanted and row[3] == "0A")  # 0A: LISTEN
        if found == count or (found > count and not exactly):
            return
        assert time.monotonic() < deadline, f"{found} of {count} sockets listen on {port}"
        time.sleep(0.05)
